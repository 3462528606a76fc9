// The shared-tier driver end to end, with a real kernel: namespaces, id-mapped overlay on a
// loop disk, cgroup limits, seccomp. The sandbox's init here is busybox (static) running a
// script, whose output lands in the console log; envd-based exec is tested with envd.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/ns_driver.h"
#include "hangar/storage/template_store.h"

namespace hangar::node {
namespace {

using namespace std::chrono_literals;

// Loop devices backed by files below `dir` (other tests may attach their own meanwhile).
int CountLoopDevicesUnder(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::string name = e.path().filename();
    if (name.rfind("loop", 0) != 0) continue;
    auto backing = ReadFile((e.path() / "loop" / "backing_file").string());
    if (backing.ok() && backing->rfind(dir, 0) == 0) ++n;
  }
  return n;
}

class NsDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, mounts, cgroups, loop devices)";
    if (::access("/bin/busybox", X_OK) != 0) GTEST_SKIP() << "needs busybox-static";
    auto t = TempDir::Make("hangar-ns-test-", "/var/tmp");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
    data_ = tmp_.path() + "/data";
    ASSERT_TRUE(MakeDirs(data_).ok());
    ASSERT_NO_FATAL_FAILURE(BuildTemplate());
    auto layout = DetectCgroupLayout();
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    CgroupOptions co;
    co.root = "hangar-test-" + std::to_string(::getpid());
    auto cg = MakeCgroupBackend(*layout, co);
    ASSERT_TRUE(cg.ok()) << cg.status().ToString();
    cgroups_ = std::move(*cg);
    IdAllocatorOptions io;
    io.state_dir = data_ + "/ids";
    io.base = 1'000'000;
    io.slots = 16;
    auto ids = IdRangeAllocator::Open(io);
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    ids_ = std::move(*ids);
    auto policy = DefaultSeccompPolicy();
    ASSERT_TRUE(policy.ok());
    auto prog = CompileSeccompPolicy(*policy);
    ASSERT_TRUE(prog.ok());
    seccomp_ = std::move(*prog);
  }

  void TearDown() override {
    driver_.reset();
    if (!data_.empty()) {
      EXPECT_EQ(CountLoopDevicesUnder(data_), 0) << "leaked loop devices";
    }
    if (cgroups_) {
      EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty()) << "leaked cgroups";
      (void)cgroups_->RemoveRoot();
    }
    // Only this test's directory: other tests may run in parallel with mounts of their own.
    if (!IsSkipped() && !tmp_.path().empty()) {
      auto mounts = MountsUnder(tmp_.path());
      ASSERT_TRUE(mounts.ok());
      EXPECT_TRUE(mounts->empty()) << "leaked mount: " << mounts->front();
    }
    tmp_ = TempDir();
  }

  // A tiny template: static busybox, /etc/passwd with root and `user`, the usual directories.
  void BuildTemplate() {
    std::string root = tmp_.path() + "/tmpl";
    for (const char* d : {"/bin", "/etc", "/home/user", "/tmp", "/proc", "/dev", "/root"}) {
      ASSERT_TRUE(MakeDirs(root + d).ok());
    }
    ASSERT_TRUE(RunChecked({"cp", "/bin/busybox", root + "/bin/busybox"}).ok());
    for (const char* applet : {"sh", "cat", "id", "ls", "echo", "hostname", "mount", "sleep"}) {
      ASSERT_EQ(::symlink("busybox", (root + "/bin/" + applet).c_str()), 0);
    }
    ASSERT_TRUE(WriteFile(root + "/etc/passwd",
                          "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
                    .ok());
    ASSERT_TRUE(WriteFile(root + "/etc/group", "root:x:0:\ntty:x:5:\nuser:x:1000:\n").ok());
    ASSERT_EQ(::chown((root + "/home/user").c_str(), 1000, 1000), 0);
    std::string tar = tmp_.path() + "/tmpl.tar";
    ASSERT_TRUE(RunChecked({"tar", "-C", root, "-cf", tar, "."}).ok());
    storage::TemplateStoreOptions so;
    so.root = data_ + "/templates";
    auto store = storage::TemplateStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_.emplace(std::move(*store));
    auto info = store_->ImportTarball("busybox", tar);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
  }

  void OpenDriver(std::vector<std::string> init_args) {
    NsDriverOptions o;
    o.data_dir = data_;
    o.templates = &*store_;
    o.cgroups = cgroups_.get();
    o.ids = ids_.get();
    o.seccomp = &seccomp_;
    o.init_path = "/bin/busybox";
    o.init_args = std::move(init_args);
    o.wait_for_envd = false;
    o.disk_pool.targets = {{64, 1}};
    auto d = NewNsDriver(o);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    driver_ = std::move(*d);
  }

  SandboxSpec Spec(std::string id) {
    SandboxSpec s;
    s.id = std::move(id);
    s.template_name = "busybox";
    s.resources.disk_mb = 64;
    s.resources.memory_mb = 128;
    s.resources.pids = 64;
    return s;
  }

  // Waits until the init's console log contains `marker`.
  std::string WaitForConsole(const std::string& id, const std::string& marker,
                             std::chrono::milliseconds timeout = 10s) {
    std::string path = data_ + "/sandboxes/" + id + "/console.log";
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string text;
    while (std::chrono::steady_clock::now() < deadline) {
      text = ReadFile(path).value_or("");
      if (text.find(marker) != std::string::npos) break;
      std::this_thread::sleep_for(10ms);
    }
    return text;
  }

  TempDir tmp_;
  std::string data_;
  std::optional<storage::TemplateStore> store_;
  CgroupBackendPtr cgroups_;
  std::unique_ptr<IdRangeAllocator> ids_;
  SeccompProgram seccomp_;
  DriverPtr driver_;
};

