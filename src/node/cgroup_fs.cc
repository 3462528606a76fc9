#include "hangar/node/cgroup_fs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "file_util.h"

namespace hangar::node {
namespace {

class RealFs final : public CgroupFs {
 public:
  Result<std::string> Read(const std::string& path) override { return ReadFile(path); }
  Status Write(const std::string& path, std::string_view data) override {
    return WriteExistingFile(path, data);
  }
  Status Mkdir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) != 0) {
      return Status::FromErrno(errno, "mkdir(" + path + ", 0755)");
    }
    return Status::Ok();
  }
  Status Rmdir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return Status::FromErrno(errno, "rmdir(" + path + ")");
    return Status::Ok();
  }
  Status Rename(const std::string& from, const std::string& to) override {
    // RENAME_NOREPLACE is not supported by cgroupfs; an existing `to` is refused by the
    // kernel for a non-empty directory, and checked here for an empty one.
    struct stat st;
    if (::stat(to.c_str(), &st) == 0) return Status::AlreadyExists("rename target " + to);
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::FromErrno(errno, "rename(" + from + ", " + to + ")");
    }
    return Status::Ok();
  }
  Result<std::vector<std::string>> ListDirs(const std::string& path) override {
    return ListSubdirectories(path);
  }
  bool Exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }
};

}  // namespace

CgroupFs& RealCgroupFs() {
  static RealFs fs;
  return fs;
}

}  // namespace hangar::node
