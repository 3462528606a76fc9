// Privileged tests of the caps unit: from a forked root child, drop to the sandbox set and try
// to get the dropped capabilities back (capset, ambient raise, exec as root), use a dropped one
// (mount) and a kept one (chown); resource limits bite at the configured value.
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/tempdir.h"
#include "hangar/node/caps.h"
#include "testing/forked_child.h"

namespace hangar::node {
namespace {

using testing::DescribeWaitStatus;
using testing::ForkedChild;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class CapsPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (drops capabilities it must first have)";
    auto last = LastCapability();
    ASSERT_TRUE(last.ok());
    last_cap_ = *last;
    auto dir = TempDir::Make("hangar-caps-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
  }
  int last_cap_ = 0;
  TempDir dir_;
};

TEST_F(CapsPrivilegedTest, BoundingSetIsExactlyTheSandboxSetAndCannotBeRegained) {
  const CapMask keep = DefaultSandboxCapabilities();
  std::string file = dir_.path() + "/f";
  ASSERT_EQ(::close(::open(file.c_str(), O_CREAT | O_WRONLY, 0600)), 0);
  std::string target = dir_.path();
  ForkedChild child(
      [&](ForkedChild& self) {
        Status s = DropCapabilities(keep, last_cap_);
        if (!s.ok()) {
          self.Send("drop: " + s.ToString() + "\n");
          return 1;
        }
        auto st = ReadCapabilityState(0);
        if (!st.ok()) return 2;
        if (st->bounding != keep) self.Send("CapBnd " + CapabilityNames(st->bounding) + "\n");
        if (st->effective != keep) self.Send("CapEff " + CapabilityNames(st->effective) + "\n");
        if (st->permitted != keep) self.Send("CapPrm " + CapabilityNames(st->permitted) + "\n");
        if (st->inheritable != 0) self.Send("CapInh not empty\n");
        if (st->ambient != 0) self.Send("CapAmb not empty\n");
        // A dropped capability is gone: mount needs SYS_ADMIN.
        if (::mount("none", target.c_str(), "tmpfs", 0, nullptr) != -1 || errno != EPERM) {
          self.Send("mount worked\n");
          ::umount2(target.c_str(), MNT_DETACH);
        }
        // A kept one works: chown needs CHOWN.
        if (::chown(file.c_str(), 1234, 1234) != 0) self.Send("chown failed\n");
        // Regaining: capset raising SYS_ADMIN, ambient raise, bounding re-add — all refused.
        __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2]{};
        ::syscall(SYS_capget, &hdr, data);
        data[0].effective |= 1u << CAP_SYS_ADMIN;
        data[0].permitted |= 1u << CAP_SYS_ADMIN;
        if (::syscall(SYS_capset, &hdr, data) != -1) self.Send("capset regained SYS_ADMIN\n");
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0) != -1) {
          self.Send("ambient raise worked\n");
        }
        // Exec as uid 0: root's exec grants permitted = bounding set, so it stays the keep set.
        ::dup2(self.msg_fd(), STDOUT_FILENO);
        ::execl("/bin/grep", "grep", "-E", "^Cap(Eff|Bnd):", "/proc/self/status", nullptr);
        return 127;
      },
      /*wait_for_go=*/false);
  std::string report = child.ReadAll();
  int st = child.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeWaitStatus(st) << report;
  char want[64];
  std::snprintf(want, sizeof want, "%016llx", static_cast<unsigned long long>(keep));
  EXPECT_EQ(report, std::string("CapEff:\t") + want + "\nCapBnd:\t" + want + "\n");
  struct stat sb;
  ASSERT_EQ(::stat(file.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_uid, 1234u);
}

TEST_F(CapsPrivilegedTest, NoNewPrivsSurvivesExec) {
  ForkedChild child(
      [&](ForkedChild& self) {
        if (!SetNoNewPrivs().ok()) return 1;
        ::dup2(self.msg_fd(), STDOUT_FILENO);
        ::execl("/bin/grep", "grep", "^NoNewPrivs:", "/proc/self/status", nullptr);
        return 127;
      },
      /*wait_for_go=*/false);
  std::string out = child.ReadAll();
  int st = child.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeWaitStatus(st);
  EXPECT_EQ(out, "NoNewPrivs:\t1\n");
}

TEST_F(CapsPrivilegedTest, ResourceLimitsBite) {
  std::string file = dir_.path() + "/big";
  ForkedChild child(
      [&](ForkedChild& self) {
        ResourceLimits l;
        l.nofile = 32;
        l.fsize = 1 << 20;
        l.core = 0;
        if (Status s = ApplyResourceLimits(l); !s.ok()) {
          self.Send(s.ToString());
          return 1;
        }
        // nofile: descriptors 0..31 only.
        int last = -1;
        for (;;) {
          int fd = ::open("/dev/null", O_RDONLY);
          if (fd < 0) {
            if (errno != EMFILE) self.Send("open: not EMFILE\n");
            break;
          }
          last = fd;
        }
        if (last != 31) self.Send("highest fd " + std::to_string(last) + "\n");
        for (int fd = 3; fd <= last; ++fd) {
          if (fd != self.msg_fd()) ::close(fd);
        }
        // fsize: writing past 1 MiB fails with EFBIG (SIGXFSZ ignored so we see the errno).
        ::signal(SIGXFSZ, SIG_IGN);
        int fd = ::open(file.c_str(), O_CREAT | O_WRONLY, 0600);
        static char buf[64 << 10];
        long total = 0;
        ssize_t n;
        while ((n = ::write(fd, buf, sizeof buf)) > 0) total += n;
        if (n != -1 || errno != EFBIG || total != (1 << 20)) {
          self.Send("fsize: wrote " + std::to_string(total) + "\n");
        }
        rlimit core;
        ::getrlimit(RLIMIT_CORE, &core);
        if (core.rlim_cur != 0 || core.rlim_max != 0) self.Send("core not 0\n");
        // The limits are hard too: raising them back needs CAP_SYS_RESOURCE, which the sandbox
        // set lacks.
        if (!DropCapabilities(DefaultSandboxCapabilities(), last_cap_).ok()) return 2;
        l.nofile = 64;
        int step = -1;
        int err = ApplyResourceLimitsRaw(l, &step);
        if (err != EPERM || step != 0) {
          self.Send("raw: errno " + std::to_string(err) + " step " + std::to_string(step) +
                    ", want plain EPERM at step 0\n");
        }
        Status raise = ApplyResourceLimits(l);
        if (raise.ok())
          self.Send("raised nofile without CAP_SYS_RESOURCE\n");
        else if (raise.message().find("setrlimit(RLIMIT_NOFILE, 64)") == std::string::npos) {
          self.Send("error does not name the call: " + raise.ToString() + "\n");
        }
        return 0;
      },
      /*wait_for_go=*/false);
  std::string report = child.ReadAll();
  int st = child.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeWaitStatus(st) << report;
  EXPECT_THAT(report, IsEmpty());
}

}  // namespace
}  // namespace hangar::node
