// envd as a real process on a temp-dir root, reached over a Unix socket (and TCP), driven by
// hangar::envd::Client and by raw HTTP for the protocol's details.
#include <dirent.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <zlib.h>

#include <fstream>
#include <random>

#include "envd_testing.h"
#include "hangar/api/json.h"
#include "hangar/api/query.h"
#include "hangar/envd/version.h"

namespace hangar::envd {
namespace {

using namespace std::chrono_literals;
using testing::EnvdOptions;
using testing::EnvdProcess;

std::string RandomBytes(size_t n, uint64_t seed = 42) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

class EnvdTest : public ::testing::Test {
 protected:
  void SetUp() override { StartEnvd(""); }

  void StartEnvd(const std::string& token, const std::string& listen = "") {
    envd_.reset();
    auto t = TempDir::Make("envd-it-");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
    root_ = tmp_.path() + "/root";
    ASSERT_NO_FATAL_FAILURE(testing::MakeSandboxRoot(root_, ::getuid(), ::getgid()));
    EnvdOptions o;
    o.root = root_;
    o.listen = listen.empty() ? "unix:" + tmp_.path() + "/envd.sock" : listen;
    o.token = token;
    envd_ = std::make_unique<EnvdProcess>();
    ASSERT_NO_FATAL_FAILURE(envd_->Start(o));
    auto c = Client::Create(envd_->ClientEndpoint(token));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_.emplace(std::move(*c));
  }

  void TearDown() override {
    client_.reset();
    envd_.reset();
  }

  std::string Host(const std::string& sandbox_path) { return root_ + sandbox_path; }

  api::HttpClient Raw(std::vector<std::pair<std::string, std::string>> headers = {}) {
    api::ClientOptions o;
    o.headers = std::move(headers);
    auto h = api::HttpClient::Create(envd_->BaseUrl(), o);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return std::move(*h);
  }

  // One Connect server-stream call, read to its end; frames decoded.
  std::pair<api::ClientResponse, std::vector<internal::Frame>> RawStreamCall(
      const std::string& procedure, const nlohmann::json& request,
      std::vector<std::pair<std::string, std::string>> headers = {},
      std::optional<std::string> raw_body = std::nullopt) {
    api::HttpClient h = Raw();
    api::RequestOptions ro;
    ro.content_type = "application/connect+json";
    ro.headers = std::move(headers);
    std::string body = raw_body ? *raw_body : internal::Envelope(0, request.dump());
    auto res = h.Send("POST", "/" + procedure, body, ro);
    EXPECT_TRUE(res.ok()) << res.status().ToString();
    if (!res.ok()) return {};
    internal::EnvelopeReader r;
    EXPECT_TRUE(r.Feed(res->body).ok());
    std::vector<internal::Frame> frames;
    while (auto f = r.Next()) frames.push_back(*f);
    EXPECT_EQ(r.pending(), 0u);
    return {std::move(*res), std::move(frames)};
  }

  Result<ExitInfo> Sh(const std::string& script, std::string* out = nullptr,
                      std::string* err = nullptr, Command base = {}) {
    base.cmd = "/bin/sh";
    base.args = {"-c", script};
    OutputHandler h;
    h.on_stdout = [out](std::string_view s) {
      if (out) out->append(s);
    };
    h.on_stderr = [err](std::string_view s) {
      if (err) err->append(s);
    };
    return client_->Run(base, h);
  }

  TempDir tmp_;
  std::string root_;
  std::unique_ptr<EnvdProcess> envd_;
  std::optional<Client> client_;
};

// --- processes --------------------------------------------------------------------------------

TEST_F(EnvdTest, HealthAndVersion) {
  EXPECT_TRUE(client_->Health().ok());
  auto res = Raw().Get("/health");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 204);
  auto v = RunCommand({ENVD_BINARY, "--version"});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->out, std::string(kEnvdVersion) + "\n");
}

TEST_F(EnvdTest, RunStreamsStdoutStderrAndExitCode) {
  std::string out, err;
  auto r = Sh("echo out; echo err >&2; exit 3", &out, &err);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(out, "out\n");
  EXPECT_EQ(err, "err\n");
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_TRUE(r->exited);
  EXPECT_EQ(r->status, "exit status 3");
  EXPECT_EQ(r->error, "exit status 3");
  EXPECT_GT(r->pid, 0u);
  auto ok = Sh("true");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->exit_code, 0);
  EXPECT_EQ(ok->error, "");
}

// A command gets stdio and nothing else of envd's: not its listening socket, not the
// connection it is served on (tests/security runs the same check inside every tier).
TEST_F(EnvdTest, CommandsInheritOnlyStdio) {
  std::string out;
  // The shell execs ls with what it started with; ls adds its own directory descriptor (3).
  auto r = Sh("exec ls -1 /proc/self/fd", &out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(out, "0\n1\n2\n3\n");
}

TEST_F(EnvdTest, StdinIsDeliveredAndClosed) {
  Command c;
  c.cmd = "cat";
  std::string data = RandomBytes(3 << 20);  // larger than pipe and stream buffers
  c.stdin_data = data;
  std::string out;
  auto r = client_->Run(c, {.on_stdout = [&](std::string_view s) { out.append(s); }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(out.size(), data.size());
  EXPECT_TRUE(out == data);
  // Without stdin_data stdin is /dev/null: cat ends at once.
  Command d;
  d.cmd = "cat";
  auto e = client_->Run(d);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->exit_code, 0);
}

TEST_F(EnvdTest, EnvironmentAndWorkingDirectory) {
  std::string out;
  Command base;
  base.env = {{"FOO", "bar baz"}, {"HOME", "/overridden"}};
  auto r =
      Sh("echo FOO=$FOO; echo HOME=$HOME; echo USER=$USER; echo M=$SANDBOX_MARKER; "
         "echo T=${ENVD_ACCESS_TOKEN-unset}; pwd",
         &out, nullptr, base);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(out.find("FOO=bar baz\n"), std::string::npos) << out;
  EXPECT_NE(out.find("HOME=/overridden\n"), std::string::npos) << out;  // request envs win
  EXPECT_NE(out.find("USER=user\n"), std::string::npos) << out;
  EXPECT_NE(out.find("M=from-envd-env\n"), std::string::npos) << out;
  EXPECT_NE(out.find("T=unset\n"), std::string::npos) << out;
  // Commands are not chrooted by --root (inside a sandbox the root is "/"): the working
  // directory is the home inside the root.
  EXPECT_NE(out.find(root_ + "/home/user\n"), std::string::npos) << out;

  ASSERT_TRUE(MakeDirs(Host("/home/user/sub")).ok());
  std::string pwd;
  Command in_sub;
  in_sub.cwd = "sub";
  ASSERT_TRUE(Sh("pwd", &pwd, nullptr, in_sub).ok());
  EXPECT_EQ(pwd, root_ + "/home/user/sub\n");
  Command missing;
  missing.cwd = "/no/such/dir";
  EXPECT_EQ(Sh("pwd", nullptr, nullptr, missing).status().code(), Code::kInvalidArgument);
}

TEST_F(EnvdTest, ExecFailureIsAnError) {
  Command c;
  c.cmd = "/no/such/binary";
  auto r = client_->Run(c);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("exec(/no/such/binary)"), std::string::npos)
      << r.status().message();
  c.cmd = "no-such-command-in-path";
  EXPECT_EQ(client_->Run(c).status().code(), Code::kNotFound);
}

TEST_F(EnvdTest, TimeoutKillsTheWholeProcessGroup) {
  Command c;
  c.cmd = "/bin/sh";
  c.args = {"-c", "sleep 30 & sleep 30"};
  c.timeout = 300ms;
  auto start = std::chrono::steady_clock::now();
  auto r = client_->Run(c);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded) << r.status().ToString();
  EXPECT_LT(took, 3s);
  auto list = client_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  // No sleep survived (the background one was in the group too).
  auto ps = RunCommand({"pgrep", "-P", std::to_string(envd_->pid())});
  EXPECT_EQ(ps->out, "") << "envd children left: " << ps->out;
}

