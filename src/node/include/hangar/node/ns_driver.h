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
// envd.sock and console.log. Recover() reads it after a restart.
#pragma once

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
};

// Opens the driver: first recovers what a previous run left in data_dir (adopting whole
// sandboxes, destroying the rest, cleaning cgroups, uid leases and disks nobody owns), then
// creates the disk pool. Driver::Recover() hands over the result once.
Result<DriverPtr> NewNsDriver(NsDriverOptions options);

// Checks a spec against the bounds without creating anything (the API validates with it too).
Status ValidateSandboxSpec(const SandboxSpec& spec, const ResourceBounds& bounds);

}  // namespace hangar::node
