// Pieces shared by the cgroup v1 and v2 backends (private to src/node).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/status.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/cgroup_fs.h"

namespace hangar::node::cgroup_internal {

inline constexpr uint64_t kCpuPeriodUsec = 100000;  // 100 ms, the kernel default
inline constexpr uint64_t kMinCpuQuotaUsec = 1000;  // the kernel rejects quotas below 1 ms

// cpu_millicores → quota per kCpuPeriodUsec. InvalidArgument below the kernel minimum.
Result<uint64_t> CpuQuotaUsec(uint64_t millicores);

// Polls `done` every millisecond until it returns true, fails, or `timeout` passes
// (DeadlineExceeded naming `what`).
Status WaitFor(std::chrono::milliseconds timeout, const std::function<Result<bool>()>& done,
               std::string_view what);

// Parses cgroup.procs content.
Result<std::vector<pid_t>> ParsePids(std::string_view text);

// `dir` and every directory below it, children before parents (rmdir order).
// An absent `dir` yields an empty list.
Result<std::vector<std::string>> TreePostOrder(CgroupFs& fs, const std::string& dir);

// The union of cgroup.procs over `dirs`, sorted and unique. Absent directories are skipped.
Result<std::vector<pid_t>> PidsIn(CgroupFs& fs, const std::vector<std::string>& dirs);

// SIGKILLs every task in `dirs` until none remain (they may already be frozen: the caller
// thaws after the first round via `after_first_kill`). ESRCH is fine: the task just exited.
Status KillUntilEmpty(CgroupFs& fs, const std::vector<std::string>& dirs,
                      std::chrono::milliseconds timeout,
                      const std::function<Status()>& after_first_kill);

// rmdir each of `dirs` in order, retrying EBUSY (tasks still leaving) until `timeout`.
Status RemoveDirs(CgroupFs& fs, const std::vector<std::string>& dirs,
                  std::chrono::milliseconds timeout);

// Creates `path` and its missing parents below `mount` (which must exist).
Status MkdirBelow(CgroupFs& fs, const std::string& mount, const std::string& rel);

// Parses "MAJ:MIN" into numbers.
Result<std::pair<uint32_t, uint32_t>> ParseDevice(std::string_view s);

}  // namespace hangar::node::cgroup_internal
