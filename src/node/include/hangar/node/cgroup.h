// cgroup: resource limits, freezing, usage and teardown of one sandbox's control group.
//
// Contract:
//  - One CgroupBackend per node, chosen at start-up by DetectCgroupLayout(): cgroup v1 (hybrid
//    or legacy: cpu,cpuacct / memory / pids / blkio / freezer hierarchies) or pure cgroup v2.
//  - Every sandbox group lives under Hangar's root (`CgroupOptions::root`, relative to each
//    hierarchy's mount point), so List() finds every group a previous run left behind.
//  - Sandbox names are [A-Za-z0-9_.-]{1,64} and never "." or ".."; anything else is
//    InvalidArgument (a name can never escape the root).
//  - KillAndRemove() is idempotent: a group that does not exist is success. It freezes the
//    group before reading its pids so no task can fork or exit-and-be-reused while it is
//    being killed, then removes the directory (and any nested ones) in every hierarchy.
//  - Limits with value 0 mean "unlimited". A limit whose controller is not available
//    (v2 host without that controller delegated) is FailedPrecondition, never silently dropped.
//  - Usage fields whose controller is unavailable read as 0; controllers() says which exist.
// Thread safety: a backend may be used from several threads for different sandboxes; calls
// for the same sandbox must be serialised by the caller.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hangar/base/status.h"
#include "hangar/node/cgroup_fs.h"

namespace hangar::node {

enum class CgroupMode {
  kV1,  // v1 controller hierarchies (hybrid: a cgroup2 mount may exist but holds no controllers)
  kV2,  // pure cgroup v2
};
std::string_view CgroupModeName(CgroupMode mode);  // "v1" | "v2"

// Where the cgroup filesystems are mounted.
struct CgroupLayout {
  CgroupMode mode = CgroupMode::kV2;
  // v1 controller name → mount point, e.g. "cpu" → "/sys/fs/cgroup/cpu,cpuacct".
  // Co-mounted controllers map to the same path.
  std::map<std::string, std::string> v1_mounts;
  std::string v2_mount;  // cgroup2 mount point, "" if none
};

// Parses /proc/self/mountinfo text. v1 is chosen when the v1 hierarchies hold the memory
// controller; v2 when no v1 controller hierarchy is mounted and a cgroup2 mount exists. A v1
// layout missing any of cpu, cpuacct, memory, pids, blkio, freezer is FailedPrecondition with
// the missing names (a split v1/v2 layout is not supported).
Result<CgroupLayout> ParseCgroupLayout(std::string_view mountinfo);
// Reads /proc/self/mountinfo and parses it.
Result<CgroupLayout> DetectCgroupLayout();

// Per block device (major:minor) I/O throttle. 0 = unlimited for each field.
struct IoDeviceLimit {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t riops = 0;
  uint64_t wiops = 0;
  uint64_t rbps = 0;
  uint64_t wbps = 0;
};

struct CgroupLimits {
  uint64_t cpu_millicores = 0;  // 1000 = one full CPU; enforced as quota per 100 ms period
  uint64_t memory_bytes = 0;  // hard limit; swap is not allowed beyond it where the host can say so
  uint64_t pids_max = 0;      // tasks (processes + threads) in the group
  std::vector<IoDeviceLimit> io;
};

struct IoDeviceUsage {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t rios = 0;
  uint64_t wios = 0;
  uint64_t rbytes = 0;
  uint64_t wbytes = 0;
  friend bool operator==(const IoDeviceUsage&, const IoDeviceUsage&) = default;
};

struct CgroupUsage {
  uint64_t cpu_usec = 0;
  uint64_t memory_current = 0;
  uint64_t memory_peak = 0;  // v1: memory.max_usage_in_bytes; v2: memory.peak
  uint64_t pids_current = 0;
  std::vector<IoDeviceUsage> io;  // sorted by (major, minor)
};

struct CgroupOptions {
  // Hangar's root, relative to each hierarchy's mount point. May be nested ("hangar.slice/x").
  std::string root = "hangar";
  // v2 only: controllers that must be available under the root, or construction fails.
  // Defaults to everything SetLimits/ReadUsage use.
  std::set<std::string> v2_required = {"cpu", "memory", "pids", "io"};
  // Upper bound on waiting for the kernel (freeze to settle, tasks to die).
  std::chrono::milliseconds settle_timeout{5000};
};

class CgroupBackend {
 public:
  virtual ~CgroupBackend() = default;

  virtual CgroupMode mode() const = 0;
  // Controllers this backend enforces and measures ("cpu", "memory", "pids", "io", "freezer").
  virtual const std::set<std::string>& controllers() const = 0;

