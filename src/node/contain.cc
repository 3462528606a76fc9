#include "contain.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sys/wait.h>

#include <time.h>

#include <cerrno>
#include <memory>

#include <fmt/format.h>

#include "hangar/base/child.h"
#include "hangar/node/mount.h"
#include "hangar/node/userns.h"

namespace hangar::node::internal {

const char* ContainPlan::Keep(std::string s) {
  storage.push_back(std::move(s));
  return storage.back().c_str();
}

namespace {

[[noreturn]] void Die(const ContainPlan& plan, int step, int err) noexcept {
  ContainFailure f{step, err};
  ssize_t n;
  do {
    n = ::write(plan.report_fd, &f, sizeof f);
  } while (n < 0 && errno == EINTR);
  ::_exit(127);
}

int DoMount(const MountOp& op) noexcept {
  switch (op.kind) {
    case MountOp::Kind::kMount:
      return ::mount(op.source, op.target, op.fstype, op.flags, op.data);
    case MountOp::Kind::kRemount:
      return ::mount(op.target, op.target, nullptr, MS_REMOUNT | MS_BIND | op.flags, nullptr);
    case MountOp::Kind::kMkdir:
      if (::mkdir(op.target, op.mode) != 0 && errno != EEXIST) return -1;
      return 0;
    case MountOp::Kind::kTouch: {
      int fd = ::open(op.target, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, op.mode);
      if (fd < 0) return -1;
      ::close(fd);
      return 0;
    }
    case MountOp::Kind::kSymlink:
      if (::symlink(op.source, op.target) != 0 && errno != EEXIST) return -1;
      return 0;
  }
  errno = EINVAL;
  return -1;
}

// Brings up `lo` of the current network namespace. Allocation-free; 0 or an errno.
int LoopbackUp() noexcept {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  ifreq ifr{};
  __builtin_memcpy(ifr.ifr_name, "lo", 3);
  int err = 0;
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    err = errno;
  } else {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) err = errno;
  }
  ::close(s);
  return err;
}

