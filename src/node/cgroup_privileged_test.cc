// Privileged tests of the cgroup backends against the real kernel: limits hold (a fork bomb
// stops at pids.max, an allocation beyond memory is OOM-killed inside the group only, the CPU
// quota caps usage), freeze stops progress, teardown leaves no process and no group.
// v1 tests need a v1/hybrid host; the v2 tests run against whatever cgroup2 mount exists (on a
// hybrid host it has no controllers, so they cover create/attach/freeze/kill/remove/list only —
// the controller files are covered by the FakeCgroupFs tests in cgroup_test.cc).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/cgroup.h"
#include "testing/forked_child.h"

namespace hangar::node {
namespace {

using ::testing::Contains;
using testing::DescribeWaitStatus;
using ::testing::ElementsAre;
using testing::ForkedChild;
using ::testing::IsEmpty;

// A counter in shared memory that a child increments while it runs.
struct SharedCounter {
  SharedCounter() {
    void* p = ::mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    value = new (p) std::atomic<uint64_t>(0);
  }
  ~SharedCounter() { ::munmap(value, sizeof(*value)); }
  std::atomic<uint64_t>* value;
};

uint64_t ProgressOver(const SharedCounter& c, std::chrono::milliseconds d) {
  uint64_t before = c.value->load();
  std::this_thread::sleep_for(d);
  return c.value->load() - before;
}

// True once the counter moves; on a loaded 2-core host a runnable task may wait a while.
bool EventuallyProgresses(const SharedCounter& c) {
  uint64_t before = c.value->load();
  for (int i = 0; i < 2000; ++i) {
    if (c.value->load() != before) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// Reaps every child that has exited (the test is a subreaper, so this includes grandchildren
// whose parent died) and returns how many are still alive.
int ReapAndCountLiveChildren() {
  int st;
  while (::waitpid(-1, &st, WNOHANG) > 0) {
  }
  std::string self = std::to_string(::getpid());
  int live = 0;
  // /proc/<pid>/task/<tid>/children lists direct children.
  auto children = ReadFile("/proc/" + self + "/task/" + self + "/children");
  if (children.ok()) {
    for (char c : *children) live += (c == ' ') ? 1 : 0;
  }
  return live;
}

class CgroupPrivilegedTest : public ::testing::TestWithParam<CgroupMode> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (creates cgroups)";
    auto layout = DetectCgroupLayout();
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    CgroupOptions options;
    options.root = "hangar-test-" + std::to_string(::getpid());
    if (GetParam() == CgroupMode::kV1) {
      if (layout->mode != CgroupMode::kV1) GTEST_SKIP() << "host is not cgroup v1/hybrid";
      auto b = MakeCgroupV1Backend(layout->v1_mounts, options, RealCgroupFs());
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      backend_ = std::move(*b);
    } else {
      if (layout->v2_mount.empty()) GTEST_SKIP() << "no cgroup2 mount";
      options.v2_required = {};  // a hybrid host's cgroup2 has no controllers
      auto b = MakeCgroupV2Backend(layout->v2_mount, options, RealCgroupFs());
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      backend_ = std::move(*b);
    }
    // Grandchildren of a killed child are re-parented to us, so we can reap and count them.
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  }

  void TearDown() override {
    if (!backend_) return;
    // No group may outlive a test, on any path.
    auto left = backend_->List();
    ASSERT_TRUE(left.ok()) << left.status().ToString();
    EXPECT_THAT(*left, IsEmpty()) << "leaked cgroups";
    for (const std::string& name : *left) (void)backend_->KillAndRemove(name);
    EXPECT_TRUE(backend_->RemoveRoot().ok());
    EXPECT_EQ(ReapAndCountLiveChildren(), 0) << "leaked processes";
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }

  bool Has(const std::string& controller) const {
    return backend_->controllers().count(controller) > 0;
  }

  CgroupBackendPtr backend_;
};

TEST_P(CgroupPrivilegedTest, LifecycleAttachFreezeThawKillRemove) {
  auto group = ScopedCgroup::Create(*backend_, "life");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  SharedCounter counter;
  ForkedChild child([&](ForkedChild& self) {
    // Pages touched after joining are charged to the group (v1 does not move old charges).
    std::memset(::malloc(1 << 20), 1, 1 << 20);
    self.Send("r");
    for (;;) counter.value->fetch_add(1);
    return 0;
  });
  ASSERT_TRUE(child.started());
  ASSERT_TRUE(backend_->AddPid("life", child.pid()).ok());
  child.Go();

  auto pids = backend_->Pids("life");
  ASSERT_TRUE(pids.ok()) << pids.status().ToString();
  EXPECT_THAT(*pids, ElementsAre(child.pid()));
  for (const std::string& dir : backend_->Paths("life")) {
    auto procs = ReadFile(dir + "/cgroup.procs");
    ASSERT_TRUE(procs.ok());
    EXPECT_EQ(*procs, std::to_string(child.pid()) + "\n") << dir;
  }

  ASSERT_EQ(child.ReadN(1), "r");
  ASSERT_TRUE(EventuallyProgresses(counter));
  ASSERT_TRUE(backend_->Freeze("life").ok());
  // Freeze returned, so every task is frozen: not a single increment may happen now.
  EXPECT_EQ(ProgressOver(counter, std::chrono::milliseconds(50)), 0u) << "frozen task ran";
  ASSERT_TRUE(backend_->Thaw("life").ok());
  EXPECT_TRUE(EventuallyProgresses(counter)) << "thawed task stuck";

  auto usage = backend_->ReadUsage("life");
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_GT(usage->cpu_usec, 0u);
  if (Has("pids")) {
    EXPECT_EQ(usage->pids_current, 1u);
  }
  if (Has("memory")) {
    EXPECT_GE(usage->memory_peak, 1u << 20);
  }

  // Kill while frozen: the hardest case for v1 (frozen tasks act on SIGKILL only once thawed).
  ASSERT_TRUE(backend_->Freeze("life").ok());
  ASSERT_TRUE(group->Remove().ok());
  int st = child.Wait();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << DescribeWaitStatus(st);
  for (const std::string& dir : backend_->Paths("life")) {
    struct stat sb;
    EXPECT_NE(::stat(dir.c_str(), &sb), 0) << dir << " still exists";
  }
}

TEST_P(CgroupPrivilegedTest, KillAndRemoveCatchesAForkingTreeAndNestedGroups) {
  auto group = ScopedCgroup::Create(*backend_, "tree");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  // The sandbox made its own child group (it may, with a cgroup namespace).
  std::string nested = backend_->Paths("tree").back() + "/inner";
  ASSERT_EQ(::mkdir(nested.c_str(), 0755), 0) << std::strerror(errno);
  ForkedChild child([&](ForkedChild& self) {
    // Move ourselves into the nested group, then fork children that fork forever.
    (void)WriteFile(nested + "/cgroup.procs", std::to_string(::getpid()), O_WRONLY);
    for (int i = 0; i < 8; ++i) {
      if (::fork() == 0) {
        for (;;) {
          pid_t p = ::fork();
          if (p == 0) ::_exit(0);
          if (p > 0) ::waitpid(p, nullptr, 0);
        }
      }
    }
    self.Send("r");
    ::pause();
    return 0;
  });
  ASSERT_TRUE(backend_->AddPid("tree", child.pid()).ok());
  child.Go();
  ASSERT_EQ(child.ReadN(1), "r");  // all 8 forkers exist
  auto pids = backend_->Pids("tree");
  ASSERT_TRUE(pids.ok());
  EXPECT_GE(pids->size(), 9u);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(group->Remove().ok());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  RecordProperty("kill_and_remove_ms", std::to_string(ms));
  int st = child.Wait();
  EXPECT_TRUE(WIFSIGNALED(st)) << DescribeWaitStatus(st);
}

TEST_P(CgroupPrivilegedTest, ListFindsGroupsLeftByAPreviousRun) {
  for (const char* name : {"a", "b", "c"}) {
    auto g = ScopedCgroup::Create(*backend_, name);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    (void)g->Release();  // "crash": nobody owns them any more
  }
  auto list = backend_->List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_THAT(*list, ElementsAre("a", "b", "c"));
  for (const std::string& name : *list) ASSERT_TRUE(backend_->KillAndRemove(name).ok());
}

TEST_P(CgroupPrivilegedTest, LimitWithoutControllerIsRefused) {
  if (Has("memory")) GTEST_SKIP() << "memory controller available here";
  auto group = ScopedCgroup::Create(*backend_, "nolimit");
  ASSERT_TRUE(group.ok());
  CgroupLimits l;
  l.memory_bytes = 64 << 20;
  EXPECT_EQ(backend_->SetLimits("nolimit", l).code(), Code::kFailedPrecondition);
  EXPECT_TRUE(backend_->SetLimits("nolimit", CgroupLimits{}).ok());
}

TEST_P(CgroupPrivilegedTest, PidsMaxStopsAForkBomb) {
  if (!Has("pids")) GTEST_SKIP() << "pids controller not available in this hierarchy";
  auto group = ScopedCgroup::Create(*backend_, "forkbomb");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  CgroupLimits l;
  l.pids_max = 16;
  ASSERT_TRUE(backend_->SetLimits("forkbomb", l).ok());
  ForkedChild child([](ForkedChild& self) {
    int forked = 0;
    for (int i = 0; i < 1000; ++i) {
      pid_t p = ::fork();
      if (p == 0) {
        ::pause();
        ::_exit(0);
      }
      if (p < 0) {
        self.Send(std::to_string(forked) + " " + std::to_string(errno) + "\n");
        ::pause();
      }
      ++forked;
    }
    self.Send("unbounded\n");
    ::pause();
    return 0;
  });
  ASSERT_TRUE(backend_->AddPid("forkbomb", child.pid()).ok());
  child.Go();
  std::string line;
  for (char c = 0; c != '\n';) {
    std::string b = child.ReadN(1);
    ASSERT_EQ(b.size(), 1u) << "child died";
    c = b[0];
    line += c;
  }
  // 16 tasks in all: the child itself and 15 children; the 16th fork fails with EAGAIN.
  EXPECT_EQ(line, "15 " + std::to_string(EAGAIN) + "\n");
  auto usage = backend_->ReadUsage("forkbomb");
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->pids_current, 16u);
  ASSERT_TRUE(group->Remove().ok());
  child.Wait();
}

TEST_P(CgroupPrivilegedTest, MemoryLimitOomKillsInsideTheGroupOnly) {
  if (!Has("memory")) GTEST_SKIP() << "memory controller not available in this hierarchy";
  constexpr size_t kLimit = 32 << 20;
  auto group = ScopedCgroup::Create(*backend_, "oom");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  CgroupLimits l;
  l.memory_bytes = kLimit;
  ASSERT_TRUE(backend_->SetLimits("oom", l).ok());

  // A process outside the group holding more memory than the group's limit: a global OOM
  // choice would prefer it; the group's OOM must not touch it.
  ForkedChild outside(
      [](ForkedChild& self) {
        size_t n = 64 << 20;
        char* p = static_cast<char*>(::malloc(n));
        std::memset(p, 1, n);
        self.Send("r");
        ::pause();
        return 0;
      },
      /*wait_for_go=*/false);
  ASSERT_EQ(outside.ReadN(1), "r");

  ForkedChild hog([](ForkedChild&) {
    for (size_t total = 0; total < (256u << 20); total += 1 << 20) {
      char* p = static_cast<char*>(::malloc(1 << 20));
      std::memset(p, 1, 1 << 20);
    }
    return 0;  // reaching here means the limit did not hold
  });
  ASSERT_TRUE(backend_->AddPid("oom", hog.pid()).ok());
  hog.Go();
  int st = hog.Wait();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << DescribeWaitStatus(st);

  EXPECT_EQ(::kill(outside.pid(), 0), 0) << "the process outside the group was killed";
  int ost;
  EXPECT_EQ(::waitpid(outside.pid(), &ost, WNOHANG), 0) << "outside process exited";

  auto usage = backend_->ReadUsage("oom");
  ASSERT_TRUE(usage.ok());
  EXPECT_LE(usage->memory_peak, kLimit);
  EXPECT_GT(usage->memory_peak, kLimit / 2);
  ASSERT_TRUE(group->Remove().ok());
}

TEST_P(CgroupPrivilegedTest, CpuQuotaCapsUsage) {
  if (!Has("cpu")) GTEST_SKIP() << "cpu controller not available in this hierarchy";
  auto group = ScopedCgroup::Create(*backend_, "cpu");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  CgroupLimits l;
  l.cpu_millicores = 100;  // 10 ms per 100 ms
  ASSERT_TRUE(backend_->SetLimits("cpu", l).ok());
  ForkedChild spinner([](ForkedChild&) {
    volatile uint64_t spins = 0;
    for (;;) spins = spins + 1;
    return 0;
  });
  ASSERT_TRUE(backend_->AddPid("cpu", spinner.pid()).ok());
  spinner.Go();
  auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto usage = backend_->ReadUsage("cpu");
  auto wall_us = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count();
  ASSERT_TRUE(usage.ok());
  RecordProperty("cpu_usec_in_500ms_at_100m", std::to_string(usage->cpu_usec));
  // 10 % of the wall time plus one period of slack; unthrottled it would be ~100 %.
  EXPECT_LT(usage->cpu_usec, static_cast<uint64_t>(wall_us / 10 + 20000));
  EXPECT_GT(usage->cpu_usec, 0u);
  ASSERT_TRUE(group->Remove().ok());
}

TEST_P(CgroupPrivilegedTest, IoThrottleSlowsDirectWritesAndIsMeasured) {
  if (!Has("io")) GTEST_SKIP() << "io controller not available in this hierarchy";
  auto dir = TempDir::Make("hangar-cgio-", "/var/tmp");
  ASSERT_TRUE(dir.ok());
  struct stat sb;
  ASSERT_EQ(::stat(dir->path().c_str(), &sb), 0);
  uint32_t maj = major(sb.st_dev), min = minor(sb.st_dev);
  std::string sysblock = "/sys/dev/block/" + std::to_string(maj) + ":" + std::to_string(min);
  if (::access(sysblock.c_str(), F_OK) != 0) GTEST_SKIP() << "/var/tmp is not on a block device";
  // A partition is throttled through its whole disk.
  if (::access((sysblock + "/partition").c_str(), F_OK) == 0) {
    auto whole = ReadFile(sysblock + "/../dev");
    ASSERT_TRUE(whole.ok());
    sscanf(whole->c_str(), "%u:%u", &maj, &min);
  }
  auto group = ScopedCgroup::Create(*backend_, "io");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  CgroupLimits l;
  l.io = {{maj, min, 0, 0, 0, /*wbps=*/2 << 20}};
  ASSERT_TRUE(backend_->SetLimits("io", l).ok());
  std::string file = dir->path() + "/f";
  ForkedChild writer([&](ForkedChild&) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0600);
    if (fd < 0) return 2;
    void* buf;
    if (::posix_memalign(&buf, 4096, 64 << 10) != 0) return 3;
    std::memset(buf, 7, 64 << 10);
    for (int i = 0; i < 16; ++i) {  // 1 MiB
      if (::write(fd, buf, 64 << 10) != (64 << 10)) return 4;
    }
    return ::fsync(fd) == 0 ? 0 : 5;
  });
  ASSERT_TRUE(backend_->AddPid("io", writer.pid()).ok());
  auto start = std::chrono::steady_clock::now();
  writer.Go();
  int st = writer.Wait();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeWaitStatus(st);
  RecordProperty("seconds_for_1MiB_at_2MiBps", std::to_string(secs));
  EXPECT_GT(secs, 0.3) << "1 MiB at 2 MiB/s finished too fast: throttle not applied";
  auto usage = backend_->ReadUsage("io");
  ASSERT_TRUE(usage.ok());
  bool found = false;
  for (const IoDeviceUsage& d : usage->io) {
    if (d.major == maj && d.minor == min) {
      found = true;
      EXPECT_GE(d.wbytes, 1u << 20);
      EXPECT_GE(d.wios, 1u);
    }
  }
  EXPECT_TRUE(found) << "no io usage for " << maj << ":" << min;
  ASSERT_TRUE(group->Remove().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, CgroupPrivilegedTest,
                         ::testing::Values(CgroupMode::kV1, CgroupMode::kV2),
                         [](const auto& p) { return std::string(CgroupModeName(p.param)); });

}  // namespace
}  // namespace hangar::node
