// Guest helpers: what envd does for the microVM tier, where it is the guest's init.
//
// The guest's stage 1 (the initramfs /init from scripts/fetch-guest-kernel.sh) mounts the root
// disk and switch_roots to envd; the node then reaches envd over a port forward. These are the
// few things stage 1's busybox cannot do, and what the node asks of a guest restored from a
// snapshot (through envd's process API, as root: `/.hangar/envd --grow-fs / --set-hostname ID
// --set-clock-ns N --seed-rng HEX --reload-token`):
//  - ParseEnvFile: the sandbox's environment from a file of NUL-separated NAME=VALUE entries
//    (values may hold newlines, which a kernel command line or a shell `read` cannot carry).
//    Names must be non-empty and hold no '='; an entry without '=' is an error naming it.
//  - GrowExt4ToDevice: grows the ext4 filesystem mounted at a path online to the size of its
//    block device (the per-sandbox qcow2 layer is larger than the template's base image). A
//    filesystem already that size is left alone (ok).
//  - SetHostname / SetClock: sethostname(2) / clock_settime(CLOCK_REALTIME).
//  - SeedKernelRng: every VM restored from one snapshot starts with the same kernel CRNG state
//    (and the Debian cloud kernel has no vmgenid driver to notice the restore). The node's
//    fresh random bytes (hex, 32-512 bytes) are written to /dev/urandom (mixed into the input
//    pool) and the CRNG is reseeded from that pool at once (ioctl RNDRESEEDCRNG: Linux >= 4.17,
//    CAP_SYS_ADMIN), so the guest's next random bytes differ from every other VM's. Bad hex or a
//    length out of bounds is invalid_argument and changes nothing; a kernel that refuses the
//    reseed is an error (the node then destroys the VM: never a sandbox that shares RNG state).
//  - SignalInitToReloadToken: SIGHUP to PID 1 when PID 1 runs this same envd binary
//    (failed_precondition otherwise: never a signal to another init), which re-reads its
//    --access-token-file (main.cc). The reload is asynchronous: the caller checks the result
//    (the new token accepted, the old one refused).
// Thread safety: stateless functions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "hangar/base/status.h"

namespace hangar::envd::internal {

Result<std::map<std::string, std::string>> ParseEnvFile(std::string_view content);

// The new size in filesystem blocks for a device of `device_bytes` (whole blocks only).
uint64_t BlocksForDevice(uint64_t device_bytes, uint64_t block_size);

Status GrowExt4ToDevice(const std::string& mount_point);

Status SetHostname(const std::string& name);
Status SetClock(int64_t unix_nanos);

// Hex (even length, [0-9a-fA-F]) of 32-512 bytes, decoded.
Result<std::string> ParseSeedHex(std::string_view hex);
Status SeedKernelRng(std::string_view hex);

Status SignalInitToReloadToken();

}  // namespace hangar::envd::internal
