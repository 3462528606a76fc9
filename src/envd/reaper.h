// Reaper: the one place envd waits for children.
//
// envd is the sandbox's PID 1 (or a child subreaper outside one), so every orphan in the
// sandbox becomes its child and must be reaped, or zombies pile up until the pid limit is hit.
// But a blanket waitpid(-1) would also collect the exit statuses of the processes envd started
// and reports on. So all reaping happens here: a thread wakes on SIGCHLD (signalfd), calls
// waitpid(-1, WNOHANG) until nothing is left, and hands the status of each tracked pid to the
// callback registered for it; untracked pids (orphans) are just reaped.
//
// Spawn() runs the fork under the registry lock and registers the child before the lock is
// released, so a child that exits at once cannot be reaped before its callback exists.
//
// Requirements: SIGCHLD is blocked in every thread of the process before Start() (envd's main
// does this first thing), so signalfd sees it. A missed wake-up costs at most kPollInterval.
//
// Thread safety: all methods may be called from any thread. Callbacks run on the reaper thread
// and must not block or call back into the Reaper.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::envd::internal {

class Reaper {
 public:
  using ExitCallback = std::function<void(int wait_status)>;
  static constexpr std::chrono::milliseconds kPollInterval{1000};

  Reaper() = default;
  ~Reaper();  // stops the thread (children still tracked are left alone)
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  Status Start();
  void Stop();

  // Calls `fork_fn` (which forks and returns the child's pid in the parent, or -1 with errno
  // set) under the registry lock and tracks the pid with `on_exit`.
  Result<pid_t> Spawn(const std::function<pid_t()>& fork_fn, ExitCallback on_exit);

  // Number of pids still tracked (tests).
  size_t tracked() const;

 private:
  void Loop();
  void ReapAll();

  mutable std::mutex mu_;
  std::map<pid_t, ExitCallback> tracked_;
  UniqueFd signal_fd_;
  UniqueFd stop_fd_;  // eventfd: wakes the loop for Stop()
  std::thread thread_;
  std::atomic<bool> stopping_{false};
};

}  // namespace hangar::envd::internal
