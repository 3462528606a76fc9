// DiskPool against the real kernel: refill to target, pooled takes vs cold misses, background
// refill, and nothing left after the pool goes.
#include "hangar/storage/disk_pool.h"

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

}  // namespace
}  // namespace hangar::storage
