// The microVM driver with real QEMU VMs (TCG on this kind of machine): create -> envd answers
// over the port forward -> commands and files -> pause/resume -> usage -> stop/destroy ->
// nothing left; recovery after a simulated agent crash; bad input; the guest's network is cut
// off; snapshot restore; the warm pool (claims are fresh sandboxes, refill, nothing left after
// destroy, shutdown or a crash). Needs root, busybox-static, QEMU and the guest kernel cache
// (scripts/fetch-guest-kernel.sh); skips saying which is missing.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "hangar/microvm/microvm_driver.h"
#include "hangar/microvm/qmp.h"
#include "hangar/node/cgroup.h"
#include "hangar/storage/template_store.h"

namespace hangar::microvm {
namespace {

constexpr char kKernelDir[] = "/var/cache/hangar/guest-kernel";

// A busybox template with the applets these tests use inside the guest.
Result<storage::TemplateInfo> ImportTemplate(storage::TemplateStore& store,
                                             const std::string& work) {
  const std::string root = work + "/tmpl";
  for (const char* d : {"/bin", "/etc", "/home/user", "/tmp", "/proc", "/dev", "/root", "/sys"}) {
    HANGAR_TRY(MakeDirs(root + d));
  }
  HANGAR_TRY(RunChecked({"cp", "/bin/busybox", root + "/bin/busybox"}).status());
  for (const char* a :
       {"sh",    "cat", "echo", "ls",   "id",   "hostname", "df", "nc",    "ip", "sync",
        "sleep", "awk", "date", "true", "grep", "dd",       "wc", "uname", "tr", "od"}) {
    const std::string link = root + "/bin/" + a;
    if (::symlink("busybox", link.c_str()) != 0) return Status::FromErrno(errno, "symlink");
  }
  HANGAR_TRY(WriteFile(root + "/etc/passwd",
                       "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"));
  HANGAR_TRY(WriteFile(root + "/etc/group", "root:x:0:\nuser:x:1000:\n"));
  if (::chown((root + "/home/user").c_str(), 1000, 1000) != 0) {
    return Status::FromErrno(errno, "chown");
  }
  const std::string tar = work + "/tmpl.tar";
  HANGAR_TRY(RunChecked({"tar", "-C", root, "-cf", tar, "."}).status());
  return store.ImportTarball("bbvm", tar);
}

int CountQemuFor(const std::string& dir) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    auto cmd = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
    if (cmd.ok() && cmd->find("qemu-system") != std::string::npos &&
        cmd->find(dir) != std::string::npos) {
      ++n;
    }
  }
  if (d) ::closedir(d);
  return n;
}

// Running (a zombie waiting for its reaper — init, for a daemonized VMM — is not).
bool Alive(int pid) {
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return false;
  size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] != 'Z';
}

int Entries(const std::string& dir) {
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] != '.') ++n;
  }
  if (d) ::closedir(d);
  return n;
}

// Whether something accepts TCP connections on 127.0.0.1:port.
bool Listening(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  UniqueFd s(fd);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

int PortOf(const node::Sandbox& sb) {
  const std::string tcp = sb.Envd().tcp;
  return std::atoi(tcp.substr(tcp.rfind(':') + 1).c_str());
}

// Names in `dir` that start with `prefix`.
std::vector<std::string> NamesWith(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (std::string_view(e->d_name).rfind(prefix, 0) == 0) out.push_back(e->d_name);
  }
  if (d) ::closedir(d);
  return out;
}

// The host ports of every QEMU of `dir`'s VMs (from their QMP sockets: `info usernet`).
std::vector<int> PoolPorts(const std::string& sandboxes_dir) {
  std::vector<int> ports;
  for (const std::string& n : NamesWith(sandboxes_dir, "pool-")) {
    auto q = QmpClient::Connect(sandboxes_dir + "/" + n + "/qmp.sock");
    if (!q.ok()) continue;
    auto text = q->Human("info usernet");
    if (text.ok()) ports.push_back(ParseHostForwardPort(*text));
  }
  return ports;
}

struct Ran {
  int code = -1;
  std::string out, err;
};

Ran Sh(const node::Sandbox& sb, const std::string& script, const std::string& user = "root") {
  node::EnvdEndpoint ep = sb.Envd();
  auto c = envd::Client::Create({ep.unix_socket, ep.tcp, ep.access_token},
                                {.timeout = std::chrono::seconds(60)});
  Ran r;
  if (!c.ok()) {
    r.err = c.status().ToString();
    return r;
  }
  auto done = c->Run(
      {.cmd = "/bin/sh", .args = {"-c", script}, .user = user, .timeout = std::chrono::seconds(60)},
      {.on_stdout = [&r](std::string_view s) { r.out += s; },
       .on_stderr = [&r](std::string_view s) { r.err += s; }});
  if (!done.ok()) {
    r.err += done.status().ToString();
    return r;
  }
  r.code = done->exit_code;
  return r;
}

