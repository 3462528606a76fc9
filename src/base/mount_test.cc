#include "hangar/base/mount.h"

#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"

namespace hangar {
namespace {

bool MountedAt(const std::string& p) {
  auto m = MountsUnder(p);
  return m.ok() && !m->empty() && m->back() == p;
}

class MountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount";
  }
};

TEST_F(MountTest, ScopedMountUnmountsOnDestruction) {
  auto d = TempDir::Make("hangar-mnt-");
  ASSERT_TRUE(d.ok());
  {
    auto m = ScopedMount::Mount("tmpfs", d->path(), "tmpfs", 0, "size=1m");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_TRUE(MountedAt(d->path()));
    ASSERT_TRUE(WriteFile(d->path() + "/on-tmpfs", "x").ok());
  }
  EXPECT_FALSE(MountedAt(d->path()));
  EXPECT_NE(::access((d->path() + "/on-tmpfs").c_str(), F_OK), 0);
}

TEST_F(MountTest, MountErrorNamesArguments) {
  auto m = ScopedMount::Mount("none", "/nonexistent-hangar-target", "tmpfs", 0);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("mount(none, /nonexistent-hangar-target, tmpfs"),
            std::string::npos);
}

TEST_F(MountTest, TempDirCleanupDetachesNestedMountsWithoutDeletingThroughThem) {
  // A bind mount of a directory that must survive, nested inside a TempDir.
  auto keep = TempDir::Make("hangar-keep-");
  ASSERT_TRUE(keep.ok());
  ASSERT_TRUE(WriteFile(keep->path() + "/precious", "data").ok());
  std::string root;
  {
    auto d = TempDir::Make("hangar-mnt-");
    ASSERT_TRUE(d.ok());
    root = d->path();
    ASSERT_TRUE(MakeDirs(root + "/a/bind").ok());
    auto tm = ScopedMount::Mount("tmpfs", root + "/a", "tmpfs", 0, "size=1m");
    ASSERT_TRUE(tm.ok());
    ASSERT_TRUE(MakeDirs(root + "/a/bind").ok());
    auto b = ScopedMount::Mount(keep->path(), root + "/a/bind", "", MS_BIND);
    ASSERT_TRUE(b.ok());
    auto under = MountsUnder(root);
    ASSERT_TRUE(under.ok());
    ASSERT_EQ(under->size(), 2u);
    EXPECT_EQ((*under)[0], root + "/a/bind") << "deepest first";
    tm->Release();
    b->Release();  // leave both to TempDir's cleanup
  }
  EXPECT_NE(::access(root.c_str(), F_OK), 0);
  EXPECT_EQ(*ReadFile(keep->path() + "/precious"), "data");
}

}  // namespace
}  // namespace hangar
