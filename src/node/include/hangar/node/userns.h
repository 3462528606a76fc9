// userns: host uid/gid ranges for sandboxes' user namespaces, and the parent-side mapping.
//
// Contract:
//  - Slot n owns host ids [base + n*size, base + (n+1)*size); uid 0 inside the sandbox is
//    base + n*size outside. Ranges never overlap and never include ids below `base`.
//  - A lease is a file <state_dir>/slot-<n> (holding the owner, e.g. the sandbox id) created
//    with O_EXCL: two allocators — threads or processes — never lease the same slot, and a
//    restarted node agent sees every lease of the previous run. Leases are not fsync'd: they
//    must survive a crash of the agent (the page cache does), not of the machine — after a
//    machine crash no process runs in any range, so Reconcile frees whatever lease survived
//    and nothing live can lack one.
//  - Reconcile() is the crash-recovery pass: it releases leases whose owner is gone *and* no
//    process runs with an id in the range, keeps (and reports) leases whose range still has
//    processes, and re-leases a range found in use with no lease file (state dir lost), so a
//    live range is never handed out again.
//  - WriteIdMaps runs in the parent after the child has unshared its user namespace; the
//    kernel accepts each map once. The child then calls BecomeNamespaceRoot() to take on the
//    mapped ids: a map alone does not change the child's credentials.
// Thread safety: an IdRangeAllocator may be shared by threads.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::node {

struct IdRange {
  uint32_t slot = 0;
  uint32_t first = 0;  // host id of uid/gid 0 inside
  uint32_t count = 0;
  friend bool operator==(const IdRange&, const IdRange&) = default;
};

struct IdAllocatorOptions {
  std::string state_dir;  // created if missing
  uint32_t base = 100000;
  uint32_t size = 65536;
  uint32_t slots = 256;
};

struct IdReconcileReport {
  std::vector<uint32_t> released;   // owner gone, range idle: free again
  std::vector<uint32_t> busy;       // owner gone, processes still in range: kept leased
  std::vector<uint32_t> recovered;  // processes in range but no lease: leased to "recovered"
};

class IdRangeAllocator {
 public:
  static Result<std::unique_ptr<IdRangeAllocator>> Open(IdAllocatorOptions options);

  // Leases the lowest free slot to `owner` ([A-Za-z0-9_.-]{1,64}). ResourceExhausted when all
  // slots are leased.
  Result<IdRange> Allocate(std::string_view owner);
  // Hands a lease to a new owner (a pooled sandbox claimed under its public id); the file is
  // replaced atomically. NotFound if the slot is not leased.
  Status Rename(uint32_t slot, std::string_view owner);
  // Ends a lease. Idempotent.
  Status Release(uint32_t slot);
  // slot → owner, from the state directory.
  Result<std::map<uint32_t, std::string>> Leases();
  IdRange RangeOf(uint32_t slot) const;
  // See the contract. `proc_root` is /proc (tests pass a fixture directory).
  Result<IdReconcileReport> Reconcile(const std::set<std::string>& live_owners,
                                      const std::string& proc_root = "/proc");

 private:
  explicit IdRangeAllocator(IdAllocatorOptions o) : options_(std::move(o)) {}
  std::string SlotPath(uint32_t slot) const;
  Status Lease(uint32_t slot, std::string_view owner);  // AlreadyExists if leased

  const IdAllocatorOptions options_;
  std::mutex mu_;  // orders this process's Allocate/Release; O_EXCL orders processes
};

// Host pids whose real, effective, saved or filesystem uid or gid falls in the range.
Result<std::vector<pid_t>> ProcessesUsingRange(const IdRange& range,
                                               const std::string& proc_root = "/proc");

enum class SetgroupsPolicy {
  // Leave setgroups(2) usable inside (apt, su, sshd need it). Safe here because the parent is
  // real root mapping a dedicated range: no host group membership can be shed by it.
  kAllow,
  // Write "deny" first: required when an unprivileged parent maps its own ids.
  kDeny,
};

// Parent side: writes /proc/<pid>/setgroups (kDeny only), uid_map and gid_map:
// "0 <first> <count>".
Status WriteIdMaps(pid_t pid, const IdRange& range,
                   SetgroupsPolicy setgroups = SetgroupsPolicy::kAllow);

// Child side, after the parent wrote the maps: become uid 0 / gid 0 of the namespace (host
// ids = range.first) with no supplementary groups. Until this runs the child still holds its
// host credentials — kuid 0 for a root parent, plus host root's supplementary groups — even
// though inside it shows as nobody (65534). Fails if supplementary groups remain and
// setgroups is denied. The Raw form does not allocate (for use between fork and exec); it
// returns 0 or a plain errno, and `failed_step` (optional) receives 1 setresgid, 2 setgroups,
// 3 setresuid.
int BecomeNamespaceRootRaw(int* failed_step = nullptr) noexcept;
Status BecomeNamespaceRoot();

}  // namespace hangar::node