// 32 bytes from the guest kernel's CRNG (hex), as the sandbox's first programs would get them.
std::string GuestRandom(const node::Sandbox& sb) {
  Ran r = Sh(sb, "dd if=/dev/urandom bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'");
  return r.code == 0 ? r.out : "failed: " + r.err;
}

// What envd of `sb` answers to a call authenticated with `token`.
Code EnvdAnswer(const node::Sandbox& sb, const std::string& token) {
  auto c = envd::Client::Create({"", sb.Envd().tcp, token}, {.timeout = std::chrono::seconds(20)});
  if (!c.ok()) return c.status().code();
  return c->List().status().code();
}

// Two sandboxes restored from one snapshot: their own tokens (each refused by the other's
// envd, the snapshot's refused by both, state.json holding the new one) and their own RNG
// state (the first random bytes differ).
void ExpectOwnTokenAndRng(const std::string& sandboxes_dir, const std::string& snap_token,
                          const node::Sandbox& a, const node::Sandbox& b) {
  const std::string rand_a = GuestRandom(a), rand_b = GuestRandom(b);
  EXPECT_EQ(rand_a.size(), 64u) << rand_a;
  EXPECT_EQ(rand_b.size(), 64u) << rand_b;
  EXPECT_NE(rand_a, rand_b) << "two restored VMs drew the same random bytes";
  const std::string ta = a.Envd().access_token, tb = b.Envd().access_token;
  EXPECT_EQ(ta.size(), 32u);
  EXPECT_NE(ta, tb);
  EXPECT_NE(ta, snap_token);
  EXPECT_NE(tb, snap_token);
  EXPECT_EQ(EnvdAnswer(a, ta), Code::kOk);
  EXPECT_EQ(EnvdAnswer(b, tb), Code::kOk);
  EXPECT_EQ(EnvdAnswer(a, tb), Code::kUnauthenticated);
  EXPECT_EQ(EnvdAnswer(b, ta), Code::kUnauthenticated);
  EXPECT_EQ(EnvdAnswer(a, snap_token), Code::kUnauthenticated);
  EXPECT_EQ(EnvdAnswer(b, snap_token), Code::kUnauthenticated);
  for (const node::Sandbox* sb : {&a, &b}) {
    auto state = ReadFile(sandboxes_dir + "/" + sb->Info().id + "/state.json");
    ASSERT_TRUE(state.ok()) << state.status().ToString();
    EXPECT_NE(state->find("\"" + sb->Envd().access_token + "\""), std::string::npos)
        << "state.json does not record the sandbox's token";
  }
}

// The envd token saved with the (only) snapshot under `data_dir`.
std::string SnapshotToken(const std::string& data_dir) {
  for (const std::string& n : NamesWith(data_dir + "/snapshots", "bbvm-")) {
    if (auto t = ReadFile(data_dir + "/snapshots/" + n + "/token"); t.ok()) return *t;
  }
  return "";
}

class MicroVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) {
      skip_ = "needs root (cgroups)";
      return;
    }
    if (::access("/bin/busybox", X_OK) != 0) {
      skip_ = "needs busybox-static";
      return;
    }
    MicroVmDriverOptions probe;
    probe.kernel_dir = kKernelDir;
    probe.envd_path = ENVD_BINARY;
    if (Status st = QemuAvailable(probe); !st.ok()) {
      skip_ = "microvm driver unavailable here: " + st.ToString();
      return;
    }
    auto t = TempDir::Make("hangar-microvm-test-", "/var/tmp");
    ASSERT_TRUE(t.ok());
    tmp_ = new TempDir(std::move(*t));
    storage::TemplateStoreOptions so;
    so.root = tmp_->path() + "/templates";
    auto store = storage::TemplateStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = new storage::TemplateStore(std::move(*store));
    auto info = ImportTemplate(*store_, tmp_->path());
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    auto layout = node::DetectCgroupLayout();
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    node::CgroupOptions co;
    co.root = "hangar-microvm-test-" + std::to_string(::getpid());
    auto cg = node::MakeCgroupBackend(*layout, co);
    ASSERT_TRUE(cg.ok()) << cg.status().ToString();
    cgroups_ = cg->release();
  }
  static void TearDownTestSuite() {
    if (cgroups_) {
      EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty()) << "leaked cgroups";
      (void)cgroups_->RemoveRoot();
      delete cgroups_;
      cgroups_ = nullptr;
    }
    if (tmp_) {
      EXPECT_EQ(CountQemuFor(tmp_->path()), 0) << "leaked QEMU processes";
      delete store_;
      delete tmp_;
      store_ = nullptr;
      tmp_ = nullptr;
    }
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(tmp_, nullptr);
  }

  MicroVmDriverOptions Options() const {
    MicroVmDriverOptions o;
    o.data_dir = tmp_->path() + "/data";
    o.templates = store_;
    o.cgroups = cgroups_;
    o.kernel_dir = kKernelDir;
    o.envd_path = ENVD_BINARY;
    return o;
  }
  node::DriverPtr Open() {
    auto d = NewMicroVmDriver(Options());
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? std::move(*d) : nullptr;
  }
  static node::SandboxSpec Spec(const std::string& id, int64_t disk_mb = 256) {
    node::SandboxSpec s;
    s.id = id;
    s.template_name = "bbvm";
    s.resources.cpu_millis = 1000;
    s.resources.memory_mb = 256;
    s.resources.disk_mb = disk_mb;
    return s;
  }
  std::string SandboxesDir() const { return tmp_->path() + "/data/sandboxes"; }

  static std::string skip_;
  static TempDir* tmp_;
  static storage::TemplateStore* store_;
  static node::CgroupBackend* cgroups_;
};
std::string MicroVmTest::skip_;
TempDir* MicroVmTest::tmp_ = nullptr;
storage::TemplateStore* MicroVmTest::store_ = nullptr;
node::CgroupBackend* MicroVmTest::cgroups_ = nullptr;

