// RecoverDisks after a simulated crash: disks in every state (mounted, attached without
// autoclear, image only, image deleted under its loop) are cleaned, live ones kept, and the
// loop devices and mounts under the data dir are counted before and after.
#include "hangar/storage/recovery.h"

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/tempdir.h"
#include "hangar/storage/disk.h"
#include "testing/counters.h"

namespace hangar::storage {
namespace {

using testing::FilesIn;
using testing::LoopsUnder;
using testing::LoopsUnderSettled;
using testing::MountsAtOrUnder;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    auto d = TempDir::Make("hangar-recover-", "/var/tmp");
    ASSERT_TRUE(d.ok());
    dir_ = std::move(*d);
    ASSERT_TRUE(MakeDirs(DisksDir(dir_.path())).ok());
  }
  std::string Path(const std::string& n) const { return dir_.path() + "/" + n; }
  std::string Image(const std::string& n) const { return DisksDir(dir_.path()) + "/" + n; }
  // Creates, attaches and (if `mount`) mounts a disk, then "crashes": ownership is dropped
  // with no cleanup, as if the daemon had been killed.
  void Crashed(const std::string& name, bool mount, LoopOptions loop = {}) {
    auto d = Disk::Create(Image(name), 16);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE(d->Attach(loop).ok());
    if (mount) {
      ASSERT_TRUE(MakeDirs(Path("mnt-" + name)).ok());
      ASSERT_TRUE(d->Mount(Path("mnt-" + name)).ok());
    }
    d->Release();
  }
  TempDir dir_;
};

TEST_F(RecoveryTest, CleansEverythingNotLiveAndKeepsTheLive) {
  Crashed("live.img", /*mount=*/true);
  Crashed("mounted.img", /*mount=*/true);
  Crashed("attached.img", /*mount=*/false, {.autoclear = false});  // e.g. made by losetup
  Crashed("autoclear.img", /*mount=*/false);  // the kernel detaches this one by itself
  Crashed("deleted.img", /*mount=*/false, {.autoclear = false});
  ASSERT_EQ(::unlink(Image("deleted.img").c_str()), 0);  // backing shows " (deleted)"
  auto orphan = Disk::Create(Image("orphan.img"), 16);   // image only
  ASSERT_TRUE(orphan.ok());
  orphan->Release();

  EXPECT_EQ(LoopsUnderSettled(dir_.path(), 4), 4);  // live, mounted, attached, deleted
  EXPECT_EQ(MountsAtOrUnder(dir_.path()), 2);
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 5);

  auto r = RecoverDisks(dir_.path(), {"live.img"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(r->errors, SizeIs(0));
  EXPECT_THAT(r->unmounted, UnorderedElementsAre(Path("mnt-mounted.img")));
  EXPECT_THAT(r->detached, SizeIs(3));
  EXPECT_THAT(r->deleted_images, UnorderedElementsAre(Image("mounted.img"), Image("attached.img"),
                                                      Image("autoclear.img"), Image("orphan.img")));
  EXPECT_THAT(r->kept, UnorderedElementsAre(Image("live.img")));

  EXPECT_EQ(LoopsUnderSettled(dir_.path(), 1), 1);
  EXPECT_EQ(MountsAtOrUnder(dir_.path()), 1);
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 1);

  // Running it again finds nothing more to do.
  auto again = RecoverDisks(dir_.path(), {Image("live.img")});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->cleaned(), 0u);

  // With nothing live, everything goes: zero leaked.
  auto all = RecoverDisks(dir_.path());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->cleaned(), 3u);  // unmount + detach + image
  EXPECT_EQ(LoopsUnderSettled(dir_.path()), 0);
  EXPECT_EQ(MountsAtOrUnder(dir_.path()), 0);
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(RecoveryTest, MissingDisksDirIsNothingToDo) {
  auto r = RecoverDisks(Path("nowhere"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->cleaned(), 0u);
}

}  // namespace
}  // namespace hangar::storage
