// mount: the sandbox's filesystem view, assembled inside its own mount namespace.
//
// Contract (SetUpSandboxRoot, child side):
//  - Runs in a process that is in fresh mount, pid and UTS namespaces and is the first process
//    of that pid namespace (so the /proc it mounts shows only the sandbox).
//  - Makes every mount private first, so nothing propagates back to the host; every mount made
//    afterwards lives only in this namespace and disappears with it, on any path — no cleanup
//    is needed when a step fails (the caller exits).
//  - Result, after pivot_root: / = overlay(lower = template, read-only; upper/work = the
//    sandbox disk), nodev. /dev = small tmpfs with bind-mounted null zero full random urandom
//    tty, a private devpts instance (+ ptmx), /dev/shm, fd/stdin/stdout/stderr links — no
//    block devices, no kmsg, no mem. /proc = fresh procfs with kernel-revealing files masked
//    by /dev/null, kernel directories by an empty read-only tmpfs, and /proc/sys, /proc/irq,
//    /proc/bus, /proc/fs, /proc/sysrq-trigger read-only. /sys = empty read-only tmpfs.
//    /tmp = tmpfs. hostname set. The old root is detached: no host path remains reachable.
//  - Each failure names the call with its arguments.
//  - The mounts are the plan of contain.h (AddStandardMounts), the same the sandbox start runs.
//  - Not async-signal-safe (it builds path strings): run it in a single-threaded process.
// Thread safety: changes process-wide state (root, mounts); single-threaded callers only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::node {

struct SandboxRootOptions {
  std::string lower;   // template root directory (host path), never written
  std::string upper;   // overlay upper directory on the sandbox disk
  std::string work;    // overlay work directory, same filesystem as upper
  std::string target;  // empty directory where the root is assembled before pivot_root
  std::string hostname = "sandbox";
  uint64_t tmp_bytes = 256ull << 20;     // /tmp tmpfs size
  uint64_t dev_shm_bytes = 64ull << 20;  // /dev/shm tmpfs size
};

Status SetUpSandboxRoot(const SandboxRootOptions& options);

// Paths under /proc replaced by /dev/null (files) or an empty read-only tmpfs (directories),
// and those made read-only (Docker's lists).
const std::vector<std::string>& MaskedProcPaths();
const std::vector<std::string>& ReadOnlyProcPaths();
// The device nodes bind-mounted from the host into /dev.
const std::vector<std::string>& SandboxDeviceNodes();

}  // namespace hangar::node
