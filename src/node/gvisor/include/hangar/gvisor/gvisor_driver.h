// GvisorDriver: the hardened tier — each sandbox runs under gVisor (runsc): its processes talk
// to the sentry, a user-space kernel, never to the host kernel directly.
//
// What one sandbox gets (see docs/adr/0009-gvisor.md for the why):
//  - an OCI bundle (bundle.h) under <data_dir>/sb/<id>/bundle: envd as init, no user
//    namespace (runsc needs real root with CAP_SYS_ADMIN; the sentry is the boundary), pid,
//    ipc, uts, mount and network namespaces, `--network=none` (no network stack at all);
//  - a root directory assembled by the host before runsc starts: an overlay of the template
//    (lower, read-only) and an upper layer on the sandbox's own loop-backed ext4 disk from the
//    DiskPool (hard quota, own device number for I/O throttles);
//  - cgroup limits (CPU, memory, pids, I/O on the disk's device, plus the root blkio rule for
//    writeback on cgroup v1 — as the shared tier) in a group this driver creates under its own
//    root (`cgroup_root`, default "hangar-gvisor": never the ns driver's root, whose recovery
//    would kill these groups). runsc puts the sandbox and gofer processes there
//    (linux.cgroupsPath) and creates, then removes, the hierarchies this driver does not manage
//    (cpuset, devices, ...);
//  - envd reachable on <data_dir>/sb/<id>/run/envd.sock: a host directory bind-mounted at
//    /run/hangar inside, where envd binds that socket with runsc's --host-uds=create (the
//    sandbox may create host sockets on its mounts, never connect to host sockets) and relays
//    it to its own socket on an internal tmpfs (src/envd/relay.h: why);
//  - the platform: `platform` if given, else systrap when this runsc knows it, else ptrace
//    (Debian 12's runsc 20221219 has ptrace and kvm only; there is no /dev/kvm here).
// Pause/Resume are `runsc pause/resume`; Stop is SIGTERM to envd (runsc kill), then
// `runsc kill --all KILL` and `runsc delete --force` after `grace`; the disk stays until
// Destroy. Destroy: runsc delete --force, kill and remove the cgroup (every hierarchy), unmount
// the root, release the disk and the root blkio rule, remove the directory. Idempotent; a failed
// Create leaves nothing.
//
// Recovery (at NewGvisorDriver): a sandbox directory whose state.json, runsc container
// (running or paused), root mount and disk are all there is adopted; anything else is
// destroyed, and runsc containers, cgroups and disks that no adopted sandbox owns are removed.
//
// data_dir must be the driver's own (e.g. <node data>/gvisor): its disks/ are swept by
// recovery. Paths are short on purpose: the envd socket path must fit sun_path (108 bytes);
// a data_dir that makes <data_dir>/sb/<40 chars>/run/envd.sock too long is refused at open.
// Thread safety: as node::Driver.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "hangar/base/clock.h"
#include "hangar/node/ns_driver.h"
#include "hangar/node/sandbox.h"
#include "hangar/storage/disk_pool.h"

namespace hangar::storage {
class TemplateStore;
}  // namespace hangar::storage

namespace hangar::gvisor {

struct GvisorDriverOptions {
  std::string data_dir;                         // the driver's own: sb/, runsc/, disks/
  storage::TemplateStore* templates = nullptr;  // not owned
  storage::DiskPoolOptions disk_pool;           // data_dir is filled in
  std::string runsc_path = "runsc";             // looked up in PATH when it has no '/'
  std::string platform;                         // "" = auto (see the header comment)
  std::string cgroup_root = "hangar-gvisor";
  std::string envd_path;               // host path of the static envd binary
  std::vector<std::string> envd_args;  // after envd's --listen and --relay-from
  bool wait_for_envd = true;           // off only for inits that are not envd (tests)
  std::chrono::milliseconds envd_ready_timeout{20'000};
  std::chrono::milliseconds runsc_timeout{60'000};
  std::vector<std::string> extra_runsc_flags;  // e.g. {"--debug", "--debug-log=/tmp/x/"}
  node::ResourceBounds bounds;
  Clock* clock = nullptr;  // nullptr: SystemClock
  // As NsDriverOptions: node defaults for a spec that leaves a write limit at 0.
  int64_t default_write_bps = 0;
  int64_t default_write_iops = 0;
  bool premount_disks = true;
  // The host cgroup holds the sentry, its ptrace stubs and the gofer besides the sandbox's own
  // memory and tasks: its limits are the spec's plus these (the sentry sizes the sandbox's
  // memory from the group's limit, so the inside sees about what the spec asked for).
  int64_t sentry_memory_overhead_mb = 64;
  int64_t sentry_pids_overhead = 128;
};

// Runs recovery, then creates the disk pool. Fails (failed_precondition, with the reason) when
// Available() would: no runsc, not root, no usable platform.
Result<node::DriverPtr> NewGvisorDriver(GvisorDriverOptions options);

// Whether this host can run the driver with these options, and why not: runsc missing, not
// root, no envd binary. Cheap (no sandbox is started).
Status GvisorAvailable(const GvisorDriverOptions& options);

// The platform chosen and why ("systrap is not supported by runsc 0.0~20221219.0; using ptrace").
struct PlatformChoice {
  std::string platform;
  std::string reason;
};
Result<PlatformChoice> ChoosePlatform(const std::string& runsc_binary, const std::string& wanted);

// For a driver made by NewGvisorDriver: its platform ("" for any other driver), and its runsc
// command prefix (binary, --root, --platform), so benchmarks can run a bare `runsc run` the same
// way.
std::string GvisorPlatform(const node::Driver& driver);
std::vector<std::string> GvisorRunscPrefix(const node::Driver& driver);

}  // namespace hangar::gvisor