TEST_F(MicroVmTest, LifecycleRunsCommandsThroughEnvdAndLeavesNothing) {
  auto d = Open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->Available().ok());
  auto spec = Spec("vm1", 300);
  spec.env = {{"GREETING", "hello\nworld"}};
  auto sb = d->Create(spec);
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  node::SandboxInfo info = (*sb)->Info();
  EXPECT_EQ(info.driver, "microvm");
  EXPECT_EQ(info.state, node::SandboxState::kRunning);
  EXPECT_GT(info.init_pid, 0);
  node::EnvdEndpoint ep = (*sb)->Envd();
  EXPECT_TRUE(ep.unix_socket.empty());
  EXPECT_EQ(ep.tcp.rfind("127.0.0.1:", 0), 0u) << ep.tcp;
  EXPECT_EQ(ep.access_token.size(), 32u);

  // A command in the guest: its own kernel, hostname = id, env from the spec, the disk grown
  // to disk_mb, envd as PID 1.
  Ran r = Sh(**sb,
             "uname -r; hostname; echo \"$GREETING\"; df -m / | awk 'NR==2 {print $2}'; "
             "cat /proc/1/cmdline | tr '\\0' ' ' 2>/dev/null || cat /proc/1/comm");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("cloud-amd64"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nvm1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hello\nworld\n"), std::string::npos) << r.out;
  {
    // df's size (MB) is the grown filesystem: within 10% of disk_mb (ext4 overhead).
    std::istringstream in(r.out);
    std::string line;
    int size_mb = 0;
    for (int i = 0; i < 5 && std::getline(in, line); ++i) size_mb = std::atoi(line.c_str());
    EXPECT_GT(size_mb, 270) << r.out;
    EXPECT_LE(size_mb, 300) << r.out;
  }
  EXPECT_NE(r.out.find(".hangar/envd"), std::string::npos) << r.out;

  // The token is required; files go through envd.
  {
    auto bad = envd::Client::Create({"", ep.tcp, "wrong"});
    ASSERT_TRUE(bad.ok());
    EXPECT_EQ(bad->ReadFile("/etc/passwd", "root").status().code(), Code::kUnauthenticated);
    auto c = envd::Client::Create({"", ep.tcp, ep.access_token});
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->WriteFile("/home/user/note.txt", "from the host", "user").ok());
    auto back = c->ReadFile("/home/user/note.txt", "user");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, "from the host");
  }

  // Usage: the VMM's cgroup and QMP block stats.
  auto u = (*sb)->GetUsage();
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_GT(u->cpu_usec, 0u);
  EXPECT_GT(u->memory_bytes, 16u << 20);
  EXPECT_GT(u->io_read_ops, 0u);
  EXPECT_EQ(u->disk_total_bytes, 300u << 20);

  // Pause: the guest stops answering; Resume: it answers again.
  ASSERT_TRUE((*sb)->Pause().ok());
  EXPECT_EQ((*sb)->Info().state, node::SandboxState::kPaused);
  EXPECT_EQ((*sb)->Pause().code(), Code::kFailedPrecondition);
  {
    auto c = envd::Client::Create({"", ep.tcp, ep.access_token},
                                  {.timeout = std::chrono::milliseconds(1500)});
    ASSERT_TRUE(c.ok());
    EXPECT_FALSE(c->Health().ok()) << "a paused VM answered";
  }
  ASSERT_TRUE((*sb)->Resume().ok());
  r = Sh(**sb, "echo back");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "back\n");

  // Stop ends the VMM and keeps the disk; Destroy releases everything.
  const std::string dir = SandboxesDir() + "/vm1";
  ASSERT_TRUE((*sb)->Stop(std::chrono::milliseconds(2000)).ok());
  EXPECT_EQ((*sb)->Info().state, node::SandboxState::kStopped);
  EXPECT_FALSE(Alive(info.init_pid));
  EXPECT_EQ(::access((dir + "/disk.qcow2").c_str(), F_OK), 0);
  ASSERT_TRUE((*sb)->Destroy().ok());
  ASSERT_TRUE((*sb)->Destroy().ok());  // idempotent
  EXPECT_NE(::access(dir.c_str(), F_OK), 0);
  EXPECT_EQ(CountQemuFor(tmp_->path()), 0);
  auto groups = cgroups_->List();
  ASSERT_TRUE(groups.ok());
  EXPECT_TRUE(groups->empty());
}

