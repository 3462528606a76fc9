// ImportOci against a real OCI image layout built in the test with umoci (no network).
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/template_store.h"
#include "testing/counters.h"

namespace hangar::storage {
namespace {

using testing::FilesIn;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class OciImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RunCommand({"umoci", "--version"}).ok()) GTEST_SKIP() << "umoci is not installed";
    auto d = TempDir::Make("hangar-oci-");
    ASSERT_TRUE(d.ok());
    dir_ = std::move(*d);
    auto s = TemplateStore::Open({.root = Path("templates")});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_.emplace(std::move(*s));
  }
  std::string Path(const std::string& n) const { return dir_.path() + "/" + n; }
  void Run(const std::vector<std::string>& argv) {
    auto r = RunChecked(argv);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  // layout with tag "v1": a tiny rootfs in one layer.
  void MakeLayout(const std::string& src) {
    Run({"umoci", "init", "--layout", Path("layout")});
    Run({"umoci", "new", "--image", Path("layout") + ":v1"});
    Run({"umoci", "insert", "--image", Path("layout") + ":v1", src + "/usr", "/usr"});
    Run({"umoci", "insert", "--image", Path("layout") + ":v1", src + "/etc", "/etc"});
  }
  TempDir dir_;
  std::optional<TemplateStore> store_;
};

TEST_F(OciImportTest, ImportsATaggedImage) {
  ASSERT_TRUE(MakeDirs(Path("src/usr/bin")).ok());
  ASSERT_TRUE(MakeDirs(Path("src/etc")).ok());
  ASSERT_TRUE(WriteFile(Path("src/usr/bin/bash"), "#!fake").ok());
  ASSERT_EQ(::chmod(Path("src/usr/bin/bash").c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(Path("src/etc/hello"), "hi\n").ok());
  MakeLayout(Path("src"));

  auto t = store_->ImportOci("oci-small", Path("layout"), "v1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_THAT(t->source, StartsWith("oci:"));
  EXPECT_THAT(t->source, HasSubstr(":v1"));
  EXPECT_THAT(t->digest, StartsWith("sha256:"));
  EXPECT_TRUE(t->has_bash);
  auto hello = ReadFile(t->rootfs + "/etc/hello");
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(*hello, "hi\n");
  // umoci's own files (config.json, umoci.json) stay out of the template.
  EXPECT_EQ(::access((store_->root() + "/oci-small/config.json").c_str(), F_OK), -1);

  auto dup = store_->ImportOci("oci-small", Path("layout"), "v1");
  EXPECT_EQ(dup.status().code(), Code::kAlreadyExists);
}

TEST_F(OciImportTest, UnknownTagListsTheTags) {
  ASSERT_TRUE(MakeDirs(Path("src/usr")).ok());
  ASSERT_TRUE(MakeDirs(Path("src/etc")).ok());
  MakeLayout(Path("src"));
  auto t = store_->ImportOci("x", Path("layout"), "v2");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr("tag 'v2' not found"));
  EXPECT_THAT(t.status().message(), HasSubstr("tags: v1"));
}

TEST_F(OciImportTest, RefusesDeviceNodesAndLeavesNothing) {
  if (::geteuid() != 0) GTEST_SKIP() << "mknod of a device node needs root";
  ASSERT_TRUE(MakeDirs(Path("src/usr")).ok());
  ASSERT_TRUE(MakeDirs(Path("src/etc")).ok());
  ASSERT_EQ(::mknod(Path("src/etc/kmem").c_str(), S_IFCHR | 0600, makedev(1, 2)), 0);
  MakeLayout(Path("src"));
  auto t = store_->ImportOci("dev", Path("layout"), "v1");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("'etc/kmem' is a device node"));
  EXPECT_EQ(FilesIn(store_->root()), 0);
  EXPECT_EQ(FilesIn(store_->root() + "/.staging"), 0);
}

}  // namespace
}  // namespace hangar::storage
