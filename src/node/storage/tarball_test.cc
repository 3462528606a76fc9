// Tarball validation and confined extraction, on archives made in the test (libarchive's
// write side for the malicious ones, GNU tar for a real-world one).
#include "hangar/storage/tarball.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "storage_util.h"
#include "testing/counters.h"
#include "testing/tar_builder.h"

namespace hangar::storage {
namespace {

using testing::FilesIn;
using ::testing::HasSubstr;
using testing::TarBuilder;

class TarballTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Make("hangar-tar-");
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(*d);
  }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }
  // Validates and returns the error message (or "ok").
  std::string Check(const std::string& tar, TarballLimits limits = {}) {
    auto r = ValidateTarball(tar, limits);
    return r.ok() ? "ok" : r.status().ToString();
  }
  TempDir dir_;
};

TEST_F(TarballTest, AcceptsARootfsAndSummarisesIt) {
  const std::string tar = Path("ok.tar");
  TarBuilder(tar)
      .Dir("./")
      .Dir("./etc")
      .File("./etc/hostname", "sandbox\n")
      .Dir("usr/bin")
      .File("usr/bin/su", "ELF...", 04755)
      .Symlink("bin", "usr/bin")
      .Symlink("etc/localtime", "/usr/share/zoneinfo/UTC")  // absolute targets are normal
      .Hardlink("etc/hostname2", "etc/hostname")
      .Fifo("run-fifo");
  auto r = ValidateTarball(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->entries, 9u);
  EXPECT_EQ(r->total_bytes, 8u + 6u);
  EXPECT_EQ(r->setuid_files, 1u);
  auto sha = internal::Sha256File(tar);
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(r->sha256, "sha256:" + *sha);
}

TEST_F(TarballTest, AcceptsGzip) {
  const std::string tar = Path("ok.tar.gz");
  TarBuilder(tar, "gzip").Dir("etc").File("etc/a", "x");
  EXPECT_EQ(Check(tar), "ok");
}

TEST_F(TarballTest, RejectsAbsolutePath) {
  const std::string tar = Path("abs.tar");
  TarBuilder(tar).Dir("etc").File("/etc/passwd", "root::0:0::/:/bin/sh\n");
  EXPECT_THAT(Check(tar), HasSubstr("invalid_argument"));
  EXPECT_THAT(Check(tar), HasSubstr("entry '/etc/passwd' is an absolute path"));
}

TEST_F(TarballTest, RejectsDotDotThatEscapes) {
  const std::string tar = Path("dotdot.tar");
  TarBuilder(tar).Dir("etc").File("etc/../../x", "pwned");
  EXPECT_THAT(Check(tar), HasSubstr("entry 'etc/../../x' escapes the root"));
}

TEST_F(TarballTest, RejectsDotDotEvenInside) {
  const std::string tar = Path("dotdot-inside.tar");
  TarBuilder(tar).Dir("a").File("a/../b", "x");
  EXPECT_THAT(Check(tar), HasSubstr("entry 'a/../b' has a '..' component"));
}

TEST_F(TarballTest, RejectsDeviceNodes) {
  const std::string blk = Path("blk.tar");
  TarBuilder(blk).Dir("dev").Device("dev/sda", AE_IFBLK, 8, 0);
  EXPECT_THAT(Check(blk), HasSubstr("entry 'dev/sda' is a block device (8:0); device nodes are "
                                    "not allowed"));
  const std::string chr = Path("chr.tar");
  TarBuilder(chr).Dir("dev").Device("dev/mem", AE_IFCHR, 1, 1);
  EXPECT_THAT(Check(chr), HasSubstr("entry 'dev/mem' is a character device (1:1)"));
}

TEST_F(TarballTest, RejectsHardLinkToAbsolutePath) {
  const std::string tar = Path("hl-abs.tar");
  TarBuilder(tar).Hardlink("shadow", "/etc/shadow");
  EXPECT_THAT(Check(tar),
              HasSubstr("hard link 'shadow' points to the absolute path '/etc/shadow'"));
}

TEST_F(TarballTest, RejectsHardLinkEscaping) {
  const std::string tar = Path("hl-escape.tar");
  TarBuilder(tar).Dir("etc").Hardlink("etc/shadow", "../../etc/shadow");
  EXPECT_THAT(Check(tar),
              HasSubstr("hard link 'etc/shadow' -> '../../etc/shadow' escapes the root"));
}

TEST_F(TarballTest, RejectsHardLinkToNothingEarlier) {
  const std::string tar = Path("hl-missing.tar");
  TarBuilder(tar).Hardlink("a", "b").File("b", "x");
  EXPECT_THAT(Check(tar), HasSubstr("names no earlier regular file"));
}