TEST_F(MicroVmTest, BadInputIsAClearErrorAndCreatesNothing) {
  auto d = Open();
  ASSERT_NE(d, nullptr);
  auto small = d->Create(Spec("vm2", 64));
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), Code::kInvalidArgument);
  EXPECT_NE(small.status().message().find("disk_mb"), std::string::npos)
      << small.status().ToString();
  auto spec = Spec("vm3");
  spec.template_name = "nosuch";
  auto unknown = d->Create(spec);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  auto bad_id = d->Create(Spec("Bad-Id"));
  EXPECT_EQ(bad_id.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Entries(SandboxesDir()), 0);
  EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty());
  EXPECT_EQ(CountQemuFor(tmp_->path()), 0);
  // A VMM that fails to start: the error says so and the half-made sandbox is gone.
  {
    MicroVmDriverOptions o = Options();
    o.qemu_binary = "/bin/false";
    auto broken = NewMicroVmDriver(o);
    ASSERT_TRUE(broken.ok()) << broken.status().ToString();
    auto failed = (*broken)->Create(Spec("vm9"));
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("QEMU failed to start"), std::string::npos)
        << failed.status().ToString();
    EXPECT_EQ(Entries(SandboxesDir()), 0);
    EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty());
  }
  // A warm pool entry out of bounds: refused at open, nothing started.
  {
    MicroVmDriverOptions o = Options();
    o.warm_pool.entries = {{.template_name = "bbvm", .size = 1, .vcpus = 0}};
    auto bad = NewMicroVmDriver(o);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("warm pool entry 'bbvm'"), std::string::npos)
        << bad.status().ToString();
    EXPECT_EQ(Entries(SandboxesDir()), 0);
    EXPECT_EQ(CountQemuFor(tmp_->path()), 0);
  }
  // A driver that cannot run here says why.
  MicroVmDriverOptions o = Options();
  o.kernel_dir = tmp_->path() + "/no-kernel";
  auto none = NewMicroVmDriver(o);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("fetch-guest-kernel"), std::string::npos);
}

TEST_F(MicroVmTest, GuestReachesNeitherTheHostNorTheOutside) {
  // A listener on every host address: the guest must not reach it, whichever way it tries.
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(ls, 8), 0);
  socklen_t len = sizeof a;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  UniqueFd listener(ls);
  const int port = ntohs(a.sin_port);

  MicroVmDriverOptions o = Options();
  o.console_max_bytes = 64 << 10;
  o.console_check = std::chrono::milliseconds(50);
  auto opened = NewMicroVmDriver(o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  node::DriverPtr d = std::move(*opened);
  auto sb = d->Create(Spec("vm4"));
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  // A guest flooding its serial console (a host file, outside its disk quota) cannot fill the
  // node's disk: the file is cut back, saying so.
  Ran flood = Sh(**sb,
                 "busybox dd if=/dev/zero bs=4096 count=128 2>/dev/null | busybox tr '\\0' x "
                 "> /dev/ttyS0; echo flooded");
  EXPECT_EQ(flood.out, "flooded\n") << flood.err;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto console = ReadFile(SandboxesDir() + "/vm4/console.log");
  ASSERT_TRUE(console.ok()) << console.status().ToString();
  EXPECT_LT(console->size(), size_t{256} << 10);
  EXPECT_NE(console->find("[hangar: the console passed 65536 bytes"), std::string::npos);
  // As root in the guest, even with a default route added: slirp's restrict=on drops it.
  std::string script = fmt::format(
      "ip route add default via 10.0.2.2 dev eth0 2>/dev/null; "
      "for t in 10.0.2.2:{0} 10.0.2.3:53 10.0.2.2:22 1.1.1.1:80 8.8.8.8:53; do "
      "  if echo x | nc -w 3 ${{t%:*}} ${{t#*:}} >/dev/null 2>&1; then echo \"REACHED $t\"; fi; "
      "done; "
      // The control: the same probe reaches envd inside the guest, so a failure above is the
      // network's doing, not a missing or broken nc.
      "if echo x | nc -w 3 127.0.0.1 49983 >/dev/null 2>&1; then echo control-ok; fi",
      port);
  Ran r = Sh(**sb, script);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "control-ok\n");
  // Nothing arrived at the host listener.
  pollfd pfd{ls, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "the guest connected to the host";
  // The VMM dies on its own (crash, OOM kill): Destroy still releases everything.
  const int pid = (*sb)->Info().init_pid;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 500 && Alive(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE((*sb)->Destroy().ok());
  EXPECT_EQ(Entries(SandboxesDir()), 0);
  EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty());
}

