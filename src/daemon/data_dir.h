// DataDir: hangard's state directory, held exclusively for the life of the process.
//
// Open() creates the directory if missing, proves it is writable, and takes an exclusive
// flock on <dir>/hangard.pid (writing our pid into it), so two daemons never share one state
// directory. If anything fails, whatever Open created is removed again: a failed start leaves
// the file system as it found it.
#pragma once

#include <string>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::daemon {

class DataDir {
 public:
  static Result<DataDir> Open(const std::string& path);
  DataDir(DataDir&&) = default;
  DataDir& operator=(DataDir&&) = default;
  ~DataDir();

  const std::string& path() const { return path_; }
  // Removes what Open created (the pid file; the directory itself if Open made it).
  // Used when the daemon fails after Open but before it has served anything.
  void Abandon();

 private:
  DataDir() = default;
  std::string path_;
  std::string created_root_;  // the top-most directory Open created, or ""
  UniqueFd lock_;
};

}  // namespace hangar::daemon
