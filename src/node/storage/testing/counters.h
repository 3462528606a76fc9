// Leak counters for storage tests: loop devices backed by files under a directory (from
// /sys/block/loop*/loop/backing_file) and mounts at or below a path (/proc/self/mountinfo).
// Scoped to the test's own directory so tests running in parallel do not disturb each other.
#pragma once

#include <dirent.h>

#include <chrono>
#include <string>
#include <thread>

#include "hangar/base/mount.h"
#include "hangar/storage/loop_device.h"

namespace hangar::storage::testing {

inline int LoopsUnder(const std::string& dir) {
  auto l = ListAttachedLoopsUnder(dir);
  return l.ok() ? static_cast<int>(l->size()) : -1;
}

// Autoclear runs when the last opener goes; give the kernel a moment.
inline int LoopsUnderSettled(const std::string& dir, int want = 0) {
  int n = LoopsUnder(dir);
  for (int i = 0; i < 200 && n != want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = LoopsUnder(dir);
  }
  return n;
}

inline int MountsAtOrUnder(const std::string& path) {
  auto m = MountsUnder(path);
  return m.ok() ? static_cast<int>(m->size()) : -1;
}

inline int FilesIn(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int n = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace hangar::storage::testing
