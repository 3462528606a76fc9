// The gVisor driver end to end with the real runsc: envd as the init inside the sentry, exec
// and files through hangar::envd::Client, isolation probed from inside, and cleanup checked on
// every path — no runsc container, sandbox or gofer process, mount, loop device, cgroup or
// state directory left behind. Skipped (saying why) without root, runsc or busybox-static.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "hangar/gvisor/gvisor_driver.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/node/testing/host_checks.h"
#include "hangar/storage/template_store.h"

namespace hangar::gvisor {
namespace {

using namespace std::chrono_literals;
using node::SandboxPtr;
using node::SandboxSpec;
using node::SandboxState;

int CountLoopDevicesUnder(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/block", ec)) {
    if (e.path().filename().string().rfind("loop", 0) != 0) continue;
    auto backing = ReadFile((e.path() / "loop" / "backing_file").string());
    if (backing.ok() && backing->rfind(dir, 0) == 0) ++n;
  }
  return n;
}

using node::testing::CgroupDirsOf;
using node::testing::ProcessesMentioning;

struct Ran {
  int code = -1;
  std::string out;
};

class GvisorDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (runsc needs real root, mounts, cgroups)";
    if (!node::testing::HaveBusybox()) GTEST_SKIP() << "needs busybox-static";
    GvisorDriverOptions probe;
    probe.envd_path = ENVD_BINARY;
    if (Status st = GvisorAvailable(probe); !st.ok()) GTEST_SKIP() << st.ToString();
    auto t = TempDir::Make("hgv-", "/var/tmp");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
    data_ = tmp_.path() + "/d";
    ASSERT_TRUE(MakeDirs(data_).ok());
    storage::TemplateStoreOptions so;
    so.root = tmp_.path() + "/templates";
    auto store = storage::TemplateStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_.emplace(std::move(*store));
    auto info = node::testing::ImportBusyboxTemplate(*store_, tmp_.path());
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    cgroup_root_ = "hgvt" + std::to_string(::getpid());
  }

  void TearDown() override {
    driver_.reset();
    if (tmp_.path().empty()) return;
    EXPECT_EQ(CountLoopDevicesUnder(data_), 0) << "leaked loop devices";
    EXPECT_TRUE(CgroupDirsOf(cgroup_root_).empty())
        << "leaked cgroup " << CgroupDirsOf(cgroup_root_).front();
    EXPECT_TRUE(ProcessesMentioning(data_ + "/runsc").empty()) << "leaked runsc processes";
    auto mounts = MountsUnder(tmp_.path());
    ASSERT_TRUE(mounts.ok());
    EXPECT_TRUE(mounts->empty()) << "leaked mount: " << mounts->front();
    std::error_code ec;
    for (const auto& h : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
      if (!h.is_symlink(ec)) ::rmdir((h.path() / cgroup_root_).c_str());
    }
    tmp_ = TempDir();
  }

  GvisorDriverOptions Options() {
    GvisorDriverOptions o;
    o.data_dir = data_;
    o.templates = &*store_;
    o.envd_path = ENVD_BINARY;
    o.envd_args = {"--default-user", "user"};
    o.cgroup_root = cgroup_root_;
    o.disk_pool.targets = {{64, 1}};
    return o;
  }

  void OpenDriver() {
    auto d = NewGvisorDriver(Options());
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    driver_ = std::move(*d);
  }

  SandboxSpec Spec(std::string id) {
    SandboxSpec s;
    s.id = std::move(id);
    s.template_name = "busybox";
    s.resources.disk_mb = 64;
    s.resources.memory_mb = 256;
    s.resources.pids = 256;
    s.env = {{"HELLO", "gvisor"}};
    return s;
  }

  Ran Exec(node::Sandbox& sb, const std::string& script, const std::string& user = "root") {
    Ran r;
    auto c = envd::Client::Create({.unix_socket = sb.Envd().unix_socket});
    if (!c.ok()) {
      r.out = c.status().ToString();
      return r;
    }
    envd::Command cmd{.cmd = "/bin/sh", .args = {"-c", script}, .user = user};
    cmd.timeout = 30s;
    auto done = c->Run(cmd, {.on_stdout = [&](std::string_view s) { r.out += s; },
                             .on_stderr = [&](std::string_view s) { r.out += s; }});
    if (!done.ok()) {
      r.out += done.status().ToString();
      return r;
    }
    r.code = done->exit_code;
    return r;
  }

  TempDir tmp_;
  std::string data_;
  std::string cgroup_root_;
  std::optional<storage::TemplateStore> store_;
  node::DriverPtr driver_;
};