TEST_F(TarballTest, RejectsEntriesBelowASymlink) {
  const std::string tar = Path("through-symlink.tar");
  TarBuilder(tar).Symlink("evil", "/etc").File("evil/cron.d/x", "* * * * * root sh\n");
  EXPECT_THAT(Check(tar), HasSubstr("entry 'evil/cron.d/x' is below the symlink 'evil'"));
  // The classic: a hard link whose target walks through a symlink onto the host.
  const std::string hl = Path("hl-through-symlink.tar");
  TarBuilder(hl).Symlink("evil", "/etc").Hardlink("shadow", "evil/shadow");
  EXPECT_THAT(Check(hl), HasSubstr("is below the symlink 'evil'"));
}

TEST_F(TarballTest, ASymlinkReplacedByADirectoryIsFine) {
  const std::string tar = Path("replaced.tar");
  TarBuilder(tar).Symlink("a", "/").Dir("a").File("a/x", "1");
  EXPECT_EQ(Check(tar), "ok");
}

TEST_F(TarballTest, RootEntryMustBeADirectory) {
  const std::string tar = Path("root-symlink.tar");
  TarBuilder(tar).Symlink("./", "/");
  EXPECT_THAT(Check(tar), HasSubstr("(the root) is not a directory"));
}

TEST_F(TarballTest, EnforcesLimits) {
  const std::string tar = Path("big.tar");
  TarBuilder(tar).File("a", std::string(600, 'a')).File("b", std::string(600, 'b'));
  EXPECT_THAT(Check(tar, {.max_total_bytes = 1000}),
              HasSubstr("resource_exhausted: " + tar +
                        ": archive expands to more than 1000 bytes (limit reached at entry 'b')"));
  EXPECT_THAT(Check(tar, {.max_entries = 1}), HasSubstr("more than 1 entries"));
}

TEST_F(TarballTest, RejectsWhatIsNotATar) {
  ASSERT_TRUE(WriteFile(Path("junk"), std::string(4096, 'z')).ok());
  EXPECT_THAT(Check(Path("junk")), HasSubstr("not a readable tar archive"));
  ASSERT_TRUE(WriteFile(Path("empty"), "").ok());
  EXPECT_THAT(Check(Path("empty")), HasSubstr("invalid_argument"));
  EXPECT_THAT(Check(Path("missing.tar")), HasSubstr("not_found"));
}

TEST_F(TarballTest, RejectsGnuTarAbsoluteMember) {
  // What `tar -P` (or a careless exporter) produces.
  ASSERT_TRUE(MakeDirs(Path("src/etc")).ok());
  ASSERT_TRUE(WriteFile(Path("src/etc/motd"), "hi\n").ok());
  auto r = RunChecked({"tar", "-cPf", Path("gnu.tar"), Path("src/etc/motd")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(Check(Path("gnu.tar")), HasSubstr("is an absolute path"));
}

TEST_F(TarballTest, ExtractsFaithfully) {
  const std::string tar = Path("ok.tar");
  TarBuilder(tar)
      .Dir("etc", 0750)
      .File("etc/hostname", "sandbox\n", 0640, 1000, 1000)
      .File("usr-su", "ELF", 04755)
      .Symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
      .Hardlink("etc/hostname2", "etc/hostname")
      .Fifo("fifo");
  ASSERT_TRUE(MakeDirs(Path("out")).ok());
  auto r = ExtractTarball(tar, Path("out"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  struct stat a, b, st;
  ASSERT_EQ(::lstat(Path("out/etc/hostname").c_str(), &a), 0);
  ASSERT_EQ(::lstat(Path("out/etc/hostname2").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_mode & 07777, 0640u);
  EXPECT_EQ(a.st_mtime, 1700000000);
  if (::geteuid() == 0) {
    EXPECT_EQ(a.st_uid, 1000u);
  }
  ASSERT_EQ(::lstat(Path("out/usr-su").c_str(), &st), 0);
  // Kept by design as root (see tarball.h); without root libarchive drops setuid because it
  // cannot restore the owner the bit was meant for.
  EXPECT_EQ(st.st_mode & 07777, ::geteuid() == 0 ? 04755u : 0755u);
  ASSERT_EQ(::lstat(Path("out/etc").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::lstat(Path("out/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  char link[256] = {};
  ASSERT_GT(::readlink(Path("out/etc/localtime").c_str(), link, sizeof(link) - 1), 0);
  EXPECT_STREQ(link, "/usr/share/zoneinfo/UTC");
  // The extraction thread's chdir/chroot did not leak into the process.
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  EXPECT_THAT(std::string(cwd), ::testing::Not(HasSubstr(Path("out"))));
}

TEST_F(TarballTest, ExtractsNothingFromABadArchive) {
  const std::string tar = Path("late-bad.tar");
  // Many good entries first: a streaming extractor would have written them before the bad one.
  TarBuilder b(tar);
  for (int i = 0; i < 50; ++i) b.File("f" + std::to_string(i), "data");
  b.Device("dev-null", AE_IFCHR, 1, 3);
  b.Close();
  ASSERT_TRUE(MakeDirs(Path("out")).ok());
  auto r = ExtractTarball(tar, Path("out"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("entry 'dev-null' is a character device"));
  EXPECT_EQ(FilesIn(Path("out")), 0);
}

}  // namespace
}  // namespace hangar::storage
