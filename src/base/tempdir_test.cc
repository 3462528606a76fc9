#include "hangar/base/tempdir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"

namespace hangar {
namespace {

bool Exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

TEST(TempDirTest, RemovesWholeTreeOnDestruction) {
  std::string path;
  {
    auto d = TempDir::Make("hangar-test-");
    ASSERT_TRUE(d.ok());
    path = d->path();
    ASSERT_TRUE(MakeDirs(path + "/a/b/c").ok());
    ASSERT_TRUE(WriteFile(path + "/a/b/c/f", "x").ok());
    ASSERT_EQ(::symlink("/etc/hostname", (path + "/a/link").c_str()), 0);
  }
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(Exists("/etc/hostname")) << "symlink target must survive";
}

TEST(TempDirTest, ReleaseKeepsDirectory) {
  std::string path;
  {
    auto d = TempDir::Make();
    ASSERT_TRUE(d.ok());
    path = d->Release();
  }
  EXPECT_TRUE(Exists(path));
  EXPECT_TRUE(RemoveTree(path).ok());
  EXPECT_FALSE(Exists(path));
}

TEST(TempDirTest, RefusesRoot) { EXPECT_EQ(RemoveTree("/").code(), Code::kInvalidArgument); }

TEST(TempDirTest, BadParentIsAnError) {
  auto d = TempDir::Make("x-", "/nonexistent-parent");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("mkdtemp(/nonexistent-parent/x-XXXXXX)"), std::string::npos);
}

}  // namespace
}  // namespace hangar
