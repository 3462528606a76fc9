// DiskPool against the real kernel: refill to target, pooled takes vs cold misses, background
// refill, and nothing left after the pool goes.
#include "hangar/storage/disk_pool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/tempdir.h"
#include "hangar/storage/recovery.h"
#include "testing/counters.h"

namespace hangar::storage {
namespace {

using testing::FilesIn;
using testing::LoopsUnder;
using testing::LoopsUnderSettled;
using testing::MountsAtOrUnder;

class DiskPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    auto d = TempDir::Make("hangar-pool-", "/var/tmp");
    ASSERT_TRUE(d.ok());
    dir_ = std::move(*d);
  }
  void TearDown() override {
    if (dir_.path().empty()) return;
    EXPECT_EQ(LoopsUnderSettled(dir_.path()), 0);
    EXPECT_EQ(MountsAtOrUnder(dir_.path()), 0);
  }
  TempDir dir_;
};

TEST_F(DiskPoolTest, RefillTakeAndMiss) {
  {
    auto pool = DiskPool::Create({.data_dir = dir_.path(), .targets = {{16, 2}, {32, 1}}});
    ASSERT_TRUE(pool.ok()) << pool.status().ToString();
    auto made = (*pool)->Refill();
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    EXPECT_EQ(*made, 3u);
    EXPECT_EQ((*pool)->Ready(16), 2u);
    EXPECT_EQ((*pool)->Ready(32), 1u);
    EXPECT_EQ(LoopsUnder(dir_.path()), 3);  // pooled disks are attached ahead

    auto t0 = std::chrono::steady_clock::now();
    auto hit = (*pool)->Take(16);
    auto hit_us = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - t0);
    ASSERT_TRUE(hit.ok()) << hit.status().ToString();
    EXPECT_TRUE(hit->attached());
    EXPECT_EQ(hit->size_mb(), 16u);
    EXPECT_EQ((*pool)->Ready(16), 1u);

    t0 = std::chrono::steady_clock::now();
    auto miss = (*pool)->Take(48);  // no target for this size: created cold
    auto miss_us = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - t0);
    ASSERT_TRUE(miss.ok()) << miss.status().ToString();
    EXPECT_TRUE(miss->attached());
    EXPECT_EQ(miss->size_mb(), 48u);
    RecordProperty("take_pooled_us", static_cast<int>(hit_us.count()));
    RecordProperty("take_cold_us", static_cast<int>(miss_us.count()));
    std::printf("take pooled: %lld us, take cold (create+mkfs+attach): %lld us\n",
                static_cast<long long>(hit_us.count()), static_cast<long long>(miss_us.count()));

    auto s = (*pool)->stats();
    EXPECT_EQ(s.hits, 1u);
    EXPECT_EQ(s.misses, 1u);
    EXPECT_EQ(s.created, 3u);

    // Taken disks are the caller's: mount one, then let everything go out of scope.
    ASSERT_TRUE(MakeDirs(dir_.path() + "/mnt").ok());
    ASSERT_TRUE(hit->Mount(dir_.path() + "/mnt").ok());
  }
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(DiskPoolTest, BackgroundRefillReplacesTakenDisks) {
  auto pool = DiskPool::Create({.data_dir = dir_.path(), .targets = {{16, 2}}});
  ASSERT_TRUE(pool.ok());
  (*pool)->StartBackgroundRefill();
  auto wait_ready = [&](size_t n) {
    for (int i = 0; i < 500 && (*pool)->Ready(16) < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return (*pool)->Ready(16);
  };
  EXPECT_EQ(wait_ready(2), 2u);
  {
    auto a = (*pool)->Take(16);
    auto b = (*pool)->Take(16);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(wait_ready(2), 2u);
    EXPECT_EQ((*pool)->stats().hits + (*pool)->stats().misses, 2u);
  }
  (*pool)->Stop();
  EXPECT_EQ((*pool)->Ready(16), 2u);
  pool->reset();
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

// The replacement of a taken disk is not started within refill_delay of the Take (the sandbox
// that took it starts without a mkfs beside it), and is made after it.
TEST_F(DiskPoolTest, BackgroundRefillWaitsRefillDelayAfterATake) {
  constexpr auto kDelay = std::chrono::milliseconds(400);
  auto pool =
      DiskPool::Create({.data_dir = dir_.path(), .targets = {{16, 1}}, .refill_delay = kDelay});
  ASSERT_TRUE(pool.ok());
  (*pool)->StartBackgroundRefill();
  for (int i = 0; i < 500 && (*pool)->Ready(16) < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ((*pool)->Ready(16), 1u);
  {
    auto taken_at = std::chrono::steady_clock::now();
    auto d = (*pool)->Take(16);
    ASSERT_TRUE(d.ok());
    while ((*pool)->Ready(16) < 1 &&
           std::chrono::steady_clock::now() - taken_at < std::chrono::seconds(10)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ((*pool)->Ready(16), 1u);  // refilled after all
    EXPECT_GE(std::chrono::steady_clock::now() - taken_at, kDelay);
  }
  (*pool)->Stop();
  pool->reset();
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(DiskPoolTest, RefillFailureIsReported) {
  auto pool = DiskPool::Create(
      {.data_dir = dir_.path(), .targets = {{16, 1}}, .format = {.mkfs_program = "false"}});
  ASSERT_TRUE(pool.ok());
  auto r = (*pool)->Refill();
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("refilling disk pool (16 MiB)"));
  EXPECT_EQ((*pool)->stats().failures, 1u);
  EXPECT_EQ(FilesIn(DisksDir(dir_.path())), 0);
}

TEST_F(DiskPoolTest, PremountedDisksAreMovedIntoPlaceAndCleanedOnEveryPath) {
  const std::string target = dir_.path() + "/target";
  ASSERT_EQ(::mkdir(target.c_str(), 0755), 0);
  EXPECT_EQ(DiskPool::Create({.data_dir = dir_.path(), .attach = false, .premount = true})
                .status()
                .code(),
            Code::kInvalidArgument);
  {
    auto pool = DiskPool::Create({.data_dir = dir_.path(), .targets = {{16, 2}}, .premount = true});
    ASSERT_TRUE(pool.ok()) << pool.status().ToString();
    ASSERT_TRUE((*pool)->Refill().ok());
    EXPECT_EQ(MountsAtOrUnder(dir_.path() + "/disks"), 2);
    auto d = (*pool)->Take(16);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE(d->mounted());
    const std::string staging = d->mount_point();
    EXPECT_EQ(staging, d->image_path() + ".mnt");
    struct stat st;
    EXPECT_EQ(::stat((staging + "/upper").c_str(), &st), 0);
    EXPECT_EQ(::stat((staging + "/work").c_str(), &st), 0);
    EXPECT_NE(::stat((staging + "/lost+found").c_str(), &st), 0);
    ASSERT_TRUE(d->MoveMount(target).ok());
    EXPECT_EQ(d->mount_point(), target);
    EXPECT_EQ(::stat((target + "/upper").c_str(), &st), 0);
    EXPECT_EQ(MountsAtOrUnder(staging), 0);
    EXPECT_EQ(::rmdir(staging.c_str()), 0);
    auto usage = d->Usage();
    ASSERT_TRUE(usage.ok()) << usage.status().ToString();
    EXPECT_GT(usage->bytes_total, 8u << 20);
    ASSERT_TRUE(d->Destroy().ok());
    EXPECT_EQ(MountsAtOrUnder(target), 0);
    // A miss is prepared the same way.
    auto cold = (*pool)->Take(24);
    ASSERT_TRUE(cold.ok()) << cold.status().ToString();
    EXPECT_TRUE(cold->mounted());
    const std::string cold_staging = cold->mount_point();
    ASSERT_TRUE(cold->Destroy().ok());
    EXPECT_EQ(::rmdir(cold_staging.c_str()), 0);
    // The pool's own mounted disks (and their mount points) go with it.
  }
  EXPECT_EQ(MountsAtOrUnder(dir_.path()), 0);
  EXPECT_EQ(FilesIn(dir_.path() + "/disks"), 0);

  // A crashed agent's pre-mounted pool: recovery unmounts, detaches, deletes, removes the
  // mount points.
  {
    auto pool = DiskPool::Create({.data_dir = dir_.path(), .targets = {{16, 1}}, .premount = true});
    ASSERT_TRUE(pool.ok());
    ASSERT_TRUE((*pool)->Refill().ok());
    auto d = (*pool)->Take(16);
    ASSERT_TRUE(d.ok());
    d->Release();  // as if the process died holding it
  }
  auto rec = RecoverDisks(dir_.path(), {});
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_TRUE(rec->errors.empty()) << rec->errors[0];
  EXPECT_EQ(MountsAtOrUnder(dir_.path()), 0);
  EXPECT_EQ(FilesIn(dir_.path() + "/disks"), 0);
}

}  // namespace
}  // namespace hangar::storage
