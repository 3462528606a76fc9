// TemplateStore on imported tarballs: metadata, listing, errors, atomicity, cleanup of
// interrupted builds. (OCI import: oci_import_test.cc; the Debian build: debian_base_slow_test.cc.)
#include "hangar/storage/template_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/clock.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "testing/counters.h"
#include "testing/tar_builder.h"

namespace hangar::storage {
namespace {

using ::testing::ElementsAre;
using testing::FilesIn;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::TarBuilder;

class TemplateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Make("hangar-tmpl-");
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(*d);
    auto s = TemplateStore::Open({.root = dir_.path() + "/templates", .clock = &clock_});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_.emplace(std::move(*s));
  }
  std::string Path(const std::string& n) const { return dir_.path() + "/" + n; }
  // A tiny usrmerged rootfs: /bin -> usr/bin, an executable usr/bin/bash.
  std::string GoodTar(const std::string& name = "rootfs.tar") {
    TarBuilder(Path(name))
        .Dir("usr/bin")
        .File("usr/bin/bash", "#!fake", 0755)
        .File("usr/bin/passwd", "ELF", 04755)
        .Symlink("bin", "usr/bin")
        .Dir("etc")
        .File("etc/os-release", "ID=test\n");
    return Path(name);
  }
  TempDir dir_;
  FakeClock clock_;
  std::optional<TemplateStore> store_;
};

TEST(TemplateNameTest, Grammar) {
  const std::vector<std::string> good = {"a", "debian-12", "my.tmpl_1", "0abc",
                                         std::string(63, 'x')};
  for (const auto& ok : good) {
    EXPECT_TRUE(ValidateTemplateName(ok).ok()) << ok;
  }
  const std::vector<std::string> bad_names = {"",    "-a",  ".a", "_a", "A",
                                              "a/b", "a b", "..", "é",  std::string(64, 'x')};
  for (const auto& bad : bad_names) {
    Status s = ValidateTemplateName(bad);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("^[a-z0-9][a-z0-9._-]{0,62}$"));
  }
}

TEST(TemplateCacheDirTest, FromEnvironment) {
  ::setenv("HANGAR_TEMPLATE_CACHE", "/x/cache", 1);
  EXPECT_EQ(TemplateCacheDirFromEnv("/fallback"), "/x/cache");
  ::setenv("HANGAR_TEMPLATE_CACHE", "", 1);
  EXPECT_EQ(TemplateCacheDirFromEnv("/fallback"), "/fallback");
  ::unsetenv("HANGAR_TEMPLATE_CACHE");
}

TEST_F(TemplateStoreTest, RootIsPrivate) {
  struct stat st;
  ASSERT_EQ(::stat(store_->root().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);  // setuid binaries of imported images stay unreachable
}

TEST_F(TemplateStoreTest, ImportTarballRecordsMetadata) {
  auto t = store_->ImportTarball("base", GoodTar());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->name, "base");
  EXPECT_THAT(t->source, StartsWith("tarball:/"));
  EXPECT_EQ(t->file_count, 7u);                 // usr, usr/bin, bash, passwd, bin, etc, os-release
  EXPECT_EQ(t->size_bytes, 6u + 3u + 7u + 8u);  // two files, symlink target, os-release
  EXPECT_EQ(t->setuid_files, ::geteuid() == 0 ? 1u : 0u);  // see TarballTest.ExtractsFaithfully
  EXPECT_TRUE(t->has_bash);
  EXPECT_THAT(t->digest, StartsWith("sha256:"));
  EXPECT_EQ(t->created_at, FormatRfc3339(clock_.WallNow()));
  EXPECT_EQ(t->rootfs, store_->root() + "/base/rootfs");
  EXPECT_EQ(::access((t->rootfs + "/etc/os-release").c_str(), R_OK), 0);

  auto again = store_->Get("base");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->digest, t->digest);
  EXPECT_EQ(again->file_count, t->file_count);
}