// Benchmarks: the end of a phase, in the parent's memory (CLONE_VM).
inline void Mark(const ContainPlan& plan, int phase) noexcept {
  if (plan.trace == nullptr) return;
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  plan.trace[phase] =
      static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

int RunMountOpsRaw(const ContainPlan& plan, size_t* failed) noexcept {
  for (size_t i = 0; i < plan.mounts.size(); ++i) {
    const MountOp& op = plan.mounts[i];
    if (DoMount(op) != 0 && !(op.optional && errno == ENOENT)) {
      *failed = i;
      return errno;
    }
  }
  return 0;
}

void RunContained(const ContainPlan& plan) noexcept {
  Mark(plan, kPhaseChildStart);
  for (const char* procs : plan.cgroup_join) {
    int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0) Die(plan, kStepCgroupJoin, errno);
    ssize_t w = ::write(fd, "0", 1);  // "0": the writing task itself
    int err = errno;
    ::close(fd);
    if (w != 1) Die(plan, kStepCgroupJoin, w < 0 ? err : EIO);
  }
  if (plan.sync_fd >= 0) {
    char go = 0;
    ssize_t n;
    do {
      n = ::read(plan.sync_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) Die(plan, kStepSync, n < 0 ? errno : EPIPE);
    ::close(plan.sync_fd);
  }
  // A session of its own: otherwise the sandbox keeps the node's controlling terminal (hangard
  // started from a shell) and /dev/tty reads the operator's keystrokes and writes to the screen.
  if (::setsid() < 0) Die(plan, kStepSession, errno);
  Mark(plan, kPhaseCgroupJoined);

  // A namespace made ahead by the node (owned by the initial user namespace, as one the clone
  // made would be): entering it skips the namespace's creation and its loopback set-up.
  if (plan.netns_fd >= 0 && ::setns(plan.netns_fd, CLONE_NEWNET) != 0) {
    Die(plan, kStepNetns, errno);
  }
  if (plan.mntns_fd >= 0) {
    // A copy of the node's small spawner namespace, not of the agent's (the clone did not
    // pass CLONE_NEWNS): what follows costs the same on a node with 1 or 1000 sandboxes.
    if (::setns(plan.mntns_fd, CLONE_NEWNS) != 0) Die(plan, kStepSpawnerNs, errno);
    if (::unshare(CLONE_NEWNS) != 0) Die(plan, kStepSpawnerNs, errno);
  }
  if (::unshare(CLONE_NEWCGROUP) != 0) Die(plan, kStepCgroupNs, errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    Die(plan, kStepPrivate, errno);
  }
  if (plan.mntns_fd >= 0) {
    if (plan.rootfs_tree_fd < 0) Die(plan, kStepAttachRoot, EBADF);
    if (::syscall(SYS_move_mount, plan.rootfs_tree_fd, "", AT_FDCWD, plan.rootfs,
                  MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      Die(plan, kStepAttachRoot, errno);
    }
  }
  Mark(plan, kPhaseNamespaces);
  size_t failed_op = 0;
  if (int e = RunMountOpsRaw(plan, &failed_op); e != 0) {
    Die(plan, kMountBase + static_cast<int>(failed_op), e);
  }
  Mark(plan, kPhaseMounts);

  // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then removes
  // the old root without needing a directory for it inside the sandbox.
  if (::chdir(plan.rootfs) != 0) Die(plan, kStepChdirRoot, errno);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) Die(plan, kStepPivot, errno);
  if (::umount2(".", MNT_DETACH) != 0) Die(plan, kStepDetachOld, errno);
  if (::chdir("/") != 0) Die(plan, kStepChdirRoot, errno);
  Mark(plan, kPhasePivot);

  if (plan.hostname != nullptr &&
      ::sethostname(plan.hostname, __builtin_strlen(plan.hostname)) != 0) {
    Die(plan, kStepHostname, errno);
  }

  // Only host root can configure the new network namespace (its owner is the host's user
  // namespace), so the sandbox's loopback is brought up here, before entering the sandbox's.
  // A pre-made namespace came with it up.
  if (plan.netns_fd < 0) {
    if (int e = LoopbackUp(); e != 0) Die(plan, kStepLoopback, e);
  }

  if (::setns(plan.userns_fd, CLONE_NEWUSER) != 0) Die(plan, kStepUserns, errno);
  ::close(plan.userns_fd);
  if (int e = BecomeNamespaceRootRaw(); e != 0) Die(plan, kStepBecomeRoot, e);
  Mark(plan, kPhaseUserns);

  if (int e = ApplyResourceLimitsRaw(plan.rlimits); e != 0) Die(plan, kStepRlimits, e);
  if (int e = DropCapabilitiesRaw(plan.keep_caps, plan.last_cap); e != 0) Die(plan, kStepCaps, e);

  // Descriptors: 0 = /dev/null, 1 and 2 = console, 3 = envd's listening socket, plus the
  // init binary and the report pipe (both close on exec).
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) Die(plan, kStepFds, errno);
  if (::dup2(devnull, 0) < 0) Die(plan, kStepFds, errno);
  int console = plan.console_fd >= 0 ? plan.console_fd : devnull;
  if (::dup2(console, 1) < 0 || ::dup2(console, 2) < 0) Die(plan, kStepFds, errno);
  if (plan.listen_fd >= 0) {
    if (plan.listen_fd == 3) {
      int flags = ::fcntl(3, F_GETFD);
      if (flags < 0 || ::fcntl(3, F_SETFD, flags & ~FD_CLOEXEC) != 0) Die(plan, kStepFds, errno);
    } else if (::dup2(plan.listen_fd, 3) < 0) {  // dup2 clears FD_CLOEXEC
      Die(plan, kStepFds, errno);
    }
  }
  // Everything else the parent had open must not reach the sandbox.
  int first_to_close = plan.listen_fd >= 0 ? 4 : 3;
  for (int fd : {plan.init_fd, plan.report_fd}) {
    if (fd < first_to_close) Die(plan, kStepFds, EBADF);  // the parent keeps them high
  }
  if (::syscall(SYS_close_range, first_to_close, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    Die(plan, kStepFds, errno);
  }

  if (plan.seccomp != nullptr) {
    if (int e = InstallSeccompProgramRaw(*plan.seccomp); e != 0) Die(plan, kStepSeccomp, e);
  } else if (int e = SetNoNewPrivsRaw(); e != 0) {
    Die(plan, kStepSeccomp, e);
  }

  // Handlers the agent installed must not run in the sandbox between the unblock and the exec
  // (with CLONE_VM they would run on the agent's memory); exec resets them anyway.
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction sa;
    if (sig == SIGKILL || sig == SIGSTOP || ::sigaction(sig, nullptr, &sa) != 0) continue;
    if (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN) continue;
    sa.sa_handler = SIG_DFL;
    sa.sa_flags = 0;
    if (::sigaction(sig, &sa, nullptr) != 0) Die(plan, kStepSignals, errno);
  }
  if (::sigprocmask(SIG_SETMASK, &plan.exec_sigmask, nullptr) != 0) Die(plan, kStepSignals, errno);
  Mark(plan, kPhaseSeccomp);
  ::syscall(SYS_execveat, plan.init_fd, "", plan.argv.data(), plan.envp.data(), AT_EMPTY_PATH);
  Die(plan, kStepExec, errno);
}

