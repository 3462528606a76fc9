// Per-sandbox disks against the real kernel (root): the quota holds for bytes and inodes, the
// loop device has its own dev_t and uses direct I/O, and no path — success, failure injection,
// busy unmount, crash + adopt — leaks a loop device, a mount or an image.
#include "hangar/storage/disk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/recovery.h"
#include "storage_util.h"
#include "testing/counters.h"

namespace hangar::storage {
namespace {

using testing::FilesIn;
using ::testing::HasSubstr;
using testing::LoopsUnder;
using testing::LoopsUnderSettled;
using testing::MountsAtOrUnder;

class DiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    // Under /var/tmp, not /tmp: the backing filesystem must support O_DIRECT for dio == 1, and
    // /tmp may be a tmpfs elsewhere.
    auto d = TempDir::Make("hangar-disk-", "/var/tmp");
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(*d);
    ASSERT_TRUE(MakeDirs(DisksDir(dir_.path())).ok());
    ASSERT_TRUE(MakeDirs(Path("mnt")).ok());
  }
  void TearDown() override {
    if (dir_.path().empty()) return;
    // Whatever happened, the test leaves nothing behind.
    EXPECT_EQ(LoopsUnderSettled(dir_.path()), 0);
    EXPECT_EQ(MountsAtOrUnder(dir_.path()), 0);
  }
  std::string Path(const std::string& n) const { return dir_.path() + "/" + n; }
  std::string Image(const std::string& n) const { return DisksDir(dir_.path()) + "/" + n; }

  // Fills a file until the write fails; returns the errno and the bytes written.
  static std::pair<int, uint64_t> FillFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return {errno, 0};
    std::string chunk(1 << 20, 'x');
    uint64_t total = 0;
    int err = 0;
    for (;;) {
      ssize_t n = ::write(fd, chunk.data(), chunk.size());
      if (n < 0) {
        err = errno;
        break;
      }
      total += static_cast<uint64_t>(n);
      if (total > (uint64_t{1} << 32)) break;  // safety stop: the quota failed
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    ::close(fd);
    return {err, total};
  }
  TempDir dir_;
};

TEST_F(DiskTest, CreateAttachMountGivesOwnDeviceWithDirectIo) {
  auto d = Disk::Create(Image("a.img"), 64);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  struct stat img;
  ASSERT_EQ(::stat(Image("a.img").c_str(), &img), 0);
  EXPECT_EQ(img.st_size, 64 << 20);
  EXPECT_LT(img.st_blocks * 512, 8 << 20) << "image should be sparse";

  ASSERT_TRUE(d->Attach().ok());
  EXPECT_TRUE(d->loop().used_configure());
  EXPECT_THAT(d->loop_path(), ::testing::StartsWith("/dev/loop"));
  // Its own device number, distinct from the filesystem the image lives on.
  EXPECT_NE(d->dev(), img.st_dev);
  auto sys_dev = ReadFile(fmt::format("/sys/block/loop{}/dev", d->loop().index()));
  ASSERT_TRUE(sys_dev.ok());
  EXPECT_EQ(*sys_dev, fmt::format("{}:{}\n", major(d->dev()), minor(d->dev())));
  auto dio = ReadFile(fmt::format("/sys/block/loop{}/loop/dio", d->loop().index()));
  ASSERT_TRUE(dio.ok());
  EXPECT_EQ(*dio, "1\n");
  EXPECT_EQ(LoopsUnder(dir_.path()), 1);

  ASSERT_TRUE(d->Mount(Path("mnt")).ok());
  auto lines = internal::MountinfoLinesMentioning(Path("mnt"));
  ASSERT_TRUE(lines.ok());
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_THAT((*lines)[0], HasSubstr("nosuid"));
  EXPECT_THAT((*lines)[0], HasSubstr("nodev"));
  EXPECT_THAT((*lines)[0], HasSubstr(fmt::format(" {}:{} ", major(d->dev()), minor(d->dev()))));
  auto u = d->Usage();
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_GT(u->bytes_total, 55u << 20);  // no journal, no reserved blocks: most of 64 MiB
  EXPECT_LE(u->bytes_total, 64u << 20);
  EXPECT_EQ(u->inodes_total, 8192u);  // 64 MiB / 8 KiB per inode

  ASSERT_TRUE(d->Destroy().ok());
  EXPECT_EQ(::access(Image("a.img").c_str(), F_OK), -1);
  EXPECT_EQ(LoopsUnderSettled(dir_.path()), 0);
  EXPECT_EQ(MountsAtOrUnder(Path("mnt")), 0);
}

TEST_F(DiskTest, LegacyAttachAlsoGetsDirectIo) {
  auto d = Disk::Create(Image("legacy.img"), 32);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE(d->Attach({.force_legacy = true}).ok());
  EXPECT_FALSE(d->loop().used_configure());
  EXPECT_TRUE(d->loop().DirectIoActive());
}

TEST_F(DiskTest, QuotaHoldsForBytes) {
  auto d = Disk::Create(Image("q.img"), 32);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE(d->Attach().ok());
  ASSERT_TRUE(d->Mount(Path("mnt")).ok());
  auto [err, written] = FillFile(Path("mnt/big"));
  EXPECT_EQ(err, ENOSPC) << ::strerror(err);
  EXPECT_LE(written, 32u << 20);
  EXPECT_GT(written, 24u << 20);
  auto u = d->Usage();
  ASSERT_TRUE(u.ok());
  // ext4 keeps a few clusters back for its own metadata (s_resv_clusters); nothing a writer
  // can have.
  EXPECT_LT(u->bytes_avail, 1u << 20);
  // A second writer (any uid: no root reserve) gets nothing either.
  auto [err2, written2] = FillFile(Path("mnt/more"));
  EXPECT_EQ(err2, ENOSPC);
  EXPECT_EQ(written2, 0u);
}