TEST_F(EnvdTest, BackgroundProcessesListSignalAndAttach) {
  Command c;
  c.cmd = "/bin/sh";
  c.args = {"-c", "echo started; sleep 30"};
  c.tag = "svc";
  auto pid = client_->StartBackground(c);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  auto list = client_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].pid, *pid);
  EXPECT_EQ((*list)[0].tag, "svc");
  EXPECT_EQ((*list)[0].cmd, "/bin/sh");
  EXPECT_EQ((*list)[0].args, c.args);

  std::thread killer([&] {
    std::this_thread::sleep_for(200ms);
    auto k = Client::Create(envd_->ClientEndpoint());
    EXPECT_TRUE(k->Signal(*pid, SIGTERM).ok());
  });
  auto done = client_->Attach(*pid);
  killer.join();
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->pid, *pid);
  EXPECT_FALSE(done->exited);
  EXPECT_EQ(done->exit_code, -1);
  EXPECT_EQ(done->status, "signal: terminated");
  // Exited: still answers for a while (start + end), then List no longer shows it.
  auto again = client_->Attach(*pid);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, "signal: terminated");
  EXPECT_TRUE(client_->List()->empty());
  EXPECT_EQ(client_->Kill(*pid).code(), Code::kNotFound);
  EXPECT_EQ(client_->Attach(999999).status().code(), Code::kNotFound);
}

TEST_F(EnvdTest, AttachSeesLiveOutputAfterTheStarterLeft) {
  Command c;
  c.cmd = "/bin/sh";
  c.args = {"-c", "sleep 0.5; echo late; exit 4"};
  auto pid = client_->StartBackground(c);
  ASSERT_TRUE(pid.ok());
  std::string out;
  auto done = client_->Attach(*pid, {.on_stdout = [&](std::string_view s) { out.append(s); }});
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(out, "late\n");
  EXPECT_EQ(done->exit_code, 4);
}

TEST_F(EnvdTest, SendStdinToABackgroundProcess) {
  auto pid =
      client_->StartBackground(Command{.cmd = "/bin/sh",
                                       .args = {"-c", "read line; sleep 0.5; echo got:$line"},
                                       .stdin_data = "hi\n"});
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  std::string out;
  auto done = client_->Attach(*pid, {.on_stdout = [&](std::string_view s) { out.append(s); }});
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(out, "got:hi\n");
  EXPECT_EQ(client_->SendStdin(*pid, "x").code(), Code::kNotFound);  // gone

  // Without stdin_data the process has /dev/null, and after StartBackground sent stdin_data its
  // stdin is closed: either way there is nothing to send to.
  auto cat = client_->StartBackground(Command{.cmd = "/bin/sh", .args = {"-c", "sleep 0.3; cat"}});
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ(client_->SendStdin(*cat, "x").code(), Code::kFailedPrecondition);
  auto piped = client_->StartBackground(
      Command{.cmd = "/bin/sh", .args = {"-c", "sleep 0.5; cat"}, .stdin_data = ""});
  ASSERT_TRUE(piped.ok());
  EXPECT_EQ(client_->SendStdin(*piped, "x").code(), Code::kFailedPrecondition);  // closed
  // StreamInput (a client stream of start, keepalive and data messages) to a process started
  // through the raw protocol with stdin left open, whose Start stream was then left.
  api::HttpClient h = Raw();
  api::RequestOptions ro;
  ro.content_type = "application/connect+json";
  uint32_t sid = 0;
  (void)h.Stream(
      "POST", "/process.Process/Start",
      internal::Envelope(
          0, nlohmann::json{{"process", {{"cmd", "/bin/sh"}, {"args", {"-c", "sleep 0.5; cat"}}}},
                            {"stdin", true}}
                 .dump()),
      ro, [&](std::string_view d) -> Status {
        internal::EnvelopeReader r;
        (void)r.Feed(d);
        if (auto f = r.Next()) {
          sid = nlohmann::json::parse(f->payload)["event"]["start"]["pid"];
        }
        return Status::Cancelled("detach");
      });
  ASSERT_GT(sid, 0u);
  std::string msgs =
      internal::Envelope(0, nlohmann::json{{"start", {{"process", {{"pid", sid}}}}}}.dump()) +
      internal::Envelope(0, nlohmann::json{{"keepalive", nlohmann::json::object()}}.dump()) +
      internal::Envelope(
          0, nlohmann::json{{"data", {{"input", {{"stdin", internal::Base64Encode("streamed")}}}}}}
                 .dump());
  auto sres = h.Send("POST", "/process.Process/StreamInput", msgs, ro);
  ASSERT_TRUE(sres.ok());
  EXPECT_EQ(sres->status, 200);
  ASSERT_TRUE(client_->CloseStdin(sid).ok());
  std::string streamed;
  auto fin = client_->Attach(sid, {.on_stdout = [&](std::string_view s) { streamed.append(s); }});
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_EQ(streamed, "streamed");
}