  // Creates the group in every hierarchy. AlreadyExists if it exists. On failure nothing is
  // left behind.
  virtual Status Create(std::string_view name) = 0;
  // Writes every limit (0 = unlimited) in one call.
  virtual Status SetLimits(std::string_view name, const CgroupLimits& limits) = 0;
  // Moves a process (all its threads) into the group.
  virtual Status AddPid(std::string_view name, pid_t pid) = 0;
  // Freeze returns once every task is frozen (DeadlineExceeded after settle_timeout).
  virtual Status Freeze(std::string_view name) = 0;
  virtual Status Thaw(std::string_view name) = 0;
  virtual Result<CgroupUsage> ReadUsage(std::string_view name) = 0;
  // The pids in the group (any hierarchy), sorted.
  virtual Result<std::vector<pid_t>> Pids(std::string_view name) = 0;
  // SIGKILLs every task, waits for them to leave, removes the group everywhere. Idempotent.
  virtual Status KillAndRemove(std::string_view name) = 0;
  // Renames the group in every hierarchy; its tasks stay in it (a pooled sandbox claimed under
  // its public id). AlreadyExists if `to` exists, NotFound if `from` does not; on failure the
  // hierarchies already renamed are renamed back.
  virtual Status Rename(std::string_view from, std::string_view to) = 0;
  // A throttle on one block device in the hierarchy's ROOT group (all-zero limit: clears it).
  // v1 only: there, background writeback of buffered writes is issued from the root group, so
  // a sandbox group's own rule never sees it; since every sandbox has a loop device of its
  // own, a root rule for that device binds exactly that sandbox. The caller clears it before
  // the device is detached (a reused loop number would inherit it). v2: no-op (io.max plus the
  // memory controller attribute writeback to the group that dirtied the pages).
  virtual Status SetRootDeviceLimit(const IoDeviceLimit& limit) = 0;
  // The devices with a root rule (v1; merged over the four throttle files), for recovery.
  // v2: empty.
  virtual Result<std::vector<IoDeviceLimit>> RootDeviceLimits() = 0;
  // Names of the sandbox groups under Hangar's root (union over hierarchies), sorted.
  virtual Result<std::vector<std::string>> List() = 0;
  // Removes Hangar's root itself if it is empty (node decommission, tests). Idempotent.
  virtual Status RemoveRoot() = 0;
  // The group's directory in each hierarchy (for diagnostics and tests).
  virtual std::vector<std::string> Paths(std::string_view name) const = 0;
};
using CgroupBackendPtr = std::unique_ptr<CgroupBackend>;

// Builds the backend for a detected layout. `fs` must outlive the backend.
Result<CgroupBackendPtr> MakeCgroupBackend(const CgroupLayout& layout, CgroupOptions options = {},
                                           CgroupFs& fs = RealCgroupFs());
// The two implementations, directly (tests run both).
Result<CgroupBackendPtr> MakeCgroupV1Backend(std::map<std::string, std::string> v1_mounts,
                                             CgroupOptions options, CgroupFs& fs);
// Ensures the root exists and delegates the available wanted controllers down to it through
// every ancestor's cgroup.subtree_control.
Result<CgroupBackendPtr> MakeCgroupV2Backend(std::string v2_mount, CgroupOptions options,
                                             CgroupFs& fs);

// Validates a sandbox group name (see contract).
Status ValidateCgroupName(std::string_view name);

// Owns one sandbox group: KillAndRemove() on destruction unless Release()d. Failures in the
// destructor are logged (the group is then reported again by List() for reconciliation).
class ScopedCgroup {
 public:
  static Result<ScopedCgroup> Create(CgroupBackend& backend, std::string name);
  ScopedCgroup(ScopedCgroup&& o) noexcept
      : backend_(std::exchange(o.backend_, nullptr)), name_(std::move(o.name_)) {}
  ScopedCgroup& operator=(ScopedCgroup&&) = delete;
  ScopedCgroup(const ScopedCgroup&) = delete;
  ScopedCgroup& operator=(const ScopedCgroup&) = delete;
  ~ScopedCgroup();

  const std::string& name() const { return name_; }
  // Kills and removes now; the destructor then does nothing.
  Status Remove();
  // Gives up ownership; returns the name.
  std::string Release();

 private:
  ScopedCgroup(CgroupBackend* backend, std::string name)
      : backend_(backend), name_(std::move(name)) {}
  CgroupBackend* backend_;
  std::string name_;
};

}  // namespace hangar::node
