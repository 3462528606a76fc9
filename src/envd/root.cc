#include "root.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace hangar::envd::internal {

namespace {

constexpr uint64_t kResolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;

int OpenAt2(int dirfd, const std::string& path, uint64_t flags, mode_t mode) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  // The kernel rejects a mode without O_CREAT/O_TMPFILE.
  how.mode = (flags & (O_CREAT | __O_TMPFILE)) ? mode : 0;
  how.resolve = kResolve;
  long fd;
  do {
    fd = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
  } while (fd < 0 && errno == EINTR);
  return static_cast<int>(fd);
}

Result<std::string> ReadFdLink(int fd) {
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  char buf[4096];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n < 0) return Status::FromErrno(errno, "readlink(" + link + ")");
  if (static_cast<size_t>(n) == sizeof buf) {
    return Status::Internal("readlink(" + link + "): path too long");
  }
  return std::string(buf, static_cast<size_t>(n));
}

// Removes everything below the directory `dir` (which it owns), never following symlinks.
Status RemoveContents(UniqueFd dir, const std::string& where) {
  int dupfd = ::fcntl(dir.get(), F_DUPFD_CLOEXEC, 0);
  if (dupfd < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
  DIR* d = ::fdopendir(dupfd);
  if (d == nullptr) {
    int err = errno;
    ::close(dupfd);
    return Status::FromErrno(err, "fdopendir(" + where + ")");
  }
  std::vector<std::pair<std::string, bool>> entries;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    entries.emplace_back(std::string(name), e->d_type == DT_DIR);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return Status::FromErrno(err, "readdir(" + where + ")");
  for (auto& [name, is_dir] : entries) {
    std::string child = where == "/" ? "/" + name : where + "/" + name;
    if (!is_dir && ::unlinkat(dir.get(), name.c_str(), 0) == 0) continue;
    if (!is_dir && errno != EISDIR) {
      if (errno == ENOENT) continue;
      return Status::FromErrno(errno, "unlinkat(" + child + ")");
    }
    int sub = ::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) {
      if (errno == ENOENT) continue;
      if (errno == ENOTDIR || errno == ELOOP) {  // raced into a file or symlink
        if (::unlinkat(dir.get(), name.c_str(), 0) == 0 || errno == ENOENT) continue;
        return Status::FromErrno(errno, "unlinkat(" + child + ")");
      }
      return Status::FromErrno(errno, "openat(" + child + ")");
    }
    HANGAR_TRY(RemoveContents(UniqueFd(sub), child));
    if (::unlinkat(dir.get(), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "unlinkat(" + child + ", AT_REMOVEDIR)");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<Root> Root::Open(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open(" + dir + ", O_PATH|O_DIRECTORY)");
  Root root;
  root.fd_.Reset(fd);
  Result<std::string> real = ReadFdLink(fd);
  if (!real.ok()) return real.status();
  if (real->size() > 1) root.host_path_ = *real;  // "/" stays "": nothing to strip
  // Probe openat2 now: a kernel without it (< 5.6) must fail at start-up, not per request.
  if (int probe = OpenAt2(fd, "/", O_PATH | O_DIRECTORY, 0); probe >= 0) {
    ::close(probe);
  } else if (errno == ENOSYS && root.host_path_.empty()) {
    // No openat2 (gVisor's kernel of Debian 12's runsc): when the root is this process's own
    // "/", ordinary resolution of an absolute path already stays inside it.
    root.plain_ = true;
  } else {
    return Status::FromErrno(errno, "openat2(" + dir + ", RESOLVE_IN_ROOT)");
  }
  return root;
}

std::string Root::Clean(std::string_view abs) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < abs.size()) {
    size_t j = abs.find('/', i);
    if (j == std::string_view::npos) j = abs.size();
    std::string_view part = abs.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  if (parts.empty()) return "/";
  std::string out;
  for (std::string_view p : parts) {
    out += '/';
    out += p;
  }
  return out;
}

Result<std::string> Root::Resolve(std::string_view path, std::string_view home) {
  if (path.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("path contains a NUL byte");
  }
  std::string joined;
  if (!path.empty() && path[0] == '~') {
    if (path.size() > 1 && path[1] != '/') {
      return Status::InvalidArgument("cannot expand '" + std::string(path) +
                                     "': only ~ and ~/ (the user's own home) are supported");
    }
    joined = std::string(home) + "/" + std::string(path.substr(1));
  } else if (!path.empty() && path[0] == '/') {
    joined = std::string(path);
  } else {
    joined = std::string(home) + "/" + std::string(path);
  }
  return Clean(joined);
}

Result<UniqueFd> Root::OpenAt(const std::string& path, int flags, mode_t mode) const {
  if (plain_) {
    if (path.empty() || path[0] != '/') {
      return Status::InvalidArgument("sandbox path must be absolute: " + path);
    }
    int fd;
    do {
      fd = ::openat(fd_.get(), path.c_str(), flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return Status::FromErrno(errno, "openat(" + path + ")");
    return UniqueFd(fd);
  }
  int fd = OpenAt2(fd_.get(), path, static_cast<uint64_t>(flags), mode);
  if (fd < 0) return Status::FromErrno(errno, "openat2(" + path + ")");
  return UniqueFd(fd);
}

Result<Root::Parent> Root::OpenParent(const std::string& path) const {
  std::string clean = Clean(path);
  if (clean == "/") return Status::InvalidArgument("the root directory has no parent");
  size_t slash = clean.rfind('/');
  std::string dir = slash == 0 ? "/" : clean.substr(0, slash);
  Parent p;
  p.name = clean.substr(slash + 1);
  HANGAR_ASSIGN_OR_RETURN(p.dir, OpenAt(dir, O_PATH | O_DIRECTORY));
  return p;
}

Result<struct stat> Root::Lstat(const std::string& path) const {
  struct stat st {};
  if (Clean(path) == "/") {
    if (::fstat(fd_.get(), &st) != 0) return Status::FromErrno(errno, "fstat(/)");
    return st;
  }
  HANGAR_ASSIGN_OR_RETURN(Parent p, OpenParent(path));
  if (::fstatat(p.dir.get(), p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::FromErrno(errno, "lstat(" + path + ")");
  }
  return st;
}

Result<struct stat> Root::Stat(const std::string& path) const {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenAt(path, O_PATH));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat(" + path + ")");
  return st;
}

Result<std::string> Root::PathOf(int fd) const {
  HANGAR_ASSIGN_OR_RETURN(std::string host, ReadFdLink(fd));
  if (host_path_.empty()) return host;
  if (host == host_path_) return std::string("/");
  if (host.size() > host_path_.size() && host.compare(0, host_path_.size(), host_path_) == 0 &&
      host[host_path_.size()] == '/') {
    return host.substr(host_path_.size());
  }
  return Status::Internal("descriptor resolves outside the root: " + host);
}

Result<std::string> Root::RealPath(const std::string& path) const {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenAt(path, O_PATH));
  return PathOf(fd.get());
}

Status Root::MakeDirs(const std::string& path, uid_t uid, gid_t gid, mode_t mode) const {
  std::string clean = Clean(path);
  std::string prefix;
  size_t i = 1;
  while (i <= clean.size()) {
    size_t j = clean.find('/', i);
    if (j == std::string::npos) j = clean.size();
    if (j == i) break;  // "/" itself
    prefix = clean.substr(0, j);
    i = j + 1;
    auto existing = OpenAt(prefix, O_PATH | O_DIRECTORY);
    if (existing.ok()) continue;
    int err = existing.status().sys_errno();
    if (err == ENOTDIR) {
      return Status::FailedPrecondition("path is a file: " + prefix);
    }
    if (err != ENOENT) return existing.status();
    HANGAR_ASSIGN_OR_RETURN(Parent p, OpenParent(prefix));
    if (::mkdirat(p.dir.get(), p.name.c_str(), mode) != 0) {
      if (errno == EEXIST) {
        // Raced with another creator, or a dangling symlink sits there: check again.
        auto again = OpenAt(prefix, O_PATH | O_DIRECTORY);
        if (again.ok()) continue;
        return Status::FailedPrecondition("path exists and is not a directory: " + prefix);
      }
      return Status::FromErrno(errno, "mkdir(" + prefix + ")");
    }
    if (::fchownat(p.dir.get(), p.name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno(
          errno, "chown(" + prefix + ", " + std::to_string(uid) + ":" + std::to_string(gid) + ")");
    }
  }
  return Status::Ok();
}

Status Root::RemoveAll(const std::string& path) const {
  std::string clean = Clean(path);
  if (clean == "/") return Status::InvalidArgument("refusing to remove the root directory");
  auto parent = OpenParent(clean);
  if (!parent.ok()) {
    return parent.status().code() == Code::kNotFound ? Status::Ok() : parent.status();
  }
  Parent& p = *parent;
  if (::unlinkat(p.dir.get(), p.name.c_str(), 0) == 0 || errno == ENOENT) return Status::Ok();
  if (errno != EISDIR && errno != EPERM) return Status::FromErrno(errno, "unlink(" + clean + ")");
  // O_PATH parents cannot be read; reopen the directory itself for listing.
  int dir = ::openat(p.dir.get(), p.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return Status::FromErrno(errno, "open(" + clean + ")");
  HANGAR_TRY(RemoveContents(UniqueFd(dir), clean));
  if (::unlinkat(p.dir.get(), p.name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "rmdir(" + clean + ")");
  }
  return Status::Ok();
}

Status Root::Rename(const std::string& from, const std::string& to) const {
  HANGAR_ASSIGN_OR_RETURN(Parent src, OpenParent(from));
  HANGAR_ASSIGN_OR_RETURN(Parent dst, OpenParent(to));
  if (::renameat(src.dir.get(), src.name.c_str(), dst.dir.get(), dst.name.c_str()) != 0) {
    return Status::FromErrno(errno, "rename(" + from + ", " + to + ")");
  }
  return Status::Ok();
}

}  // namespace hangar::envd::internal
