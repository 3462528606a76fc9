// contain: the child side of starting a shared-tier sandbox — the checklist that turns a
// freshly cloned process into the sandbox's init.
//
// The parent builds a ContainPlan (every path, option string and descriptor prepared in
// advance), then clone()s a child with new pid, uts and ipc namespaces (and a new net namespace
// unless the plan brings a pre-made one) that runs RunContained(plan). Between clone and exec
// the child may not allocate (the parent is multi-threaded), so the plan holds only C strings
// and numbers, and every step is a raw system call. The driver clones with
// CLONE_VM|CLONE_VFORK (posix_spawn's way: no copy of the agent's page tables; the calling
// thread sleeps until the exec), so the child must never wait for the parent: it joins its
// cgroup itself. The steps, in order:
//
//   1. join the sandbox's cgroup (plan.cgroup_join)                     write "0" to v1 `tasks`
//      (the child is a single-threaded process: moving its one thread     (or v2 cgroup.procs)
//      moves the process, without cgroup.procs' threadgroup lock, whose
//      write side waits for an RCU grace period: ~3 ms measured)
//      or, if plan.sync_fd >= 0, wait for the parent to have done it     sync pipe
//      and leave the node's session: no controlling terminal            setsid
//      with plan.netns_fd: enter the pre-made network namespace         setns(CLONE_NEWNET)
//      (MakeNetworkNamespace; loopback already up)
//      with plan.mntns_fd: a copy of the node's small spawner mount     setns + unshare(NEWNS)
//      namespace (MakeSpawnerNamespace) instead of the agent's, and
//      the prepared root attached from its detached clone               move_mount(rootfs_tree_fd)
//      (then the clone must not pass CLONE_NEWNS: copying the agent's
//      namespace costs O(its mounts), i.e. O(sandboxes on the node))
//   2. own cgroup namespace (its cgroup root is the sandbox's group)     unshare(CLONE_NEWCGROUP)
//   3. stop mount propagation to and from the host                       MS_REC|MS_PRIVATE on /
//   4. build the root: /proc with masked and read-only paths, minimal    mount ops of the plan
//      /dev, devpts, /dev/shm, /tmp — all below the prepared overlay
//   5. make it the root and drop the host's                              pivot_root(".", ".")
//   6. hostname = sandbox id                                             sethostname
//      without plan.netns_fd: loopback up (the clone's new network       ioctl(SIOCSIFFLAGS)
//      namespace is owned by the host's user namespace, so only now, as
//      host root, can it be configured)
//   7. enter the sandbox's user namespace, become its root               setns(user), setres*id
//   8. rlimits, capability bounding set, no_new_privs                    caps.h
//   9. descriptors: the envd listen socket at fd 3, console on 1 and 2   dup2 + close_range
//  10. the seccomp filter, compiled once per node                        seccomp.h
//  11. signal handlers the agent installed back to default, the signal  sigaction, sigprocmask
//      mask back to plan.exec_sigmask (the parent blocks all around clone)
//      and exec init (envd) from a descriptor opened on the host        execveat(AT_EMPTY_PATH)
//
// Every namespace but the user namespace (mnt, pid, net, uts, ipc, cgroup) is made, or entered,
// while the child is still host root in the initial user namespace, so they are all owned by
// it: the sandbox's root (root of a child user namespace) has no capability over any of them —
// it cannot mount, configure the network (add links or addresses, take `lo` down) or change the
// hostname, even if seccomp failed. A pre-made network namespace keeps that ownership: it is
// made by the agent (initial user namespace), never by or for a sandbox's user namespace.
//
// A failing step writes {step, errno} to the report pipe and exits 127; the parent turns it into
// a Status naming the step and its arguments. A successful exec closes the report pipe
// (O_CLOEXEC) with nothing written. With plan.trace set, the child stores a CLOCK_MONOTONIC
// timestamp after each phase (for benchmarks; the parent shares its memory under CLONE_VM).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <deque>
#include <string>
#include <vector>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"
#include "hangar/node/caps.h"
#include "hangar/node/seccomp.h"

namespace hangar::node::internal {

struct MountOp {
  enum class Kind {
    kMount,    // mount(source, target, fstype, flags, data)
    kRemount,  // mount(target, target, NULL, MS_REMOUNT|MS_BIND|flags) — read-only binds
    kMkdir,    // mkdir(target, mode)
    kTouch,    // create an empty file (a bind-mount target)
    kSymlink,  // symlink(source, target)
  };
  Kind kind = Kind::kMount;
  const char* source = nullptr;
  const char* target = nullptr;
  const char* fstype = nullptr;
  unsigned long flags = 0;
  const char* data = nullptr;
  unsigned mode = 0755;
  bool optional = false;  // ENOENT on the target is fine (a masked path this kernel lacks)
};

struct ContainPlan {
  // Owned strings the raw pointers below point into. A deque: appending never moves the
  // strings already kept (a vector would, and short strings live inside the object).
  std::deque<std::string> storage;

