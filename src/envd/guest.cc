#include "guest.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include <fmt/format.h>

#include "hangar/base/fd.h"

// Not in the uapi headers of every kernel: resize2fs's online path (fs/ext4/ioctl.c).
#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif

namespace hangar::envd::internal {

Result<std::map<std::string, std::string>> ParseEnvFile(std::string_view content) {
  std::map<std::string, std::string> env;
  while (!content.empty()) {
    size_t end = content.find('\0');
    std::string_view entry = content.substr(0, end);
    content = end == std::string_view::npos ? std::string_view() : content.substr(end + 1);
    if (entry.empty()) continue;
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return Status::InvalidArgument(
          fmt::format("env file entry '{}' is not NAME=VALUE", entry.substr(0, 64)));
    }
    env[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return env;
}

uint64_t BlocksForDevice(uint64_t device_bytes, uint64_t block_size) {
  return block_size == 0 ? 0 : device_bytes / block_size;
}

Status GrowExt4ToDevice(const std::string& mount_point) {
  struct stat st {};
  if (::stat(mount_point.c_str(), &st) != 0) {
    return Status::FromErrno(errno, fmt::format("stat({})", mount_point));
  }
  const std::string size_path =
      fmt::format("/sys/dev/block/{}:{}/size", major(st.st_dev), minor(st.st_dev));
  HANGAR_ASSIGN_OR_RETURN(std::string sectors_text, ReadFile(size_path));
  uint64_t sectors = std::strtoull(sectors_text.c_str(), nullptr, 10);
  if (sectors == 0) return Status::Internal(fmt::format("{} reads 0", size_path));
  struct statfs fs {};
  if (::statfs(mount_point.c_str(), &fs) != 0) {
    return Status::FromErrno(errno, fmt::format("statfs({})", mount_point));
  }
  if (fs.f_type != 0xEF53) {
    return Status::FailedPrecondition(fmt::format("{} is not ext4", mount_point));
  }
  const uint64_t block = static_cast<uint64_t>(fs.f_bsize);
  uint64_t blocks = BlocksForDevice(sectors * 512, block);
  HANGAR_ASSIGN_OR_RETURN(UniqueFd dir, OpenFile(mount_point, O_RDONLY | O_DIRECTORY));
  if (::ioctl(dir.get(), EXT4_IOC_RESIZE_FS, &blocks) != 0) {
    // The kernel refuses a "resize" to the current size or smaller with EINVAL; that is done.
    if (errno == EINVAL && static_cast<uint64_t>(fs.f_blocks) <= blocks) return Status::Ok();
    return Status::FromErrno(errno,
                             fmt::format("ioctl({}, EXT4_IOC_RESIZE_FS, {})", mount_point, blocks));
  }
  return Status::Ok();
}

Status SetHostname(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return Status::InvalidArgument(fmt::format("hostname '{}' must be 1-64 characters", name));
  }
  if (::sethostname(name.data(), name.size()) != 0) return Status::FromErrno(errno, "sethostname");
  return Status::Ok();
}

Status SetClock(int64_t unix_nanos) {
  if (unix_nanos <= 0) return Status::InvalidArgument("clock value must be positive");
  timespec ts{static_cast<time_t>(unix_nanos / 1'000'000'000),
              static_cast<long>(unix_nanos % 1'000'000'000)};
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) {
    return Status::FromErrno(errno, "clock_settime(CLOCK_REALTIME)");
  }
  return Status::Ok();
}

}  // namespace hangar::envd::internal