TEST_F(DiskTest, QuotaHoldsForInodes) {
  // 16 MiB at 64 KiB per inode: 256 inodes.
  auto d = Disk::Create(Image("i.img"), 16, {.bytes_per_inode = 65536});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE(d->Attach().ok());
  ASSERT_TRUE(d->Mount(Path("mnt")).ok());
  auto before = d->Usage();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->inodes_total, 256u);
  int created = 0, err = 0;
  for (int i = 0; i < 10000; ++i) {
    int fd = ::open(Path(fmt::format("mnt/f{}", i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      err = errno;
      break;
    }
    ::close(fd);
    ++created;
  }
  EXPECT_EQ(err, ENOSPC);
  EXPECT_EQ(static_cast<uint64_t>(created), before->inodes_total - before->inodes_used);
}

TEST_F(DiskTest, RootOwnerIsApplied) {
  auto d = Disk::Create(Image("own.img"), 16, {.root_owner = std::make_pair(100000u, 100000u)});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE(d->Attach().ok());
  ASSERT_TRUE(d->Mount(Path("mnt")).ok());
  struct stat st;
  ASSERT_EQ(::stat(Path("mnt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u);
}

TEST_F(DiskTest, MountOnMissingTargetLeaksNothing) {
  {
    auto d = Disk::Create(Image("m.img"), 16);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE(d->Attach().ok());
    Status st = d->Mount(Path("no/such/dir"));
    ASSERT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("mount(" + d->loop_path() + ", " + Path("no/such/dir")));
    EXPECT_EQ(st.sys_errno(), ENOENT);
  }  // ~Disk
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(DiskTest, MkfsFailureLeavesNoImage) {
  auto d = Disk::Create(Image("f.img"), 16, {.mkfs_program = "false"});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("formatting " + Image("f.img")));
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(DiskTest, CreateRefusesBadArgumentsAndExistingImages) {
  EXPECT_EQ(Disk::Create(Image("s.img"), 1).status().code(), Code::kInvalidArgument);
  ASSERT_TRUE(WriteFile(Image("exists.img"), "precious").ok());
  auto d = Disk::Create(Image("exists.img"), 16);
  EXPECT_EQ(d.status().code(), Code::kAlreadyExists);
  auto content = ReadFile(Image("exists.img"));
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "precious");  // not formatted over, not deleted
  ::unlink(Image("exists.img").c_str());
}

TEST_F(DiskTest, AttachFailureLeaksNoLoopDevice) {
  auto d = Disk::Create(Image("gone.img"), 16);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(::unlink(Image("gone.img").c_str()), 0);
  Status st = d->Attach();
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr(Image("gone.img")));
  EXPECT_EQ(LoopsUnder(dir_.path()), 0);
}

TEST_F(DiskTest, DestructorCleansAMountedDisk) {
  {
    auto d = Disk::Create(Image("raii.img"), 16);
    ASSERT_TRUE(d.ok());
    ASSERT_TRUE(d->Attach().ok());
    ASSERT_TRUE(d->Mount(Path("mnt")).ok());
    ASSERT_TRUE(WriteFile(Path("mnt/x"), "data").ok());
    EXPECT_EQ(MountsAtOrUnder(Path("mnt")), 1);
  }
  EXPECT_EQ(MountsAtOrUnder(Path("mnt")), 0);
  EXPECT_EQ(LoopsUnderSettled(dir_.path()), 0);
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(DiskTest, BusyDiskIsDetachedLazilyAndGoesWithItsLastUser) {
  auto d = Disk::Create(Image("busy.img"), 16);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->Attach().ok());
  ASSERT_TRUE(d->Mount(Path("mnt")).ok());
  auto user = OpenFile(Path("mnt/open"), O_CREAT | O_RDWR, 0644);  // a sandbox process's fd
  ASSERT_TRUE(user.ok());
  EXPECT_TRUE(d->Destroy().ok());
  EXPECT_EQ(MountsAtOrUnder(Path("mnt")), 0);  // gone from the tree at once
  EXPECT_EQ(LoopsUnder(dir_.path()), 1);       // still backing the open file
  user->Reset();
  EXPECT_EQ(LoopsUnderSettled(dir_.path()), 0);  // autoclear when the last user goes
}

TEST_F(DiskTest, AdoptTakesOverAfterACrash) {
  auto d = Disk::Create(Image("adopt.img"), 16);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->Attach().ok());
  ASSERT_TRUE(d->Mount(Path("mnt")).ok());
  const std::string loop = d->loop_path();
  d->Release();  // "crash": nothing cleaned
  EXPECT_EQ(LoopsUnder(dir_.path()), 1);
  auto a = Disk::Adopt(Image("adopt.img"), 16);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->loop_path(), loop);
  EXPECT_EQ(a->mount_point(), Path("mnt"));
  EXPECT_TRUE(a->Usage().ok());
  ASSERT_TRUE(a->Destroy().ok());
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

}  // namespace
}  // namespace hangar::storage