TEST_F(MicroVmTest, RecoveryAdoptsLiveVmsAndDestroysLeftovers) {
  int qemu_pid = -1;
  {
    auto d = Open();
    ASSERT_NE(d, nullptr);
    auto sb = d->Create(Spec("vm5"));
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    qemu_pid = (*sb)->Info().init_pid;
    ASSERT_EQ(Sh(**sb, "echo kept > /root/mark").code, 0);
    // The agent "crashes": the objects go away, the VM does not.
    sb->release();
  }
  // A leftover of an interrupted create: a directory with no state.
  ASSERT_TRUE(MakeDirs(SandboxesDir() + "/vm6").ok());
  auto d = Open();
  ASSERT_NE(d, nullptr);
  auto rec = d->Recover();
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->first.adopted, std::vector<std::string>{"vm5"});
  EXPECT_EQ(rec->first.destroyed, std::vector<std::string>{"vm6"});
  ASSERT_EQ(rec->second.size(), 1u);
  node::Sandbox& sb = *rec->second[0];
  EXPECT_EQ(sb.Info().init_pid, qemu_pid);
  EXPECT_EQ(sb.Info().state, node::SandboxState::kRunning);
  Ran r = Sh(sb, "cat /root/mark");
  EXPECT_EQ(r.out, "kept\n") << r.err;
  ASSERT_TRUE(sb.Pause().ok());
  ASSERT_TRUE(sb.Destroy().ok());
  EXPECT_FALSE(Alive(qemu_pid));
  EXPECT_EQ(Entries(SandboxesDir()), 0);

  // A VM whose state is gone (killed mid-Create) is found by its command line and killed.
  {
    auto d2 = Open();
    auto sb2 = d2->Create(Spec("vm7"));
    ASSERT_TRUE(sb2.ok()) << sb2.status().ToString();
    qemu_pid = (*sb2)->Info().init_pid;
    sb2->release();
    ::unlink((SandboxesDir() + "/vm7/state.json").c_str());
  }
  auto d3 = Open();
  ASSERT_NE(d3, nullptr);
  auto rec3 = d3->Recover();
  ASSERT_TRUE(rec3.ok());
  EXPECT_EQ(rec3->first.destroyed, std::vector<std::string>{"vm7"});
  EXPECT_FALSE(Alive(qemu_pid));
  EXPECT_EQ(Entries(SandboxesDir()), 0);
  EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty());
}

