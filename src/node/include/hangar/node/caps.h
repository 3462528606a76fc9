// caps: privilege reduction of the sandbox's first process — capability bounding set,
// no_new_privs, resource limits.
//
// Contract:
//  - DropCapabilities removes every capability outside `keep` from the bounding set (so no
//    later exec, setuid binary or file capability can bring it back), clears the ambient and
//    inheritable sets, and sets effective = permitted = keep ∩ the current permitted set.
//    The default keep set is Docker's, minus NET_RAW; it never contains SYS_ADMIN, SYS_PTRACE,
//    SYS_MODULE, SYS_RAWIO, SYS_TIME, SYS_RESOURCE, NET_ADMIN, BPF, PERFMON, ...
//  - The *Raw forms are for the child between fork and exec: no allocation, errno returned.
//    The Status forms name the failing call (and allocate only on failure).
//  - ApplyResourceLimits sets soft = hard = value. Raising a hard limit needs
//    CAP_SYS_RESOURCE; without it the call fails (EPERM) naming the limit — never silently
//    clamps.
//  - Implemented with raw capget/capset/prctl, not libcap: libcap allocates (unsafe after
//    fork in a threaded parent) and the calls needed are few.
// Thread safety: capabilities and rlimits are per-thread/per-process kernel state; call these
// in the single-threaded child.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "hangar/base/status.h"

namespace hangar::node {

// Bit n set = capability n (CAP_CHOWN = 0, ...).
using CapMask = uint64_t;

// CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT
// MKNOD AUDIT_WRITE SETFCAP.
CapMask DefaultSandboxCapabilities();
// "CAP_SYS_ADMIN" for 21; "CAP_42" for numbers this build does not know.
std::string CapabilityName(int cap);
// "CAP_CHOWN,CAP_KILL" (for messages).
std::string CapabilityNames(CapMask mask);
// /proc/sys/kernel/cap_last_cap: read it in the parent and pass it to the child.
Result<int> LastCapability();

// Raw forms return 0 or a plain errno; `failed_step` (optional) receives which call failed
// (0 bounding-set drop, 1 ambient clear, 2 capget, 3 capset / the rlimit index).
int DropCapabilitiesRaw(CapMask keep, int last_cap, int* failed_step = nullptr) noexcept;
Status DropCapabilities(CapMask keep, int last_cap);

int SetNoNewPrivsRaw() noexcept;
Status SetNoNewPrivs();

struct ResourceLimits {
  uint64_t nofile = 8192;       // open files
  uint64_t fsize = UINT64_MAX;  // largest file (bytes); the sandbox disk has its own quota
  uint64_t core = 0;            // no core dumps: they fill disks and copy memory to files
};
int ApplyResourceLimitsRaw(const ResourceLimits& limits, int* failed_step = nullptr) noexcept;
Status ApplyResourceLimits(const ResourceLimits& limits);

// The capability sets and no_new_privs of a process, from /proc/<pid>/status.
struct CapabilityState {
  CapMask effective = 0;
  CapMask permitted = 0;
  CapMask inheritable = 0;
  CapMask bounding = 0;
  CapMask ambient = 0;
  bool no_new_privs = false;
};
Result<CapabilityState> ParseCapabilityState(std::string_view proc_status);
Result<CapabilityState> ReadCapabilityState(pid_t pid);  // 0 = self

}  // namespace hangar::node
