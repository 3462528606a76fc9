// Disk: a sandbox's own disk — a sparse ext4 image file attached to a loop device.
//
// Why: the filesystem size is a hard quota (ENOSPC for bytes and for inodes, whatever uid
// writes), and the loop device gives the sandbox a block device number of its own, so the
// cgroup I/O throttle (blkio.throttle.* / io.max) can target major:minor and hold for buffered
// writeback too.
//
// Lifecycle: Create (image + mkfs) → Attach (loop, direct I/O) → Mount (nodev,nosuid) → ...
// → Destroy (unmount, detach, delete image). The object owns every step it has done; its
// destructor runs Destroy, so no error path leaks a mount, a loop device or an image.
// Release() gives everything up without cleaning (crash simulation; RecoverDisks cleans).
//
// The image and the loop device are never exposed to the sandbox: it sees only the mounted
// filesystem, so the kernel never parses an ext4 image a sandbox has written raw.
// Thread safety: a value; not shared.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "hangar/base/mount.h"
#include "hangar/base/status.h"
#include "hangar/storage/loop_device.h"

namespace hangar::storage {

// mkfs.ext4 choices. Defaults favour creation speed and IOPS over crash durability: a
// sandbox disk never outlives a host crash (recovery deletes it), so a journal would only
// cost writes.
struct DiskFormat {
  bool journal = false;             // -O ^has_journal unless true
  uint32_t bytes_per_inode = 8192;  // -i: 128 Ki inodes per GiB (node_modules, git objects)
  // -E root_owner=uid:gid for the filesystem's root directory (default 0:0). Pooled disks are
  // made before their sandbox's uid is known: chown the mount point after Mount instead.
  std::optional<std::pair<uid_t, gid_t>> root_owner;
  // fallocate the whole image so a full host disk cannot surface as EIO inside the sandbox.
  // Off by default: images are sparse and the scheduler accounts disk capacity.
  bool preallocate = false;
  std::string mkfs_program = "mkfs.ext4";  // seam for fault-injection tests
};

struct DiskMountOptions {
  bool read_only = false;
  bool noexec = false;
  // Always: MS_NODEV | MS_NOSUID.
};

struct DiskUsage {
  uint64_t bytes_total = 0;  // statfs f_blocks * f_frsize
  uint64_t bytes_used = 0;   // (f_blocks - f_bfree) * f_frsize
  uint64_t bytes_avail = 0;  // f_bavail * f_frsize
  uint64_t inodes_total = 0;
  uint64_t inodes_used = 0;
  uint64_t image_allocated_bytes = 0;  // host blocks the sparse image occupies
};

class Disk {
 public:
  Disk() = default;
  ~Disk() { (void)Destroy(); }
  Disk(Disk&& o) noexcept;
  Disk& operator=(Disk&& o) noexcept;
  Disk(const Disk&) = delete;
  Disk& operator=(const Disk&) = delete;

  // Creates `image_path` (must not exist; O_EXCL) as a sparse file of size_mb MiB and formats
  // it. On failure the image is removed.
  static Result<Disk> Create(const std::string& image_path, uint64_t size_mb,
                             const DiskFormat& format = {});
  // Takes ownership of an existing image after a restart: its loop device and mount, if any
  // are found (by /sys backing_file and /proc/self/mountinfo).
  static Result<Disk> Adopt(const std::string& image_path, uint64_t size_mb);

  Status Attach(const LoopOptions& options = {});
  Status Mount(const std::string& target, const DiskMountOptions& options = {});
  // Moves the mounted filesystem to `target` (MS_MOVE: no mount, no superblock work; a pooled
  // disk mounted ahead is put into place this way). Where the current mount's parent is a
  // shared mount (systemd makes / shared) the kernel refuses MS_MOVE: then a bind of the same
  // mount at `target` and a lazy detach of the old one give the same result. The empty old
  // mount point is the caller's. FailedPrecondition if not mounted.
  Status MoveMount(const std::string& target);
  // Records that the mount point moved with a rename(2) of a directory above it (the mount
  // itself is unchanged). FailedPrecondition if not mounted.
  Status MountPointRenamed(const std::string& new_target);
  // umount(2); if still busy, a lazy detach (the loop then detaches when the last user goes).
  Status Unmount();
  // statfs of the mounted filesystem (failed_precondition if not mounted).
  Result<DiskUsage> Usage() const;
  // Unmount, detach, delete the image; every step is tried even if an earlier one failed, and
  // the first error is returned. Idempotent.
  Status Destroy();
  // Forgets everything without cleaning up (closing the loop fd like a dying process would).
  void Release();

  const std::string& image_path() const { return image_path_; }
  uint64_t size_mb() const { return size_mb_; }
  bool attached() const { return loop_.attached(); }
  const LoopDevice& loop() const { return loop_; }
  const std::string& loop_path() const { return loop_.path(); }
  dev_t dev() const { return loop_.dev(); }
  bool mounted() const { return mount_.active(); }
  const std::string& mount_point() const { return mount_.target(); }

 private:
  std::string image_path_;
  uint64_t size_mb_ = 0;
  LoopDevice loop_;
  ScopedMount mount_;
};

}  // namespace hangar::storage
