// Test-only host-side leak checks shared by the driver and security tests: the processes whose
// command line mentions a string, and the cgroup directories below a root in every hierarchy
// (pure v2: the one). Thread safety: stateless; they read /proc and /sys.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "hangar/base/fd.h"

namespace hangar::node::testing {

// Host processes whose command line (NULs as spaces) contains `needle`.
inline std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmd = ReadFile(e.path().string() + "/cmdline");
    if (!cmd.ok()) continue;
    std::replace(cmd->begin(), cmd->end(), '\0', ' ');
    if (cmd->find(needle) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

// Cgroup directories directly under `root` (relative to each hierarchy's mount point).
inline std::vector<std::string> CgroupDirsOf(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  auto add = [&](const std::filesystem::path& dir) {
    for (const auto& g : std::filesystem::directory_iterator(dir / root, ec)) {
      if (g.is_directory(ec)) out.push_back(g.path().string());
    }
  };
  if (::access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
    add("/sys/fs/cgroup");
    return out;
  }
  for (const auto& h : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
    if (!h.is_symlink(ec)) add(h.path());
  }
  return out;
}

}  // namespace hangar::node::testing
