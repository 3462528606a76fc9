#include "hangar/base/clock.h"

#include <thread>

#include <gtest/gtest.h>

namespace hangar {
namespace {

using namespace std::chrono_literals;

TEST(FakeClockTest, MovesOnlyWhenAdvanced) {
  FakeClock clock;
  auto t0 = clock.Now();
  auto w0 = clock.WallNow();
  EXPECT_EQ(clock.Now(), t0);
  clock.Advance(1500ms);
  EXPECT_EQ(clock.Now() - t0, 1500ms);
  EXPECT_EQ(clock.WallNow() - w0, 1500ms);
}

TEST(FakeClockTest, SleeperWakesWhenAdvancedPastDeadline) {
  FakeClock clock;
  auto deadline = clock.Now() + 10s;
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock.SleepUntil(deadline);
    woke = true;
  });
  clock.Advance(5s);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(woke.load()) << "woke before the deadline";
  clock.Advance(5s);
  sleeper.join();
  EXPECT_TRUE(woke.load());
}

TEST(ClockTest, Rfc3339) {
  FakeClock clock;  // starts at 2026-01-01T00:00:00Z
  clock.Advance(61s + 5ms);
  EXPECT_EQ(FormatRfc3339(clock.WallNow()), "2026-01-01T00:01:01.005Z");
}

TEST(SystemClockTest, IsMonotonic) {
  auto& c = SystemClock::Instance();
  auto a = c.Now();
  auto b = c.Now();
  EXPECT_LE(a, b);
}

}  // namespace
}  // namespace hangar
