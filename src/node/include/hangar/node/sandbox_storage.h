// The storage half of tearing down a sandbox that shares the node's kernel (the ns and gVisor
// drivers): its own disk (a loop device with an ext4 image) and, on cgroup v1, the root blkio
// rule that throttles that device's writeback.
// Thread safety: none; called under the sandbox's lock.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "hangar/base/status.h"
#include "hangar/node/cgroup.h"
#include "hangar/storage/disk.h"

namespace hangar::node {

// Clears the root rule of the disk's device before the loop device goes (a reused loop number
// must not inherit it), destroys the disk (unmount, detach, image removed), then unmounts
// anything still mounted below `dir` (left by an interrupted earlier run). Every step runs;
// the first error is returned. `root_io_rule` is reset once cleared.
Status ReleaseSandboxStorage(CgroupBackend& cgroups, std::optional<dev_t>& root_io_rule,
                             storage::Disk& disk, const std::string& dir);

}  // namespace hangar::node