TEST_F(EnvdTest, OrphansAreReapedNotLeftAsZombies) {
  auto r = Sh("sleep 0.2 & exit 0");
  ASSERT_TRUE(r.ok());
  std::this_thread::sleep_for(600ms);
  // The orphaned sleep was re-parented to envd (a subreaper) and reaped by its central waiter.
  std::string zombies;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    std::string stat = ReadFile(std::string("/proc/") + e->d_name + "/stat").value_or("");
    size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    char state = stat[close + 2];
    int ppid = std::atoi(stat.c_str() + close + 4);
    if (ppid == envd_->pid() && state == 'Z') zombies += stat + "\n";
  }
  ::closedir(d);
  EXPECT_EQ(zombies, "");
}

TEST_F(EnvdTest, SigtermForwardsToChildrenAndExitsZero) {
  auto pid = client_->StartBackground(Command{.cmd = "sleep", .args = {"30"}});
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(::kill(static_cast<pid_t>(*pid), 0), 0);
  auto start = std::chrono::steady_clock::now();
  envd_->Stop(5s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_NE(::kill(static_cast<pid_t>(*pid), 0), 0) << "the child outlived envd";
}

TEST_F(EnvdTest, PtyCommands) {
  Command c;
  c.cmd = "/bin/sh";
  c.args = {"-c", "test -t 0 && echo tty; stty size"};
  c.pty = true;
  c.cols = 100;
  c.rows = 40;
  std::string out;
  auto r = client_->Run(c, {.on_pty = [&](std::string_view s) { out.append(s); }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(out.find("tty"), std::string::npos) << out;
  EXPECT_NE(out.find("40 100"), std::string::npos) << out;

  // Resize (Update) and input (SendInput pty) on a running pty process.
  Command shell;
  shell.cmd = "/bin/sh";
  shell.args = {"-c", "read line; stty size; echo got:$line"};
  shell.pty = true;
  auto pid = client_->StartBackground(shell);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ASSERT_TRUE(
      client_
          ->CallUnary("process.Process/Update", {{"process", {{"pid", *pid}}},
                                                 {"pty", {{"size", {{"cols", 50}, {"rows", 20}}}}}})
          .ok());
  std::string pty_out;
  std::thread typist([&] {
    std::this_thread::sleep_for(100ms);
    auto typing = Client::Create(envd_->ClientEndpoint());
    EXPECT_TRUE(typing
                    ->CallUnary("process.Process/SendInput",
                                {{"process", {{"pid", *pid}}},
                                 {"input", {{"pty", internal::Base64Encode("hello\n")}}}})
                    .ok());
  });
  auto done = client_->Attach(*pid, {.on_pty = [&](std::string_view s) { pty_out.append(s); }});
  typist.join();
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_NE(pty_out.find("20 50"), std::string::npos) << pty_out;
  EXPECT_NE(pty_out.find("got:hello"), std::string::npos) << pty_out;
  EXPECT_EQ(client_->CloseStdin(*pid).code(), Code::kNotFound);
}

// --- files ------------------------------------------------------------------------------------

TEST_F(EnvdTest, WriteAndReadLargeBinaryFiles) {
  std::string data = RandomBytes(10 << 20, 7);
  auto w = client_->WriteFile("data/blob.bin", data);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->path, "/home/user/data/blob.bin");
  EXPECT_EQ(w->name, "blob.bin");
  struct stat st {};
  ASSERT_EQ(::stat(Host("/home/user/data/blob.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(data.size()));
  EXPECT_EQ(st.st_uid, ::getuid());
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  auto r = client_->ReadFile("/home/user/data/blob.bin");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(*r == data);
  // Overwrite keeps the mode; no temporary files are left behind.
  ASSERT_EQ(::chmod(Host("/home/user/data/blob.bin").c_str(), 0600), 0);
  ASSERT_TRUE(client_->WriteFile("data/blob.bin", "small").ok());
  ASSERT_EQ(::stat(Host("/home/user/data/blob.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(*client_->ReadFile("data/blob.bin"), "small");
  auto list = client_->ListDir("data");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1u);
  EXPECT_EQ(*client_->ReadFile("data/blob.bin"), "small");
  ASSERT_TRUE(client_->WriteFile("empty", "").ok());
  EXPECT_EQ(*client_->ReadFile("empty"), "");
  EXPECT_EQ(client_->ReadFile("missing").status().code(), Code::kNotFound);
  EXPECT_EQ(client_->ReadFile("data").status().code(), Code::kInvalidArgument);
}

// Peak resident memory of a process, from /proc (kB).
long PeakRssKb(pid_t pid) {
  std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status").value_or("");
  size_t at = status.find("VmHWM:");
  return at == std::string::npos ? -1 : std::atol(status.c_str() + at + 6);
}

TEST_F(EnvdTest, LargeTransfersDoNotGrowEnvd) {
  long before = PeakRssKb(envd_->pid());
  std::string data = RandomBytes(32 << 20, 9);
  ASSERT_TRUE(client_->WriteFile("big.bin", data).ok());
  // The same through multipart, as the SDK sends it by default.
  api::HttpClient h = Raw();
  api::RequestOptions ro;
  ro.content_type = "multipart/form-data; boundary=b0undary";
  std::string body =
      "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; "
      "filename=\"big2.bin\"\r\n\r\n" +
      data + "\r\n--b0undary--\r\n";
  auto res = h.Send("POST", "/files", std::move(body), ro);
  ASSERT_TRUE(res.ok());
  ASSERT_EQ(res->status, 200) << res->body;
  auto back = client_->ReadFile("big2.bin");
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == data);
  long after = PeakRssKb(envd_->pid());
  std::printf("envd peak RSS: %ld kB before, %ld kB after 3 x 32 MiB transfers\n", before, after);
  EXPECT_LT(after - before, 24 * 1024) << "envd buffered a transfer in memory";
}

TEST_F(EnvdTest, ListDirStatMakeDirMoveRemove) {
  ASSERT_TRUE(client_->WriteFile("t/a/b/c.txt", "c").ok());
  ASSERT_TRUE(client_->WriteFile("t/top.txt", "top").ok());
  auto one = client_->ListDir("t");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  ASSERT_EQ(one->size(), 2u);
  EXPECT_EQ((*one)[0].path, "/home/user/t/a");
  EXPECT_EQ((*one)[0].type, FileType::kDirectory);
  EXPECT_EQ((*one)[1].name, "top.txt");
  EXPECT_EQ((*one)[1].type, FileType::kFile);
  EXPECT_EQ((*one)[1].size, 3);
  auto three = client_->ListDir("t", 3);
  ASSERT_TRUE(three.ok());
  std::vector<std::string> paths;
  for (const auto& e : *three) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"/home/user/t/a", "/home/user/t/a/b",
                                             "/home/user/t/a/b/c.txt", "/home/user/t/top.txt"}));
  EXPECT_EQ(client_->ListDir("t/top.txt").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(client_->ListDir("nope").status().code(), Code::kNotFound);

  auto st = client_->Stat("t/top.txt");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->permissions, "-rw-r--r--");
  EXPECT_EQ(st->mode, 0644u);
  EXPECT_EQ(st->owner, ::getuid() == 0 ? "root" : "user");
  auto age = std::chrono::system_clock::now() - st->modified;
  EXPECT_LT(age, 60s);
  EXPECT_EQ(client_->Stat("nope").status().code(), Code::kNotFound);

  auto made = client_->MakeDir("x/y/z");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(made->type, FileType::kDirectory);
  EXPECT_EQ(made->path, "/home/user/x/y/z");
  EXPECT_EQ(client_->MakeDir("x/y/z").status().code(), Code::kAlreadyExists);
  EXPECT_EQ(client_->MakeDir("t/top.txt").status().code(), Code::kInvalidArgument);

  auto moved = client_->Move("t/top.txt", "/tmp/deep/er/moved.txt");
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(moved->path, "/tmp/deep/er/moved.txt");
  EXPECT_EQ(*client_->ReadFile("/tmp/deep/er/moved.txt"), "top");
  EXPECT_EQ(client_->Move("t/top.txt", "x").status().code(), Code::kNotFound);

  ASSERT_TRUE(client_->Remove("t").ok());
  EXPECT_NE(::access(Host("/home/user/t").c_str(), F_OK), 0);
  EXPECT_TRUE(client_->Remove("t").ok());  // already gone
}

TEST_F(EnvdTest, PathsStayInsideTheRoot) {
  auto o = TempDir::Make("envd-outside-");
  ASSERT_TRUE(o.ok());
  ASSERT_TRUE(WriteFile(o->path() + "/secret", "host secret").ok());
  // A symlink to the outside's host path, an absolute one to /etc, and .. climbing.
  ASSERT_EQ(::symlink((o->path() + "/secret").c_str(), Host("/home/user/s1").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", Host("/home/user/s2").c_str()), 0);
  ASSERT_EQ(::symlink("../../../../../../..", Host("/home/user/up").c_str()), 0);
  EXPECT_EQ(client_->ReadFile("s1").status().code(), Code::kNotFound);
  auto passwd = client_->ReadFile("s2");
  ASSERT_TRUE(passwd.ok());
  EXPECT_EQ(*passwd, *ReadFile(Host("/etc/passwd")));  // the sandbox's, not the host's
  EXPECT_EQ(*client_->ReadFile("../../../../etc/passwd"), *passwd);
  EXPECT_EQ(*client_->ReadFile("up/etc/passwd"), *passwd);
  EXPECT_EQ(client_->ReadFile(o->path() + "/secret").status().code(), Code::kNotFound);
  // Writes through those links land inside the root too.
  ASSERT_TRUE(client_->WriteFile("up" + o->path() + "/secret", "overwritten?").ok());
  EXPECT_EQ(*ReadFile(o->path() + "/secret"), "host secret");
  EXPECT_EQ(*ReadFile(Host(o->path() + "/secret")), "overwritten?");
  ASSERT_EQ(::symlink(o->path().c_str(), Host("/home/user/outdir").c_str()), 0);
  ASSERT_TRUE(client_->Remove("outdir").ok());  // the link only
  EXPECT_EQ(*ReadFile(o->path() + "/secret"), "host secret");
  auto st = client_->Stat("s2");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->symlink_target, "/etc/passwd");
  auto moved = client_->Move(root_ + "/home/user/s2", "m");  // a host path is a sandbox path
  EXPECT_EQ(moved.status().code(), Code::kNotFound);
}

TEST_F(EnvdTest, WatchersReportCreateWriteRemove) {
  ASSERT_TRUE(client_->MakeDir("w/sub").ok());
  auto created = client_->CallUnary("filesystem.Filesystem/CreateWatcher",
                                    {{"path", "w"}, {"recursive", true}, {"includeEntry", true}});
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  std::string id = (*created)["watcherId"];
  ASSERT_TRUE(client_->WriteFile("w/f.txt", "1").ok());
  ASSERT_TRUE(client_->WriteFile("w/sub/g.txt", "2").ok());
  ASSERT_TRUE(client_->Remove("w/f.txt").ok());
  std::vector<std::string> seen;
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto ev = client_->CallUnary("filesystem.Filesystem/GetWatcherEvents", {{"watcherId", id}});
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    for (const auto& e : (*ev)["events"]) {
      seen.push_back(e["type"].get<std::string>() + " " + e["name"].get<std::string>());
      if (e["type"] == "EVENT_TYPE_CREATE" && e["name"] == "sub/g.txt") {
        // include_entry: may be absent if it was already renamed over; here it is there.
      }
    }
    if (std::find(seen.begin(), seen.end(), "EVENT_TYPE_REMOVE f.txt") != seen.end()) break;
    std::this_thread::sleep_for(20ms);
  }
  auto has = [&](const std::string& s) {
    return std::find(seen.begin(), seen.end(), s) != seen.end();
  };
  // An atomic write reads as a write in place (E2B's envd): a create and a write of the file
  // itself; envd's temporary file never shows.
  EXPECT_TRUE(has("EVENT_TYPE_CREATE f.txt")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(has("EVENT_TYPE_WRITE f.txt")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(has("EVENT_TYPE_CREATE sub/g.txt")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(has("EVENT_TYPE_WRITE sub/g.txt")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(has("EVENT_TYPE_REMOVE f.txt")) << ::testing::PrintToString(seen);
  EXPECT_FALSE(std::any_of(seen.begin(), seen.end(), [](const std::string& s) {
    return s.find(".envd-") != std::string::npos;
  })) << ::testing::PrintToString(seen);
  EXPECT_FALSE(has("EVENT_TYPE_RENAME f.txt")) << ::testing::PrintToString(seen);
  EXPECT_TRUE(client_->CallUnary("filesystem.Filesystem/RemoveWatcher", {{"watcherId", id}}).ok());
  EXPECT_EQ(client_->CallUnary("filesystem.Filesystem/GetWatcherEvents", {{"watcherId", id}})
                .status()
                .code(),
            Code::kNotFound);
}

TEST_F(EnvdTest, WatchDirStreams) {
  ASSERT_TRUE(client_->MakeDir("ws").ok());
  api::HttpClient h = Raw();
  api::RequestOptions ro;
  ro.content_type = "application/connect+json";
  internal::EnvelopeReader reader;
  std::vector<nlohmann::json> msgs;
  bool wrote = false;
  Status st = h.Stream(
      "POST", "/filesystem.Filesystem/WatchDir",
      internal::Envelope(0, nlohmann::json{{"path", "ws"}}.dump()), ro,
      [&](std::string_view data) -> Status {
        EXPECT_TRUE(reader.Feed(data).ok());
        while (auto f = reader.Next()) {
          auto m = nlohmann::json::parse(f->payload);
          msgs.push_back(m);
          if (m.contains("start") && !wrote) {
            wrote = true;
            auto c = Client::Create(envd_->ClientEndpoint());
            EXPECT_TRUE(c->WriteFile("ws/new.txt", "x").ok());
          }
          // The atomic write's last event: the write of the file itself.
          if (m.contains("filesystem") && m["filesystem"]["type"] == "EVENT_TYPE_WRITE" &&
              m["filesystem"]["name"] == "new.txt") {
            return Status::Cancelled("seen enough");  // hang up: envd must notice
          }
        }
        return Status::Ok();
      },
      5s);
  EXPECT_EQ(st.code(), Code::kCancelled) << st.ToString();
  ASSERT_FALSE(msgs.empty());
  EXPECT_TRUE(msgs[0].contains("start"));
  bool created = false;
  for (const auto& m : msgs) {
    if (m.contains("filesystem") && m["filesystem"]["type"] == "EVENT_TYPE_CREATE") created = true;
  }
  EXPECT_TRUE(created);
  // A missing directory is an error in the end-of-stream message.
  auto [res, frames] = RawStreamCall("filesystem.Filesystem/WatchDir", {{"path", "nope"}});
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(frames[0].end_stream());
  EXPECT_EQ(nlohmann::json::parse(frames[0].payload)["error"]["code"], "not_found");
}

TEST_F(EnvdTest, GzipAndMultipartTransfers) {
  ASSERT_TRUE(client_->WriteFile("z.txt", std::string(100000, 'z')).ok());
  api::HttpClient h = Raw();
  api::RequestOptions ro;
  ro.content_type = "";
  ro.headers = {{"Accept-Encoding", "gzip"}};
  auto res = h.Send("GET", "/files?path=z.txt", {}, ro);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->header("Content-Encoding"), "gzip");
  EXPECT_LT(res->body.size(), 10000u);
  std::string plain(200000, '\0');
  uLongf len = plain.size();
  z_stream z{};
  ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(res->body.data());
  z.avail_in = static_cast<uInt>(res->body.size());
  z.next_out = reinterpret_cast<Bytef*>(plain.data());
  z.avail_out = static_cast<uInt>(len);
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  plain.resize(z.total_out);
  inflateEnd(&z);
  EXPECT_EQ(plain, std::string(100000, 'z'));

  // Gzip upload.
  std::string gz(1024, '\0');
  z_stream d{};
  ASSERT_EQ(deflateInit2(&d, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string src = "compressed upload";
  d.next_in = reinterpret_cast<Bytef*>(src.data());
  d.avail_in = static_cast<uInt>(src.size());
  d.next_out = reinterpret_cast<Bytef*>(gz.data());
  d.avail_out = static_cast<uInt>(gz.size());
  ASSERT_EQ(deflate(&d, Z_FINISH), Z_STREAM_END);
  gz.resize(d.total_out);
  deflateEnd(&d);
  ro.content_type = "application/octet-stream";
  ro.headers = {{"Content-Encoding", "gzip"}};
  auto up = h.Send("POST", "/files?path=gz.txt", gz, ro);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->status, 200) << up->body;
  EXPECT_EQ(*client_->ReadFile("gz.txt"), src);

  // Multipart with two files; paths from the part filenames.
  std::string boundary = "----envdtestboundary";
  std::string body =
      "--" + boundary +
      "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mp/one.txt\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\nfirst\r\n--" +
      boundary +
      "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/two.bin\"\r\n"
      "\r\n" +
      std::string("\x00\x01\r\n\x02", 5) + "\r\n--" + boundary + "--\r\n";
  ro.content_type = "multipart/form-data; boundary=" + boundary;
  ro.headers = {{"X-Metadata-Owner", "alice"}};
  auto mp = h.Send("POST", "/files", body, ro);
  ASSERT_TRUE(mp.ok());
  ASSERT_EQ(mp->status, 200) << mp->body;
  auto arr = nlohmann::json::parse(mp->body);
  ASSERT_EQ(arr.size(), 2u);
  EXPECT_EQ(arr[0]["path"], "/home/user/mp/one.txt");
  EXPECT_EQ(arr[0]["type"], "file");
  EXPECT_EQ(arr[1]["path"], "/tmp/two.bin");
  EXPECT_EQ(*client_->ReadFile("mp/one.txt"), "first");
  EXPECT_EQ(*client_->ReadFile("/tmp/two.bin"), std::string("\x00\x01\r\n\x02", 5));
  auto st = client_->Stat("mp/one.txt");
  ASSERT_TRUE(st.ok());
  if (!st->metadata.empty()) {
    EXPECT_EQ(st->metadata.at("owner"), "alice");
  }
}

// --- protocol details -------------------------------------------------------------------------

TEST_F(EnvdTest, ConnectServerStreamFraming) {
  auto [res, frames] = RawStreamCall(
      "process.Process/Start",
      {{"process", {{"cmd", "/bin/sh"}, {"args", {"-c", "printf 'hi\\n'; sleep 1.2"}}}},
       {"stdin", false}},
      {{"Keepalive-Ping-Interval", "1"}});
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.header("Content-Type"), "application/connect+json");
  ASSERT_GE(frames.size(), 4u);
  auto first = nlohmann::json::parse(frames[0].payload);
  EXPECT_GT(first["event"]["start"]["pid"].get<int>(), 0);
  auto data = nlohmann::json::parse(frames[1].payload);
  EXPECT_EQ(*internal::Base64Decode(data["event"]["data"]["stdout"].get<std::string>()), "hi\n");
  bool keepalive = false;
  for (size_t i = 2; i + 2 < frames.size() + 1; ++i) {
    auto m = nlohmann::json::parse(frames[i].payload);
    if (m.contains("event") && m["event"].contains("keepalive")) keepalive = true;
  }
  EXPECT_TRUE(keepalive);
  auto end = nlohmann::json::parse(frames[frames.size() - 2].payload);
  EXPECT_EQ(end["event"]["end"]["exitCode"], 0);
  EXPECT_EQ(end["event"]["end"]["exited"], true);
  EXPECT_EQ(end["event"]["end"]["status"], "exit status 0");
  EXPECT_TRUE(frames.back().end_stream());
  EXPECT_EQ(frames.back().payload, "{}");
  for (size_t i = 0; i + 1 < frames.size(); ++i) EXPECT_EQ(frames[i].flags, 0);
}

TEST_F(EnvdTest, ConnectStreamErrorsAreEndStreamMessages) {
  auto check = [&](const std::string& what, std::optional<std::string> raw, nlohmann::json req,
                   const std::string& code) {
    auto [res, frames] = RawStreamCall("process.Process/Start", req, {}, raw);
    EXPECT_EQ(res.status, 200) << what;
    ASSERT_EQ(frames.size(), 1u) << what;
    EXPECT_TRUE(frames[0].end_stream()) << what;
    auto end = nlohmann::json::parse(frames[0].payload);
    EXPECT_EQ(end["error"]["code"], code) << what << ": " << frames[0].payload;
    EXPECT_TRUE(end["error"]["message"].is_string()) << what;
  };
  check("not enveloped", std::string("{}"), {}, "invalid_argument");
  check("bad JSON", internal::Envelope(0, "{nope"), {}, "invalid_argument");
  check("truncated", internal::Envelope(0, "{}").substr(0, 6), {}, "invalid_argument");
  check("no process", std::nullopt, nlohmann::json::object(), "invalid_argument");
  check("exec fails", std::nullopt, {{"process", {{"cmd", "/nonexistent"}}}}, "not_found");
  check("bad args", std::nullopt, {{"process", {{"cmd", "sh"}, {"args", "x"}}}},
        "invalid_argument");
  // Wrong content type: rejected before the stream starts.
  api::HttpClient h = Raw();
  api::RequestOptions ro;
  ro.content_type = "application/json";
  auto res = h.Send("POST", "/process.Process/Start", "{}", ro);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 415);
}

TEST_F(EnvdTest, UnaryErrorsUseConnectShapeAndStatus) {
  api::HttpClient h = Raw();
  api::RequestOptions ro;
  ro.content_type = "application/json";
  auto call = [&](const std::string& proc, const std::string& body) {
    auto r = h.Send("POST", "/" + proc, body, ro);
    EXPECT_TRUE(r.ok());
    return std::make_pair(r->status, nlohmann::json::parse(r->body, nullptr, false));
  };
  auto [s1, b1] = call("filesystem.Filesystem/Stat", R"({"path":"/nope"})");
  EXPECT_EQ(s1, 404);
  EXPECT_EQ(b1["code"], "not_found");
  auto [s2, b2] = call("filesystem.Filesystem/Stat", "{\"path\":");
  EXPECT_EQ(s2, 400);
  EXPECT_EQ(b2["code"], "invalid_argument");
  auto [s3, b3] = call("filesystem.Filesystem/Stat", "[1]");
  EXPECT_EQ(s3, 400);
  auto [s4, b4] = call("filesystem.Filesystem/MakeDir", R"({"path":"/tmp"})");
  EXPECT_EQ(s4, 409);
  EXPECT_EQ(b4["code"], "already_exists");
  auto [s5, b5] =
      call("process.Process/SendSignal", R"({"process":{"pid":1},"signal":"SIGNAL_SIGHUP"})");
  EXPECT_EQ(s5, 501);
  EXPECT_EQ(b5["code"], "unimplemented");
  auto [s6, b6] = call("filesystem.Filesystem/Nope", "{}");
  EXPECT_EQ(s6, 404);
  auto [s7, b7] = call("process.Process/List", "");
  EXPECT_EQ(s7, 200);
  EXPECT_TRUE(b7["processes"].is_array() || b7.contains("processes"));
  // proto names are accepted as well as JSON names.
  auto [s8, b8] = call("filesystem.Filesystem/GetWatcherEvents", R"({"watcher_id":"wx"})");
  EXPECT_EQ(s8, 404);
  // Internal E2B routes do not exist.
  for (const char* path : {"/init", "/freeze", "/upgrade", "/envs", "/metrics"}) {
    auto r = h.Send("POST", path, "{}", ro);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 404) << path;
  }
}

TEST_F(EnvdTest, UsersFromAuthorizationHeader) {
  api::HttpClient h = Raw({{"Authorization", "Basic " + internal::Base64Encode("nobody:")}});
  api::RequestOptions ro;
  ro.content_type = "application/json";
  auto r = h.Send("POST", "/filesystem.Filesystem/Stat", R"({"path":"~"})", ro);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "unauthenticated");
  // root's home, by name.
  auto st = client_->Stat("~", "root");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->path, "/root");
}

std::string Sha256(const std::string& s) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), n);
}

