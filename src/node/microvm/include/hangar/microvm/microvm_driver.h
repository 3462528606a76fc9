// MicroVmDriver: the isolated tier — one QEMU virtual machine per sandbox, behind the same
// hangar::node::Driver / Sandbox interface as the shared tier (see docs/adr/0008-microvm.md).
//
// Each sandbox is a VM with its own guest kernel (Debian's cloud kernel, from the cache that
// scripts/fetch-guest-kernel.sh fills; nothing is downloaded at run time), vCPUs =
// ceil(cpu_millis / 1000) and memory_mb of guest RAM, a root disk that is a qcow2 layer of
// disk_mb over the template's ext4 base image (built once per template with `mkfs.ext4 -d`,
// envd added as /.hangar/envd, cached under <data_dir>/images/, read-only), QEMU's I/O
// throttling from the request, and no network: user-mode networking with restrict=on, whose
// only use is the host forward 127.0.0.1:<port> -> envd (guest port 49983). envd is the guest's
// PID 1 and requires a per-sandbox access token (EnvdEndpoint::access_token). The serial
// console goes to <sandbox>/console.log.
//
// The VMM runs daemonized (it survives a node agent restart) in its own host cgroup
// (`<cgroup root>/<id>`: CPU quota = cpu_millis, memory = memory_mb + VMM overhead, pids), so
// usage (CPU, memory) is the VM's whole cost on the host; I/O counts come from QMP
// query-blockstats. Pause/Resume are QMP stop/cont. Stop ends the VMM (QMP quit, SIGKILL
// after `grace`) and keeps the disk layer; Destroy removes the VMM, cgroup, sockets, layer and
// directory — idempotent, and complete for a half-created sandbox. Create returns once envd
// answers /health over the forward; a failed Create leaves nothing behind.
//
// Snapshots (fast start): PrepareSnapshot(template, vcpus, memory) boots a VM once, waits for
// envd, pauses it and saves its state with QMP migrate to <data_dir>/snapshots/<key>/; the
// disk layer it had is kept beside it. A Create whose template, vCPUs, memory and env match a
// snapshot copies that layer, starts QEMU with -incoming from the saved state (same devices,
// its own forward, throttling and cgroup), resizes the disk to disk_mb (QMP block_resize) and
// has envd grow the filesystem, set the hostname and the clock, and re-keys the guest: a fresh
// envd token (written to envd's token file through the files API, then SIGHUP; the old token
// is verified refused, and a VM whose re-keying fails is destroyed, never returned) and the
// guest kernel's CRNG reseeded from host random bytes — no two restored VMs share the
// snapshot's token or RNG state. Snapshots are keyed by the VM layout too (device set, kernel,
// QEMU, accelerator); Open removes those of another layout, so none is restored into
// mismatching devices.
// With `auto_snapshot`, the first Create of a (template, vcpus, memory) with an empty env
// builds the snapshot first.
//
// Warm pool (MicroVmDriverOptions::warm_pool, off by default): per entry (template, vCPUs,
// memory, disk), N VMs restored from the snapshot ahead of time (the refill builds the
// snapshot if missing), resumed once so that the disk is grown to the entry's disk_mb and envd
// is known to answer, then paused (QMP stop: no CPU while waiting) under internal slot names
// ("pool-<hex>", never a valid sandbox id: directory, cgroup and hostname). Create(spec) claims
// one when the template, vCPUs, memory and disk_mb match the entry and spec.env is empty
// (envd's environment is fixed at boot; anything else takes the restore or cold path): it
// renames the slot's directory to the id (refused if the id exists), applies the spec's CPU
// quota (cgroup) and I/O throttling (QMP block_set_io_throttle), resumes the VM, has envd set
// the hostname to the id and the clock, and writes state.json — from then on it is a restored
// sandbox like any other (state.json records the directory name QEMU's command line still
// carries, so recovery recognises the VMM). Per sandbox: id, hostname, disk copy (its own
// layer, never shared with another slot), CPU/IO limits, envd access token and RNG state (each
// slot is re-keyed as a restore is, when it is restored; the claim reseeds the CRNG again);
// the timeout is the supervisor's. A background thread refills the pool after
// every claim (after `refill_delay`); a miss or a failed claim (the slot is destroyed) takes
// the normal path. Destroying the driver stops the refill and destroys the unclaimed slots;
// Recover() destroys every slot a previous run left (never adopted, not in the report).
//
// State: <data_dir>/sandboxes/<id>/{state.json, disk.qcow2, qmp.sock, qemu.pid, console.log,
// fw/}. Recover() (at open, reported once) adopts a sandbox whose VMM is alive (pid from
// state.json whose command line names its QMP socket, and QMP answers) and destroys the
// rest: VMM processes that name a sandbox directory of ours but have no whole state, cgroups
// with no directory, directories with no live VMM.
//
// Thread safety: Driver methods from any thread; one Sandbox's methods are serialized by the
// caller; different sandboxes are independent.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/ns_driver.h"
#include "hangar/node/sandbox.h"

