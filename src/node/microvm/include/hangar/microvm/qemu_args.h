// The QEMU command line of one sandbox VM, built from plain data (unit-tested without QEMU).
//
// Every VM: `-M pc` (the `microvm` machine stalls on timer calibration under TCG), no default
// devices, no display, the guest kernel + initramfs from the cache, the serial console into a
// file, QMP on a Unix socket, -daemonize with a pid file (the VMM outlives a node agent
// restart; recovery adopts it by pid), one virtio-blk root disk (qcow2 layer) with QEMU's
// I/O throttling, settings as fw_cfg files (opt/hangar/<name>), one virtio-net NIC on
// user-mode networking with restrict=on (the guest reaches neither the host nor the outside;
// only the host forward 127.0.0.1:<port> -> guest:<envd port> exists), and two entropy devices:
// virtio-rng fed by the host's /dev/urandom (rate-limited) and a vmgenid device with a new GUID
// per QEMU process, which a guest kernel with a vmgenid driver (CONFIG_VMGENID) takes as "I was
// restored" and reseeds its RNG on. Neither is the guest's only defence: the Debian cloud kernel
// has no vmgenid driver and loads virtio_rng only if the initramfs carries it; the node reseeds a
// restored guest itself (docs/adr/0008-microvm.md, item 9).
// KVM when asked for (the caller checks /dev/kvm), TCG otherwise.
// An incoming migration (snapshot restore) needs the exact same devices, so the argv differs
// only in paths, the throttle values, the forward's host port and -incoming; kVmLayoutVersion
// names the device set and is part of every snapshot's key, so a snapshot saved by another
// device set is never restored.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hangar::microvm {

// Bump whenever BuildQemuArgs or GuestCmdline changes what the guest sees (a device, a machine
// option, the kernel command line): snapshots of the old layout then stop matching.
// 2: virtio-rng + vmgenid.
constexpr int kVmLayoutVersion = 2;

struct DriveThrottle {
  int64_t read_iops = 0, write_iops = 0;  // 0 = unlimited
  int64_t read_bps = 0, write_bps = 0;
};

struct VmConfig {
  std::string qemu_binary = "qemu-system-x86_64";
  bool kvm = false;
  std::string kernel, initrd, cmdline;
  int vcpus = 1;
  int64_t memory_mb = 256;
  std::string disk;  // qcow2
  DriveThrottle throttle;
  std::string console_log, qmp_socket, pid_file;
  uint16_t host_port = 0;  // 0: QEMU picks (read it back with `info usernet`)
  uint16_t guest_port = 49983;
  std::map<std::string, std::string> fw_cfg;  // name under opt/hangar/ -> host file
  std::string incoming;                       // "" or a migration URI, e.g. "exec:cat F"
  int64_t tcg_tb_mb = 64;                     // TCG translation cache (default 1 GiB)
};

// The guest kernel command line every sandbox VM boots with.
std::string GuestCmdline();

std::vector<std::string> BuildQemuArgs(const VmConfig& c);

}  // namespace hangar::microvm
