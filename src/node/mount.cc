#include "hangar/node/mount.h"

#include "contain.h"

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
  // 3-5. The pseudo filesystems: the same plan the sandbox start (contain.cc) runs.
  internal::ContainPlan plan;
  internal::AddStandardMounts(plan, o.target, /*tty_gid=*/5, o.tmp_bytes, o.dev_shm_bytes);
  size_t failed = 0;
  if (int e = internal::RunMountOpsRaw(plan, &failed); e != 0) {
    return Status::FromErrno(e, internal::DescribeMountOp(plan.mounts[failed]));
  }
  // 6. Identity.
  if (::sethostname(o.hostname.data(), o.hostname.size()) != 0) {
    return Status::FromErrno(errno, "sethostname(" + o.hostname + ")");
  }
  // 7. Enter it; the host's root is gone.
  return PivotInto(o.target);
}

}  // namespace hangar::node
