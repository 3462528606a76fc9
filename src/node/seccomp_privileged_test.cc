// The filter holds against real root: calls with valid arguments that root could otherwise
// make (mount a tmpfs, new mount namespace, raise the I/O privilege level, load a module) are
// refused, and nothing happens.
#include <sched.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/seccomp.h"
#include "testing/forked_child.h"

namespace hangar::node {
namespace {

using testing::DescribeWaitStatus;
using testing::ForkedChild;
using ::testing::IsEmpty;

TEST(SeccompPrivilegedTest, RootWithValidArgumentsIsStillDenied) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (shows the filter beats real privilege)";
  auto policy = DefaultSeccompPolicy();
  ASSERT_TRUE(policy.ok());
  auto prog = CompileSeccompPolicy(*policy);
  ASSERT_TRUE(prog.ok()) << prog.status().ToString();
  auto dir = TempDir::Make("hangar-seccomp-");
  ASSERT_TRUE(dir.ok());
  std::string target = dir->path();

  ForkedChild child(
      [&](ForkedChild& self) {
        if (int err = InstallSeccompProgramRaw(*prog)) return err;
        if (::mount("none", target.c_str(), "tmpfs", 0, "size=1m") != -1 || errno != EPERM) {
          self.Send("mount tmpfs\n");
        }
        if (::unshare(CLONE_NEWNS) != -1 || errno != EPERM) self.Send("unshare(NEWNS)\n");
        if (::iopl(3) != -1 || errno != EPERM) self.Send("iopl(3)\n");
        if (::syscall(SYS_delete_module, "loop", 0) != -1 || errno != EPERM) {
          self.Send("delete_module(loop)\n");
        }
        if (::umount2("/proc", MNT_DETACH) != -1 || errno != EPERM) self.Send("umount2(/proc)\n");
        return 0;
      },
      /*wait_for_go=*/false);
  std::string report = child.ReadAll();
  int st = child.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeWaitStatus(st);
  EXPECT_THAT(report, IsEmpty());
  auto mounts = MountsUnder(target);
  ASSERT_TRUE(mounts.ok());
  EXPECT_THAT(*mounts, IsEmpty()) << "the tmpfs got mounted";
}

}  // namespace
}  // namespace hangar::node