std::string DescribeMountOp(const MountOp& op) {
  switch (op.kind) {
    case MountOp::Kind::kMount:
      return fmt::format("mount({}, {}, {}, {:#x}, {})", op.source ? op.source : "none", op.target,
                         op.fstype ? op.fstype : "", op.flags, op.data ? op.data : "");
    case MountOp::Kind::kRemount:
      return fmt::format("mount({}, MS_REMOUNT|MS_BIND|{:#x})", op.target, op.flags);
    case MountOp::Kind::kMkdir:
      return fmt::format("mkdir({})", op.target);
    case MountOp::Kind::kTouch:
      return fmt::format("creat({})", op.target);
    case MountOp::Kind::kSymlink:
      return fmt::format("symlink({}, {})", op.source, op.target);
  }
  return "?";
}

Status DescribeFailure(const ContainPlan& plan, const ContainFailure& f) {
  std::string what;
  if (f.step >= kMountBase) {
    size_t i = static_cast<size_t>(f.step - kMountBase);
    if (i < plan.mounts.size()) what = DescribeMountOp(plan.mounts[i]);
  } else {
    switch (f.step) {
      case kStepSync:
        what = "waiting for the parent";
        break;
      case kStepSession:
        what = "setsid()";
        break;
      case kStepCgroupJoin:
        what = fmt::format("joining the sandbox's cgroup ({})",
                           plan.cgroup_join.empty() ? "?" : plan.cgroup_join.front());
        break;
      case kStepSignals:
        what = "resetting signal handlers and mask";
        break;
      case kStepSpawnerNs:
        what = "entering a copy of the spawner mount namespace (setns + unshare(CLONE_NEWNS))";
        break;
      case kStepAttachRoot:
        what = fmt::format("move_mount(root tree -> {})", plan.rootfs);
        break;
      case kStepNetns:
        what = "setns(pre-made network namespace)";
        break;
      case kStepLoopback:
        what = "ioctl(lo, SIOCSIFFLAGS, IFF_UP)";
        break;
      case kStepCgroupNs:
        what = "unshare(CLONE_NEWCGROUP)";
        break;
      case kStepPrivate:
        what = "mount(/, MS_REC|MS_PRIVATE)";
        break;
      case kStepChdirRoot:
        what = fmt::format("chdir({})", plan.rootfs);
        break;
      case kStepPivot:
        what = fmt::format("pivot_root({})", plan.rootfs);
        break;
      case kStepDetachOld:
        what = "umount2(old root, MNT_DETACH)";
        break;
      case kStepHostname:
        what = fmt::format("sethostname({})", plan.hostname);
        break;
      case kStepUserns:
        what = "setns(user namespace)";
        break;
      case kStepBecomeRoot:
        what = "setresuid/setresgid(0) in the user namespace";
        break;
      case kStepRlimits:
        what = "setrlimit";
        break;
      case kStepCaps:
        what = "dropping capabilities";
        break;
      case kStepFds:
        what = "arranging descriptors";
        break;
      case kStepSeccomp:
        what = "installing the seccomp filter";
        break;
      case kStepExec:
        what = fmt::format("execveat(init {})",
                           plan.argv.empty() || !plan.argv[0] ? "?" : plan.argv[0]);
        break;
      default:
        what = fmt::format("step {}", f.step);
    }
  }
  return Status::FromErrno(f.err, what).With("starting sandbox");
}