TEST_F(TemplateStoreTest, HasBashResolvesInsideTheRootfs) {
  // /bin is an absolute symlink and the rootfs has no bash: the host's /usr/bin/bash must not
  // count.
  TarBuilder(Path("nobash.tar")).Symlink("bin", "/usr/bin").Dir("usr/bin");
  auto t = store_->ImportTarball("nobash", Path("nobash.tar"));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->has_bash);
  TarBuilder(Path("absbash.tar"))
      .Symlink("bin", "/usr/bin")
      .Dir("usr/bin")
      .File("usr/bin/bash", "x", 0755);
  auto u = store_->ImportTarball("absbash", Path("absbash.tar"));
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_TRUE(u->has_bash);
}

TEST_F(TemplateStoreTest, ListIsSortedAndSkipsDamagedEntries) {
  ASSERT_TRUE(store_->ImportTarball("zeta", GoodTar("a.tar")).ok());
  ASSERT_TRUE(store_->ImportTarball("alpha", GoodTar("b.tar")).ok());
  ASSERT_TRUE(MakeDirs(store_->root() + "/broken/rootfs").ok());  // no template.json
  auto list = store_->List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  std::vector<std::string> names;
  for (const auto& t : *list) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("alpha", "zeta"));
}

TEST_F(TemplateStoreTest, GetUnknownNamesItAndTheKnownOnes) {
  ASSERT_TRUE(store_->ImportTarball("base", GoodTar()).ok());
  auto r = store_->Get("nosuch");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("template 'nosuch' not found"));
  EXPECT_THAT(r.status().message(), HasSubstr("known templates: base"));
  EXPECT_EQ(store_->Get("Bad/Name").status().code(), Code::kInvalidArgument);
}

TEST_F(TemplateStoreTest, BadTarballCreatesNothing) {
  TarBuilder b(Path("bad.tar"));
  for (int i = 0; i < 20; ++i) b.File("f" + std::to_string(i), "data");
  b.File("etc/../../x", "pwned");
  b.Close();
  auto r = store_->ImportTarball("bad", Path("bad.tar"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("entry 'etc/../../x' escapes the root"));
  EXPECT_EQ(store_->Get("bad").status().code(), Code::kNotFound);
  EXPECT_EQ(FilesIn(store_->root()), 0);                // no template dir
  EXPECT_EQ(FilesIn(store_->root() + "/.staging"), 0);  // no half-extracted staging dir
}

TEST_F(TemplateStoreTest, ImportOverAnExistingNameFails) {
  ASSERT_TRUE(store_->ImportTarball("base", GoodTar()).ok());
  auto r = store_->ImportTarball("base", GoodTar("other.tar"));
  EXPECT_EQ(r.status().code(), Code::kAlreadyExists);
  EXPECT_EQ(store_->ImportTarball("Base!", GoodTar()).status().code(), Code::kInvalidArgument);
}

TEST_F(TemplateStoreTest, RemoveDeletesAndReportsUnknown) {
  ASSERT_TRUE(store_->ImportTarball("base", GoodTar()).ok());
  ASSERT_TRUE(store_->Remove("base").ok());
  EXPECT_EQ(store_->Get("base").status().code(), Code::kNotFound);
  EXPECT_EQ(FilesIn(store_->root()), 0);
  EXPECT_EQ(FilesIn(store_->root() + "/.staging"), 0);
  EXPECT_EQ(store_->Remove("base").code(), Code::kNotFound);
}

TEST_F(TemplateStoreTest, OpenRemovesInterruptedBuilds) {
  ASSERT_TRUE(MakeDirs(store_->root() + "/.staging/half.Ab12Cd/rootfs/etc").ok());
  auto reopened = TemplateStore::Open({.root = store_->root()});
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(FilesIn(store_->root() + "/.staging"), 0);
  EXPECT_EQ(reopened->Get("half").status().code(), Code::kNotFound);
}

TEST_F(TemplateStoreTest, DebianBuildRejectsBadInputBeforeDoingAnything) {
  EXPECT_EQ(store_->BuildDebianBase("x", {.variant = "fat"}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_->BuildDebianBase("x", {.extra_packages = {"ok", "rm -rf"}}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_->BuildDebianBase("X", {}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(FilesIn(store_->root() + "/.staging"), 0);
}

TEST_F(TemplateStoreTest, OciImportValidatesArguments) {
  EXPECT_EQ(store_->ImportOci("x", Path("a:b"), "latest").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->ImportOci("x", Path("nolayout"), "latest").status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_->ImportOci("x", Path("nolayout"), "bad tag").status().code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace hangar::storage
