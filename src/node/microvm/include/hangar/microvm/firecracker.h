// Firecracker backend: the API requests that configure and start one microVM, built from a
// sandbox's spec, and the host check. Firecracker needs /dev/kvm; where it (or the binary)
// is missing the backend reports itself unavailable and refuses to create — it never pretends.
//
// Requests follow Firecracker's documented API (src/firecracker/swagger/firecracker.yaml):
//   PUT /machine-config  {vcpu_count, mem_size_mib, smt:false}
//   PUT /boot-source     {kernel_image_path, initrd_path, boot_args}
//   PUT /drives/rootfs   {drive_id, path_on_host, is_root_device:true, is_read_only:false,
//                         rate_limiter: {bandwidth: TokenBucket, ops: TokenBucket}}
//   PUT /vsock           {guest_cid, uds_path}   (the node's channel to envd on Firecracker)
//   PUT /actions         {action_type: "InstanceStart"}
//   PATCH /vm            {state: "Paused" | "Resumed"}
//   PUT /snapshot/create {snapshot_type: "Full", snapshot_path, mem_file_path}
//   PUT /snapshot/load   {snapshot_path, mem_backend: {backend_type: "File", backend_path},
//                         resume_vm: true}
// No /network-interfaces request: no network by default.
// A TokenBucket is {size, refill_time (ms), one_time_burst?}. Firecracker has one ops bucket
// and one bandwidth bucket per drive for reads and writes together, so the limit used is the
// smaller of the non-zero read and write limits (never more than either); refill_time is
// 1000 ms, so size = the per-second rate. No limit at all: no rate_limiter field.
// The jailer command line (chroot per VM, uid/gid, cgroup, netns-less) is built by JailerArgs.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"
#include "hangar/node/sandbox.h"

namespace hangar::microvm::firecracker {

struct ApiRequest {
  std::string method;  // "PUT" | "PATCH"
  std::string path;    // "/machine-config"
  nlohmann::json body;
};

struct BootConfig {
  std::string kernel, initrd, boot_args;
  std::string rootfs;  // host path of the root drive (inside the jail: relative to its root)
  std::string vsock_uds;
  uint32_t guest_cid = 3;
};

// The ordered requests that configure and start a VM for `r`; invalid_argument for
// resources Firecracker cannot express (vcpus outside 1..32, memory < 128 MiB).
Result<std::vector<ApiRequest>> StartRequests(const node::Resources& r, const BootConfig& boot);

// The drive's rate_limiter object, or null when the request sets no I/O limit.
nlohmann::json DriveRateLimiter(const node::Resources& r);

ApiRequest PauseRequest();
ApiRequest ResumeRequest();
ApiRequest SnapshotCreateRequest(const std::string& snapshot_path, const std::string& mem_path);
ApiRequest SnapshotLoadRequest(const std::string& snapshot_path, const std::string& mem_path);

// `jailer --id ID --exec-file FC --uid U --gid G --chroot-base-dir DIR -- --api-sock S`.
std::vector<std::string> JailerArgs(const std::string& jailer, const std::string& firecracker,
                                    const std::string& id, uint32_t uid, uint32_t gid,
                                    const std::string& chroot_base);

// ok if /dev/kvm opens read-write and `firecracker` (and `jailer`) are found in PATH or at the
// given paths; otherwise failed_precondition saying which is missing.
Status Available(const std::string& firecracker = "firecracker",
                 const std::string& jailer = "jailer");

// A Driver for the Firecracker backend. Until a host with KVM runs it, Available() and
// Create() return the reason it cannot run here; Recover() finds nothing.
node::DriverPtr NewDriver(std::string firecracker = "firecracker", std::string jailer = "jailer");

}  // namespace hangar::microvm::firecracker
