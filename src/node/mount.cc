#include "hangar/node/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "hangar/base/fd.h"

namespace hangar::node {
namespace {

std::string FlagNames(unsigned long flags) {
  std::string out;
  const struct {
    unsigned long bit;
    const char* name;
  } kFlags[] = {{MS_RDONLY, "MS_RDONLY"}, {MS_NOSUID, "MS_NOSUID"},   {MS_NODEV, "MS_NODEV"},
                {MS_NOEXEC, "MS_NOEXEC"}, {MS_REMOUNT, "MS_REMOUNT"}, {MS_BIND, "MS_BIND"},
                {MS_REC, "MS_REC"},       {MS_PRIVATE, "MS_PRIVATE"}};
  for (const auto& f : kFlags) {
    if (flags & f.bit) out += (out.empty() ? "" : "|") + std::string(f.name);
  }
  return out.empty() ? "0" : out;
}

Status Mount(const std::string& source, const std::string& target, const char* type,
             unsigned long flags, const std::string& data = "") {
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) !=
      0) {
    return Status::FromErrno(errno, "mount(" + source + ", " + target + ", " +
                                        (type ? type : "NULL") + ", " + FlagNames(flags) +
                                        (data.empty() ? "" : ", " + data) + ")");
  }
  return Status::Ok();
}

Status MkdirIfMissing(const std::string& path, mode_t mode = 0755) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "mkdir(" + path + ")");
  }
  return Status::Ok();
}

// An empty regular file to bind a device node or /dev/null onto.
Status TouchIfMissing(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open(" + path + ", O_CREAT)");
  ::close(fd);
  return Status::Ok();
}

Status Symlink(const std::string& to, const std::string& at) {
  if (::symlink(to.c_str(), at.c_str()) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "symlink(" + to + ", " + at + ")");
  }
  return Status::Ok();
}

