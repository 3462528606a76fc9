#include "guest.h"

#include <fcntl.h>
#include <linux/random.h>
#include <signal.h>
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

Result<std::string> ParseSeedHex(std::string_view hex) {
  constexpr size_t kMin = 32, kMax = 512;
  if (hex.size() % 2 != 0 || hex.size() / 2 < kMin || hex.size() / 2 > kMax) {
    return Status::InvalidArgument(
        fmt::format("--seed-rng wants {}-{} bytes as hex (an even number of digits), got {} digits",
                    kMin, kMax, hex.size()));
  }
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string bytes(hex.size() / 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::InvalidArgument(fmt::format("--seed-rng: '{}' at offset {} is not a hex digit",
                                                 hi < 0 ? hex[2 * i] : hex[2 * i + 1],
                                                 hi < 0 ? 2 * i : 2 * i + 1));
    }
    bytes[i] = static_cast<char>(hi << 4 | lo);
  }
  return bytes;
}

Status SeedKernelRng(std::string_view hex) {
  HANGAR_ASSIGN_OR_RETURN(std::string seed, ParseSeedHex(hex));
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile("/dev/urandom", O_WRONLY));
  // A write mixes the bytes into the input pool without crediting entropy (any user may write);
  // it does not touch the CRNG's key: the reseed below does.
  ssize_t n;
  do {
    n = ::write(fd.get(), seed.data(), seed.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(seed.size())) {
    return Status::FromErrno(n < 0 ? errno : EIO, "write(/dev/urandom)");
  }
  if (::ioctl(fd.get(), RNDRESEEDCRNG) != 0) {
    return Status::FromErrno(errno, "ioctl(/dev/urandom, RNDRESEEDCRNG)");
  }
  return Status::Ok();
}

Status SignalInitToReloadToken() {
  // Only envd as PID 1 re-reads its token on SIGHUP; anything else (a host's init, when this
  // runs outside a guest by mistake) must never get the signal.
  auto exe = [](const char* link) -> std::string {
    char buf[4096];
    ssize_t n = ::readlink(link, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  const std::string init = exe("/proc/1/exe"), self = exe("/proc/self/exe");
  if (init.empty() || init != self) {
    return Status::FailedPrecondition(fmt::format(
        "--reload-token: PID 1 ({}) is not this envd ({})", init.empty() ? "unknown" : init, self));
  }
  if (::kill(1, SIGHUP) != 0) return Status::FromErrno(errno, "kill(1, SIGHUP)");
  return Status::Ok();
}

}  // namespace hangar::envd::internal
