#include "users.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"

namespace hangar::envd::internal {
namespace {

TEST(ParsePasswdTest, SkipsCommentsAndMalformedLines) {
  auto e = ParsePasswd(
      "# comment\nroot:x:0:0:root:/root:/bin/bash\nbroken line\nuser:x:1000:1001:U:/home/user:"
      "/bin/sh\r\nbad:x:abc:0::/:/bin/sh\n:x:1:1::/:/bin/sh\nnohome:x:5:5:::\n");
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].name, "root");
  EXPECT_EQ(e[1].name, "user");
  EXPECT_EQ(e[1].uid, 1000u);
  EXPECT_EQ(e[1].gid, 1001u);
  EXPECT_EQ(e[1].home, "/home/user");
  EXPECT_EQ(e[1].shell, "/bin/sh");
  EXPECT_EQ(e[2].home, "");
}

TEST(ParseGroupTest, ReadsMembers) {
  auto g = ParseGroup("root:x:0:\nwheel:x:10:user,other\nbad:x:z:\n");
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1].name, "wheel");
  EXPECT_EQ(g[1].gid, 10u);
  EXPECT_EQ(g[1].members, (std::vector<std::string>{"user", "other"}));
}

class UserDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::Make("envd-users-test-");
    ASSERT_TRUE(t.ok());
    dir_ = std::move(*t);
    ASSERT_TRUE(MakeDirs(dir_.path() + "/etc").ok());
    auto r = Root::Open(dir_.path());
    ASSERT_TRUE(r.ok());
    root_ = std::move(*r);
  }
  TempDir dir_;
  Root root_;
};

TEST_F(UserDbTest, LooksUpUsersWithSupplementaryGroups) {
  ASSERT_TRUE(WriteFile(dir_.path() + "/etc/passwd",
                        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
                  .ok());
  ASSERT_TRUE(WriteFile(dir_.path() + "/etc/group",
                        "root:x:0:\nuser:x:1000:user\nwheel:x:10:user\nother:x:20:root\n")
                  .ok());
  UserDb db(&root_);
  auto u = db.Lookup("user");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->uid, 1000u);
  EXPECT_EQ(u->home, "/home/user");
  EXPECT_EQ(u->groups, std::vector<gid_t>{10});  // the primary group is not repeated
  EXPECT_EQ(db.Lookup("nobody").status().code(), Code::kNotFound);
  EXPECT_EQ(db.UserName(1000), "user");
  EXPECT_EQ(db.UserName(4242), "4242");
  EXPECT_EQ(db.GroupName(10), "wheel");
  EXPECT_EQ(db.GroupName(77), "77");
}

TEST_F(UserDbTest, SeesNewAccounts) {
  ASSERT_TRUE(WriteFile(dir_.path() + "/etc/passwd", "root:x:0:0::/root:/bin/sh\n").ok());
  UserDb db(&root_);
  EXPECT_FALSE(db.Lookup("late").ok());
  ASSERT_TRUE(WriteFile(dir_.path() + "/etc/passwd",
                        "root:x:0:0::/root:/bin/sh\nlate:x:1234:1234::/home/late:/bin/sh\n")
                  .ok());
  auto u = db.Lookup("late");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->uid, 1234u);
}

TEST_F(UserDbTest, RootWithoutPasswdFile) {
  UserDb db(&root_);
  auto u = db.Lookup("root");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid, 0u);
  EXPECT_EQ(u->home, "/root");
  EXPECT_FALSE(db.Lookup("user").ok());
}

}  // namespace
}  // namespace hangar::envd::internal
