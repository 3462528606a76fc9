#include "data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

#include "hangar/base/tempdir.h"

namespace hangar::daemon {

namespace {
// mkdir -p that reports the top-most directory it had to create ("" if none).
Result<std::string> CreateDirs(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p = fs::absolute(path).lexically_normal();
  std::vector<fs::path> missing;
  for (fs::path cur = p; !cur.empty() && cur != cur.root_path(); cur = cur.parent_path()) {
    struct stat st;
    if (::stat(cur.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Status::FailedPrecondition(
            fmt::format("{} exists and is not a directory", cur.string()));
      }
      break;
    }
    missing.push_back(cur);
  }
  std::string top;
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0750) != 0 && errno != EEXIST) {
      int err = errno;
      if (!top.empty()) (void)RemoveTree(top);
      return Status::FromErrno(err, fmt::format("mkdir({})", it->string()));
    }
    if (top.empty()) top = it->string();
  }
  return top;
}
}  // namespace

Result<DataDir> DataDir::Open(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("data_dir is empty");
  DataDir d;
  d.path_ = std::filesystem::absolute(path).lexically_normal().string();
  HANGAR_ASSIGN_OR_RETURN(d.created_root_, CreateDirs(d.path_));
  auto fail = [&](Status s) -> Status {
    d.Abandon();
    return s.With(fmt::format("data directory {}", d.path_));
  };
  if (::access(d.path_.c_str(), W_OK | X_OK) != 0) {
    return fail(Status::FromErrno(errno, "access(W_OK)"));
  }
  std::string pid_path = d.path_ + "/hangard.pid";
  auto fd = OpenFile(pid_path, O_RDWR | O_CREAT, 0644);
  if (!fd.ok()) return fail(fd.status());
  if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    auto holder = ReadFile(pid_path);
    // The file belongs to the running daemon: leave it, and do not Abandon().
    if (err == EWOULDBLOCK) {
      return Status::FailedPrecondition(
          fmt::format("data directory {} is in use by another hangard (pid {})", d.path_,
                      holder.ok() ? holder->substr(0, holder->find('\n')) : "?"));
    }
    return fail(Status::FromErrno(err, fmt::format("flock({})", pid_path)));
  }
  if (::ftruncate(fd->get(), 0) != 0) return fail(Status::FromErrno(errno, "ftruncate(pid file)"));
  std::string pid = fmt::format("{}\n", ::getpid());
  if (::pwrite(fd->get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return fail(Status::FromErrno(errno, fmt::format("write({})", pid_path)));
  }
  d.lock_ = std::move(*fd);
  return d;
}

void DataDir::Abandon() {
  if (path_.empty()) return;
  if (!created_root_.empty()) {
    (void)RemoveTree(created_root_);
  } else {
    ::unlink((path_ + "/hangard.pid").c_str());
  }
  lock_.Reset();
  path_.clear();
}

DataDir::~DataDir() {
  if (lock_.valid()) {
    // A clean exit removes the pid file so scripts do not find a stale pid.
    ::unlink((path_ + "/hangard.pid").c_str());
  }
}

}  // namespace hangar::daemon