// Remounts a bind mount read-only. The flags the mount already has (nosuid, nodev, noexec)
// must be repeated: inside a user namespace they are locked and dropping one is EPERM.
Status RemountReadOnly(const std::string& path) {
  struct statvfs sv;
  if (::statvfs(path.c_str(), &sv) != 0) return Status::FromErrno(errno, "statvfs(" + path + ")");
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
  if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  return Mount("none", path, nullptr, flags);
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// overlayfs takes ',' and ':' as separators in its option string.
Status CheckOverlayPath(const std::string& what, const std::string& path) {
  if (path.empty() || path.front() != '/' || path.find_first_of(",:\\") != std::string::npos) {
    return Status::InvalidArgument(what + " must be an absolute path without , : or \\: \"" + path +
                                   "\"");
  }
  return Status::Ok();
}

Status MountRootOverlay(const SandboxRootOptions& o) {
  HANGAR_TRY(CheckOverlayPath("lower", o.lower));
  HANGAR_TRY(CheckOverlayPath("upper", o.upper));
  HANGAR_TRY(CheckOverlayPath("work", o.work));
  // nosuid is left to no_new_privs; nodev because /dev is provided separately.
  return Mount("overlay", o.target, "overlay", MS_NODEV,
               "lowerdir=" + o.lower + ",upperdir=" + o.upper + ",workdir=" + o.work);
}

Status MountDev(const SandboxRootOptions& o) {
  const std::string dev = o.target + "/dev";
  HANGAR_TRY(MkdirIfMissing(dev));
  HANGAR_TRY(Mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536"));
  // Device nodes cannot be created in a user namespace, and need not be: bind the host's.
  for (const std::string& node : SandboxDeviceNodes()) {
    HANGAR_TRY(TouchIfMissing(dev + "/" + node));
    HANGAR_TRY(Mount("/dev/" + node, dev + "/" + node, nullptr, MS_BIND));
  }
  HANGAR_TRY(MkdirIfMissing(dev + "/pts"));
  // A private devpts instance: the sandbox sees only its own ptys, not the host's.
  HANGAR_TRY(Mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620"));
  HANGAR_TRY(Symlink("pts/ptmx", dev + "/ptmx"));
  HANGAR_TRY(MkdirIfMissing(dev + "/shm", 01777));
  HANGAR_TRY(Mount("shm", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV,
                   "mode=1777,size=" + std::to_string(o.dev_shm_bytes)));
  HANGAR_TRY(Symlink("/proc/self/fd", dev + "/fd"));
  HANGAR_TRY(Symlink("/proc/self/fd/0", dev + "/stdin"));
  HANGAR_TRY(Symlink("/proc/self/fd/1", dev + "/stdout"));
  HANGAR_TRY(Symlink("/proc/self/fd/2", dev + "/stderr"));
  return RemountReadOnly(dev);  // the nodes stay writable; the directory cannot gain new ones
}

Status MountProc(const SandboxRootOptions& o) {
  const std::string proc = o.target + "/proc";
  HANGAR_TRY(MkdirIfMissing(proc));
  HANGAR_TRY(Mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  for (const std::string& rel : MaskedProcPaths()) {
    const std::string path = proc + "/" + rel;
    if (!Exists(path)) continue;  // depends on kernel config
    if (IsDirectory(path)) {
      HANGAR_TRY(
          Mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0"));
    } else {
      HANGAR_TRY(Mount(o.target + "/dev/null", path, nullptr, MS_BIND));
    }
  }
  for (const std::string& rel : ReadOnlyProcPaths()) {
    const std::string path = proc + "/" + rel;
    if (!Exists(path)) continue;
    HANGAR_TRY(Mount(path, path, nullptr, MS_BIND | MS_REC));
    HANGAR_TRY(RemountReadOnly(path));
  }
  return Status::Ok();
}

Status MountSysAndTmp(const SandboxRootOptions& o) {
  // No sysfs: it describes the host's devices and exposes writable knobs. An empty read-only
  // tmpfs keeps programs that probe /sys from tripping over a missing directory.
  HANGAR_TRY(MkdirIfMissing(o.target + "/sys"));
  HANGAR_TRY(Mount("tmpfs", o.target + "/sys", "tmpfs",
                   MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0"));
  HANGAR_TRY(MkdirIfMissing(o.target + "/tmp", 01777));
  return Mount("tmpfs", o.target + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
               "mode=1777,size=" + std::to_string(o.tmp_bytes));
}

// pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
// the new root (runc's approach: needs no put_old directory inside the sandbox).
Status PivotInto(const std::string& target) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd old_root, OpenFile("/", O_RDONLY | O_DIRECTORY));
  if (::chdir(target.c_str()) != 0) return Status::FromErrno(errno, "chdir(" + target + ")");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) {
    return Status::FromErrno(errno, "pivot_root(" + target + ", " + target + ")");
  }
  if (::umount2(".", MNT_DETACH) != 0) {
    return Status::FromErrno(errno, "umount2(old root, MNT_DETACH)");
  }
  if (::chdir("/") != 0) return Status::FromErrno(errno, "chdir(/)");
  return Status::Ok();
}

}  // namespace

const std::vector<std::string>& MaskedProcPaths() {
  static const std::vector<std::string> kPaths = {
      "kcore",         "keys",     "latency_stats", "timer_list", "timer_stats",
      "sched_debug",   "kallsyms", "kpagecount",    "kpageflags", "kpagecgroup",
      "sysrq-trigger", "acpi",     "asound",        "scsi",       "driver"};
  return kPaths;
}

const std::vector<std::string>& ReadOnlyProcPaths() {
  static const std::vector<std::string> kPaths = {"bus", "fs", "irq", "sys"};
  return kPaths;
}

const std::vector<std::string>& SandboxDeviceNodes() {
  static const std::vector<std::string> kNodes = {"null",   "zero",    "full",
                                                  "random", "urandom", "tty"};
  return kNodes;
}

Status SetUpSandboxRoot(const SandboxRootOptions& o) {
  if (o.target.empty() || o.target.front() != '/') {
    return Status::InvalidArgument("target must be an absolute path: \"" + o.target + "\"");
  }
  // 1. Nothing we mount may propagate to the host (or from it).
  HANGAR_TRY(Mount("none", "/", nullptr, MS_REC | MS_PRIVATE));
  // 2. The root filesystem.
  HANGAR_TRY(MountRootOverlay(o));
  // 3-5. The pseudo filesystems.
  HANGAR_TRY(MountDev(o));
  HANGAR_TRY(MountProc(o));
  HANGAR_TRY(MountSysAndTmp(o));
  // 6. Identity.
  if (::sethostname(o.hostname.data(), o.hostname.size()) != 0) {
    return Status::FromErrno(errno, "sethostname(" + o.hostname + ")");
  }
  // 7. Enter it; the host's root is gone.
  return PivotInto(o.target);
}

}  // namespace hangar::node
