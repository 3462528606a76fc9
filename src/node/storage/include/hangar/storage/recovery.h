// Crash recovery for sandbox disks: after a restart, nothing of a disk that is not live may
// remain — no mount, no loop device, no image.
//
// RecoverDisks scans /sys/block/loop*/loop/backing_file for loop devices backed by files in
// <data_dir>/disks (including images already deleted), unmounts every mount of such a device
// found in this mount namespace (deepest first, lazily), detaches the device, and deletes every
// image in <data_dir>/disks that is not live. Live images (by file name or absolute path) keep
// their loop device and mounts; Disk::Adopt takes them over.
// A device still held by a mount in another namespace cannot be detached now; LOOP_CLR_FD then
// makes it autoclear, and it goes when that namespace does. Errors on one item are recorded and
// the scan goes on.
// Thread safety: call on startup, before any DiskPool or Disk in this data dir is in use.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::storage {

struct DiskRecoveryReport {
  std::vector<std::string> unmounted;       // mount points
  std::vector<std::string> detached;        // /dev/loopN (backing file)
  std::vector<std::string> deleted_images;  // paths
  std::vector<std::string> kept;            // live images
  std::vector<std::string> errors;          // one line per item that could not be cleaned
  size_t cleaned() const { return unmounted.size() + detached.size() + deleted_images.size(); }
};

Result<DiskRecoveryReport> RecoverDisks(const std::string& data_dir,
                                        const std::set<std::string>& live_images = {});

// <data_dir>/disks — where Disk images of a data dir live.
std::string DisksDir(const std::string& data_dir);

}  // namespace hangar::storage
