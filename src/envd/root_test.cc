#include "root.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"

namespace hangar::envd::internal {
namespace {

TEST(RootResolveTest, JoinsRelativePathsToHomeAndCleans) {
  EXPECT_EQ(*Root::Resolve("", "/home/user"), "/home/user");
  EXPECT_EQ(*Root::Resolve("a/b", "/home/user"), "/home/user/a/b");
  EXPECT_EQ(*Root::Resolve("~", "/home/user"), "/home/user");
  EXPECT_EQ(*Root::Resolve("~/x/./y/", "/home/user"), "/home/user/x/y");
  EXPECT_EQ(*Root::Resolve("/etc//passwd", "/home/user"), "/etc/passwd");
  EXPECT_EQ(*Root::Resolve("../../../../etc", "/home/user"), "/etc");
  EXPECT_EQ(*Root::Resolve("/../..", "/home/user"), "/");
  EXPECT_EQ(Root::Resolve("~root/x", "/home/user").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Root::Resolve(std::string("a\0b", 3), "/h").status().code(), Code::kInvalidArgument);
}

class RootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::Make("envd-root-test-");
    ASSERT_TRUE(t.ok());
    dir_ = std::move(*t);
    auto o = TempDir::Make("envd-outside-");
    ASSERT_TRUE(o.ok());
    outside_ = std::move(*o);
    ASSERT_TRUE(MakeDirs(dir_.path() + "/etc").ok());
    ASSERT_TRUE(MakeDirs(dir_.path() + "/home/user").ok());
    ASSERT_TRUE(WriteFile(dir_.path() + "/etc/passwd", "sandbox passwd").ok());
    ASSERT_TRUE(WriteFile(outside_.path() + "/secret", "host secret").ok());
    auto r = Root::Open(dir_.path());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    root_ = std::move(*r);
  }
  std::string Host(const std::string& p) { return dir_.path() + p; }
  std::string Read(const std::string& sandbox_path) {
    auto fd = root_.OpenAt(sandbox_path, O_RDONLY);
    if (!fd.ok()) return "error: " + fd.status().ToString();
    char buf[256];
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  }

  TempDir dir_, outside_;
  Root root_;
};

TEST_F(RootTest, AbsoluteSymlinksResolveInsideTheRoot) {
  ASSERT_EQ(::symlink("/etc/passwd", Host("/home/user/link").c_str()), 0);
  EXPECT_EQ(Read("/home/user/link"), "sandbox passwd");
  // A link to the outside directory's host path is a path inside the root, which is absent.
  ASSERT_EQ(::symlink((outside_.path() + "/secret").c_str(), Host("/home/user/out").c_str()), 0);
  EXPECT_EQ(root_.OpenAt("/home/user/out", O_RDONLY).status().code(), Code::kNotFound);
}

TEST_F(RootTest, DotDotCannotClimbOutOfTheRoot) {
  ASSERT_EQ(::symlink("../../../../../../../..", Host("/home/user/up").c_str()), 0);
  EXPECT_EQ(*root_.RealPath("/home/user/up"), "/");
  EXPECT_EQ(Read("/home/user/up/etc/passwd"), "sandbox passwd");
  // openat2 itself clamps "..", even unresolved by Resolve.
  EXPECT_EQ(Read("/../../../etc/passwd"), "sandbox passwd");
}

TEST_F(RootTest, RealPathAndPathOfAreSandboxPaths) {
  ASSERT_EQ(::symlink("user", Host("/home/u").c_str()), 0);
  EXPECT_EQ(*root_.RealPath("/home/u"), "/home/user");
  EXPECT_EQ(*root_.RealPath("/"), "/");
  auto fd = root_.OpenAt("/etc", O_PATH);
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(*root_.PathOf(fd->get()), "/etc");
}

TEST_F(RootTest, LstatDoesNotFollowStatDoes) {
  ASSERT_EQ(::symlink("/etc", Host("/l").c_str()), 0);
  EXPECT_TRUE(S_ISLNK(root_.Lstat("/l")->st_mode));
  EXPECT_TRUE(S_ISDIR(root_.Stat("/l")->st_mode));
  EXPECT_TRUE(S_ISDIR(root_.Lstat("/")->st_mode));
  EXPECT_EQ(root_.Lstat("/nope").status().code(), Code::kNotFound);
}

