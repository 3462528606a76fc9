// OCI bundle generator of the gVisor tier: config.json for `runsc run` from a sandbox's spec.
//
// A pure function: it reads nothing and writes nothing; the driver writes the result to
// <bundle>/config.json. What the generated config promises (and tests check):
//  - process: the init (envd, static) bind-mounted read-only from the host at kInitPathInside,
//    started as uid/gid 0 of the sandbox (gVisor's root, not the host's) with `argv`, cwd "/",
//    environment PATH + spec.env, no terminal, noNewPrivileges, the shared tier's default
//    capability set (Docker's minus NET_RAW) in bounding/effective/permitted, none inheritable
//    or ambient, RLIMIT_NOFILE 1048576.
//  - root: `rootfs` (a directory the host assembled: template + writable upper on the
//    sandbox's own disk), writable; hostname = the sandbox id.
//  - namespaces pid, ipc, uts, mount, network — and no user namespace: runsc needs real root
//    with CAP_SYS_ADMIN to start, and the sentry (gVisor's user-space kernel) is the boundary.
//  - mounts: /proc, /dev (tmpfs), /dev/pts, /dev/shm, /sys (read-only), /tmp (tmpfs of half the
//    memory limit, 1777), the init binary (ro,nosuid,nodev), the envd socket directory
//    `socket_dir` at kSocketDirInside (rw,nosuid,nodev,noexec) and a small internal tmpfs at
//    kInternalSocketDirInside (0700) for envd's own socket.
//  - linux.cgroupsPath = `cgroups_path`; linux.resources: memory limit (swap = limit: no swap),
//    CPU quota per 100 ms period from cpu_millis, pids limit, and blockIO throttles on the
//    sandbox disk's major:minor for every non-zero read/write IOPS/bps limit.
//  - maskedPaths and readonlyPaths: Docker's defaults.
// Bad input (a non-absolute path, an empty argv, an invalid id) is invalid_argument naming it.
// Thread safety: stateless.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"
#include "hangar/node/sandbox.h"

namespace hangar::gvisor {

// Where the init binary and envd's socket directory appear inside the sandbox.
inline constexpr char kInitPathInside[] = "/.hangar/init";
inline constexpr char kSocketDirInside[] = "/run/hangar";  // host-backed: the node's end
inline constexpr char kSocketName[] = "envd.sock";
// A sandbox-internal tmpfs (0700) for envd's own listening socket; envd relays the host-backed
// socket to it (src/envd/relay.h explains why).
inline constexpr char kInternalSocketDirInside[] = "/run/envd";

struct BundleSpec {
  node::SandboxSpec sandbox;      // id (hostname), resources (limits), env
  std::string rootfs;             // absolute host path of the assembled root directory
  std::string init_host_path;     // absolute host path of the init binary (envd)
  std::vector<std::string> argv;  // the init's argv, argv[0] included
  std::string socket_dir;         // absolute host directory shown at kSocketDirInside
  std::string cgroups_path;       // e.g. "/hangar-gvisor/<id>"
  uint32_t disk_major = 0;        // the sandbox disk's device, for blockIO throttles;
  uint32_t disk_minor = 0;        // 0:0 = no disk (no throttles are written)
};

Result<nlohmann::json> MakeOciConfig(const BundleSpec& spec);

}  // namespace hangar::gvisor
