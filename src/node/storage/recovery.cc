#include "hangar/storage/recovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/storage/loop_device.h"
#include "storage_util.h"

namespace hangar::storage {

std::string DisksDir(const std::string& data_dir) { return internal::JoinPath(data_dir, "disks"); }

Result<DiskRecoveryReport> RecoverDisks(const std::string& data_dir,
                                        const std::set<std::string>& live_images) {
  DiskRecoveryReport report;
  const std::string dir = internal::CanonicalOrSame(DisksDir(data_dir));
  std::set<std::string> live;
  for (const auto& l : live_images) {
    live.insert(l.find('/') == std::string::npos ? internal::JoinPath(dir, l)
                                                 : internal::CanonicalOrSame(l));
  }

  HANGAR_ASSIGN_OR_RETURN(auto loops, ListAttachedLoopsUnder(dir));
  for (const auto& l : loops) {
    if (!l.backing_deleted && live.contains(l.backing_file)) {
      report.kept.push_back(l.backing_file);
      continue;
    }
    auto mounts = internal::MountPointsOfDevice(l.dev);
    if (!mounts.ok()) {
      report.errors.push_back(mounts.status().ToString());
      continue;
    }
    for (const auto& m : *mounts) {
      if (::umount2(m.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
        report.errors.push_back(
            Status::FromErrno(errno, fmt::format("umount2({}, MNT_DETACH)", m)).ToString());
      } else {
        report.unmounted.push_back(m);
      }
    }
    auto fd = OpenFile(l.device, O_RDONLY);
    if (!fd.ok()) {
      report.errors.push_back(fd.status().ToString());
      continue;
    }
    // If a mount in another namespace still holds it, the kernel turns this into autoclear.
    if (::ioctl(fd->get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
      report.errors.push_back(
          Status::FromErrno(errno, fmt::format("ioctl({}, LOOP_CLR_FD)", l.device)).ToString());
      continue;
    }
    report.detached.push_back(fmt::format("{} ({})", l.device, l.backing_file));
  }

  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> files;
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_type == DT_REG || e->d_type == DT_UNKNOWN || e->d_type == DT_DIR) {
        if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..") {
          files.emplace_back(e->d_name);
        }
      }
    }
    ::closedir(d);
    for (const auto& f : files) {
      // The empty mount point of a pre-mounted pooled disk (its mount went above).
      if (f.size() > 4 && f.compare(f.size() - 4, 4, ".mnt") == 0) {
        const std::string path = internal::JoinPath(dir, f);
        if (::rmdir(path.c_str()) == 0) report.unmounted.push_back(path);
        continue;
      }
      const std::string path = internal::JoinPath(dir, f);
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (live.contains(path)) continue;
      if (::unlink(path.c_str()) != 0) {
        report.errors.push_back(
            Status::FromErrno(errno, fmt::format("unlink({})", path)).ToString());
      } else {
        report.deleted_images.push_back(path);
      }
    }
  } else if (errno != ENOENT) {
    return Status::FromErrno(errno, fmt::format("opendir({})", dir));
  }
  if (report.cleaned() > 0 || !report.errors.empty()) {
    log::Info("disk recovery", {{"dir", dir},
                                {"unmounted", report.unmounted.size()},
                                {"detached", report.detached.size()},
                                {"deleted_images", report.deleted_images.size()},
                                {"kept", report.kept.size()},
                                {"errors", report.errors.size()}});
  }
  return report;
}

}  // namespace hangar::storage
