// contain: the child side of starting a shared-tier sandbox — the checklist that turns a
// freshly cloned process into the sandbox's init.
//
// The parent builds a ContainPlan (every path, option string and descriptor prepared in
// advance), then clone()s a child with new mount, pid, net, uts and ipc namespaces that runs
// RunContained(plan). Between clone and exec the child may not allocate (the parent is
// multi-threaded), so the plan holds only C strings and numbers, and every step is a raw
// system call. The steps, in order:
//
//   1. wait for the parent (it has written the cgroup membership)      sync pipe
//      and leave the node's session: no controlling terminal            setsid
//   2. own cgroup namespace (its cgroup root is the sandbox's group)     unshare(CLONE_NEWCGROUP)
//   3. stop mount propagation to and from the host                       mount(/,
//   MS_REC|MS_PRIVATE)
//   4. build the root: /proc with masked and read-only paths, minimal    mount ops of the plan
//      /dev, devpts, /dev/shm, /tmp — all below the prepared overlay
//   5. make it the root and drop the host's                              pivot_root(".", ".")
//   6. hostname = sandbox id                                             sethostname
//      loopback up (the net namespace is owned by the host's user ns)    ioctl(SIOCSIFFLAGS)
//   7. enter the sandbox's user namespace, become its root               setns(userns) +
//   setres[ug]id
//   8. rlimits, capability bounding set, no_new_privs                    caps.h
//   9. descriptors: the envd listen socket at fd 3, console on 1 and 2   dup2 + close_range
//  10. the seccomp filter, compiled once per node                        seccomp.h
//  11. exec init (envd) from a descriptor opened on the host             execveat(AT_EMPTY_PATH)
//
// A failing step writes {step, errno} to the report pipe and exits 127; the parent turns it into
// a Status naming the step and its arguments. A successful exec closes the report pipe
// (O_CLOEXEC) with nothing written.
#pragma once

#include <sys/types.h>

#include <deque>
#include <string>
#include <vector>

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

  int sync_fd = -1;              // read end: one byte from the parent means "go"
  int report_fd = -1;            // write end, O_CLOEXEC
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
  kMountBase = 100,
};

struct ContainFailure {
  int step = 0;
  int err = 0;
};

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