namespace hangar::storage {
class TemplateStore;
}  // namespace hangar::storage

namespace hangar::microvm {

// One (template, size) of VMs kept restored and paused.
struct MicroVmWarmPoolEntry {
  std::string template_name;
  size_t size = 0;  // VMs kept ready (0: none)
  // Only specs asking exactly this shape are served: VcpusFor(cpu_millis) == vcpus,
  // memory_mb and disk_mb equal (disk_mb at least the template image's size).
  int vcpus = 1;
  int64_t memory_mb = 512;
  int64_t disk_mb = 1024;
};

struct MicroVmWarmPoolOptions {
  std::vector<MicroVmWarmPoolEntry> entries;  // empty: no warm pool (the default)
  // After a failed refill (no such template yet, a restore that failed), wait this long.
  std::chrono::milliseconds retry_after{5000};
  // After a claim, the refill waits this long before restoring a replacement, so that the
  // restore (seconds of CPU under TCG) does not compete with the claimed VM's first commands.
  std::chrono::milliseconds refill_delay{1000};
};

struct MicroVmDriverOptions {
  std::string data_dir;                         // e.g. <node data>/microvm; created if missing
  storage::TemplateStore* templates = nullptr;  // not owned
  // A backend of its own (its root, e.g. "hangar-microvm", must differ from the ns tier's:
  // each driver's recovery removes the groups under its root that it does not own). Not owned.
  node::CgroupBackend* cgroups = nullptr;
  std::string kernel_dir = "/var/cache/hangar/guest-kernel";  // vmlinuz + initrd.img
  std::string envd_path;  // static envd binary copied into every base image
  std::string qemu_binary = "qemu-system-x86_64";
  // "auto": KVM when /dev/kvm opens read-write, else TCG. "tcg" / "kvm" force one.
  std::string accel = "auto";
  int64_t vmm_overhead_mb = 256;                    // added to memory_mb for the VMM cgroup's limit
  std::chrono::milliseconds boot_timeout{120'000};  // cold boot to envd /health (TCG is slow)
  bool auto_snapshot = false;
  Clock* clock = nullptr;            // nullptr: SystemClock
  MicroVmWarmPoolOptions warm_pool;  // see the header comment; off unless entries are given
  // The serial console is a host file outside the sandbox's disk quota: one above this size is
  // cut back to a line saying so, checked every console_check (a guest flooding its ttyS0
  // cannot fill the node's disk; what it writes is its own log, bounded).
  int64_t console_max_bytes = int64_t{8} << 20;
  std::chrono::milliseconds console_check{1000};
};

// Opens the driver: checks the host (QEMU binary, kernel cache, envd binary), recovers what a
// previous run left, then serves. failed_precondition naming what is missing if the host
// cannot run it — never a driver that pretends.
Result<node::DriverPtr> NewMicroVmDriver(MicroVmDriverOptions options);

// Whether this host can run the QEMU backend with these options (binary, kernel cache, envd).
Status QemuAvailable(const MicroVmDriverOptions& options);

// Boots, pauses and saves a VM of `template_name` with `vcpus` and `memory_mb` (see the header
// comment). Already there: ok. `driver` must come from NewMicroVmDriver.
Status PrepareSnapshot(node::Driver& driver, const std::string& template_name, int vcpus,
                       int64_t memory_mb);

// vCPUs for a request: ceil(cpu_millis / 1000), at least 1.
int VcpusFor(int64_t cpu_millis);

// Warm pool counters of a driver made by NewMicroVmDriver (all zero for any other driver).
node::WarmPoolStats GetMicroVmWarmPoolStats(const node::Driver& driver);
// Waits until every warm pool entry is full (true) or `timeout` passes (false). For tests and
// benchmarks; production never waits (a miss takes the restore or cold path).
bool WaitForMicroVmWarmPool(const node::Driver& driver, std::chrono::milliseconds timeout);

// Parses the node option `node.microvm_warm_pool`:
// "template:count[:disk_mb[:memory_mb[:vcpus]]][,...]" (defaults disk 1024, memory 512,
// 1 vCPU: the node API's defaults). invalid_argument naming the bad item and the option.
Result<std::vector<MicroVmWarmPoolEntry>> ParseMicroVmWarmPool(std::string_view text);

}  // namespace hangar::microvm
