// NsDriver: the shared tier — one hardened Linux sandbox per task on the shared kernel.
//
// Each sandbox gets: its own user namespace mapped to a dedicated host uid/gid range (root
// inside is an unprivileged id outside), pid, mount, network (loopback only), uts, ipc and
// cgroup namespaces; an overlay root whose lower layer is the template (read-only, id-mapped
// so template files owned by root appear owned by root inside) and whose upper layer lives on
// the sandbox's own loop-backed ext4 disk (hard quota, own device number for I/O limits);
// a private /proc with sensitive paths masked or read-only, a minimal /dev, no /sys; cgroup
// limits on CPU, memory, pids and I/O; Docker's default capability set at most; no_new_privs;
// rlimits; and the node's seccomp filter. Its init is envd, reached on a Unix socket the node
// created (the sandbox cannot redirect it): <data_dir>/sandboxes/<id>/envd.sock.
//
// State: <data_dir>/sandboxes/<id>/ holds state.json, the mount points (disk, lower, rootfs),
// envd.sock and console.log. Recover() reads it after a restart. State files (state.json, uid
// leases) are replaced atomically but not fsync'd: they must outlive a crash of the node agent
// (the page cache does); after a machine crash the processes, mounts, loop devices and cgroups
// they describe are gone too, and recovery rebuilds from what the kernel shows.
//
// The environment of the init (envd) — and so of every command — is PATH plus spec.env. The
// sandbox id is the hostname (uname, /proc/sys/kernel/hostname); it is not in the environment,
// so a pre-started sandbox and a cold one look the same inside.
//
// Namespace pool (NsDriverOptions::netns_pool: 4 by default; userns_pool: 2): a background
// thread makes network namespaces (loopback up) and user namespaces (each with its uid range
// leased under an internal owner name, "nspool-<hex>") ahead, off the start path; a cold
// Create takes one of each when ready (else makes its own, as without a pool). Warm pool slots,
// started in the background anyway, make their own, so refilling the warm pool never sets off
// namespace-pool work beside a claim. Each is used by one
// sandbox only and dies with it — never recycled. The network namespaces are made by the agent
// in the initial user namespace and so owned by it, exactly like the one a sandbox's clone made
// without the pool: root inside the sandbox has no CAP_NET_ADMIN (or any capability) over it.
// Pooled namespaces are held by descriptors only: the driver's destructor (or the agent's
// death) frees them; unused uid leases are released by the destructor, or by recovery after a
// crash.
//
// Warm pool (NsDriverOptions::warm_pool, off by default): per template, N sandboxes started
// ahead — disk, namespaces, cgroup and envd up — under internal slot names ("pool-<hex>",
// never a valid sandbox id). Create(spec) claims one when the template matches, spec.disk_mb
// equals the pool's disk size and spec.env equals the pool's env: it rewrites the cgroup
// limits (cpu, memory, pids, I/O, the root blkio rule), sets the hostname to the id and
// resizes /tmp (a short-lived CLONE_VM helper in the sandbox's uts and mount namespaces),
// then renames the slot — cgroup, uid lease, state directory — to the public id and writes
// state.json. From then on it is exactly a cold-started sandbox. A background thread refills
// the pool after every claim; a miss (or a failed claim) takes the cold path. Recovery
// destroys every pool slot a previous run left (they are never adopted); the refill then
// rebuilds the pool. Destroying the driver stops the refill and destroys the unclaimed slots.
//
// I/O on cgroup v1: a sandbox's read/write limits are written to its blkio group and, for its
// own loop device, to the root blkio group too (writeback of buffered writes is issued from the
// root group on v1, so the sandbox's own rule never sees it); the root rule is cleared on
// destroy and swept by recovery (rules on unbound loop devices, or on ours that no live
// sandbox owns). NsDriverOptions::default_write_* apply when a spec leaves a limit at 0.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "hangar/base/clock.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/sandbox.h"
#include "hangar/node/seccomp.h"
#include "hangar/node/userns.h"

#include "hangar/storage/disk_pool.h"

namespace hangar::storage {
class TemplateStore;
}  // namespace hangar::storage

