#include "hangar/node/sandbox_storage.h"

#include <sys/sysmacros.h>

#include "hangar/base/mount.h"

namespace hangar::node {

Status ReleaseSandboxStorage(CgroupBackend& cgroups, std::optional<dev_t>& root_io_rule,
                             storage::Disk& disk, const std::string& dir) {
  Status first;
  auto keep = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  if (root_io_rule) {
    keep(cgroups.SetRootDeviceLimit({static_cast<uint32_t>(major(*root_io_rule)),
                                     static_cast<uint32_t>(minor(*root_io_rule)), 0, 0, 0, 0}));
    root_io_rule.reset();
  }
  keep(disk.Destroy());
  if (auto left = MountsUnder(dir); left.ok()) {
    for (const auto& m : *left) {
      ScopedMount owned(m);
      keep(owned.Unmount());
    }
  }
  return first;
}

}  // namespace hangar::node
