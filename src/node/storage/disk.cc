#include "hangar/storage/disk.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "storage_util.h"

namespace hangar::storage {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
// Below this ext4 has too little room for its own metadata to be useful; above it the number
// of inodes overflows 32 bits at 8 KiB per inode.
constexpr uint64_t kMinSizeMb = 8;
constexpr uint64_t kMaxSizeMb = 16 * 1024 * 1024;

std::vector<std::string> MkfsArgv(const std::string& image, const DiskFormat& f) {
  std::string ext = "lazy_itable_init=1,lazy_journal_init=1,assume_storage_prezeroed=1";
  if (f.root_owner) {
    ext += fmt::format(",root_owner={}:{}", f.root_owner->first, f.root_owner->second);
  }
  return {f.mkfs_program,
          "-F",  // it is a regular file, not a block device: do not ask
          "-q", "-b", "4096", "-i", std::to_string(f.bytes_per_inode),
          // No reserved blocks: the sandbox's root is the only user, and the quota must be the
          // size the sandbox asked for.
          "-m", "0",
          // The image is a fresh sparse file, so it already reads as zeros: mke2fs neither
          // zeroes nor discards, and marks the inode tables zeroed so no ext4lazyinit thread
          // writes them later (that would be I/O billed to nobody).
          "-E", ext, "-O", f.journal ? "has_journal" : "^has_journal", image};
}

}  // namespace

Disk::Disk(Disk&& o) noexcept
    : image_path_(std::move(o.image_path_)),
      size_mb_(std::exchange(o.size_mb_, 0)),
      loop_(std::move(o.loop_)),
      mount_(std::move(o.mount_)) {
  o.image_path_.clear();  // a moved-from Disk must not delete the image in its destructor
}

Disk& Disk::operator=(Disk&& o) noexcept {
  if (this != &o) {
    (void)Destroy();
    image_path_ = std::move(o.image_path_);
    o.image_path_.clear();
    size_mb_ = std::exchange(o.size_mb_, 0);
    loop_ = std::move(o.loop_);
    mount_ = std::move(o.mount_);
  }
  return *this;
}

Result<Disk> Disk::Create(const std::string& image_path, uint64_t size_mb,
                          const DiskFormat& format) {
  if (size_mb < kMinSizeMb || size_mb > kMaxSizeMb) {
    return Status::InvalidArgument(fmt::format("disk size {} MiB for {} is outside [{}, {}] MiB",
                                               size_mb, image_path, kMinSizeMb, kMaxSizeMb));
  }
  if (format.bytes_per_inode < 1024 || format.bytes_per_inode > 64 * kMiB) {
    return Status::InvalidArgument(
        fmt::format("bytes_per_inode {} is outside [1024, 64 MiB]", format.bytes_per_inode));
  }
  // O_EXCL: never format over somebody's existing image.
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(image_path, O_RDWR | O_CREAT | O_EXCL, 0600));
  Disk disk;
  disk.image_path_ = image_path;  // from here on, ~Disk deletes the image on any failure
  disk.size_mb_ = size_mb;
  const off_t bytes = static_cast<off_t>(size_mb * kMiB);
  if (format.preallocate) {
    if (int err = ::posix_fallocate(fd.get(), 0, bytes); err != 0) {
      return Status::FromErrno(err, fmt::format("posix_fallocate({}, {})", image_path, bytes));
    }
  } else if (::ftruncate(fd.get(), bytes) != 0) {
    return Status::FromErrno(errno, fmt::format("ftruncate({}, {})", image_path, bytes));
  }
  fd.Reset();
  auto out = RunChecked(MkfsArgv(image_path, format), std::chrono::seconds(120));
  if (!out.ok()) return out.status().With(fmt::format("formatting {}", image_path));
  return disk;
}

Result<Disk> Disk::Adopt(const std::string& image_path, uint64_t size_mb) {
  if (::access(image_path.c_str(), F_OK) != 0) {
    return Status::FromErrno(errno, fmt::format("access({})", image_path));
  }
  Disk disk;
  disk.image_path_ = internal::CanonicalOrSame(image_path);
  disk.size_mb_ = size_mb;
  HANGAR_ASSIGN_OR_RETURN(auto loops, ListAttachedLoops());
  for (const auto& l : loops) {
    if (l.backing_file != disk.image_path_ || l.backing_deleted) continue;
    HANGAR_ASSIGN_OR_RETURN(disk.loop_, LoopDevice::Open(l.device));
    HANGAR_ASSIGN_OR_RETURN(auto mounts, internal::MountPointsOfDevice(l.dev));
    // Several mount points (bind mounts) would be ambiguous; the outermost is ours.
    if (!mounts.empty()) disk.mount_ = ScopedMount(mounts.back());
    break;
  }
  return disk;
}

