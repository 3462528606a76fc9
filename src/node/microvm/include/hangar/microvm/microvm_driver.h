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
// has envd grow the filesystem, set the hostname and the clock. Restored VMs of one snapshot
// share its envd token and the guest's RNG state at snapshot time (see the ADR).
// With `auto_snapshot`, the first Create of a (template, vcpus, memory) with an empty env
// builds the snapshot first. Warm pools: not yet (see the ADR).
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

#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/sandbox.h"

namespace hangar::storage {
class TemplateStore;
}  // namespace hangar::storage

namespace hangar::microvm {

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
  Clock* clock = nullptr;  // nullptr: SystemClock
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

}  // namespace hangar::microvm
