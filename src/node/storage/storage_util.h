// Helpers private to src/node/storage. Every failure names the call and its arguments.
// Thread safety: stateless; safe from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::storage::internal {

// Streaming SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  std::string HexDigest();  // finishes; call once

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Result<std::string> Sha256File(const std::string& path);

// Mount points (this mount namespace) whose source device is `dev`, deepest first.
Result<std::vector<std::string>> MountPointsOfDevice(dev_t dev);
// The mountinfo lines (raw) that mention `needle` anywhere (mount point, source or options).
Result<std::vector<std::string>> MountinfoLinesMentioning(std::string_view needle);

// openat2(2) with RESOLVE_IN_ROOT: resolves `path` as if `root_fd` were "/", so absolute
// symlinks inside an untrusted rootfs cannot reach the host.
Result<UniqueFd> OpenInRoot(int root_fd, const std::string& path, int flags);

// A file's content without trailing whitespace (sysfs attributes).
Result<std::string> ReadTrimmed(const std::string& path);

// realpath(3) of an existing path; `path` unchanged if it does not exist.
std::string CanonicalOrSame(const std::string& path);

// Joins with exactly one '/'.
std::string JoinPath(std::string_view a, std::string_view b);

// What InspectTree found below a root directory (no symlink is followed).
struct TreeStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;  // regular files (each inode once) + symlink target lengths
  uint64_t setuid_files = 0;
  std::string first_device;  // relative path of the first char/block device or socket, if any
};
Result<TreeStats> InspectTree(const std::string& root);

}  // namespace hangar::storage::internal