TEST_F(MicroVmTest, SnapshotRestoreStartsIndependentSandboxes) {
  auto d = Open();
  ASSERT_NE(d, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  Status st = PrepareSnapshot(*d, "bbvm", 1, 256);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(PrepareSnapshot(*d, "bbvm", 1, 256).ok());  // cached
  EXPECT_EQ(PrepareSnapshot(*d, "nosuch", 1, 256).code(), Code::kNotFound);
  auto a = d->Create(Spec("vma", 200));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto t2 = std::chrono::steady_clock::now();
  auto b = d->Create(Spec("vmb", 400));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto ms = [](auto x) { return std::chrono::duration_cast<std::chrono::milliseconds>(x).count(); };
  std::printf("snapshot build %lld ms, restore %lld ms\n", static_cast<long long>(ms(t1 - t0)),
              static_cast<long long>(ms(t2 - t1)));
  const std::string snap_token = SnapshotToken(tmp_->path() + "/data");
  ASSERT_EQ(snap_token.size(), 32u);
  ASSERT_NO_FATAL_FAILURE(ExpectOwnTokenAndRng(SandboxesDir(), snap_token, **a, **b));
  ASSERT_EQ(Sh(**a, "echo only-a > /root/f; sync").code, 0);
  Ran ra = Sh(**a, "hostname; df -m / | awk 'NR==2 {print $2}'; cat /root/f");
  Ran rb = Sh(**b, "hostname; df -m / | awk 'NR==2 {print $2}'; cat /root/f 2>&1; date +%Y");
  EXPECT_EQ(ra.code, 0) << ra.err;
  EXPECT_EQ(ra.out.substr(0, 4), "vma\n") << ra.out;
  EXPECT_NE(ra.out.find("only-a"), std::string::npos);
  EXPECT_EQ(rb.out.substr(0, 4), "vmb\n") << rb.out;
  EXPECT_EQ(rb.out.find("only-a"), std::string::npos) << rb.out;
  {
    std::istringstream in(rb.out);
    std::string line;
    std::getline(in, line);
    std::getline(in, line);
    int size_mb = std::atoi(line.c_str());
    EXPECT_GT(size_mb, 360) << rb.out;
    EXPECT_LE(size_mb, 400) << rb.out;
  }
  ASSERT_TRUE((*a)->Destroy().ok());
  ASSERT_TRUE((*b)->Destroy().ok());
  EXPECT_EQ(Entries(SandboxesDir()), 0);
  EXPECT_EQ(CountQemuFor(tmp_->path()), 0);
}

// The warm pool: VMs restored and paused ahead; a matching Create claims one and gets a sandbox
// of its own (id, hostname, disk, limits); the pool refills; a spec with an env or another size
// takes the normal path; destroy and shutdown leave nothing (process, directory, cgroup, port).
TEST_F(MicroVmTest, WarmPoolClaimsAreFreshSandboxesAndNothingIsLeft) {
  MicroVmDriverOptions o = Options();
  o.warm_pool.entries = {
      {.template_name = "bbvm", .size = 2, .vcpus = 1, .memory_mb = 256, .disk_mb = 256}};
  o.warm_pool.refill_delay = std::chrono::milliseconds(0);
  auto opened = NewMicroVmDriver(o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  node::DriverPtr d = std::move(*opened);
  // A snapshot build (if an earlier test did not leave one) + two restores under TCG.
  ASSERT_TRUE(WaitForMicroVmWarmPool(*d, std::chrono::minutes(4)));
  node::WarmPoolStats s0 = GetMicroVmWarmPoolStats(*d);
  EXPECT_EQ(s0.ready, 2u);
  EXPECT_EQ(s0.created, 2u);
  EXPECT_EQ(s0.claimed, 0u);
  ASSERT_EQ(NamesWith(SandboxesDir(), "pool-").size(), 2u);
  std::vector<int> slot_ports = PoolPorts(SandboxesDir());
  ASSERT_EQ(slot_ports.size(), 2u);
  // Waiting slots are paused: no CPU under TCG, and envd does not answer.
  for (int port : slot_ports) {
    auto c = envd::Client::Create({"", fmt::format("127.0.0.1:{}", port), ""},
                                  {.timeout = std::chrono::milliseconds(1000)});
    ASSERT_TRUE(c.ok());
    EXPECT_FALSE(c->Health().ok()) << "a waiting pool VM answered";
  }

  auto t0 = std::chrono::steady_clock::now();
  auto spec_a = Spec("poola");
  spec_a.resources.read_iops = 150;
  spec_a.resources.cpu_millis = 700;  // still one vCPU: served by the pool
  auto a = d->Create(spec_a);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  Ran ra = Sh(**a,
              "hostname; df -m / | awk 'NR==2 {print $2}'; date +%Y; "
              "echo secret-a > /root/f; sync");
  auto t1 = std::chrono::steady_clock::now();
  std::printf("pooled create + first command %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count()));
  ASSERT_EQ(ra.code, 0) << ra.err;
  EXPECT_EQ(ra.out.substr(0, 6), "poola\n") << ra.out;
  {
    std::istringstream in(ra.out);
    std::string line;
    for (int i = 0; i < 2; ++i) std::getline(in, line);
    EXPECT_GT(std::atoi(line.c_str()), 220) << ra.out;  // grown to 256 MB ahead of the claim
    EXPECT_LE(std::atoi(line.c_str()), 256) << ra.out;
    std::getline(in, line);
    EXPECT_GE(std::atoi(line.c_str()), 2025) << "the clock was not set: " << ra.out;
  }
  node::WarmPoolStats s1 = GetMicroVmWarmPoolStats(*d);
  EXPECT_EQ(s1.claimed, 1u);
  EXPECT_EQ(s1.misses, 0u);
  // It is a sandbox like any other: its directory, its state, its own port; the I/O limit of the
  // spec applies (QEMU's throttling, set at claim).
  const std::string dir_a = SandboxesDir() + "/poola";
  EXPECT_EQ(::access((dir_a + "/state.json").c_str(), F_OK), 0);
  EXPECT_EQ((*a)->Info().id, "poola");
  EXPECT_EQ((*a)->Info().state, node::SandboxState::kRunning);
  {
    auto q = QmpClient::Connect(dir_a + "/qmp.sock");
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    auto blocks = q->Execute("query-block");
    ASSERT_TRUE(blocks.ok()) << blocks.status().ToString();
    int64_t iops_rd = -1;
    for (const auto& b : *blocks) {
      if (b.value("device", "") == "root") iops_rd = b["inserted"].value("iops_rd", int64_t{-1});
    }
    EXPECT_EQ(iops_rd, 150);
  }

  auto b = d->Create(Spec("poolb"));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  // Claimed slots, restored from one snapshot: tokens and RNG state of their own.
  ASSERT_NO_FATAL_FAILURE(
      ExpectOwnTokenAndRng(SandboxesDir(), SnapshotToken(tmp_->path() + "/data"), **a, **b));
  Ran rb = Sh(**b, "hostname; cat /root/f 2>&1; ls /root");
  ASSERT_EQ(rb.code, 0) << rb.err;
  EXPECT_EQ(rb.out.substr(0, 6), "poolb\n") << rb.out;
  EXPECT_EQ(rb.out.find("secret-a"), std::string::npos) << "a's file is visible in b: " << rb.out;
  EXPECT_NE(PortOf(**a), PortOf(**b));
  EXPECT_EQ(GetMicroVmWarmPoolStats(*d).claimed, 2u);
  // The id is taken: no second sandbox of that name, and the pool keeps its VM.
  EXPECT_EQ(d->Create(Spec("poola")).status().code(), Code::kAlreadyExists);
  // Another disk size is not served by the pool (a miss: the snapshot restore path).
  auto c = d->Create(Spec("poolc", 300));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  node::WarmPoolStats s2 = GetMicroVmWarmPoolStats(*d);
  EXPECT_EQ(s2.claimed, 2u);
  EXPECT_EQ(s2.misses, 1u);
  EXPECT_EQ(Sh(**c, "hostname").out, "poolc\n");
  // The environment of a pooled sandbox is that of a restored one (PATH and envd's per-user
  // variables: nothing left from the slot).
  Ran env_a = Sh(**a, "env | sort"), env_c = Sh(**c, "env | sort");
  EXPECT_EQ(env_a.code, 0) << env_a.err;
  EXPECT_EQ(env_a.out, env_c.out);
  EXPECT_EQ(env_a.out.find("pool-"), std::string::npos) << env_a.out;

  // The refill restores two more.
  ASSERT_TRUE(WaitForMicroVmWarmPool(*d, std::chrono::minutes(2)));
  node::WarmPoolStats s3 = GetMicroVmWarmPoolStats(*d);
  EXPECT_EQ(s3.ready, 2u);
  EXPECT_EQ(s3.created, 4u);
  EXPECT_EQ(s3.failures, 0u);

  // Destroy: nothing of the claimed VMs is left, not even their port.
  std::vector<int> ports = {PortOf(**a), PortOf(**b), PortOf(**c)};
  const int pid_a = (*a)->Info().init_pid;
  for (auto* sb : {&*a, &*b, &*c}) ASSERT_TRUE((*sb)->Destroy().ok());
  EXPECT_FALSE(Alive(pid_a));
  for (int port : ports) EXPECT_FALSE(Listening(port)) << "port " << port << " still open";
  EXPECT_EQ(NamesWith(SandboxesDir(), "pool").size(), 2u);  // only the new slots
  EXPECT_EQ(Entries(SandboxesDir()), 2);

  // Slots whose VMM died while waiting: the claim fails, that slot is destroyed and the create
  // takes the restore path.
  std::vector<int> left_ports = PoolPorts(SandboxesDir());
  ASSERT_EQ(left_ports.size(), 2u);
  for (const std::string& n : NamesWith(SandboxesDir(), "pool-")) {
    auto pid = ReadFile(SandboxesDir() + "/" + n + "/qemu.pid");
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    ASSERT_EQ(::kill(std::atoi(pid->c_str()), SIGKILL), 0);
  }
  auto e = d->Create(Spec("poold"));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(Sh(**e, "hostname").out, "poold\n");
  node::WarmPoolStats s4 = GetMicroVmWarmPoolStats(*d);
  EXPECT_EQ(s4.claimed, 2u);
  EXPECT_EQ(s4.failures, 1u);
  ASSERT_TRUE((*e)->Destroy().ok());

  // Shutdown: the unclaimed slots (dead or alive, and one the refill is restoring) go with the
  // driver.
  d.reset();
  EXPECT_EQ(CountQemuFor(tmp_->path()), 0);
  EXPECT_EQ(Entries(SandboxesDir()), 0);
  EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty());
  for (int port : left_ports) EXPECT_FALSE(Listening(port)) << "port " << port << " still open";
}

// After an agent crash with a pool up: the claimed sandbox (whose VMM still names its slot
// directory) is adopted; the unclaimed pool VMs are destroyed, never adopted or reported.
TEST_F(MicroVmTest, RecoveryDestroysWarmPoolVmsAndAdoptsClaimedOnes) {
  const std::string data = tmp_->path() + "/data";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The "agent": fills a pool of 2, claims one, then dies without any clean-up.
    MicroVmDriverOptions o = Options();
    o.warm_pool.entries = {
        {.template_name = "bbvm", .size = 2, .vcpus = 1, .memory_mb = 256, .disk_mb = 256}};
    o.warm_pool.refill_delay = std::chrono::minutes(10);  // no refill after the claim
    auto d = NewMicroVmDriver(o);
    if (!d.ok() || !WaitForMicroVmWarmPool(**d, std::chrono::minutes(4))) ::_exit(2);
    auto sb = (*d)->Create(Spec("kept"));
    if (!sb.ok() || GetMicroVmWarmPoolStats(**d).claimed != 1) ::_exit(3);
    if (Sh(**sb, "echo kept > /root/mark; sync").code != 0) ::_exit(4);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  std::vector<std::string> slots = NamesWith(SandboxesDir(), "pool-");
  ASSERT_EQ(slots.size(), 1u);
  std::vector<int> slot_ports = PoolPorts(SandboxesDir());
  ASSERT_EQ(slot_ports.size(), 1u);
  EXPECT_EQ(CountQemuFor(tmp_->path()), 2);

  auto d = Open();  // no pool configured now
  ASSERT_NE(d, nullptr);
  auto rec = d->Recover();
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->first.adopted, std::vector<std::string>{"kept"});
  EXPECT_TRUE(rec->first.destroyed.empty());
  EXPECT_EQ(NamesWith(SandboxesDir(), "pool-").size(), 0u);
  EXPECT_EQ(CountQemuFor(tmp_->path()), 1);
  EXPECT_FALSE(Listening(slot_ports[0]));
  ASSERT_EQ(rec->second.size(), 1u);
  node::Sandbox& kept = *rec->second[0];
  Ran r = Sh(kept, "hostname; cat /root/mark");
  EXPECT_EQ(r.out, "kept\nkept\n") << r.err;
  ASSERT_TRUE(kept.Destroy().ok());
  EXPECT_EQ(CountQemuFor(tmp_->path()), 0);
  EXPECT_EQ(Entries(SandboxesDir()), 0);
  EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty());
}

