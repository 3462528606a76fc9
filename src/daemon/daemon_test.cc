// hangard as a library (Daemon) and as a process: start-up errors leave nothing behind, the
// CLI reaches it, SIGTERM stops it gracefully with exit 0.
#include "daemon.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data_dir.h"
#include "hangar/api/client.h"
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "options.h"

namespace hangar::daemon {
namespace {

bool Exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

// These tests exercise the daemon shell (config, data dir, HTTP, signals); they run the control
// role, which needs no root. The node role is tested with real sandboxes elsewhere.
Config MakeConfig(std::map<std::string, std::string> flags) {
  flags.emplace("role", "control");
  ConfigInputs in;
  in.flags = std::move(flags);
  auto c = ResolveConfig(DaemonSchema(), in);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *c;
}

TEST(ListenAddressTest, Parses) {
  auto a = ParseListenAddress("127.0.0.1:7070");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 7070);
  auto v6 = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_FALSE(ParseListenAddress("7070").ok());
  EXPECT_FALSE(ParseListenAddress("host:99999").ok());
  EXPECT_FALSE(ParseListenAddress("host:http").ok());
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::Make("hangar-daemon-test-");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
  }
  TempDir tmp_;
};

TEST_F(DaemonTest, ServesHealthAndVersion) {
  std::string data = tmp_.path() + "/data";
  auto d = Daemon::Start(
      MakeConfig({{"listen", "127.0.0.1:0"}, {"data_dir", data}, {"http.access_log", "false"}}));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(Exists(data + "/hangard.pid"));
  auto client = api::HttpClient::Create((*d)->endpoint());
  ASSERT_TRUE(client.ok());
  auto h = client->CallJson("GET", "/healthz");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ((*h)["status"], "ok");
  auto v = client->CallJson("GET", "/v1/version");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)["version"], HANGAR_VERSION);
  EXPECT_EQ((*v)["role"], "control");
  EXPECT_GE((*v)["uptime_s"].get<double>(), 0.0);
  EXPECT_TRUE((*d)->Stop(std::chrono::seconds(2)).ok());
}

TEST_F(DaemonTest, SecondDaemonOnSameDataDirIsRefused) {
  std::string data = tmp_.path() + "/data";
  auto a = Daemon::Start(MakeConfig({{"listen", "127.0.0.1:0"}, {"data_dir", data}}));
  ASSERT_TRUE(a.ok());
  auto b = Daemon::Start(MakeConfig({{"listen", "127.0.0.1:0"}, {"data_dir", data}}));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(
      b.status().message().find("in use by another hangard (pid " + std::to_string(::getpid())),
      std::string::npos)
      << b.status().message();
  EXPECT_TRUE(Exists(data + "/hangard.pid")) << "the running daemon's pid file must stay";
}

TEST_F(DaemonTest, PortInUseFailsAndLeavesNothing) {
  // Hold a port with a plain listening socket.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  UniqueFd holder(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string listen = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  std::string data = tmp_.path() + "/new/data";
  auto d = Daemon::Start(MakeConfig({{"listen", listen}, {"data_dir", data}}));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("listen " + listen), std::string::npos)
      << d.status().message();
  EXPECT_NE(d.status().message().find("in use"), std::string::npos) << d.status().message();
  EXPECT_FALSE(Exists(tmp_.path() + "/new")) << "a failed start must remove what it created";
}

TEST_F(DaemonTest, UnwritableDataDirIsAnError) {
  std::string file = tmp_.path() + "/a-file";
  ASSERT_TRUE(WriteFile(file, "x").ok());
  auto d = Daemon::Start(MakeConfig({{"listen", "127.0.0.1:0"}, {"data_dir", file + "/data"}}));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find(file), std::string::npos) << d.status().message();
}

// --- the binaries ---

struct Proc {
  Child child;
  std::string first_line;
};

Result<CommandOutput> RunBin(std::vector<std::string> argv) { return RunCommand(argv); }

