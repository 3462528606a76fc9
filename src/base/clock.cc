#include "hangar/base/clock.h"

#include <thread>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace hangar {

Clock::MonoTime SystemClock::Now() const { return std::chrono::steady_clock::now(); }
Clock::WallTime SystemClock::WallNow() const { return std::chrono::system_clock::now(); }
void SystemClock::SleepUntil(MonoTime deadline) { std::this_thread::sleep_until(deadline); }
SystemClock& SystemClock::Instance() {
  static SystemClock clock;
  return clock;
}

// A recognisable epoch makes fake times obvious in test output.
FakeClock::FakeClock()
    : mono_(std::chrono::hours(1000)),
      wall_(std::chrono::sys_days(std::chrono::year(2026) / 1 / 1)) {}

Clock::MonoTime FakeClock::Now() const {
  std::lock_guard lock(mu_);
  return mono_;
}
Clock::WallTime FakeClock::WallNow() const {
  std::lock_guard lock(mu_);
  return wall_;
}
void FakeClock::SleepUntil(MonoTime deadline) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return mono_ >= deadline; });
}
void FakeClock::Advance(Duration d) {
  {
    std::lock_guard lock(mu_);
    mono_ += d;
    wall_ += d;
  }
  cv_.notify_all();
}

std::string FormatRfc3339(Clock::WallTime t) {
  auto ms = std::chrono::time_point_cast<std::chrono::milliseconds>(t);
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(ms);
  auto frac = (ms - secs).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", secs, frac);
}

}  // namespace hangar