  int sync_fd = -1;    // read end: one byte from the parent means "go" (-1: no wait)
  int report_fd = -1;  // write end, O_CLOEXEC
  // The files the child writes "0" to, one per hierarchy: v1 `tasks` (moves the writing
  // thread, which is the whole single-threaded child), else cgroup.procs.
  std::vector<const char*> cgroup_join;
  const char* rootfs = nullptr;  // host path of the prepared overlay
  std::vector<MountOp> mounts;   // step 4, in order
  const char* hostname = nullptr;
  int userns_fd = -1;
  ResourceLimits rlimits;
  CapMask keep_caps = 0;
  int last_cap = 0;
  int listen_fd = -1;                       // becomes fd 3 in the sandbox (-1: none)
  int console_fd = -1;                      // becomes fds 1 and 2 (stdin is /dev/null)
  const SeccompProgram* seccomp = nullptr;  // nullptr only in tests of the earlier steps
  int init_fd = -1;                         // the init binary, opened on the host
  std::vector<char*> argv;                  // null-terminated
  std::vector<char*> envp;                  // null-terminated
  sigset_t exec_sigmask{};                  // the init's signal mask (the parent's usual one)
  // The node's spawner namespace (MakeSpawnerNamespace), or -1: the clone passed CLONE_NEWNS
  // and the child's mount namespace is a copy of the caller's.
  int mntns_fd = -1;
  // With mntns_fd: a detached clone of the prepared root (open_tree(OPEN_TREE_CLONE)), attached
  // at `rootfs` (kSpawnerRoot) inside the copy.
  int rootfs_tree_fd = -1;
  // A pre-made network namespace (MakeNetworkNamespace: owned by the initial user namespace,
  // loopback up) the child enters; -1: the clone passed CLONE_NEWNET and the child brings the
  // new namespace's loopback up itself. Either way the namespace is this sandbox's alone.
  int netns_fd = -1;
  // Benchmarks only (nullptr in production): CLOCK_MONOTONIC ns after each ContainPhase.
  uint64_t* trace = nullptr;

  // Keeps `s` alive for the plan's lifetime and returns a stable pointer to it.
  const char* Keep(std::string s);
  // Human description of each step for error messages, parallel to the step numbers.
  std::vector<std::string> step_names;
};

// Step numbers reported by the child. Mount ops are kMountBase + index.
enum ContainStep : int {
  kStepSync = 1,
  kStepCgroupNs,
  kStepPrivate,
  kStepChdirRoot,
  kStepPivot,
  kStepDetachOld,
  kStepHostname,
  kStepUserns,
  kStepBecomeRoot,
  kStepRlimits,
  kStepCaps,
  kStepFds,
  kStepSeccomp,
  kStepExec,
  kStepSession,
  kStepLoopback,
  kStepCgroupJoin,
  kStepSignals,
  kStepSpawnerNs,
  kStepAttachRoot,
  kStepNetns,
  kMountBase = 100,
};

// What plan.trace[i] marks the end of (the first entry: the child's first instruction).
enum ContainPhase : int {
  kPhaseChildStart = 0,
  kPhaseCgroupJoined,  // cgroup join (+ sync wait) + setsid
  kPhaseNamespaces,    // setns net, setns + unshare mnt, unshare cgroup, MS_PRIVATE, attach
  kPhaseMounts,        // the plan's mount ops
  kPhasePivot,         // pivot_root + detach of the old root
  kPhaseUserns,        // hostname, loopback (without netns_fd), setns user + become root
  kPhaseSeccomp,       // rlimits, caps, descriptors, seccomp, signals
  kContainPhases,      // (count; the exec follows)
};

struct ContainFailure {
  int step = 0;
  int err = 0;
};

// Where the sandbox's root is attached inside a copy of the spawner namespace: the `rootfs`
// of a plan with mntns_fd (pass it to AddStandardMounts too).
inline constexpr const char* kSpawnerRoot = "/root";

// The spawner namespace: a mount namespace made once per node (by a short-lived CLONE_VM
// helper, from a private copy of the caller's) holding only what a sandbox child needs before
// its pivot_root — a small tmpfs root with an empty kSpawnerRoot and binds of the host's
// SandboxDeviceNodes() under /dev. Every mount private. Sandbox children copy it instead of
// the agent's namespace, so their setup does not grow with the node's mounts (3 per sandbox).
// `scratch_dir` is an existing directory the helper mounts the tmpfs on (in its copy only:
// nothing changes in the caller's namespace). Returns an O_CLOEXEC descriptor of the namespace
// (kept high, >= 100); it lives as long as the descriptor.
Result<UniqueFd> MakeSpawnerNamespace(const std::string& scratch_dir);

// A new network namespace with its loopback up, owned by the calling thread's user namespace
// (the agent's: the initial one), held by an O_CLOEXEC descriptor kept high (>= 100). The
// calling thread unshares into it, configures it and returns with setns(home_netns_fd) to
// the namespace it was in (`home_netns_fd`: that namespace, opened before); if it cannot
// return, the error says so and the caller must not use the thread for anything else.
// Allocates nothing of a sandbox's; a namespace lives as long as its descriptor or a process
// in it, so a crash of the agent frees every one not yet entered.
Result<UniqueFd> MakeNetworkNamespace(int home_netns_fd);

// Runs the plan's mount ops in order (step 4). Allocation-free. Returns 0, or an errno with
// the failing op's index in *failed.
int RunMountOpsRaw(const ContainPlan& plan, size_t* failed) noexcept;

// Runs in the cloned child; never returns.
[[noreturn]] void RunContained(const ContainPlan& plan) noexcept;

// Parent side: the Status for a failure the child reported.
Status DescribeFailure(const ContainPlan& plan, const ContainFailure& f);

// Appends the standard sandbox root below `rootfs` to the plan: /proc with the masked and
// read-only paths of mount.h, a minimal read-only /dev (the nodes of SandboxDeviceNodes(), a
// private devpts, /dev/shm), an empty read-only /sys and a tmpfs /tmp. Which masked /proc
// paths are files or directories is read from this host's /proc (the sandbox has the same
// kernel). `tty_gid` is the host gid that is the sandbox's tty group.
void AddStandardMounts(ContainPlan& plan, const std::string& rootfs, gid_t tty_gid,
                       uint64_t tmp_size_bytes, uint64_t shm_size_bytes = 64ull << 20);
// Human description of one mount op, for errors.
std::string DescribeMountOp(const MountOp& op);

}  // namespace hangar::node::internal