TEST_F(EnvdTest, AccessTokenAndSignedUrls) {
  const std::string token = "s3cret-token";
  ASSERT_NO_FATAL_FAILURE(StartEnvd(token));
  EXPECT_TRUE(client_->List().ok());
  EXPECT_TRUE(client_->WriteFile("f.txt", "signed").ok());
  auto anon = Client::Create(envd_->ClientEndpoint());
  EXPECT_TRUE(anon->Health().ok());  // /health needs no token
  EXPECT_EQ(anon->List().status().code(), Code::kUnauthenticated);
  EXPECT_EQ(anon->ReadFile("f.txt").status().code(), Code::kUnauthenticated);
  auto wrong = Client::Create(envd_->ClientEndpoint("wrong"));
  EXPECT_EQ(wrong->List().status().code(), Code::kUnauthenticated);
  EXPECT_EQ(wrong->Run(Command{.cmd = "true"}).status().code(), Code::kUnauthenticated);

  api::HttpClient h = Raw();
  auto get = [&](const std::string& target) { return h.Get(target)->status; };
  auto sign = [&](const std::string& path, const std::string& op, const std::string& user,
                  std::optional<long long> exp) {
    std::string text = path + ":" + op + ":" + user + ":" + token;
    if (exp) text += ":" + std::to_string(*exp);
    return "v1_" + internal::Base64RawEncode(Sha256(text));
  };
  std::string path = "f.txt";
  EXPECT_EQ(get("/files?path=f.txt"), 401);
  EXPECT_EQ(get("/files?path=f.txt&signature=" + api::PercentEncode(sign(path, "read", "", {}))),
            200);
  long long future = std::time(nullptr) + 60, past = std::time(nullptr) - 60;
  EXPECT_EQ(
      get("/files?path=f.txt&signature=" + api::PercentEncode(sign(path, "read", "", future)) +
          "&signature_expiration=" + std::to_string(future)),
      200);
  EXPECT_EQ(get("/files?path=f.txt&signature=" + api::PercentEncode(sign(path, "read", "", past)) +
                "&signature_expiration=" + std::to_string(past)),
            401);
  EXPECT_EQ(get("/files?path=f.txt&signature=" + api::PercentEncode(sign(path, "write", "", {}))),
            401);  // a write signature does not read
  EXPECT_EQ(
      get("/files?path=other.txt&signature=" + api::PercentEncode(sign(path, "read", "", {}))),
      401);
  EXPECT_EQ(get("/files?path=f.txt&username=root&signature=" +
                api::PercentEncode(sign(path, "read", "root", {}))),
            404);  // valid for root, whose home has no f.txt
  // Unsigned and untokened Connect calls: 401 with the Connect error shape.
  api::RequestOptions ro;
  ro.content_type = "application/json";
  auto r = h.Send("POST", "/process.Process/List", "{}", ro);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(nlohmann::json::parse(r->body)["code"], "unauthenticated");
  // A signed upload.
  ro.content_type = "application/octet-stream";
  auto up = h.Send(
      "POST", "/files?path=up.txt&signature=" + api::PercentEncode(sign("up.txt", "write", "", {})),
      "via signature", ro);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->status, 200) << up->body;
  EXPECT_EQ(*client_->ReadFile("up.txt"), "via signature");
}

