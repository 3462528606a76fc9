#include "hangar/storage/loop_device.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "storage_util.h"

namespace hangar::storage {
namespace {

using internal::ReadTrimmed;

constexpr int kMaxBusyRetries = 16;
constexpr std::string_view kDeletedSuffix = " (deleted)";

std::string SysLoopDir(int index) { return fmt::format("/sys/block/loop{}/loop", index); }

Result<dev_t> DevOf(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, fmt::format("fstat({})", path));
  if (!S_ISBLK(st.st_mode)) {
    return Status::FailedPrecondition(fmt::format("{} is not a block device", path));
  }
  return st.st_rdev;
}

void FillInfo(loop_info64& info, const std::string& backing, const LoopOptions& o) {
  std::memset(&info, 0, sizeof(info));
  if (o.autoclear) info.lo_flags |= LO_FLAGS_AUTOCLEAR;
  if (o.read_only) info.lo_flags |= LO_FLAGS_READ_ONLY;
  // lo_file_name is informational (losetup shows it); sysfs backing_file has the full path.
  std::strncpy(reinterpret_cast<char*>(info.lo_file_name), backing.c_str(), LO_NAME_SIZE - 1);
}

// Old kernels: three ioctls, with a window in which the device is bound but not configured.
Status AttachLegacy(int loop_fd, int file_fd, const std::string& dev, const std::string& backing,
                    const LoopOptions& o) {
  if (::ioctl(loop_fd, LOOP_SET_FD, file_fd) != 0) {
    return Status::FromErrno(errno, fmt::format("ioctl({}, LOOP_SET_FD, {})", dev, backing));
  }
  loop_info64 info;
  FillInfo(info, backing, o);
  if (::ioctl(loop_fd, LOOP_SET_STATUS64, &info) != 0) {
    Status st = Status::FromErrno(errno, fmt::format("ioctl({}, LOOP_SET_STATUS64)", dev));
    (void)::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return st;
  }
  if (o.block_size != 0 && ::ioctl(loop_fd, LOOP_SET_BLOCK_SIZE, o.block_size) != 0) {
    Status st = Status::FromErrno(
        errno, fmt::format("ioctl({}, LOOP_SET_BLOCK_SIZE, {})", dev, o.block_size));
    (void)::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return st;
  }
  if (o.direct_io && ::ioctl(loop_fd, LOOP_SET_DIRECT_IO, 1UL) != 0) {
    Status st = Status::FromErrno(errno, fmt::format("ioctl({}, LOOP_SET_DIRECT_IO, 1)", dev));
    (void)::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return st;
  }
  return Status::Ok();
}

}  // namespace

LoopDevice::LoopDevice(LoopDevice&& o) noexcept
    : fd_(std::move(o.fd_)),
      path_(std::move(o.path_)),
      index_(std::exchange(o.index_, -1)),
      dev_(std::exchange(o.dev_, 0)),
      used_configure_(o.used_configure_) {
  o.path_.clear();
}

LoopDevice& LoopDevice::operator=(LoopDevice&& o) noexcept {
  if (this != &o) {
    (void)Detach();
    fd_ = std::move(o.fd_);
    path_ = std::move(o.path_);
    o.path_.clear();
    index_ = std::exchange(o.index_, -1);
    dev_ = std::exchange(o.dev_, 0);
    used_configure_ = o.used_configure_;
  }
  return *this;
}

