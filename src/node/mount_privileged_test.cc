// Privileged test of the mount unit: a grandchild that is pid 1 of new mount/pid/UTS
// namespaces assembles its root and then, from inside, tries to see or reach the host: host
// paths, block devices, the kernel's memory and logs, writable kernel knobs. The host side
// checks that writes landed in the upper directory only and that no mount leaked out.
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/magic.h>

#include <fstream>
#include <set>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/mount.h"
#include "testing/forked_child.h"

namespace hangar::node {
namespace {

using testing::DescribeWaitStatus;
using testing::ForkedChild;
using ::testing::IsEmpty;

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  return out;
}

// Everything the sandbox sees wrong, one line each; empty means the promise held.
std::string CheckInside(const std::string& hostname, const std::vector<std::string>& host_masked) {
  std::ostringstream bad;
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) bad << what << " (errno " << errno << ")\n";
  };
  expect(::getpid() == 1, "not pid 1 of its own pid namespace");
  struct statfs fs;
  expect(::statfs("/", &fs) == 0 && fs.f_type == OVERLAYFS_SUPER_MAGIC, "/ is not overlayfs");
  expect(::statfs("/tmp", &fs) == 0 && fs.f_type == TMPFS_MAGIC, "/tmp is not tmpfs");

  // Root filesystem: the template shows through, writes go to the upper layer.
  auto t = ReadFile("/etc/template-file");
  expect(t.ok() && *t == "T", "template file not visible");
  expect(WriteFile("/etc/new-file", "N").ok(), "cannot write to the root overlay");
  expect(WriteFile("/tmp/x", "x").ok(), "cannot write /tmp");

  // The host is gone.
  for (const char* host_path : {"/work", "/root", "/var/lib", "/usr/bin", "/home"}) {
    expect(::access(host_path, F_OK) != 0, std::string("host path visible: ") + host_path);
  }

  // /dev: only the sandbox set, and they work.
  std::set<std::string> dev_entries;
  auto dev = ListDir("/dev");
  for (const std::string& e : dev) dev_entries.insert(e);
  std::set<std::string> want = {"null", "zero", "full", "random", "urandom", "tty",   "pts",
                                "ptmx", "shm",  "fd",   "stdin",  "stdout",  "stderr"};
  expect(dev_entries == want, "unexpected /dev entries");
  int null_fd = ::open("/dev/null", O_WRONLY);
  expect(null_fd >= 0 && ::write(null_fd, "x", 1) == 1, "/dev/null not writable");
  int full_fd = ::open("/dev/full", O_WRONLY);
  expect(full_fd >= 0 && ::write(full_fd, "x", 1) == -1 && errno == ENOSPC, "/dev/full");
  expect(::mkdir("/dev/sneaky", 0755) == -1 && errno == EROFS, "/dev is writable");
  int ptm = ::posix_openpt(O_RDWR | O_NOCTTY);
  expect(ptm >= 0, "posix_openpt failed");
  if (ptm >= 0) {
    const char* name = ::ptsname(ptm);
    // A fresh devpts instance numbers from 0: the host's ptys are not visible.
    expect(name && std::string(name) == "/dev/pts/0", "pty is not /dev/pts/0 of a new instance");
  }

  // /proc: masked and read-only parts.
  // Every masked path this kernel has (kcore, sysrq-trigger, ... depend on its config) is
  // /dev/null (files) or an empty directory, in the sandbox's /proc.
  for (const std::string& rel : host_masked) {
    const std::string path = "/proc/" + rel;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      bad << path << " vanished instead of being masked\n";
    } else if (S_ISDIR(st.st_mode)) {
      expect(ListDir(path).empty(), path + " is not masked by an empty directory");
    } else {
      expect(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), path + " is not /dev/null");
      auto content = ReadFile(path);
      expect(content.ok() && content->empty(), path + " still has content");
    }
  }
  expect(::open("/proc/sys/kernel/hostname", O_WRONLY) == -1 && errno == EROFS,
         "/proc/sys is writable");
  expect(::open("/proc/sys/kernel/core_pattern", O_WRONLY) == -1 && errno == EROFS,
         "core_pattern is writable");
  auto self_status = ReadFile("/proc/self/status");
  expect(self_status.ok(), "/proc/self unreadable");
  auto procs = ListDir("/proc");
  int pids = 0;
  for (const std::string& e : procs) pids += (e[0] >= '0' && e[0] <= '9') ? 1 : 0;
  expect(pids == 1, "/proc shows " + std::to_string(pids) + " processes, want only ours");

  // /sys: empty and read-only.
  expect(ListDir("/sys").empty(), "/sys is not empty");
  expect(::mkdir("/sys/x", 0755) == -1 && errno == EROFS, "/sys is writable");

  char host[64] = {};
  ::gethostname(host, sizeof host - 1);
  expect(hostname == host, std::string("hostname is ") + host);
  return bad.str();
}

class MountPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts in a new mount namespace)";
    auto dir = TempDir::Make("hangar-mount-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
    for (const char* d :
         {"/lower", "/lower/etc", "/lower/dev", "/lower/proc", "/upper", "/work", "/root"}) {
      ASSERT_TRUE(MakeDirs(dir_.path() + d).ok());
    }
    ASSERT_TRUE(WriteFile(dir_.path() + "/lower/etc/template-file", "T").ok());
    options_.lower = dir_.path() + "/lower";
    options_.upper = dir_.path() + "/upper";
    options_.work = dir_.path() + "/work";
    options_.target = dir_.path() + "/root";
    options_.hostname = "sb-mount-test";
  }
  TempDir dir_;
  SandboxRootOptions options_;
};

TEST_F(MountPrivilegedTest, SandboxSeesOnlyItsRootAndTheHostSeesNoMount) {
  // The masked paths this kernel has; /proc/keys and /proc/timer_list exist on most configs.
  std::vector<std::string> host_masked;
  for (const std::string& rel : MaskedProcPaths()) {
    if (::access(("/proc/" + rel).c_str(), F_OK) == 0) host_masked.push_back(rel);
  }
  RecordProperty("masked_paths_present", static_cast<int>(host_masked.size()));
  EXPECT_FALSE(host_masked.empty());
  char host_name_before[64] = {};
  ::gethostname(host_name_before, sizeof host_name_before - 1);

  ForkedChild child(
      [&](ForkedChild& self) {
        if (::unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS) != 0) return 10;
        pid_t init = ::fork();  // the first process of the new pid namespace
        if (init == 0) {
          Status s = SetUpSandboxRoot(options_);
          if (!s.ok()) {
            self.Send("setup: " + s.ToString() + "\n");
            ::_exit(11);
          }
          self.Send(CheckInside(options_.hostname, host_masked));
          ::_exit(0);
        }
        int st = 0;
        ::waitpid(init, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 12;
      },
      /*wait_for_go=*/false);
  std::string report = child.ReadAll();
  int st = child.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << DescribeWaitStatus(st) << "\n" << report;
  EXPECT_THAT(report, IsEmpty());

  // Host side: writes landed in upper, the template is untouched, nothing is mounted here.
  auto upper = ReadFile(options_.upper + "/etc/new-file");
  EXPECT_TRUE(upper.ok() && *upper == "N");
  EXPECT_NE(::access((options_.lower + "/etc/new-file").c_str(), F_OK), 0)
      << "the sandbox wrote into the template";
  auto mounts = MountsUnder(dir_.path());
  ASSERT_TRUE(mounts.ok());
  EXPECT_THAT(*mounts, IsEmpty()) << "a sandbox mount leaked into the host namespace";
  char host_name_after[64] = {};
  ::gethostname(host_name_after, sizeof host_name_after - 1);
  EXPECT_STREQ(host_name_before, host_name_after);
}

TEST_F(MountPrivilegedTest, BadOverlayPathIsRefusedBeforeAnyMount) {
  options_.upper = dir_.path() + "/up,per";
  ForkedChild child(
      [&](ForkedChild& self) {
        if (::unshare(CLONE_NEWNS) != 0) return 10;
        Status s = SetUpSandboxRoot(options_);
        self.Send(s.ToString());
        return 0;
      },
      /*wait_for_go=*/false);
  std::string out = child.ReadAll();
  child.Wait();
  EXPECT_THAT(out, ::testing::StartsWith("invalid_argument: upper must be an absolute path"));
}

TEST_F(MountPrivilegedTest, FailingStepNamesTheMount) {
  options_.lower = dir_.path() + "/does-not-exist";
  ForkedChild child(
      [&](ForkedChild& self) {
        if (::unshare(CLONE_NEWNS) != 0) return 10;
        Status s = SetUpSandboxRoot(options_);
        self.Send(s.message());
        return 0;
      },
      /*wait_for_go=*/false);
  std::string out = child.ReadAll();
  child.Wait();
  EXPECT_THAT(out, ::testing::HasSubstr("mount(overlay, " + options_.target + ", overlay"));
  EXPECT_THAT(out, ::testing::HasSubstr("lowerdir=" + options_.lower));
}

}  // namespace
}  // namespace hangar::node
