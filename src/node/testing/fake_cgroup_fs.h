// FakeCgroupFs: an in-memory cgroup filesystem for testing the backends' file formats and
// failure handling — including controllers (memory, io) this development machine cannot
// delegate to cgroup v2. It checks the bytes written, not what the kernel does with them; the
// privileged tests cover the kernel. Test-only.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "hangar/node/cgroup_fs.h"

namespace hangar::node::testing {

class FakeCgroupFs : public CgroupFs {
 public:
  // Files that appear in every directory created with Mkdir (name → initial content).
  std::map<std::string, std::string> template_files;
  // Every Write, in order: (path, data).
  std::vector<std::pair<std::string, std::string>> writes;
  // Injected failures: path → status returned by Write / Rmdir on that path.
  std::map<std::string, Status> write_errors;
  std::map<std::string, Status> rmdir_errors;
  std::map<std::string, Status> mkdir_errors;
  // Called after each successful Write (e.g. to make cgroup.events follow cgroup.freeze).
  std::function<void(const std::string& path, const std::string& data)> on_write;

  void AddDir(const std::string& path) { dirs_.insert(path); }
  void SetFile(const std::string& path, std::string content) { files_[path] = std::move(content); }
  bool HasDir(const std::string& path) const { return dirs_.count(path) > 0; }
  const std::string& File(const std::string& path) { return files_[path]; }
  // Writes to `path` since construction (or the last ClearWrites), in order.
  std::vector<std::string> WritesTo(const std::string& path) const {
    std::vector<std::string> out;
    for (const auto& [p, d] : writes) {
      if (p == path) out.push_back(d);
    }
    return out;
  }

  Result<std::string> Read(const std::string& path) override {
    auto it = files_.find(path);
    if (it == files_.end()) return Status::NotFound("fake read(" + path + ")");
    return it->second;
  }
  Status Write(const std::string& path, std::string_view data) override {
    if (auto e = write_errors.find(path); e != write_errors.end()) return e->second;
    auto it = files_.find(path);
    if (it == files_.end()) return Status::NotFound("fake write(" + path + ")");
    writes.emplace_back(path, std::string(data));
    it->second = std::string(data);
    if (on_write) on_write(path, std::string(data));
    return Status::Ok();
  }
  Status Mkdir(const std::string& path) override {
    if (auto e = mkdir_errors.find(path); e != mkdir_errors.end()) return e->second;
    if (dirs_.count(path)) return Status::AlreadyExists("fake mkdir(" + path + ")");
    if (!dirs_.count(Parent(path))) return Status::NotFound("fake mkdir(" + path + ")");
    dirs_.insert(path);
    for (const auto& [name, content] : template_files) files_[path + "/" + name] = content;
    return Status::Ok();
  }
  Status Rmdir(const std::string& path) override {
    if (auto e = rmdir_errors.find(path); e != rmdir_errors.end()) return e->second;
    if (!dirs_.count(path)) return Status::NotFound("fake rmdir(" + path + ")");
    for (const std::string& d : dirs_) {
      if (d.size() > path.size() && d.compare(0, path.size() + 1, path + "/") == 0) {
        return Status::Unavailable("fake rmdir(" + path + "): has children");
      }
    }
    dirs_.erase(path);
    for (auto it = files_.begin(); it != files_.end();) {
      it = Parent(it->first) == path ? files_.erase(it) : std::next(it);
    }
    return Status::Ok();
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (!dirs_.count(from)) return Status::NotFound("fake rename(" + from + ")");
    if (dirs_.count(to)) return Status::AlreadyExists("fake rename(" + to + ")");
    if (Parent(from) != Parent(to)) return Status::InvalidArgument("fake rename across parents");
    auto moved = [&](const std::string& p) {
      return p == from || p.compare(0, from.size() + 1, from + "/") == 0;
    };
    std::set<std::string> dirs;
    for (const std::string& d : dirs_) dirs.insert(moved(d) ? to + d.substr(from.size()) : d);
    std::map<std::string, std::string> files;
    for (auto& [f, c] : files_) files[moved(f) ? to + f.substr(from.size()) : f] = c;
    dirs_.swap(dirs);
    files_.swap(files);
    return Status::Ok();
  }
  Result<std::vector<std::string>> ListDirs(const std::string& path) override {
    if (!dirs_.count(path)) return Status::NotFound("fake opendir(" + path + ")");
    std::vector<std::string> out;
    for (const std::string& d : dirs_) {
      if (Parent(d) == path) out.push_back(d.substr(path.size() + 1));
    }
    return out;
  }
  bool Exists(const std::string& path) override {
    return dirs_.count(path) > 0 || files_.count(path) > 0;
  }

 private:
  static std::string Parent(const std::string& p) {
    size_t slash = p.rfind('/');
    return slash == std::string::npos ? "" : p.substr(0, slash);
  }
  std::set<std::string> dirs_;
  std::map<std::string, std::string> files_;
};

}  // namespace hangar::node::testing