Result<LoopDevice> LoopDevice::Attach(const std::string& backing_file, const LoopOptions& o) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd file, OpenFile(backing_file, o.read_only ? O_RDONLY : O_RDWR));
  HANGAR_ASSIGN_OR_RETURN(UniqueFd ctl, OpenFile("/dev/loop-control", O_RDWR));
  for (int attempt = 0; attempt < kMaxBusyRetries; ++attempt) {
    int index = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (index < 0) return Status::FromErrno(errno, "ioctl(/dev/loop-control, LOOP_CTL_GET_FREE)");
    const std::string dev = fmt::format("/dev/loop{}", index);
    auto loop_fd = OpenFile(dev, o.read_only ? O_RDONLY : O_RDWR);
    if (!loop_fd.ok()) {
      // devtmpfs creates the node asynchronously after GET_FREE adds a device.
      if (loop_fd.status().sys_errno() == ENOENT) {
        ::usleep(1000);
        continue;
      }
      return loop_fd.status();
    }
    LoopDevice loop;
    loop.path_ = dev;
    loop.index_ = index;
    bool done = false;
    if (!o.force_legacy) {
      loop_config cfg;
      std::memset(&cfg, 0, sizeof(cfg));
      cfg.fd = static_cast<__u32>(file.get());
      cfg.block_size = o.block_size;
      FillInfo(cfg.info, backing_file, o);
      if (o.direct_io) cfg.info.lo_flags |= LO_FLAGS_DIRECT_IO;
      if (::ioctl(loop_fd->get(), LOOP_CONFIGURE, &cfg) == 0) {
        done = true;
        loop.used_configure_ = true;
      } else if (errno == EBUSY) {
        continue;  // another process bound it first; ask for the next free one
      } else if (errno != ENOTTY && errno != EINVAL) {
        return Status::FromErrno(
            errno, fmt::format("ioctl({}, LOOP_CONFIGURE, {}, flags={:#x}, block_size={})", dev,
                               backing_file, cfg.info.lo_flags, o.block_size));
      }
    }
    if (!done) {
      Status st = AttachLegacy(loop_fd->get(), file.get(), dev, backing_file, o);
      if (st.sys_errno() == EBUSY) continue;
      HANGAR_TRY(st);
    }
    loop.fd_ = std::move(*loop_fd);
    auto dev_t_or = DevOf(loop.fd_.get(), dev);
    if (!dev_t_or.ok()) return dev_t_or.status();  // ~LoopDevice detaches
    loop.dev_ = *dev_t_or;
    return loop;
  }
  return Status::Unavailable(fmt::format(
      "no free loop device for {} after {} attempts (EBUSY races)", backing_file, kMaxBusyRetries));
}

Result<LoopDevice> LoopDevice::Open(const std::string& device) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(device, O_RDWR));
  LoopDevice loop;
  HANGAR_ASSIGN_OR_RETURN(loop.dev_, DevOf(fd.get(), device));
  loop.fd_ = std::move(fd);
  loop.path_ = device;
  loop.index_ = static_cast<int>(minor(loop.dev_));
  if (auto n = device.rfind("loop"); n != std::string::npos) {
    loop.index_ = std::atoi(device.c_str() + n + 4);
  }
  return loop;
}

bool LoopDevice::DirectIoActive() const {
  if (index_ < 0) return false;
  auto v = ReadTrimmed(SysLoopDir(index_) + "/dio");
  return v.ok() && *v == "1";
}

Status LoopDevice::Detach() {
  if (!fd_.valid()) return Status::Ok();
  Status st;
  // ENXIO: already unbound (autoclear beat us to it).
  if (::ioctl(fd_.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
    st = Status::FromErrno(errno, fmt::format("ioctl({}, LOOP_CLR_FD)", path_));
  }
  fd_.Reset();
  return st;
}

void LoopDevice::Release() { fd_.Reset(); }

Result<std::vector<LoopStatus>> ListAttachedLoops() {
  std::vector<LoopStatus> out;
  DIR* d = ::opendir("/sys/block");
  if (d == nullptr) return Status::FromErrno(errno, "opendir(/sys/block)");
  std::vector<int> indices;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n.substr(0, 4) == "loop" && n.size() > 4) indices.push_back(std::atoi(e->d_name + 4));
  }
  ::closedir(d);
  std::sort(indices.begin(), indices.end());
  for (int i : indices) {
    auto backing = ReadTrimmed(SysLoopDir(i) + "/backing_file");
    if (!backing.ok()) continue;  // not bound (the attribute exists only while bound)
    LoopStatus s;
    s.index = i;
    s.device = fmt::format("/dev/loop{}", i);
    s.backing_file = *backing;
    if (s.backing_file.size() > kDeletedSuffix.size() && s.backing_file.ends_with(kDeletedSuffix)) {
      s.backing_file.resize(s.backing_file.size() - kDeletedSuffix.size());
      s.backing_deleted = true;
    }
    s.autoclear = ReadTrimmed(SysLoopDir(i) + "/autoclear").value_or("0") == "1";
    s.direct_io = ReadTrimmed(SysLoopDir(i) + "/dio").value_or("0") == "1";
    if (auto devno = ReadTrimmed(fmt::format("/sys/block/loop{}/dev", i)); devno.ok()) {
      unsigned maj = 0, min = 0;
      if (std::sscanf(devno->c_str(), "%u:%u", &maj, &min) == 2) s.dev = makedev(maj, min);
    }
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<LoopStatus>> ListAttachedLoopsUnder(const std::string& dir) {
  HANGAR_ASSIGN_OR_RETURN(auto all, ListAttachedLoops());
  std::string prefix = internal::CanonicalOrSame(dir);
  if (prefix.empty() || prefix.back() != '/') prefix.push_back('/');
  std::vector<LoopStatus> out;
  for (auto& s : all) {
    if (s.backing_file.compare(0, prefix.size(), prefix) == 0) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace hangar::storage
