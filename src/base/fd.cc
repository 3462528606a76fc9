#include "hangar/base/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace hangar {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<UniqueFd> OpenFile(const std::string& path, int flags, unsigned mode) {
  return OpenAt(AT_FDCWD, path, flags, mode);
}

Result<UniqueFd> OpenAt(int dirfd, const std::string& path, int flags, unsigned mode) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, fmt::format("open({}, {:#o})", path, flags));
  return UniqueFd(fd);
}

Result<Pipe> MakePipe(int extra_flags) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | extra_flags) != 0) return Status::FromErrno(errno, "pipe2()");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

Result<std::string> ReadFile(const std::string& path) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("read({})", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("write(fd {})", fd));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status WriteFile(const std::string& path, std::string_view data, int flags) {
  int open_flags = flags ? flags : (O_WRONLY | O_CREAT | O_TRUNC);
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, open_flags, 0644));
  return WriteAll(fd.get(), data).With(path);
}

Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode) {
  std::string tmp = path + ".tmp";
  {
    HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode));
    HANGAR_TRY(WriteAll(fd.get(), data).With(tmp));
    if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, fmt::format("fsync({})", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(err, fmt::format("rename({}, {})", tmp, path));
  }
  return Status::Ok();
}

}  // namespace hangar