// A snapshot saved by another VM layout (device set, kernel, QEMU; here: named as before the
// layout key existed, or with another key) is removed at open, never restored; snapshots of
// the current layout stay.
TEST_F(MicroVmTest, SnapshotsOfAnotherVmLayoutAreRemovedAtOpen) {
  const std::string snaps = tmp_->path() + "/data/snapshots";
  ASSERT_TRUE(MakeDirs(snaps).ok());
  std::vector<std::string> current = NamesWith(snaps, "");
  std::erase_if(current, [](const std::string& n) { return n == "." || n == ".."; });
  for (const char* stale : {"bbvm-00112233aabbccdd-c1-m256", "bbvm-00112233aabbccdd-c1-m256-v0"}) {
    ASSERT_TRUE(MakeDirs(snaps + "/" + stale).ok());
    ASSERT_TRUE(WriteFile(snaps + "/" + stale + "/state.bin", "old").ok());
    ASSERT_TRUE(WriteFile(snaps + "/" + stale + "/token", "0123456789abcdef0123456789abcdef").ok());
  }
  auto d = Open();
  ASSERT_NE(d, nullptr);
  std::vector<std::string> left = NamesWith(snaps, "");
  std::erase_if(left, [](const std::string& n) { return n == "." || n == ".."; });
  std::sort(left.begin(), left.end());
  std::sort(current.begin(), current.end());
  EXPECT_EQ(left, current);
}