void AddStandardMounts(ContainPlan& plan, const std::string& rootfs, gid_t tty_gid,
                       uint64_t tmp_size_bytes, uint64_t shm_size_bytes) {
  using K = MountOp::Kind;
  auto p = [&](const std::string& rel) { return plan.Keep(rootfs + rel); };
  constexpr unsigned long kNoSuidDevExec = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  auto& m = plan.mounts;

  // /dev first: the /proc masks below bind its /dev/null. Device nodes cannot be created in a
  // user namespace, and need not be: the host's harmless character devices are bound in.
  m.push_back({K::kMkdir, nullptr, p("/dev")});
  m.push_back({K::kMount, "tmpfs", p("/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC,
               "mode=755,size=256k,nr_inodes=256"});
  for (const std::string& dev : SandboxDeviceNodes()) {
    const char* target = p("/dev/" + dev);
    m.push_back({K::kTouch, nullptr, target, nullptr, 0, nullptr, 0666});
    m.push_back({K::kMount, plan.Keep("/dev/" + dev), target, nullptr, MS_BIND, nullptr});
  }
  // A private devpts instance: the sandbox sees only its own ptys.
  m.push_back({K::kMkdir, nullptr, p("/dev/pts")});
  m.push_back({K::kMount, "devpts", p("/dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC,
               plan.Keep(fmt::format("newinstance,ptmxmode=0666,mode=0620,gid={}", tty_gid))});
  m.push_back({K::kSymlink, "pts/ptmx", p("/dev/ptmx")});
  m.push_back({K::kMkdir, nullptr, p("/dev/shm"), nullptr, 0, nullptr, 01777});
  m.push_back({K::kMount, "shm", p("/dev/shm"), "tmpfs", kNoSuidDevExec,
               plan.Keep(fmt::format("mode=1777,size={}", shm_size_bytes))});
  m.push_back({K::kSymlink, "/proc/self/fd", p("/dev/fd")});
  m.push_back({K::kSymlink, "/proc/self/fd/0", p("/dev/stdin")});
  m.push_back({K::kSymlink, "/proc/self/fd/1", p("/dev/stdout")});
  m.push_back({K::kSymlink, "/proc/self/fd/2", p("/dev/stderr")});
  // The directory cannot gain nodes; the bound nodes stay writable.
  m.push_back(
      {K::kRemount, nullptr, p("/dev"), nullptr, MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr});

  // /proc of the sandbox's own pid namespace, with Docker's masked and read-only paths.
  m.push_back({K::kMkdir, nullptr, p("/proc")});
  m.push_back({K::kMount, "proc", p("/proc"), "proc", kNoSuidDevExec, nullptr});
  const char* dev_null = p("/dev/null");
  for (const std::string& rel : MaskedProcPaths()) {
    struct stat st;
    if (::lstat(("/proc/" + rel).c_str(), &st) != 0) continue;  // not in this kernel
    MountOp op =
        S_ISDIR(st.st_mode)
            ? MountOp{K::kMount, "tmpfs", p("/proc/" + rel), "tmpfs", MS_RDONLY | kNoSuidDevExec,
                      "size=0"}
            : MountOp{K::kMount, dev_null, p("/proc/" + rel), nullptr, MS_BIND, nullptr};
    op.optional = true;
    m.push_back(op);
  }
  for (const std::string& rel : ReadOnlyProcPaths()) {
    const char* path = p("/proc/" + rel);
    MountOp bind{K::kMount, path, path, nullptr, MS_BIND | MS_REC, nullptr};
    bind.optional = true;
    m.push_back(bind);
    MountOp ro{K::kRemount, nullptr, path, nullptr, MS_RDONLY | kNoSuidDevExec, nullptr};
    ro.optional = true;
    m.push_back(ro);
  }

  // No sysfs: it describes the host's devices and has writable knobs. An empty read-only tmpfs
  // keeps programs that probe /sys from tripping over a missing directory.
  m.push_back({K::kMkdir, nullptr, p("/sys")});
  m.push_back({K::kMount, "tmpfs", p("/sys"), "tmpfs", MS_RDONLY | kNoSuidDevExec, "size=0"});

  m.push_back({K::kMkdir, nullptr, p("/tmp"), nullptr, 0, nullptr, 01777});
  m.push_back({K::kMount, "tmpfs", p("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV,
               plan.Keep(fmt::format("mode=1777,size={}", tmp_size_bytes))});
}

namespace {

// Shared with the spawner helper (CLONE_VM): the helper fills it, the parent reads it after
// the helper exited (CLONE_VFORK).
struct SpawnerHelper {
  const ContainPlan* plan = nullptr;  // mount ops building the tmpfs root; plan->rootfs = it
  int ns_fd = -1;                     // the namespace, opened in the shared descriptor table
  int step = 0;                       // 0: ok; else the failing step (see kSpawnerSteps)
  size_t op = 0;                      // the failing mount op (step 3)
  int err = 0;
};

constexpr const char* kSpawnerSteps[] = {"",
                                         "open(/proc/thread-self/ns/mnt)",
                                         "mount(/, MS_REC|MS_PRIVATE)",
                                         "mount op",
                                         "chdir(spawner root)",
                                         "pivot_root(spawner root)",
                                         "umount2(old root, MNT_DETACH)",
                                         "chdir(/)"};

int RunSpawnerHelper(void* arg) {
  auto* h = static_cast<SpawnerHelper*>(arg);
  auto fail = [h](int step) {
    h->step = step;
    h->err = errno;
    return 1;
  };
  // The namespace this clone made, opened into the descriptor table it shares with the parent.
  int fd = ::open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(1);
  h->ns_fd = fd;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return fail(2);
  if (int e = RunMountOpsRaw(*h->plan, &h->op); e != 0) {
    errno = e;
    return fail(3);
  }
  if (::chdir(h->plan->rootfs) != 0) return fail(4);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return fail(5);
  if (::umount2(".", MNT_DETACH) != 0) return fail(6);
  if (::chdir("/") != 0) return fail(7);
  return 0;
}

}  // namespace

Result<UniqueFd> MakeSpawnerNamespace(const std::string& scratch_dir) {
  using K = MountOp::Kind;
  ContainPlan plan;
  plan.rootfs = plan.Keep(scratch_dir);
  auto p = [&](const std::string& rel) { return plan.Keep(scratch_dir + rel); };
  auto& m = plan.mounts;
  m.push_back({K::kMount, "tmpfs", plan.rootfs, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "mode=755,size=64k,nr_inodes=64"});
  m.push_back({K::kMkdir, nullptr, p(kSpawnerRoot), nullptr, 0, nullptr, 0700});
  m.push_back({K::kMkdir, nullptr, p("/dev")});
  for (const std::string& dev : SandboxDeviceNodes()) {
    const char* target = p("/dev/" + dev);
    m.push_back({K::kTouch, nullptr, target, nullptr, 0, nullptr, 0600});
    m.push_back({K::kMount, plan.Keep("/dev/" + dev), target, nullptr, MS_BIND, nullptr});
  }

  SpawnerHelper h;
  h.plan = &plan;
  constexpr size_t kStack = 64 << 10;
  HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(kStack));
  pid_t pid;
  {
    // No handler of the caller's may run in the helper (it runs on the caller's memory).
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = ::clone(RunSpawnerHelper, stack.top(),
                  CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_NEWNS | SIGCHLD, &h);
    int err = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = err;
  }
  if (pid < 0) return Status::FromErrno(errno, "clone(VM|VFORK|FILES|NEWNS) spawner helper");
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  UniqueFd ns(h.ns_fd);
  if (h.step != 0) {
    std::string what = kSpawnerSteps[h.step];
    if (h.step == 3 && h.op < plan.mounts.size()) what = DescribeMountOp(plan.mounts[h.op]);
    return Status::FromErrno(h.err, what).With("making the spawner mount namespace");
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || !ns.valid()) {
    return Status::Internal("spawner namespace helper died");
  }
  int high = ::fcntl(ns.get(), F_DUPFD_CLOEXEC, 100);
  if (high < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
  ns.Reset(high);
  return ns;
}

Result<UniqueFd> MakeNetworkNamespace(int home_netns_fd) {
  if (::unshare(CLONE_NEWNET) != 0) return Status::FromErrno(errno, "unshare(CLONE_NEWNET)");
  // From here on this thread is in the new namespace until the setns below.
  const char* failed = nullptr;
  int err = LoopbackUp();
  if (err != 0) failed = "ioctl(lo, SIOCSIFFLAGS, IFF_UP)";
  int fd = err == 0 ? ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC) : -1;
  if (err == 0 && fd < 0) {
    err = errno;
    failed = "open(/proc/thread-self/ns/net)";
  }
  UniqueFd ns(fd);
  if (::setns(home_netns_fd, CLONE_NEWNET) != 0) {
    return Status::FromErrno(errno, "setns(the agent's network namespace)")
        .With("making a network namespace (the calling thread is left in the new one)");
  }
  if (failed != nullptr) return Status::FromErrno(err, failed).With("making a network namespace");
  int high = ::fcntl(ns.get(), F_DUPFD_CLOEXEC, 100);
  if (high < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
  ns.Reset(high);
  return ns;
}

}  // namespace hangar::node::internal
