// Clock: the one source of time for logic that depends on time (timeouts, heartbeats,
// scheduling, metering). Production code takes a Clock& and uses SystemClock; tests inject a
// FakeClock and advance it, so no test sleeps to exercise a timeout.
// Thread safety: all methods are safe to call from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

namespace hangar {

class Clock {
 public:
  using Duration = std::chrono::nanoseconds;
  // Monotonic time for intervals and deadlines.
  using MonoTime = std::chrono::time_point<std::chrono::steady_clock, Duration>;
  // Wall time for records shown to people and stored.
  using WallTime = std::chrono::time_point<std::chrono::system_clock, Duration>;

  virtual ~Clock() = default;
  virtual MonoTime Now() const = 0;
  virtual WallTime WallNow() const = 0;
  // Blocks until Now() >= deadline (a FakeClock wakes sleepers when advanced past it).
  virtual void SleepUntil(MonoTime deadline) = 0;
  void SleepFor(Duration d) { SleepUntil(Now() + d); }
};

// The real clocks of the machine.
class SystemClock final : public Clock {
 public:
  MonoTime Now() const override;
  WallTime WallNow() const override;
  void SleepUntil(MonoTime deadline) override;
  static SystemClock& Instance();
};

// A clock that moves only when told to. Starts at an arbitrary fixed point.
class FakeClock final : public Clock {
 public:
  FakeClock();
  MonoTime Now() const override;
  WallTime WallNow() const override;
  void SleepUntil(MonoTime deadline) override;
  void Advance(Duration d);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  MonoTime mono_;
  WallTime wall_;
};

// Formats a wall time as RFC 3339 UTC with millisecond precision: 2026-11-29T08:53:18.123Z.
std::string FormatRfc3339(Clock::WallTime t);

}  // namespace hangar