// A template whose name starts like the old prefix of unfinished builds ("snap") keeps its
// finished snapshot across a reopen: only "Building-…" directories are unfinished ones.
TEST_F(MicroVmTest, SnapshotOfATemplateNamedSnapSurvivesReopen) {
  auto tmpl = store_->ImportTarball("snapshots", tmp_->path() + "/tmpl.tar");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
  const std::string snaps = tmp_->path() + "/data/snapshots";
  auto d = Open();
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(PrepareSnapshot(*d, "snapshots", 1, 256).ok());
  std::vector<std::string> built = NamesWith(snaps, "snapshots-");
  ASSERT_EQ(built.size(), 1u);
  EXPECT_TRUE(NamesWith(snaps, "Building-").empty()) << "the build's directory was renamed";
  d.reset();
  ASSERT_TRUE(MakeDirs(snaps + "/Building-00aa11").ok());  // as a crash mid-build leaves it
  d = Open();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(NamesWith(snaps, "snapshots-"), built);
  EXPECT_TRUE(::access((snaps + "/" + built[0] + "/state.bin").c_str(), F_OK) == 0);
  EXPECT_TRUE(NamesWith(snaps, "Building-").empty()) << "an unfinished build survived Open";
  d.reset();
  ASSERT_TRUE(RemoveTree(snaps + "/" + built[0]).ok());
  ASSERT_TRUE(store_->Remove("snapshots").ok());
}

}  // namespace
}  // namespace hangar::microvm
