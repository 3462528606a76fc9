// Unit tests of the id-range allocator. Reconcile runs against a fixture directory laid out
// like /proc (<pid>/status with Uid/Gid lines) — only the parsing and the decisions are under
// test here; userns_privileged_test.cc maps real namespaces.
#include "hangar/node/userns.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "testing/forked_child.h"

namespace hangar::node {
namespace {

using ::testing::ElementsAre;
using testing::ForkedChild;
using ::testing::IsEmpty;

class IdRangeAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Make("hangar-ids-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
    options_.state_dir = dir_.path() + "/state";
    options_.slots = 4;
  }
  std::unique_ptr<IdRangeAllocator> Open() {
    auto a = IdRangeAllocator::Open(options_);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? std::move(*a) : nullptr;
  }
  // A fake /proc entry.
  void FakeProcess(const std::string& proc, int pid, uint32_t uid, uint32_t gid) {
    std::string d = proc + "/" + std::to_string(pid);
    ASSERT_TRUE(MakeDirs(d).ok());
    std::string u = std::to_string(uid), g = std::to_string(gid);
    ASSERT_TRUE(WriteFile(d + "/status", "Name:\tx\nUid:\t" + u + "\t" + u + "\t" + u + "\t" + u +
                                             "\nGid:\t" + g + "\t" + g + "\t" + g + "\t" + g + "\n")
                    .ok());
  }

  TempDir dir_;
  IdAllocatorOptions options_;
};

TEST_F(IdRangeAllocatorTest, LeasesDisjointRangesLowestFirstAndReusesReleasedOnes) {
  auto a = Open();
  auto r0 = a->Allocate("sb0");
  auto r1 = a->Allocate("sb1");
  auto r2 = a->Allocate("sb2");
  ASSERT_TRUE(r0.ok() && r1.ok() && r2.ok());
  EXPECT_EQ(*r0, (IdRange{0, 100000, 65536}));
  EXPECT_EQ(*r1, (IdRange{1, 165536, 65536}));
  EXPECT_EQ(*r2, (IdRange{2, 231072, 65536}));
  ASSERT_TRUE(a->Release(1).ok());
  ASSERT_TRUE(a->Release(1).ok());  // idempotent
  auto again = a->Allocate("sb3");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->slot, 1u);
}

TEST_F(IdRangeAllocatorTest, ExhaustionIsAnErrorNotAnOverlap) {
  auto a = Open();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a->Allocate("sb" + std::to_string(i)).ok());
  auto r = a->Allocate("sb4");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
}

TEST_F(IdRangeAllocatorTest, ARestartSeesEveryLease) {
  {
    auto a = Open();
    ASSERT_TRUE(a->Allocate("alive").ok());
    ASSERT_TRUE(a->Allocate("also-alive").ok());
  }
  auto b = Open();  // the node restarted
  auto leases = b->Leases();
  ASSERT_TRUE(leases.ok());
  EXPECT_EQ(*leases, (std::map<uint32_t, std::string>{{0, "alive"}, {1, "also-alive"}}));
  auto r = b->Allocate("new");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->slot, 2u);
}

TEST_F(IdRangeAllocatorTest, ConcurrentProcessesNeverShareASlot) {
  options_.slots = 32;
  std::vector<std::unique_ptr<ForkedChild>> children;
  for (int c = 0; c < 4; ++c) {
    children.push_back(std::make_unique<ForkedChild>(
        [&, c](ForkedChild& self) {
          auto a = IdRangeAllocator::Open(options_);  // each process its own allocator
          if (!a.ok()) return 1;
          for (int i = 0; i < 8; ++i) {
            auto r = (*a)->Allocate("p" + std::to_string(c) + "-" + std::to_string(i));
            if (!r.ok()) return 2;
            self.Send(std::to_string(r->slot) + "\n");
          }
          return 0;
        },
        /*wait_for_go=*/true));
  }
  for (auto& ch : children) ch->Go();  // all start together
  std::multiset<int> slots;
  for (auto& ch : children) {
    std::string out = ch->ReadAll();
    int st = ch->Wait();
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (size_t p = 0; p < out.size();) {
      size_t nl = out.find('\n', p);
      slots.insert(std::stoi(out.substr(p, nl - p)));
      p = nl + 1;
    }
  }
  EXPECT_EQ(slots.size(), 32u);
  EXPECT_EQ(std::set<int>(slots.begin(), slots.end()).size(), 32u) << "a slot was leased twice";
}