TEST_F(GvisorDriverTest, AvailableAndPlatform) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver());
  EXPECT_TRUE(driver_->Available().ok());
  EXPECT_EQ(driver_->Name(), "gvisor");
  const std::string p = GvisorPlatform(*driver_);
  EXPECT_TRUE(p == "systrap" || p == "ptrace") << p;
  GvisorDriverOptions missing = Options();
  missing.runsc_path = "/nonexistent/runsc";
  Status st = GvisorAvailable(missing);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("runsc not found"), std::string::npos) << st.ToString();
  auto bad = ChoosePlatform(GvisorRunscPrefix(*driver_)[0], "nosuchplatform");
  EXPECT_EQ(bad.status().code(), Code::kFailedPrecondition);
}

TEST_F(GvisorDriverTest, LifecycleEnvdCommandsFilesPauseUsageDestroy) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver());
  auto created = driver_->Create(Spec("life1"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  node::Sandbox& sb = **created;
  node::SandboxInfo info = sb.Info();
  EXPECT_EQ(info.driver, "gvisor");
  EXPECT_EQ(info.state, SandboxState::kRunning);
  EXPECT_GT(info.init_pid, 0);
  EXPECT_FALSE(info.disk_device.empty());
  EXPECT_EQ(sb.Envd().unix_socket, data_ + "/sb/life1/run/envd.sock");

  // A command through envd: environment, hostname, default user.
  Ran r = Exec(sb, "echo $HELLO; hostname; id -u");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "gvisor\nlife1\n0\n");
  r = Exec(sb, "id -u; echo $HOME", "user");
  EXPECT_EQ(r.out, "1000\n/home/user\n");

  // Files through envd land on the sandbox's own disk (the overlay's upper layer).
  auto c = envd::Client::Create({.unix_socket = sb.Envd().unix_socket});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->WriteFile("/home/user/note.txt", "written via envd", "user").ok());
  auto back = c->ReadFile("/home/user/note.txt", "user");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, "written via envd");
  EXPECT_EQ(*ReadFile(data_ + "/sb/life1/disk/upper/home/user/note.txt"), "written via envd");
  r = Exec(sb, "cat /home/user/note.txt", "user");
  EXPECT_EQ(r.out, "written via envd");

  // Pause: runsc reports it, nothing runs; Resume: commands run again.
  ASSERT_TRUE(sb.Pause().ok());
  EXPECT_EQ(sb.Info().state, SandboxState::kPaused);
  EXPECT_EQ(sb.Pause().code(), Code::kFailedPrecondition);
  std::vector<std::string> argv = GvisorRunscPrefix(*driver_);
  argv.insert(argv.end(), {"state", "life1"});
  auto state = RunChecked(argv);
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_NE(state->find("\"paused\""), std::string::npos) << *state;
  ASSERT_TRUE(sb.Resume().ok());
  r = Exec(sb, "echo back");
  EXPECT_EQ(r.out, "back\n");

  // Usage from the cgroup and the disk.
  auto u = sb.GetUsage();
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_GT(u->memory_bytes, 0u);
  EXPECT_GT(u->pids, 0u);
  EXPECT_GT(u->cpu_usec, 0u);
  EXPECT_GT(u->disk_total_bytes, 32u << 20);
  EXPECT_GT(u->disk_used_bytes, 0u);

  ASSERT_TRUE(sb.Destroy().ok());
  EXPECT_TRUE(sb.Destroy().ok());  // idempotent
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sb/life1"));
  EXPECT_TRUE(ProcessesMentioning(data_ + "/runsc").empty());
  EXPECT_TRUE(CgroupDirsOf(cgroup_root_).empty());
}
// A non-loopback IPv4 address of the host, "" if none.
std::string HostAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    auto* in = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    if (std::string(buf).rfind("127.", 0) != 0) {
      out = buf;
      break;
    }
  }
  ::freeifaddrs(list);
  return out;
}