TEST_F(DaemonTest, BinaryRejectsUnknownFlagInOneLine) {
  auto r = RunBin({HANGARD_BIN, "--no-such-flag"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 2);
  EXPECT_EQ(r->err.rfind("hangard: error: ", 0), 0u) << r->err;
  EXPECT_NE(r->err.find("--no-such-flag"), std::string::npos) << r->err;
  EXPECT_EQ(r->err.find('\n'), r->err.size() - 1) << "one line: " << r->err;
}

TEST_F(DaemonTest, BinaryRejectsBadConfigFileWithPosition) {
  std::string cfg = tmp_.path() + "/hangar.yaml";
  ASSERT_TRUE(WriteFile(cfg, "listen: 127.0.0.1:0\nhttp:\n  treads: 4\n").ok());
  std::string data = tmp_.path() + "/data";
  auto r = RunBin({HANGARD_BIN, "--config", cfg, "--data-dir", data});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 2);
  EXPECT_EQ(r->err, "hangard: error: " + cfg + ":3:3: unknown key 'http.treads'\n");
  EXPECT_FALSE(Exists(data));

  auto missing = RunBin({HANGARD_BIN, "--config", tmp_.path() + "/nope.yaml"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status.code, 2);
  EXPECT_NE(missing->err.find("nope.yaml"), std::string::npos);
}

TEST_F(DaemonTest, PrintConfigShowsPrecedence) {
  std::string cfg = tmp_.path() + "/hangar.yaml";
  ASSERT_TRUE(WriteFile(cfg, "http:\n  threads: 3\nlog:\n  level: warn\n").ok());
  SpawnOptions opt;
  opt.env =
      std::map<std::string, std::string>{{"HANGAR_CONFIG", cfg}, {"HANGAR_LOG_LEVEL", "debug"}};
  opt.capture_stdout = true;
  auto c = Child::Spawn({HANGARD_BIN, "--print-config", "--role", "node"}, opt);
  ASSERT_TRUE(c.ok());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(c->stdout_fd().get(), buf, sizeof buf)) > 0) out.append(buf, n);
  EXPECT_TRUE(c->Wait()->success());
  EXPECT_NE(out.find("http.threads = 3 (file)"), std::string::npos) << out;
  EXPECT_NE(out.find("log.level = debug (env)"), std::string::npos) << out;
  EXPECT_NE(out.find("role = node (flag)"), std::string::npos) << out;
  EXPECT_NE(out.find("listen = 127.0.0.1:7070 (default)"), std::string::npos) << out;
}

// Starts hangard on a free port and returns it with its first stdout line.
Result<Proc> StartHangard(const std::string& data) {
  SpawnOptions opt;
  opt.capture_stdout = true;
  opt.death_signal = SIGKILL;
  HANGAR_ASSIGN_OR_RETURN(Child c, Child::Spawn({HANGARD_BIN, "--role", "control", "--listen",
                                                 "127.0.0.1:0", "--data-dir", data},
                                                opt));
  std::string line;
  char ch;
  while (::read(c.stdout_fd().get(), &ch, 1) == 1 && ch != '\n') line += ch;
  return Proc{std::move(c), line};
}

TEST_F(DaemonTest, CliStatusReachesDaemonAndSigtermExitsZero) {
  std::string data = tmp_.path() + "/data";
  auto p = StartHangard(data);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto pos = p->first_line.find("http://");
  ASSERT_NE(pos, std::string::npos) << p->first_line;
  std::string url = p->first_line.substr(pos);

  auto text = RunBin({HANGAR_CLI_BIN, "--server", url, "status"});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->status.code, 0) << text->err;
  EXPECT_NE(text->out.find("role:    control"), std::string::npos) << text->out;
  EXPECT_NE(text->out.find("health:  ok"), std::string::npos) << text->out;

  auto js = RunBin({HANGAR_CLI_BIN, "--server", url, "--json", "status"});
  ASSERT_TRUE(js.ok());
  ASSERT_EQ(js->status.code, 0);
  auto j = nlohmann::json::parse(js->out);
  EXPECT_EQ(j["health"], "ok");
  EXPECT_EQ(j["version"], HANGAR_VERSION);

  ASSERT_TRUE(p->child.Signal(SIGTERM).ok());
  auto st = p->child.WaitFor(std::chrono::seconds(10));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->success()) << st->ToString();
  EXPECT_FALSE(Exists(data + "/hangard.pid")) << "clean exit removes the pid file";

  auto after = RunBin({HANGAR_CLI_BIN, "--server", url, "status"});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status.code, 1);
}

TEST_F(DaemonTest, CliRejectsUnknownFlag) {
  auto r = RunBin({HANGAR_CLI_BIN, "--bogus", "status"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 2);
  EXPECT_EQ(r->err.rfind("hangar: error: ", 0), 0u) << r->err;
}

}  // namespace
}  // namespace hangar::daemon