TEST_F(EnvdTest, AccessTokenFromAFileStaysOutOfCommands) {
  envd_.reset();
  ASSERT_TRUE(WriteFile(tmp_.path() + "/token", "file-token\n").ok());
  EnvdOptions o;
  o.root = root_;
  o.listen = "unix:" + tmp_.path() + "/envd2.sock";
  o.extra_args = {"--access-token-file", tmp_.path() + "/token"};
  o.env["ENVD_ACCESS_TOKEN"] = "ignored-when-a-file-is-given";
  envd_ = std::make_unique<EnvdProcess>();
  ASSERT_NO_FATAL_FAILURE(envd_->Start(o));
  auto anon = Client::Create(envd_->ClientEndpoint());
  EXPECT_EQ(anon->List().status().code(), Code::kUnauthenticated);
  auto env_token = Client::Create(envd_->ClientEndpoint("ignored-when-a-file-is-given"));
  EXPECT_EQ(env_token->List().status().code(), Code::kUnauthenticated);
  auto c = Client::Create(envd_->ClientEndpoint("file-token"));
  std::string out;
  auto r = c->Run(Command{.cmd = "/bin/sh", .args = {"-c", "echo ${ENVD_ACCESS_TOKEN-unset}"}},
                  {.on_stdout = [&](std::string_view s) { out.append(s); }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(out, "unset\n");
}

// envd spawned here with its log captured (JSON on stderr), so a test can wait for what envd
// says it did instead of sleeping.
class LoggedEnvd {
 public:
  void Start(std::vector<std::string> args) {
    std::vector<std::string> argv = {ENVD_BINARY, "--log-format", "json", "--log-level", "info"};
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions so;
    so.env = std::map<std::string, std::string>{{"PATH", "/usr/bin:/bin"}};
    so.capture_stdout = true;
    so.capture_stderr = true;
    auto c = Child::Spawn(argv, so);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    child_ = std::move(*c);
    std::string out;
    ASSERT_TRUE(ReadUntil(child_.stdout_fd().get(), out, "\n", 10s)) << "no 'listening': " << out;
    ASSERT_EQ(out.rfind("listening ", 0), 0u) << out;
    endpoint_ = out.substr(10, out.find('\n') - 10);
  }
  // True once envd logged a line holding `text` (after the lines already consumed).
  bool WaitForLog(const std::string& text, std::chrono::milliseconds within = 10s) {
    bool found = ReadUntil(child_.stderr_fd().get(), log_, text, within);
    if (found) log_.erase(0, log_.find(text) + text.size());
    return found;
  }
  Endpoint At(std::string token) const {
    Endpoint e;
    e.unix_socket = endpoint_.substr(5);
    e.access_token = std::move(token);
    return e;
  }
  pid_t pid() const { return child_.pid(); }
  const std::string& log() const { return log_; }
  ~LoggedEnvd() {
    if (child_.running()) {
      (void)child_.Signal(SIGTERM);
      auto st = child_.WaitFor(5s);
      EXPECT_TRUE(st.ok() && st->success()) << "envd did not exit cleanly";
    }
  }

 private:
  static bool ReadUntil(int fd, std::string& buf, const std::string& text,
                        std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (buf.find(text) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[4096];
      ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n <= 0) return false;
      buf.append(chunk, static_cast<size_t>(n));
    }
    return true;
  }
  Child child_;
  std::string endpoint_, log_;
};

// SIGHUP: envd re-reads --access-token-file (how the microVM tier re-keys a restored VM). The
// new token is accepted and the old refused on every route (Connect, /files, signed URLs); a
// request admitted before the reload runs to its end; an empty, missing or unreadable file
// keeps the token in force; SIGHUP never stops envd.
TEST_F(EnvdTest, SighupReloadsTheAccessTokenFile) {
  client_.reset();
  envd_.reset();
  const std::string token_file = tmp_.path() + "/token";
  ASSERT_TRUE(WriteFileAtomic(token_file, "old-token\n", 0600).ok());
  LoggedEnvd e;
  ASSERT_NO_FATAL_FAILURE(e.Start({"--listen", "unix:" + tmp_.path() + "/hup.sock", "--root", root_,
                                   "--access-token-file", token_file}));
  auto old_client = Client::Create(e.At("old-token"));
  auto new_client = Client::Create(e.At("new-token"));
  ASSERT_TRUE(old_client.ok() && new_client.ok());
  ASSERT_TRUE(old_client->List().ok());
  EXPECT_EQ(new_client->List().status().code(), Code::kUnauthenticated);

  // A command admitted with the old token, still running across the reload.
  const std::string go = Host("/tmp/go");
  std::string in_flight_out;
  Result<ExitInfo> in_flight = Status::Internal("not run");
  std::thread runner([&] {
    in_flight = old_client->Run(
        Command{.cmd = "/bin/sh",
                .args = {"-c", "while [ ! -e " + go + " ]; do sleep 0.01; done; echo finished"}},
        {.on_stdout = [&](std::string_view s) { in_flight_out.append(s); }});
  });
  bool started = false;
  for (int i = 0; i < 500 && !started; ++i) {
    auto l = old_client->List();
    started = l.ok() && !l->empty();
  }
  ASSERT_TRUE(started) << "the in-flight command never started";

  ASSERT_TRUE(WriteFileAtomic(token_file, "new-token\n", 0600).ok());
  ASSERT_EQ(::kill(e.pid(), SIGHUP), 0);
  ASSERT_TRUE(e.WaitForLog("access token reloaded")) << e.log();
  EXPECT_TRUE(new_client->List().ok());
  EXPECT_EQ(old_client->List().status().code(), Code::kUnauthenticated);
  EXPECT_EQ(old_client->ReadFile("/etc/passwd", "root").status().code(), Code::kUnauthenticated);
  EXPECT_TRUE(new_client->ReadFile("/etc/passwd", "root").ok());
  auto h = api::HttpClient::Create("unix:" + tmp_.path() + "/hup.sock", api::ClientOptions{});
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto signed_read = [&](const std::string& token) {
    std::string sig = "v1_" + internal::Base64RawEncode(Sha256("/etc/passwd:read:root:" + token));
    return h->Get("/files?path=/etc/passwd&username=root&signature=" + api::PercentEncode(sig))
        ->status;
  };
  EXPECT_EQ(signed_read("new-token"), 200);
  EXPECT_EQ(signed_read("old-token"), 401);

  ASSERT_TRUE(WriteFile(go, "").ok());
  runner.join();
  ASSERT_TRUE(in_flight.ok()) << in_flight.status().ToString();
  EXPECT_EQ(in_flight->exit_code, 0);
  EXPECT_EQ(in_flight_out, "finished\n");

  // Bad files: the token in force stays, and envd says why.
  ASSERT_TRUE(WriteFileAtomic(token_file, "\n", 0600).ok());
  ASSERT_EQ(::kill(e.pid(), SIGHUP), 0);
  ASSERT_TRUE(e.WaitForLog("access token not reloaded")) << e.log();
  EXPECT_TRUE(new_client->List().ok());
  ASSERT_EQ(::unlink(token_file.c_str()), 0);
  ASSERT_EQ(::kill(e.pid(), SIGHUP), 0);
  ASSERT_TRUE(e.WaitForLog("access token not reloaded")) << e.log();
  EXPECT_TRUE(new_client->List().ok());
  auto open = Client::Create(e.At(""));
  EXPECT_EQ(open->List().status().code(), Code::kUnauthenticated) << "a bad file opened envd";
  EXPECT_EQ(old_client->List().status().code(), Code::kUnauthenticated);
  ASSERT_TRUE(MakeDirs(token_file).ok());  // a directory: read() fails
  ASSERT_EQ(::kill(e.pid(), SIGHUP), 0);
  ASSERT_TRUE(e.WaitForLog("access token not reloaded")) << e.log();
  EXPECT_TRUE(new_client->List().ok());
  ASSERT_TRUE(RemoveTree(token_file).ok());
  // And once the file is good again, a later SIGHUP takes it.
  ASSERT_TRUE(WriteFileAtomic(token_file, "third-token", 0600).ok());
  ASSERT_EQ(::kill(e.pid(), SIGHUP), 0);
  ASSERT_TRUE(e.WaitForLog("access token reloaded")) << e.log();
  EXPECT_EQ(new_client->List().status().code(), Code::kUnauthenticated);
  EXPECT_TRUE(Client::Create(e.At("third-token"))->List().ok());
}

// Without --access-token-file, SIGHUP changes nothing (and does not stop envd).
TEST_F(EnvdTest, SighupWithoutATokenFileKeepsTheToken) {
  client_.reset();
  envd_.reset();
  LoggedEnvd e;
  ASSERT_NO_FATAL_FAILURE(
      e.Start({"--listen", "unix:" + tmp_.path() + "/hup2.sock", "--root", root_}));
  ASSERT_EQ(::kill(e.pid(), SIGHUP), 0);
  ASSERT_TRUE(e.WaitForLog("SIGHUP ignored")) << e.log();
  EXPECT_TRUE(Client::Create(e.At(""))->List().ok());
}

// The post-restore guest options refuse bad input with a message naming it, and
// --reload-token never signals an init that is not envd (here: the host's).
TEST_F(EnvdTest, GuestSeedAndReloadOptionsRefuseBadInput) {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), ENVD_BINARY);
    auto r = RunCommand(args, 10s);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : CommandOutput{};
  };
  auto bad_digit = run({"--seed-rng", std::string(63, 'a') + "g"});
  EXPECT_EQ(bad_digit.status.code, 1);
  EXPECT_NE(bad_digit.err.find("'g' at offset 63 is not a hex digit"), std::string::npos)
      << bad_digit.err;
  auto short_seed = run({"--seed-rng", "abcd"});
  EXPECT_EQ(short_seed.status.code, 1);
  EXPECT_NE(short_seed.err.find("32-512 bytes"), std::string::npos) << short_seed.err;
  auto odd = run({"--seed-rng", std::string(65, 'a')});
  EXPECT_EQ(odd.status.code, 1);
  EXPECT_NE(odd.err.find("got 65 digits"), std::string::npos) << odd.err;
  auto reload = run({"--reload-token"});
  EXPECT_EQ(reload.status.code, 1);
  EXPECT_NE(reload.err.find("is not this envd"), std::string::npos) << reload.err;
}

