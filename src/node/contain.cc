#include "contain.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

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

}  // namespace

void RunContained(const ContainPlan& plan) noexcept {
  char go = 0;
  ssize_t n;
  do {
    n = ::read(plan.sync_fd, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) Die(plan, kStepSync, n < 0 ? errno : EPIPE);
  ::close(plan.sync_fd);

  if (::unshare(CLONE_NEWCGROUP) != 0) Die(plan, kStepCgroupNs, errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    Die(plan, kStepPrivate, errno);
  }
  for (size_t i = 0; i < plan.mounts.size(); ++i) {
    const MountOp& op = plan.mounts[i];
    if (DoMount(op) != 0 && !(op.optional && errno == ENOENT)) {
      Die(plan, kMountBase + static_cast<int>(i), errno);
    }
  }

  // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then removes
  // the old root without needing a directory for it inside the sandbox.
  if (::chdir(plan.rootfs) != 0) Die(plan, kStepChdirRoot, errno);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) Die(plan, kStepPivot, errno);
  if (::umount2(".", MNT_DETACH) != 0) Die(plan, kStepDetachOld, errno);
  if (::chdir("/") != 0) Die(plan, kStepChdirRoot, errno);

  if (plan.hostname != nullptr &&
      ::sethostname(plan.hostname, __builtin_strlen(plan.hostname)) != 0) {
    Die(plan, kStepHostname, errno);
  }

  if (::setns(plan.userns_fd, CLONE_NEWUSER) != 0) Die(plan, kStepUserns, errno);
  ::close(plan.userns_fd);
  if (int e = BecomeNamespaceRootRaw(); e != 0) Die(plan, kStepBecomeRoot, e);

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

  ::syscall(SYS_execveat, plan.init_fd, "", plan.argv.data(), plan.envp.data(), AT_EMPTY_PATH);
  Die(plan, kStepExec, errno);
}

Status DescribeFailure(const ContainPlan& plan, const ContainFailure& f) {
  std::string what;
  if (f.step >= kMountBase) {
    size_t i = static_cast<size_t>(f.step - kMountBase);
    if (i < plan.mounts.size()) {
      const MountOp& op = plan.mounts[i];
      switch (op.kind) {
        case MountOp::Kind::kMount:
          what = fmt::format("mount({}, {}, {}, {:#x}, {})", op.source ? op.source : "none",
                             op.target, op.fstype ? op.fstype : "", op.flags,
                             op.data ? op.data : "");
          break;
        case MountOp::Kind::kRemount:
          what = fmt::format("mount({}, MS_REMOUNT|MS_BIND|{:#x})", op.target, op.flags);
          break;
        case MountOp::Kind::kMkdir: what = fmt::format("mkdir({})", op.target); break;
        case MountOp::Kind::kTouch: what = fmt::format("creat({})", op.target); break;
        case MountOp::Kind::kSymlink:
          what = fmt::format("symlink({}, {})", op.source, op.target);
          break;
      }
    }
  } else {
    switch (f.step) {
      case kStepSync: what = "waiting for the parent"; break;
      case kStepCgroupNs: what = "unshare(CLONE_NEWCGROUP)"; break;
      case kStepPrivate: what = "mount(/, MS_REC|MS_PRIVATE)"; break;
      case kStepChdirRoot: what = fmt::format("chdir({})", plan.rootfs); break;
      case kStepPivot: what = fmt::format("pivot_root({})", plan.rootfs); break;
      case kStepDetachOld: what = "umount2(old root, MNT_DETACH)"; break;
      case kStepHostname: what = fmt::format("sethostname({})", plan.hostname); break;
      case kStepUserns: what = "setns(user namespace)"; break;
      case kStepBecomeRoot: what = "setresuid/setresgid(0) in the user namespace"; break;
      case kStepRlimits: what = "setrlimit"; break;
      case kStepCaps: what = "dropping capabilities"; break;
      case kStepFds: what = "arranging descriptors"; break;
      case kStepSeccomp: what = "installing the seccomp filter"; break;
      case kStepExec:
        what = fmt::format("execveat(init {})", plan.argv.empty() || !plan.argv[0] ? "?" : plan.argv[0]);
        break;
      default: what = fmt::format("step {}", f.step);
    }
  }
  return Status::FromErrno(f.err, what).With("starting sandbox");
}

