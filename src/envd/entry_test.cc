#include "entry.h"

#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"

namespace hangar::envd::internal {
namespace {

TEST(PermissionsStringTest, MatchesGoFileModeString) {
  EXPECT_EQ(PermissionsString(S_IFREG | 0644), "-rw-r--r--");
  EXPECT_EQ(PermissionsString(S_IFDIR | 0755), "drwxr-xr-x");
  EXPECT_EQ(PermissionsString(S_IFLNK | 0777), "Lrwxrwxrwx");
  EXPECT_EQ(PermissionsString(S_IFDIR | S_ISVTX | 0777), "dtrwxrwxrwx");
  EXPECT_EQ(PermissionsString(S_IFREG | S_ISUID | 0755), "urwxr-xr-x");
  EXPECT_EQ(PermissionsString(S_IFREG | S_ISGID | 0755), "grwxr-xr-x");
  EXPECT_EQ(PermissionsString(S_IFCHR | 0620), "Dcrw--w----");
  EXPECT_EQ(PermissionsString(S_IFBLK | 0660), "Drw-rw----");
  EXPECT_EQ(PermissionsString(S_IFIFO | 0644), "prw-r--r--");
  EXPECT_EQ(PermissionsString(S_IFSOCK | 0755), "Srwxr-xr-x");
  EXPECT_EQ(PermissionsString(S_IFREG | 0), "----------");
}

TEST(ValidateMetadataTest, E2bRules) {
  EXPECT_TRUE(ValidateMetadata({{"owner", "team-a"}}).ok());
  EXPECT_FALSE(ValidateMetadata({{"k", "caf\xc3\xa9"}}).ok());
  EXPECT_FALSE(ValidateMetadata({{"", "v"}}).ok());
  EXPECT_FALSE(ValidateMetadata({{std::string(247, 'k'), "v"}}).ok());
  EXPECT_TRUE(ValidateMetadata({{std::string(246, 'k'), "v"}}).ok());
  EXPECT_FALSE(
      ValidateMetadata({{"a", std::string(4000, 'v')}, {"b", std::string(100, 'v')}}).ok());
}

class EntryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::Make("envd-entry-test-");
    ASSERT_TRUE(t.ok());
    dir_ = std::move(*t);
    ASSERT_TRUE(MakeDirs(dir_.path() + "/etc").ok());
    ASSERT_TRUE(MakeDirs(dir_.path() + "/home/user").ok());
    ASSERT_TRUE(WriteFile(dir_.path() + "/etc/passwd",
                          "root:x:0:0::/root:/bin/sh\nme:x:" + std::to_string(::getuid()) + ":" +
                              std::to_string(::getgid()) + "::/home/user:/bin/sh\n")
                    .ok());
    ASSERT_TRUE(
        WriteFile(dir_.path() + "/etc/group", "us:x:" + std::to_string(::getgid()) + ":\n").ok());
    auto r = Root::Open(dir_.path());
    ASSERT_TRUE(r.ok());
    root_ = std::move(*r);
  }
  TempDir dir_;
  Root root_;
  UserDb users_{&root_};
};

TEST_F(EntryTest, RegularFile) {
  ASSERT_TRUE(WriteFile(dir_.path() + "/home/user/f.txt", "hello").ok());
  ASSERT_EQ(::chmod((dir_.path() + "/home/user/f.txt").c_str(), 0640), 0);
  auto e = EntryJson(root_, users_, "/home/user/f.txt");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)["name"], "f.txt");
  EXPECT_EQ((*e)["type"], "FILE_TYPE_FILE");
  EXPECT_EQ((*e)["path"], "/home/user/f.txt");
  EXPECT_EQ((*e)["size"], "5");
  EXPECT_EQ((*e)["mode"], 0640);
  EXPECT_EQ((*e)["permissions"], "-rw-r-----");
  EXPECT_EQ((*e)["owner"], ::getuid() == 0 ? "root" : "me");
  EXPECT_EQ((*e)["group"], "us");
  EXPECT_TRUE((*e)["modifiedTime"].get<std::string>().ends_with("Z"));
  EXPECT_FALSE(e->contains("symlinkTarget"));
}

TEST_F(EntryTest, SymlinksReportTheirTargetConfined) {
  ASSERT_EQ(::symlink("/home/user", (dir_.path() + "/lnk").c_str()), 0);
  auto e = EntryJson(root_, users_, "/lnk");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ((*e)["type"], "FILE_TYPE_DIRECTORY");
  EXPECT_EQ((*e)["symlinkTarget"], "/home/user");
  EXPECT_EQ((*e)["permissions"], "Lrwxrwxrwx");
  ASSERT_EQ(::symlink("/nowhere", (dir_.path() + "/dangling").c_str()), 0);
  auto d = EntryJson(root_, users_, "/dangling");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->contains("type"));  // unspecified: the SDK skips it
  EXPECT_EQ((*d)["symlinkTarget"], "/dangling");
  EXPECT_EQ(EntryJson(root_, users_, "/missing").status().code(), Code::kNotFound);
}

TEST_F(EntryTest, MetadataFromXattrs) {
  std::string f = dir_.path() + "/home/user/m";
  ASSERT_TRUE(WriteFile(f, "x").ok());
  if (::setxattr(f.c_str(), "user.e2b.owner", "alice", 5, 0) != 0) {
    GTEST_SKIP() << "no user xattrs on " << dir_.path();
  }
  ASSERT_EQ(::setxattr(f.c_str(), "user.other", "ignored", 7, 0), 0);
  auto e = EntryJson(root_, users_, "/home/user/m");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ((*e)["metadata"], (nlohmann::json{{"owner", "alice"}}));
}

}  // namespace
}  // namespace hangar::envd::internal