// The tier's isolation promises, attacked from inside (the shared tier's battery runs its
// static probe as the init, which this tier replaces with envd; these are the probes that
// apply to a gVisor sandbox, run as root inside through envd).
TEST_F(GvisorDriverTest, IsolationFromInside) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver());
  auto created = driver_->Create(Spec("iso1"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  node::Sandbox& sb = **created;

  // The kernel seen inside is gVisor's, not the host's.
  utsname host{};
  ASSERT_EQ(::uname(&host), 0);
  Ran r = Exec(sb, "busybox uname -r");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out, std::string(host.release) + "\n");
  r = Exec(sb, "busybox dmesg");
  EXPECT_NE(r.out.find("gVisor"), std::string::npos) << r.out;

  // No network: only loopback exists, and neither the host's loopback nor its address is
  // reachable (a host listener sees no connection).
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  UniqueFd listener(lfd);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  r = Exec(sb,
           "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | "
           "awk -F: '{print $1}' | tr -d ' '");
  EXPECT_EQ(r.out.find("eth"), std::string::npos) << r.out;
  r = Exec(sb, "echo x | busybox nc -w 2 127.0.0.1 " + port + " && echo CONNECTED");
  EXPECT_EQ(r.out.find("CONNECTED"), std::string::npos) << r.out;
  const std::string host_ip = HostAddress();
  if (!host_ip.empty()) {
    r = Exec(sb, "echo x | busybox nc -w 2 " + host_ip + " " + port + " && echo CONNECTED");
    EXPECT_EQ(r.out.find("CONNECTED"), std::string::npos) << r.out;
  }
  r = Exec(sb, "echo x | busybox nc -w 2 169.254.169.254 80 && echo CONNECTED");
  EXPECT_EQ(r.out.find("CONNECTED"), std::string::npos) << r.out;
  // The control: the same tool does connect to a listener on the sandbox's own loopback, so
  // the refusals above are the network's, not a broken nc.
  r = Exec(sb,
           "busybox nc -l -p 7777 > /tmp/got & sleep 1; "
           "echo hi | busybox nc -w 2 127.0.0.1 7777 && echo CONNECTED; sleep 0.3; cat /tmp/got");
  EXPECT_EQ(r.out, "CONNECTED\nhi\n");
  pollfd pfd{lfd, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "the host listener got a connection from the sandbox";

  // Root inside cannot mount (no CAP_SYS_ADMIN), and the host's processes are not visible.
  r = Exec(sb, "mkdir -p /mnt && mount -t tmpfs none /mnt && echo MOUNTED");
  EXPECT_EQ(r.out.find("MOUNTED"), std::string::npos) << r.out;
  r = Exec(sb, "ls /proc/" + std::to_string(::getpid()) +
                   " >/dev/null 2>&1 && echo VISIBLE; "
                   "cat /proc/1/cmdline | tr '\\0' ' '");
  EXPECT_EQ(r.out.find("VISIBLE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/.hangar/init"), std::string::npos) << r.out;  // pid 1 is envd
  // The host's files outside the root are not there; the init binary cannot be changed.
  r = Exec(sb, "cat " + data_ +
                   "/sb/iso1/state.json && echo READ; "
                   "echo x > /.hangar/init && echo WROTE");
  EXPECT_EQ(r.out.find("READ"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("WROTE"), std::string::npos) << r.out;
  // The disk is the quota: writing past 64 MiB fails with ENOSPC inside.
  r = Exec(sb, "dd if=/dev/zero of=/home/user/big bs=1M count=100 conv=fsync 2>&1; echo rc=$?",
           "user");
  EXPECT_NE(r.out.find("No space left"), std::string::npos) << r.out;

  ASSERT_TRUE(sb.Destroy().ok());
}

TEST_F(GvisorDriverTest, StopKeepsTheDiskUntilDestroy) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver());
  auto created = driver_->Create(Spec("stop1"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  node::Sandbox& sb = **created;
  ASSERT_EQ(Exec(sb, "echo kept > /home/user/k", "user").code, 0);
  const pid_t pid = sb.Info().init_pid;
  ASSERT_TRUE(sb.Stop(2s).ok());
  EXPECT_EQ(sb.Info().state, SandboxState::kStopped);
  EXPECT_NE(::kill(pid, 0), 0);
  EXPECT_TRUE(ProcessesMentioning(data_ + "/runsc").empty());
  EXPECT_EQ(*ReadFile(data_ + "/sb/stop1/disk/upper/home/user/k"), "kept\n");
  ASSERT_TRUE(sb.Destroy().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sb/stop1"));
}

TEST_F(GvisorDriverTest, BadInputCreatesNothing) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver());
  auto bad_id = driver_->Create(Spec("Bad-Id"));
  EXPECT_EQ(bad_id.status().code(), Code::kInvalidArgument);
  SandboxSpec no_tmpl = Spec("notmpl");
  no_tmpl.template_name = "nosuch";
  EXPECT_EQ(driver_->Create(no_tmpl).status().code(), Code::kNotFound);
  SandboxSpec huge = Spec("huge");
  huge.resources.memory_mb = 1 << 30;
  auto h = driver_->Create(huge);
  EXPECT_EQ(h.status().code(), Code::kInvalidArgument);
  EXPECT_NE(h.status().message().find("memory_mb"), std::string::npos);
  SandboxSpec net = Spec("net1");
  net.network.egress_allow = {"example.com:443"};
  EXPECT_EQ(driver_->Create(net).status().code(), Code::kUnimplemented);
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_empty(data_ + "/sb", ec));

  // A second Create of a live id is already_exists and leaves the first alone.
  auto a = driver_->Create(Spec("dup1"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(driver_->Create(Spec("dup1")).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(Exec(**a, "echo alive").out, "alive\n");
  ASSERT_TRUE((*a)->Destroy().ok());
}

TEST_F(GvisorDriverTest, FailedStartLeavesNothing) {
  // An init that cannot run inside (dynamically linked; the template has no libc): runsc
  // fails to start it after the disk, overlay, cgroup and runsc state exist.
  GvisorDriverOptions o = Options();
  o.envd_path = "/bin/false";
  o.envd_ready_timeout = 5s;
  auto d = NewGvisorDriver(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  driver_ = std::move(*d);
  auto sb = driver_->Create(Spec("fail1"));
  ASSERT_FALSE(sb.ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sb/fail1"));
  EXPECT_TRUE(CgroupDirsOf(cgroup_root_).empty());
  EXPECT_TRUE(ProcessesMentioning(data_ + "/runsc").empty());
}

TEST_F(GvisorDriverTest, RestartAdoptsLiveAndCleansDead) {
  // A real crash: a forked child runs the driver, creates two sandboxes and is SIGKILLed.
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    OpenDriver();
    auto a = driver_->Create(Spec("live1"));
    auto b = driver_->Create(Spec("dead1"));
    int pids[2] = {a.ok() ? (*a)->Info().init_pid : -1, b.ok() ? (*b)->Info().init_pid : -1};
    (void)!::write(pipe->write.get(), pids, sizeof pids);
    ::pause();
    ::_exit(0);
  }
  pipe->write.Reset();
  int pids[2] = {-1, -1};
  ASSERT_EQ(::read(pipe->read.get(), pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
  ASSERT_EQ(::kill(agent, SIGKILL), 0);
  ASSERT_EQ(::waitpid(agent, nullptr, 0), agent);
  ASSERT_GT(pids[0], 0);
  ASSERT_GT(pids[1], 0);
  // One sandbox dies while no agent runs (its gofer is left behind).
  ASSERT_EQ(::kill(pids[1], SIGKILL), 0);
  for (int i = 0; i < 500 && ::kill(pids[1], 0) == 0; ++i) std::this_thread::sleep_for(10ms);

  ASSERT_NO_FATAL_FAILURE(OpenDriver());
  auto rec = driver_->Recover();
  ASSERT_TRUE(rec.ok());
  auto& [report, adopted] = *rec;
  EXPECT_EQ(report.adopted, std::vector<std::string>{"live1"});
  EXPECT_EQ(report.destroyed, std::vector<std::string>{"dead1"});
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0]->Info().init_pid, pids[0]);
  EXPECT_EQ(Exec(*adopted[0], "echo still here").out, "still here\n");
  EXPECT_TRUE(adopted[0]->GetUsage().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sb/dead1"));
  ASSERT_TRUE(adopted[0]->Destroy().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sb/live1"));
}

}  // namespace
}  // namespace hangar::gvisor
