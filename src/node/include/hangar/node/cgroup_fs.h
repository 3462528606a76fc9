// CgroupFs: the seam between the cgroup backends and the cgroup filesystem.
//
// Production uses RealCgroupFs() (plain syscalls). Tests substitute an in-memory fake to check
// the exact bytes each backend writes — including for controllers this machine cannot provide —
// and to inject faults (EBUSY on rmdir, missing files). See src/node/testing/fake_cgroup_fs.h.
// Thread safety: RealCgroupFs() is stateless and safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::node {

class CgroupFs {
 public:
  virtual ~CgroupFs() = default;
  virtual Result<std::string> Read(const std::string& path) = 0;
  // One write(2) of `data` to an existing file (cgroupfs semantics: no truncate, no create).
  virtual Status Write(const std::string& path, std::string_view data) = 0;
  // AlreadyExists if it exists.
  virtual Status Mkdir(const std::string& path) = 0;
  // NotFound if absent; Unavailable (EBUSY) while tasks or child groups remain.
  virtual Status Rmdir(const std::string& path) = 0;
  // rename(2) of a group directory within its parent. AlreadyExists if `to` exists.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Subdirectory names, sorted. NotFound if `path` is absent.
  virtual Result<std::vector<std::string>> ListDirs(const std::string& path) = 0;
  virtual bool Exists(const std::string& path) = 0;
};

CgroupFs& RealCgroupFs();

}  // namespace hangar::node