TEST_F(EnvdTest, ServesOnTcpToo) {
  ASSERT_NO_FATAL_FAILURE(StartEnvd("", "tcp:127.0.0.1:0"));
  EXPECT_EQ(envd_->endpoint().rfind("127.0.0.1:", 0), 0u) << envd_->endpoint();
  std::string out;
  auto r = Sh("echo over tcp", &out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(out, "over tcp\n");
  ASSERT_TRUE(client_->WriteFile("t.txt", "tcp").ok());
  EXPECT_EQ(*client_->ReadFile("t.txt"), "tcp");
}

// --relay-from: a second socket relayed to envd's own (the gVisor tier's channel; relay.h).
// Large bodies both ways, a streamed command, and the relay's socket file gone after exit.
TEST_F(EnvdTest, RelaySocketServesTheSameEnvd) {
  client_.reset();
  envd_.reset();
  const std::string relay = tmp_.path() + "/relay.sock";
  EnvdOptions o;
  o.root = root_;
  o.listen = "unix:" + tmp_.path() + "/envd3.sock";
  o.extra_args = {"--relay-from", relay};
  envd_ = std::make_unique<EnvdProcess>();
  ASSERT_NO_FATAL_FAILURE(envd_->Start(o));
  auto c = Client::Create({.unix_socket = relay});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->Health().ok());
  std::string out;
  auto r = c->Run(Command{.cmd = "/bin/sh", .args = {"-c", "head -c 300000 /dev/zero | wc -c"}},
                  {.on_stdout = [&](std::string_view s) { out.append(s); }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(out, "300000\n");
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4097) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(c->WriteFile("big.bin", big).ok());
  auto back = c->ReadFile("big.bin");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == big);
  envd_->Stop();
  EXPECT_NE(::access(relay.c_str(), F_OK), 0) << "relay socket left after exit";
}

}  // namespace
}  // namespace hangar::envd
