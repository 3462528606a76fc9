// TempDir: a fresh directory (mkdtemp) removed with its whole contents on destruction.
// Removal does not cross mount points it finds below (they are detached first), so a test that
// fails half-way through mounting cannot make the cleanup delete a host directory.
#pragma once

#include <string>

#include "hangar/base/status.h"

namespace hangar {

class TempDir {
 public:
  TempDir() = default;
  ~TempDir();
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir& operator=(TempDir&& o) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Creates <parent>/<prefix>XXXXXX. parent defaults to $TMPDIR or /tmp.
  static Result<TempDir> Make(std::string_view prefix = "hangar-", std::string parent = "");

  const std::string& path() const { return path_; }
  std::string Release();

 private:
  std::string path_;
};

// rm -rf that stays on one filesystem and detaches mounts below `path` first.
Status RemoveTree(const std::string& path);
// mkdir -p.
Status MakeDirs(const std::string& path);

}  // namespace hangar
