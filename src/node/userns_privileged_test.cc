// A child in a new user namespace mapped to an allocated range is root inside and the range's
// first id outside; as such it cannot read a root-only host file.
#include <grp.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/userns.h"
#include "testing/forked_child.h"

namespace hangar::node {
namespace {

using testing::DescribeWaitStatus;
using testing::ForkedChild;
using ::testing::HasSubstr;

std::string UserNs(const std::string& pid) {
  char buf[64] = {};
  ssize_t n = ::readlink(("/proc/" + pid + "/ns/user").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Waits until `pid` has left our user namespace (it unshares in before_go).
bool WaitForOwnUserNs(pid_t pid) {
  std::string mine = UserNs("self");
  for (int i = 0; i < 2000; ++i) {
    std::string theirs = UserNs(std::to_string(pid));
    if (!theirs.empty() && theirs != mine) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// The "Uid:" line of /proc/<pid>/status: real, effective, saved, fs.
std::string UidLine(pid_t pid) {
  auto status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  if (!status.ok()) return "";
  size_t at = status->find("\nUid:");
  return status->substr(at + 1, status->find('\n', at + 1) - at - 1);
}

class UsernsPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (maps a range it does not own)";
    auto dir = TempDir::Make("hangar-userns-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
    auto alloc = IdRangeAllocator::Open({dir_.path() + "/state", 100000, 65536, 8});
    ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
    alloc_ = std::move(*alloc);
  }
  TempDir dir_;
  std::unique_ptr<IdRangeAllocator> alloc_;
};

TEST_F(UsernsPrivilegedTest, MappedChildIsRootInsideAndTheRangeOutside) {
  auto range = alloc_->Allocate("sb-userns");
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->slot, 0u);
  std::string secret = dir_.path() + "/secret";
  ASSERT_TRUE(WriteFile(secret, "host root only").ok());
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);

  ForkedChild child(
      [&](ForkedChild& self) {
        if (Status s = BecomeNamespaceRoot(); !s.ok()) {
          self.Send(s.ToString());
          return 1;
        }
        std::string out = std::to_string(::getuid()) + " " + std::to_string(::getgid());
        out += ::access(secret.c_str(), R_OK) == 0 ? " readable" : " denied";
        out += ::setgroups(0, nullptr) == 0 ? " setgroups-ok" : " setgroups-denied";
        self.Send(out + "\n");
        ::pause();  // stay alive while the parent looks at us from outside
        return 0;
      },
      /*wait_for_go=*/true, [] { return ::unshare(CLONE_NEWUSER) == 0; });
  ASSERT_TRUE(WaitForOwnUserNs(child.pid())) << "child did not unshare its user namespace";
  ASSERT_TRUE(WriteIdMaps(child.pid(), *range).ok());

  auto uid_map = ReadFile("/proc/" + std::to_string(child.pid()) + "/uid_map");
  ASSERT_TRUE(uid_map.ok());
  EXPECT_THAT(*uid_map, HasSubstr("100000"));
  // The kernel accepts a map once; a second write must fail and say where.
  Status again = WriteIdMaps(child.pid(), *range);
  EXPECT_FALSE(again.ok());
  EXPECT_THAT(again.message(), HasSubstr("/uid_map"));

  // The map alone changes nothing: the child still holds host uid 0 until it switches.
  EXPECT_EQ(UidLine(child.pid()), "Uid:\t0\t0\t0\t0");

  child.Go();
  std::string inside = child.ReadLine();  // arrives once the child has switched
  // Outside, the child's ids are now the range's first id; inside it is root.
  EXPECT_EQ(UidLine(child.pid()), "Uid:\t100000\t100000\t100000\t100000");
  auto users = ProcessesUsingRange(*range);
  ASSERT_TRUE(users.ok());
  EXPECT_THAT(*users, ::testing::Contains(child.pid()));
  // Root inside, yet host files are checked against uid 100000: the 0600 root file is closed.
  EXPECT_EQ(inside, "0 0 denied setgroups-ok");
}

TEST_F(UsernsPrivilegedTest, SetgroupsDenyIsHonoured) {
  auto range = alloc_->Allocate("sb-deny");
  ASSERT_TRUE(range.ok());
  ForkedChild child(
      [](ForkedChild& self) {
        self.Send(::setgroups(0, nullptr) == 0 ? "ok" : "denied");
        // Host group 0 is still a supplementary group and cannot be shed: switching must fail
        // rather than run the sandbox as a member of the host's root group.
        int step = -1;
        int err = BecomeNamespaceRootRaw(&step);
        if (err != EPERM || step != 2) self.Send(" raw contract broken");
        Status s = BecomeNamespaceRoot();
        self.Send(s.ok() ? " switched" : " refused: " + s.message());
        return 0;
      },
      /*wait_for_go=*/true,
      [] {
        gid_t host_root = 0;
        return ::setgroups(1, &host_root) == 0 && ::unshare(CLONE_NEWUSER) == 0;
      });
  ASSERT_TRUE(WaitForOwnUserNs(child.pid()));
  ASSERT_TRUE(WriteIdMaps(child.pid(), *range, SetgroupsPolicy::kDeny).ok());
  child.Go();
  std::string out = child.ReadAll();
  EXPECT_THAT(out, ::testing::StartsWith("denied refused: setgroups(0, NULL)"));
  child.Wait();
}

TEST_F(UsernsPrivilegedTest, UnmappedChildIsNobody) {
  // Before the parent writes the maps, the child is the overflow id: a sandbox that started
  // before its mapping would not be root anywhere.
  ForkedChild child(
      [](ForkedChild& self) {
        self.Send(std::to_string(::getuid()));
        return 0;
      },
      /*wait_for_go=*/true, [] { return ::unshare(CLONE_NEWUSER) == 0; });
  ASSERT_TRUE(WaitForOwnUserNs(child.pid()));
  child.Go();
  EXPECT_EQ(child.ReadAll(), "65534");
  child.Wait();
}

}  // namespace
}  // namespace hangar::node
