// UniqueFd: sole owner of a file descriptor; closes it on destruction. Move-only.
// Thread safety: like any value; do not share one UniqueFd between threads without a lock.
#pragma once

#include <string>
#include <utility>

#include "hangar/base/status.h"

namespace hangar {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC added; the error names the path and flags.
Result<UniqueFd> OpenFile(const std::string& path, int flags, unsigned mode = 0);
Result<UniqueFd> OpenAt(int dirfd, const std::string& path, int flags, unsigned mode = 0);

// Pipe pair with O_CLOEXEC (plus extra flags, e.g. O_NONBLOCK).
struct Pipe {
  UniqueFd read;
  UniqueFd write;
};
Result<Pipe> MakePipe(int extra_flags = 0);

// Whole-file helpers for small files (config, /proc, cgroup files).
Result<std::string> ReadFile(const std::string& path);
Status WriteFile(const std::string& path, std::string_view data, int flags = 0);
// Writes to path.tmp, fsyncs, renames over path: readers see the old or the new file whole.
Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode = 0644);

// Writes all of data, retrying on EINTR and short writes.
Status WriteAll(int fd, std::string_view data);

}  // namespace hangar