Status Disk::Attach(const LoopOptions& options) {
  if (image_path_.empty()) return Status::FailedPrecondition("Attach on an empty Disk");
  if (loop_.attached()) {
    return Status::FailedPrecondition(
        fmt::format("{} is already attached to {}", image_path_, loop_.path()));
  }
  HANGAR_ASSIGN_OR_RETURN(loop_, LoopDevice::Attach(image_path_, options));
  if (options.direct_io && !loop_.DirectIoActive()) {
    // The kernel silently falls back to buffered I/O when the backing filesystem cannot do
    // aligned direct I/O (e.g. tmpfs); the throttle then sees writeback, not the sandbox.
    log::Warn("loop device without direct I/O", {{"device", loop_.path()}, {"image", image_path_}});
  }
  return Status::Ok();
}

Status Disk::Mount(const std::string& target, const DiskMountOptions& options) {
  if (!loop_.attached()) {
    return Status::FailedPrecondition(fmt::format("mount of {}: not attached", image_path_));
  }
  if (mount_.active()) {
    return Status::FailedPrecondition(
        fmt::format("{} is already mounted at {}", image_path_, mount_.target()));
  }
  unsigned long flags = MS_NODEV | MS_NOSUID;
  if (options.read_only) flags |= MS_RDONLY;
  if (options.noexec) flags |= MS_NOEXEC;
  HANGAR_ASSIGN_OR_RETURN(mount_, ScopedMount::Mount(loop_.path(), target, "ext4", flags));
  return Status::Ok();
}

Status Disk::MoveMount(const std::string& target) {
  if (!mount_.active()) {
    return Status::FailedPrecondition(fmt::format("move of {}: not mounted", image_path_));
  }
  const std::string from = mount_.target();
  if (::mount(from.c_str(), target.c_str(), nullptr, MS_MOVE, nullptr) == 0) {
    (void)mount_.Release();
    mount_ = ScopedMount(target);
    return Status::Ok();
  }
  if (errno != EINVAL) {
    return Status::FromErrno(errno, fmt::format("mount({}, {}, MS_MOVE)", from, target));
  }
  if (::mount(from.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return Status::FromErrno(errno, fmt::format("mount({}, {}, MS_BIND)", from, target));
  }
  (void)mount_.Release();
  mount_ = ScopedMount(target);
  if (::umount2(from.c_str(), MNT_DETACH) != 0) {
    return Status::FromErrno(errno, fmt::format("umount2({}, MNT_DETACH)", from));
  }
  return Status::Ok();
}

Status Disk::MountPointRenamed(const std::string& new_target) {
  if (!mount_.active()) {
    return Status::FailedPrecondition(fmt::format("rename of {}: not mounted", image_path_));
  }
  (void)mount_.Release();
  mount_ = ScopedMount(new_target);
  return Status::Ok();
}

Status Disk::Unmount() {
  if (!mount_.active()) return Status::Ok();
  std::string target = mount_.Release();
  if (::umount2(target.c_str(), 0) == 0 || errno == EINVAL || errno == ENOENT) {
    return Status::Ok();
  }
  if (errno != EBUSY) return Status::FromErrno(errno, fmt::format("umount2({}, 0)", target));
  // Something still uses it (a process with its cwd there): detach it from the tree now; the
  // filesystem and, through autoclear, the loop device go when the last user does.
  log::Warn("disk busy at unmount; detaching lazily", {{"target", target}, {"image", image_path_}});
  if (::umount2(target.c_str(), MNT_DETACH) != 0) {
    return Status::FromErrno(errno, fmt::format("umount2({}, MNT_DETACH)", target));
  }
  return Status::Ok();
}

Result<DiskUsage> Disk::Usage() const {
  if (!mount_.active()) {
    return Status::FailedPrecondition(fmt::format("usage of {}: not mounted", image_path_));
  }
  struct statfs sf;
  if (::statfs(mount_.target().c_str(), &sf) != 0) {
    return Status::FromErrno(errno, fmt::format("statfs({})", mount_.target()));
  }
  DiskUsage u;
  const uint64_t bs = static_cast<uint64_t>(sf.f_frsize);
  u.bytes_total = sf.f_blocks * bs;
  u.bytes_used = (sf.f_blocks - sf.f_bfree) * bs;
  u.bytes_avail = sf.f_bavail * bs;
  u.inodes_total = sf.f_files;
  u.inodes_used = sf.f_files - sf.f_ffree;
  struct stat st;
  if (::stat(image_path_.c_str(), &st) == 0) {
    u.image_allocated_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return u;
}

Status Disk::Destroy() {
  Status first;
  auto keep = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  keep(Unmount());
  keep(loop_.Detach());
  if (!image_path_.empty()) {
    if (::unlink(image_path_.c_str()) != 0 && errno != ENOENT) {
      keep(Status::FromErrno(errno, fmt::format("unlink({})", image_path_)));
    }
    image_path_.clear();
  }
  if (!first.ok()) log::Warn("disk cleanup incomplete", {{"error", first.ToString()}});
  return first;
}

void Disk::Release() {
  (void)mount_.Release();
  loop_.Release();
  image_path_.clear();
}

}  // namespace hangar::storage