TEST_F(RootTest, MakeDirsCreatesOwnedDirectoriesAndStaysInside) {
  ASSERT_TRUE(root_.MakeDirs("/home/user/a/b/c", ::getuid(), ::getgid()).ok());
  struct stat st {};
  ASSERT_EQ(::stat(Host("/home/user/a/b/c").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_uid, ::getuid());
  EXPECT_TRUE(root_.MakeDirs("/home/user/a/b", ::getuid(), ::getgid()).ok());  // exists: ok
  // Through a symlink to the outside's host path: created inside the root, not outside.
  ASSERT_EQ(::symlink(outside_.path().c_str(), Host("/esc").c_str()), 0);
  // Dangling inside the root (as `mkdir -p` does, it refuses to replace the link).
  EXPECT_EQ(root_.MakeDirs("/esc/new", ::getuid(), ::getgid()).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(MakeDirs(Host(outside_.path())).ok());
  ASSERT_TRUE(root_.MakeDirs("/esc/new", ::getuid(), ::getgid()).ok());
  EXPECT_NE(::access((outside_.path() + "/new").c_str(), F_OK), 0);
  EXPECT_EQ(::access(Host(outside_.path() + "/new").c_str(), F_OK), 0);
  Status file = root_.MakeDirs("/etc/passwd/x", ::getuid(), ::getgid());
  EXPECT_EQ(file.code(), Code::kFailedPrecondition) << file.ToString();
}

TEST_F(RootTest, RemoveAllDeletesTreesButNotSymlinkTargets) {
  ASSERT_TRUE(MakeDirs(Host("/t/sub/deeper")).ok());
  ASSERT_TRUE(WriteFile(Host("/t/sub/f"), "x").ok());
  ASSERT_TRUE(MakeDirs(Host("/keep")).ok());
  ASSERT_TRUE(WriteFile(Host("/keep/k"), "k").ok());
  ASSERT_EQ(::symlink("/keep", Host("/t/link").c_str()), 0);
  ASSERT_TRUE(root_.RemoveAll("/t").ok());
  EXPECT_NE(::access(Host("/t").c_str(), F_OK), 0);
  EXPECT_EQ(::access(Host("/keep/k").c_str(), F_OK), 0);
  EXPECT_TRUE(root_.RemoveAll("/t").ok());  // already gone: ok
  ASSERT_EQ(::symlink("/keep", Host("/l2").c_str()), 0);
  ASSERT_TRUE(root_.RemoveAll("/l2").ok());  // the link, not the directory
  EXPECT_EQ(::access(Host("/keep/k").c_str(), F_OK), 0);
  EXPECT_EQ(root_.RemoveAll("/").code(), Code::kInvalidArgument);
  EXPECT_EQ(root_.RemoveAll("/..").code(), Code::kInvalidArgument);
}

TEST_F(RootTest, RenameMovesEntriesThemselves) {
  ASSERT_EQ(::symlink("/etc/passwd", Host("/l").c_str()), 0);
  ASSERT_TRUE(root_.Rename("/l", "/home/user/moved").ok());
  EXPECT_TRUE(S_ISLNK(root_.Lstat("/home/user/moved")->st_mode));
  EXPECT_EQ(Read("/etc/passwd"), "sandbox passwd");
  EXPECT_EQ(root_.Rename("/nope", "/x").code(), Code::kNotFound);
}

// A kernel without openat2 (gVisor in Debian 12's runsc), simulated in a child by a seccomp
// filter answering ENOSYS: a root on "/" falls back to plain resolution, any other root fails.
TEST(RootNoOpenat2Test, RootOnSlashFallsBackOtherRootsFail) {
  auto t = TempDir::Make("envd-root-noopenat2-");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(WriteFile(t->path() + "/f", "content").ok());
  const std::string file = t->path() + "/f";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(10);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) ::_exit(11);
    auto below = Root::Open(t->path());
    if (below.ok() || below.status().sys_errno() != ENOSYS) ::_exit(1);
    auto slash = Root::Open("/");
    if (!slash.ok()) ::_exit(2);
    auto fd = slash->OpenAt(file, O_RDONLY);
    if (!fd.ok()) ::_exit(3);
    char buf[16] = {};
    if (::read(fd->get(), buf, sizeof buf) != 7 || std::string(buf) != "content") ::_exit(4);
    if (slash->OpenAt("relative", O_RDONLY).status().code() != Code::kInvalidArgument) ::_exit(5);
    if (!slash->Lstat(file).ok() || slash->Lstat(file + "x").status().code() != Code::kNotFound) {
      ::_exit(6);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed check number " << WEXITSTATUS(status);
}

}  // namespace
}  // namespace hangar::envd::internal