TEST_F(IdRangeAllocatorTest, ReconcileReleasesIdleKeepsBusyRecoversUnleased) {
  auto a = Open();
  ASSERT_TRUE(a->Allocate("live").ok());       // slot 0: owner alive
  ASSERT_TRUE(a->Allocate("dead-idle").ok());  // slot 1: owner gone, no processes
  ASSERT_TRUE(a->Allocate("dead-busy").ok());  // slot 2: owner gone, a process remains
  std::string proc = dir_.path() + "/proc";
  FakeProcess(proc, 1, 0, 0);
  FakeProcess(proc, 4242, 231072 + 1000, 231072 + 1000);  // in slot 2
  FakeProcess(proc, 4343, 1000, 296608 + 5);              // gid in slot 3, never leased
  ASSERT_TRUE(MakeDirs(proc + "/self").ok());             // non-numeric entries are ignored
  auto report = a->Reconcile({"live"}, proc);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_THAT(report->released, ElementsAre(1u));
  EXPECT_THAT(report->busy, ElementsAre(2u));
  EXPECT_THAT(report->recovered, ElementsAre(3u));
  auto leases = a->Leases();
  ASSERT_TRUE(leases.ok());
  EXPECT_EQ(*leases,
            (std::map<uint32_t, std::string>{{0, "live"}, {2, "dead-busy"}, {3, "recovered"}}));
  auto users = ProcessesUsingRange(a->RangeOf(2), proc);
  ASSERT_TRUE(users.ok());
  EXPECT_THAT(*users, ElementsAre(4242));
  // The next allocation gets the released slot, never a busy or recovered one.
  auto r = a->Allocate("next");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->slot, 1u);
}

TEST_F(IdRangeAllocatorTest, ZombiesDoNotKeepARangeBusy) {
  auto a = Open();
  ASSERT_TRUE(a->Allocate("dead").ok());  // slot 0: its init was killed, not yet reaped
  std::string proc = dir_.path() + "/proc";
  ASSERT_TRUE(MakeDirs(proc + "/77").ok());
  ASSERT_TRUE(WriteFile(proc + "/77/status",
                        "Name:\tsh\nState:\tZ (zombie)\nUid:\t100000\t100000\t100000\t100000\n"
                        "Gid:\t100000\t100000\t100000\t100000\n")
                  .ok());
  auto report = a->Reconcile({}, proc);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_THAT(report->released, ElementsAre(0u));
  EXPECT_THAT(report->busy, IsEmpty());
  EXPECT_THAT(report->recovered, IsEmpty());
  EXPECT_TRUE(a->Leases()->empty());
}

TEST_F(IdRangeAllocatorTest, RenameHandsTheLeaseToANewOwner) {
  auto a = Open();
  auto r = a->Allocate("pool-1");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(a->Rename(r->slot, "sb1").ok());
  auto leases = a->Leases();
  ASSERT_TRUE(leases.ok());
  EXPECT_EQ(*leases, (std::map<uint32_t, std::string>{{r->slot, "sb1"}}));
  EXPECT_EQ(a->Rename(3, "sb2").code(), Code::kNotFound);
  EXPECT_EQ(a->Rename(r->slot, "bad/name").code(), Code::kInvalidArgument);
  EXPECT_EQ((*a->Leases())[r->slot], "sb1");
}

TEST_F(IdRangeAllocatorTest, InvalidConfigurationsAreRefused) {
  IdAllocatorOptions o = options_;
  o.base = 1000;  // would map host system users
  EXPECT_EQ(IdRangeAllocator::Open(o).status().code(), Code::kInvalidArgument);
  o = options_;
  o.slots = 70000;  // 100000 + 65536 * 70000 > 2^32
  EXPECT_EQ(IdRangeAllocator::Open(o).status().code(), Code::kInvalidArgument);
  o = options_;
  o.state_dir = "";
  EXPECT_EQ(IdRangeAllocator::Open(o).status().code(), Code::kInvalidArgument);
  auto a = Open();
  EXPECT_EQ(a->Allocate("../x").status().code(), Code::kInvalidArgument);
}

TEST(ProcessesUsingRangeTest, FindsNothingForAnUnusedRangeOnThisHost) {
  auto pids = ProcessesUsingRange({0, 3000000000u, 65536});
  ASSERT_TRUE(pids.ok()) << pids.status().ToString();
  EXPECT_THAT(*pids, IsEmpty());
}

}  // namespace
}  // namespace hangar::node