void AddStandardMounts(ContainPlan& plan, const std::string& rootfs, gid_t tty_gid,
                       uint64_t tmp_size_bytes) {
  using K = MountOp::Kind;
  auto p = [&](std::string_view rel) { return plan.Keep(rootfs + std::string(rel)); };
  constexpr unsigned long kNoSuidDevExec = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  auto& m = plan.mounts;

  // /proc of the sandbox's own pid namespace.
  m.push_back({K::kMkdir, nullptr, p("/proc")});
  m.push_back({K::kMount, "proc", p("/proc"), "proc", kNoSuidDevExec, nullptr});
  // Docker's masked paths: kernel memory, keys, timers and the sysrq trigger read as empty.
  for (const char* f : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sysrq-trigger",
                        "/proc/latency_stats", "/proc/sched_debug", "/proc/kallsyms"}) {
    MountOp op{K::kMount, "/dev/null", p(f), nullptr, MS_BIND, nullptr};
    op.optional = true;
    m.push_back(op);
  }
  for (const char* d : {"/proc/acpi", "/proc/scsi"}) {
    MountOp op{K::kMount, "tmpfs", p(d), "tmpfs", MS_RDONLY | kNoSuidDevExec, "size=0"};
    op.optional = true;
    m.push_back(op);
  }
  // Read-only: kernel tunables (incl. core_pattern), irq affinity, bus and fs settings.
  for (const char* d : {"/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"}) {
    const char* path = p(d);
    MountOp bind{K::kMount, path, path, nullptr, MS_BIND | MS_REC, nullptr};
    bind.optional = true;
    m.push_back(bind);
    MountOp ro{K::kRemount, nullptr, path, nullptr, MS_RDONLY | kNoSuidDevExec, nullptr};
    ro.optional = true;
    m.push_back(ro);
  }

  // A minimal /dev: a few harmless character devices bound from the host, a private devpts.
  m.push_back({K::kMkdir, nullptr, p("/dev")});
  m.push_back({K::kMount, "tmpfs", p("/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC,
               "mode=755,size=256k,nr_inodes=256"});
  for (const char* dev : {"null", "zero", "full", "random", "urandom", "tty"}) {
    const char* target = p(std::string("/dev/") + dev);
    m.push_back({K::kTouch, nullptr, target, nullptr, 0, nullptr, 0666});
    m.push_back({K::kMount, plan.Keep(std::string("/dev/") + dev), target, nullptr, MS_BIND,
                 nullptr});
  }
  m.push_back({K::kMkdir, nullptr, p("/dev/pts")});
  m.push_back({K::kMount, "devpts", p("/dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC,
               plan.Keep(fmt::format("newinstance,ptmxmode=0666,mode=0620,gid={}", tty_gid))});
  m.push_back({K::kSymlink, "pts/ptmx", p("/dev/ptmx")});
  m.push_back({K::kMkdir, nullptr, p("/dev/shm")});
  m.push_back({K::kMount, "shm", p("/dev/shm"), "tmpfs", kNoSuidDevExec,
               "mode=1777,size=64m"});
  m.push_back({K::kSymlink, "/proc/self/fd", p("/dev/fd")});
  m.push_back({K::kSymlink, "/proc/self/fd/0", p("/dev/stdin")});
  m.push_back({K::kSymlink, "/proc/self/fd/1", p("/dev/stdout")});
  m.push_back({K::kSymlink, "/proc/self/fd/2", p("/dev/stderr")});
  m.push_back({K::kRemount, nullptr, p("/dev"), nullptr, MS_RDONLY | MS_NOSUID | MS_NOEXEC,
               nullptr});

  m.push_back({K::kMkdir, nullptr, p("/tmp"), nullptr, 0, nullptr, 01777});
  m.push_back({K::kMount, "tmpfs", p("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV,
               plan.Keep(fmt::format("mode=1777,size={}", tmp_size_bytes))});
}

}  // namespace hangar::node::internal