TEST_F(NsDriverTest, InitRunsContainedAsMappedRoot) {
  ASSERT_NO_FATAL_FAILURE(
      OpenDriver({"sh", "-c",
                  "echo uid=$(id -u) host=$(hostname); cat /proc/self/uid_map; ls /; "
                  "echo pid1=$(cat /proc/1/comm); cat /proc/self/status | grep -E "
                  "'^(CapBnd|NoNewPrivs|Seccomp):'; "
                  "echo DONE; sleep 100"}));
  auto sb = driver_->Create(Spec("smoke1"));
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  std::string out = WaitForConsole("smoke1", "DONE");
  EXPECT_NE(out.find("uid=0 host=smoke1"), std::string::npos) << out;
  SandboxInfo info = (*sb)->Info();
  EXPECT_NE(out.find("0    " + std::to_string(info.uid_base)), std::string::npos)
      << "root inside is the range's first id outside: " << out;
  EXPECT_GE(info.uid_base, 1'000'000u);
  EXPECT_NE(out.find("NoNewPrivs:\t1"), std::string::npos) << out;
  EXPECT_NE(out.find("Seccomp:\t2"), std::string::npos) << out;
  EXPECT_NE(out.find("CapBnd:\t00000000a80405fb"), std::string::npos)
      << "Docker's default set minus NET_RAW: " << out;
  EXPECT_EQ(info.state, SandboxState::kRunning);
  EXPECT_FALSE(info.disk_device.empty());

  auto usage = (*sb)->GetUsage();
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_GT(usage->memory_bytes, 0u);
  EXPECT_GE(usage->pids, 1u);
  EXPECT_GT(usage->disk_total_bytes, 40u << 20);

  EXPECT_TRUE((*sb)->Pause().ok());
  EXPECT_EQ((*sb)->Info().state, SandboxState::kPaused);
  EXPECT_TRUE((*sb)->Resume().ok());
  EXPECT_TRUE((*sb)->Stop(100ms).ok());
  EXPECT_TRUE((*sb)->Destroy().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/smoke1"));
}

TEST_F(NsDriverTest, BadSpecsCreateNothing) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 100"}));
  auto spec = Spec("bad1");
  spec.resources.memory_mb = 1;
  auto r = driver_->Create(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("memory_mb"), std::string::npos);

  spec = Spec("Bad/../id");
  EXPECT_EQ(driver_->Create(spec).status().code(), Code::kInvalidArgument);

  spec = Spec("bad2");
  spec.template_name = "nope";
  r = driver_->Create(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("nope"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/bad1"));
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/bad2"));
  EXPECT_TRUE(ids_->Leases()->empty());
}

TEST_F(NsDriverTest, FailedInitCleansUpEverything) {
  // The init's argv names a busybox applet that does not exist: busybox exits at once. With
  // wait_for_envd the driver must notice and release everything.
  NsDriverOptions o;
  ASSERT_NO_FATAL_FAILURE(OpenDriver({"no-such-applet"}));
  // Re-open with waiting on, using a short timeout.
  driver_.reset();
  o.data_dir = data_;
  o.templates = &*store_;
  o.cgroups = cgroups_.get();
  o.ids = ids_.get();
  o.seccomp = &seccomp_;
  o.init_path = "/bin/busybox";
  o.init_args = {"no-such-applet"};
  o.wait_for_envd = true;
  o.envd_ready_timeout = 2s;
  o.disk_pool.targets = {{64, 1}};
  auto d = NewNsDriver(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  driver_ = std::move(*d);
  auto sb = driver_->Create(Spec("dies1"));
  ASSERT_FALSE(sb.ok());
  EXPECT_NE(sb.status().message().find("init exited"), std::string::npos) << sb.status().message();
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/dies1"));
  EXPECT_TRUE(ids_->Leases()->empty());
  EXPECT_TRUE(cgroups_->List()->empty());
}

TEST_F(NsDriverTest, RestartAdoptsLiveAndCleansDead) {
  // A real crash: a forked child runs the driver, creates two sandboxes and is SIGKILLed, so
  // its descriptors close the way a dying hangard's do. Orphaned inits come to this process
  // (a subreaper) so the test can reap them.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    OpenDriver({"sh", "-c", "echo READY; sleep 1000"});
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
  ASSERT_GT(pids[0], 0);
  ASSERT_GT(pids[1], 0);
  WaitForConsole("live1", "READY");
  ASSERT_EQ(::kill(agent, SIGKILL), 0);
  ASSERT_EQ(::waitpid(agent, nullptr, 0), agent);
  // One sandbox dies while no agent runs.
  ASSERT_EQ(::kill(pids[1], SIGKILL), 0);
  ASSERT_EQ(::waitpid(pids[1], nullptr, 0), pids[1]);

  ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 1000"}));
  auto rec = driver_->Recover();
  ASSERT_TRUE(rec.ok());
  auto& [report, adopted] = *rec;
  EXPECT_EQ(report.adopted, std::vector<std::string>{"live1"});
  EXPECT_EQ(report.destroyed, std::vector<std::string>{"dead1"});
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0]->Info().init_pid, pids[0]);
  EXPECT_TRUE(adopted[0]->GetUsage().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/dead1"));
  EXPECT_EQ(ids_->Leases()->size(), 1u);
  EXPECT_TRUE(adopted[0]->Destroy().ok());
  EXPECT_EQ(::waitpid(pids[0], nullptr, 0), pids[0]);
  EXPECT_TRUE(ids_->Leases()->empty());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/live1"));
}

}  // namespace
}  // namespace hangar::node