namespace hangar::node {

// Bounds on what one sandbox may ask for (the node's size bounds them further).
struct ResourceBounds {
  int64_t min_cpu_millis = 50, max_cpu_millis = 64'000;
  int64_t min_memory_mb = 32, max_memory_mb = 256 * 1024;
  int64_t min_disk_mb = 64, max_disk_mb = 1024 * 1024;
  int64_t min_pids = 16, max_pids = 65'536;
  int64_t max_iops = 1'000'000;
  int64_t max_bps = int64_t{100} << 30;
};

// One template's pre-started sandboxes.
struct WarmPoolEntry {
  std::string template_name;
  size_t size = 0;         // sandboxes kept ready (0: none)
  int64_t disk_mb = 1024;  // their disk size: only specs asking exactly this size are served
  // Only specs with exactly this environment are served (envd's environment is fixed when it
  // starts; a different one takes the cold path).
  std::map<std::string, std::string> env;
  // Limits while waiting to be claimed (rewritten at claim). disk_mb is ignored.
  Resources idle_resources;
};

struct WarmPoolOptions {
  std::vector<WarmPoolEntry> entries;  // empty: no warm pool (the default)
  // After a failed refill, wait this long before trying again.
  std::chrono::milliseconds retry_after{1000};
  // After a claim, the refill waits this long before starting a replacement, so the start
  // (a few tens of ms of CPU on the node) does not compete with the claimed sandbox's first
  // commands. Measured on 2 loaded vCPUs: an immediate refill doubled the pooled p99.
  std::chrono::milliseconds refill_delay{200};
};

struct WarmPoolStats {
  size_t ready = 0;     // slots up and unclaimed, over all entries
  size_t claimed = 0;   // Creates served from the pool
  size_t misses = 0;    // Creates of a pooled template that found no slot (cold path)
  size_t created = 0;   // slots started by the refill
  size_t failures = 0;  // failed slot starts or claims
};

struct NsDriverOptions {
  std::string data_dir;
  storage::TemplateStore* templates = nullptr;  // not owned
  // The driver owns its disk pool and creates it only after recovery, so that recovery can
  // tell a previous run's leftovers from fresh pooled disks. data_dir is filled in.
  storage::DiskPoolOptions disk_pool;
  CgroupBackend* cgroups = nullptr;         // not owned
  IdRangeAllocator* ids = nullptr;          // not owned
  const SeccompProgram* seccomp = nullptr;  // not owned; compiled once per node
  // The init of every sandbox, opened on the host and executed inside: envd (static).
  std::string init_path;
  std::vector<std::string> init_args;  // argv[1..]; the listen socket is always fd 3
  // Wait for envd's /health on its socket before Create returns (off for inits that are not
  // envd, in tests).
  bool wait_for_envd = true;
  std::chrono::milliseconds envd_ready_timeout{10'000};
  ResourceBounds bounds;
  Clock* clock = nullptr;  // nullptr: SystemClock
  // Sandboxes started ahead (see the header comment); off unless entries are given.
  WarmPoolOptions warm_pool;
  // Node default I/O limits for a sandbox whose spec leaves the field at 0 (0 here: none).
  // An unthrottled neighbour's buffered writes cost others 20-26x their fsync p99 (measured in
  // bench/node/README.md).
  int64_t default_write_bps = 0;
  int64_t default_write_iops = 0;
  // Pool disks mounted ahead with upper/ and work/ made, moved into place at Create (saves a
  // mount and three directory operations on the start path). Off: mounted at Create.
  bool premount_disks = true;
  // Namespaces kept ready for cold starts (see the header comment; 0: made at Create). Each
  // pooled user namespace holds one uid range of `ids` while it waits, so the range a sandbox
  // gets is not necessarily the lowest free one (read it from Info().uid_base).
  size_t netns_pool = 4;
  size_t userns_pool = 2;
};

// Opens the driver: first recovers what a previous run left in data_dir (adopting whole
// sandboxes, destroying the rest, cleaning cgroups, uid leases and disks nobody owns), then
// creates the disk pool. Driver::Recover() hands over the result once.
Result<DriverPtr> NewNsDriver(NsDriverOptions options);

// Warm pool counters of a driver made by NewNsDriver (all zero for any other driver).
WarmPoolStats GetWarmPoolStats(const Driver& ns_driver);
// Waits until every warm pool entry is full (true) or `timeout` passes (false). For tests and
// benchmarks; production never needs to wait (a miss takes the cold path).
bool WaitForWarmPool(const Driver& ns_driver, std::chrono::milliseconds timeout);
// Waits until the namespace pool is full (true) or `timeout` passes (false); true at once
// without a pool. For tests and benchmarks, like WaitForWarmPool.
bool WaitForNamespacePool(const Driver& ns_driver, std::chrono::milliseconds timeout);

// Checks a spec against the bounds without creating anything (the API validates with it too).
Status ValidateSandboxSpec(const SandboxSpec& spec, const ResourceBounds& bounds);

}  // namespace hangar::node
