// cgroup v2 backend: one directory per sandbox under <mount>/<root>; cpu.max, memory.max
// (+ memory.swap.max), pids.max, io.max, cgroup.freeze, cgroup.kill.
//
// Delegation: construction enables the wanted controllers in cgroup.subtree_control of the
// mount root, every intermediate directory and Hangar's root, so each sandbox group gets the
// controller files. v2's "no internal processes" rule means none of those directories may
// itself hold processes (except the mount root); if one does, the write fails with EBUSY and
// the error names the directory.
#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "cgroup_internal.h"
#include "file_util.h"
#include "hangar/node/cgroup.h"

namespace hangar::node {
namespace {

using namespace cgroup_internal;  // NOLINT(google-build-using-namespace): private helpers

const std::set<std::string> kWanted = {"cpu", "memory", "pids", "io"};

std::set<std::string> Words(std::string_view text) {
  std::set<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find_first_of(" \n", i);
    if (j == std::string_view::npos) j = text.size();
    if (j > i) out.emplace(text.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// "key value" lines (cgroup.events, cpu.stat) → value of `key`, or NotFound.
Result<uint64_t> KeyedValue(std::string_view text, std::string_view key) {
  for (std::string_view line : SplitLines(text)) {
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ') {
      return ParseUint64(line.substr(key.size() + 1));
    }
  }
  return Status::NotFound("no \"" + std::string(key) + "\" in \"" + std::string(text) + "\"");
}

std::string MaxOr(uint64_t v) { return v == 0 ? "max" : std::to_string(v); }

class CgroupV2 final : public CgroupBackend {
 public:
  CgroupV2(std::string mount, CgroupOptions options, CgroupFs& fs, std::set<std::string> ctl)
      : mount_(std::move(mount)),
        options_(std::move(options)),
        fs_(fs),
        root_(mount_ + "/" + options_.root),
        controllers_(std::move(ctl)) {}

  CgroupMode mode() const override { return CgroupMode::kV2; }
  const std::set<std::string>& controllers() const override { return controllers_; }

  Status Create(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    return fs_.Mkdir(Dir(name));
  }

  Status SetLimits(std::string_view name, const CgroupLimits& limits) override {
    HANGAR_TRY(ValidateCgroupName(name));
    std::string dir = Dir(name);
    if (limits.cpu_millicores != 0 || Has("cpu")) {
      HANGAR_TRY(Require("cpu", "cpu_millicores"));
      std::string quota = "max";
      if (limits.cpu_millicores != 0) {
        HANGAR_ASSIGN_OR_RETURN(uint64_t q, CpuQuotaUsec(limits.cpu_millicores));
        quota = std::to_string(q);
      }
      HANGAR_TRY(fs_.Write(dir + "/cpu.max", quota + " " + std::to_string(kCpuPeriodUsec)));
    }
    if (limits.memory_bytes != 0 || Has("memory")) {
      HANGAR_TRY(Require("memory", "memory_bytes"));
      HANGAR_TRY(fs_.Write(dir + "/memory.max", MaxOr(limits.memory_bytes)));
      // No swap beyond the limit (the v1 backend pins memsw the same way). Hosts without swap
      // accounting have no memory.swap.max.
      if (fs_.Exists(dir + "/memory.swap.max")) {
        HANGAR_TRY(fs_.Write(dir + "/memory.swap.max", limits.memory_bytes == 0 ? "max" : "0"));
      }
    }
    if (limits.pids_max != 0 || Has("pids")) {
      HANGAR_TRY(Require("pids", "pids_max"));
      HANGAR_TRY(fs_.Write(dir + "/pids.max", MaxOr(limits.pids_max)));
    }
    if (!limits.io.empty() || Has("io")) {
      HANGAR_TRY(Require("io", "io"));
      HANGAR_TRY(SetIo(dir, limits.io));
    }
    return Status::Ok();
  }

  Status AddPid(std::string_view name, pid_t pid) override {
    HANGAR_TRY(ValidateCgroupName(name));
    return fs_.Write(Dir(name) + "/cgroup.procs", std::to_string(pid));
  }

  Status Freeze(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    return SetFrozen(Dir(name), true);
  }

  Status Thaw(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    return SetFrozen(Dir(name), false);
  }

  Result<CgroupUsage> ReadUsage(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    std::string dir = Dir(name);
    CgroupUsage u;
    // cpu.stat's usage_usec is a core file: present even without the cpu controller.
    HANGAR_ASSIGN_OR_RETURN(std::string cpu_stat, fs_.Read(dir + "/cpu.stat"));
    HANGAR_ASSIGN_OR_RETURN(u.cpu_usec, KeyedValue(cpu_stat, "usage_usec"));
    if (Has("memory")) {
      HANGAR_ASSIGN_OR_RETURN(u.memory_current, ReadUint(dir + "/memory.current"));
      HANGAR_ASSIGN_OR_RETURN(u.memory_peak, ReadUint(dir + "/memory.peak"));
    }
    if (Has("pids")) {
      HANGAR_ASSIGN_OR_RETURN(u.pids_current, ReadUint(dir + "/pids.current"));
    }
    if (Has("io")) {
      HANGAR_ASSIGN_OR_RETURN(u.io, ReadIoStat(dir));
    }
    return u;
  }

  Result<std::vector<pid_t>> Pids(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> dirs, TreePostOrder(fs_, Dir(name)));
    return PidsIn(fs_, dirs);
  }

  Status KillAndRemove(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    std::string dir = Dir(name);
    HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> dirs, TreePostOrder(fs_, dir));
    if (dirs.empty()) return Status::Ok();
    if (fs_.Exists(dir + "/cgroup.kill")) {
      // Kernel ≥ 5.14: kills the whole subtree atomically with respect to fork.
      HANGAR_TRY(fs_.Write(dir + "/cgroup.kill", "1"));
      HANGAR_TRY(KillUntilEmpty(fs_, dirs, options_.settle_timeout, nullptr));
    } else {
      // Older kernels: freeze so the pid list is complete and stable, then kill each. A
      // v2-frozen task still dies on SIGKILL, so no thaw is needed before it acts.
      (void)SetFrozen(dir, true);
      HANGAR_TRY(KillUntilEmpty(fs_, dirs, options_.settle_timeout, nullptr));
    }
    return RemoveDirs(fs_, dirs, options_.settle_timeout);
  }

  Status Rename(std::string_view from, std::string_view to) override {
    HANGAR_TRY(ValidateCgroupName(from));
    HANGAR_TRY(ValidateCgroupName(to));
    return fs_.Rename(Dir(from), Dir(to));
  }

  // io.max and the memory controller attribute writeback to the dirtying group: no root rule.
  Status SetRootDeviceLimit(const IoDeviceLimit&) override { return Status::Ok(); }
  Result<std::vector<IoDeviceLimit>> RootDeviceLimits() override {
    return std::vector<IoDeviceLimit>{};
  }

  Result<std::vector<std::string>> List() override {
    if (!fs_.Exists(root_)) return std::vector<std::string>{};
    return fs_.ListDirs(root_);
  }

  Status RemoveRoot() override {
    std::string rel = options_.root;
    while (!rel.empty()) {
      Status s = fs_.Rmdir(mount_ + "/" + rel);
      if (!s.ok() && s.code() != Code::kNotFound) return s;
      size_t slash = rel.rfind('/');
      rel = slash == std::string::npos ? "" : rel.substr(0, slash);
    }
    return Status::Ok();
  }

  std::vector<std::string> Paths(std::string_view name) const override { return {Dir(name)}; }

 private:
  std::string Dir(std::string_view name) const { return root_ + "/" + std::string(name); }
  bool Has(const std::string& c) const { return controllers_.count(c) > 0; }

  Status Require(const std::string& controller, std::string_view limit) const {
    if (Has(controller)) return Status::Ok();
    return Status::FailedPrecondition("cannot enforce " + std::string(limit) + ": controller " +
                                      controller + " is not available under " + root_);
  }

  Result<uint64_t> ReadUint(const std::string& path) {
    HANGAR_ASSIGN_OR_RETURN(std::string text, fs_.Read(path));
    auto v = ParseUint64(text);
    if (!v.ok()) return v.status().With(path);
    return v;
  }

  Status SetFrozen(const std::string& dir, bool frozen) {
    HANGAR_TRY(fs_.Write(dir + "/cgroup.freeze", frozen ? "1" : "0"));
    return WaitFor(
        options_.settle_timeout,
        [&]() -> Result<bool> {
          HANGAR_ASSIGN_OR_RETURN(std::string events, fs_.Read(dir + "/cgroup.events"));
          HANGAR_ASSIGN_OR_RETURN(uint64_t f, KeyedValue(events, "frozen"));
          return (f == 1) == frozen;
        },
        std::string(frozen ? "freeze" : "thaw") + " of " + dir);
  }

  Status SetIo(const std::string& dir, const std::vector<IoDeviceLimit>& io) {
    std::string file = dir + "/io.max";
    HANGAR_ASSIGN_OR_RETURN(std::string current, fs_.Read(file));
    std::set<std::string> wanted;
    for (const IoDeviceLimit& d : io) {
      std::string dev = std::to_string(d.major) + ":" + std::to_string(d.minor);
      wanted.insert(dev);
      HANGAR_TRY(fs_.Write(file, dev + " riops=" + MaxOr(d.riops) + " wiops=" + MaxOr(d.wiops) +
                                     " rbps=" + MaxOr(d.rbps) + " wbps=" + MaxOr(d.wbps)));
    }
    // Devices no longer listed lose their limits, so one call states the whole I/O policy.
    for (std::string_view line : SplitLines(current)) {
      std::string dev(line.substr(0, line.find(' ')));
      if (!wanted.count(dev)) {
        HANGAR_TRY(fs_.Write(file, dev + " riops=max wiops=max rbps=max wbps=max"));
      }
    }
    return Status::Ok();
  }

  // io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N" per device.
  Result<std::vector<IoDeviceUsage>> ReadIoStat(const std::string& dir) {
    HANGAR_ASSIGN_OR_RETURN(std::string text, fs_.Read(dir + "/io.stat"));
    std::vector<IoDeviceUsage> out;
    for (std::string_view line : SplitLines(text)) {
      std::set<std::string> words = Words(line);
      if (words.empty()) continue;
      IoDeviceUsage u;
      HANGAR_ASSIGN_OR_RETURN(auto dev, ParseDevice(line.substr(0, line.find(' '))));
      u.major = dev.first;
      u.minor = dev.second;
      for (const std::string& w : words) {
        size_t eq = w.find('=');
        if (eq == std::string::npos) continue;
        std::string key = w.substr(0, eq);
        HANGAR_ASSIGN_OR_RETURN(uint64_t v, ParseUint64(std::string_view(w).substr(eq + 1)));
        if (key == "rbytes") u.rbytes = v;
        if (key == "wbytes") u.wbytes = v;
        if (key == "rios") u.rios = v;
        if (key == "wios") u.wios = v;
      }
      out.push_back(u);
    }
    std::sort(out.begin(), out.end(), [](const IoDeviceUsage& a, const IoDeviceUsage& b) {
      return std::tie(a.major, a.minor) < std::tie(b.major, b.minor);
    });
    return out;
  }

  std::string mount_;
  CgroupOptions options_;
  CgroupFs& fs_;
  std::string root_;
  std::set<std::string> controllers_;
};

// Enables `wanted` in <dir>/cgroup.subtree_control, writing only what is missing.
Status EnableControllers(CgroupFs& fs, const std::string& dir,
                         const std::set<std::string>& wanted) {
  HANGAR_ASSIGN_OR_RETURN(std::string current, fs.Read(dir + "/cgroup.subtree_control"));
  std::set<std::string> enabled = Words(current);
  std::string add;
  for (const std::string& c : wanted) {
    if (!enabled.count(c)) add += (add.empty() ? "+" : " +") + c;
  }
  if (add.empty()) return Status::Ok();
  Status s = fs.Write(dir + "/cgroup.subtree_control", add);
  if (s.code() == Code::kUnavailable) {
    return s.With("delegating controllers (" + dir +
                  " holds processes; v2 allows controllers only in cgroups without them)");
  }
  return s;
}

}  // namespace

Result<CgroupBackendPtr> MakeCgroupV2Backend(std::string v2_mount, CgroupOptions options,
                                             CgroupFs& fs) {
  if (options.root.empty() || options.root.front() == '/' ||
      options.root.find("..") != std::string::npos) {
    return Status::InvalidArgument("cgroup root must be a relative path without ..: \"" +
                                   options.root + "\"");
  }
  HANGAR_ASSIGN_OR_RETURN(std::string avail_text, fs.Read(v2_mount + "/cgroup.controllers"));
  std::set<std::string> available = Words(avail_text);
  std::string missing;
  for (const std::string& c : options.v2_required) {
    if (!available.count(c)) missing += (missing.empty() ? "" : ",") + c;
  }
  if (!missing.empty()) {
    return Status::FailedPrecondition("cgroup v2 controllers " + missing + " not available in " +
                                      v2_mount + "/cgroup.controllers (\"" + avail_text + "\")");
  }
  std::set<std::string> enable;
  for (const std::string& c : kWanted) {
    if (available.count(c)) enable.insert(c);
  }
  // Delegate down every level: the mount root, each intermediate directory, Hangar's root.
  std::string dir = v2_mount;
  HANGAR_TRY(EnableControllers(fs, dir, enable));
  size_t start = 0;
  while (start < options.root.size()) {
    size_t slash = options.root.find('/', start);
    std::string part = options.root.substr(start, slash - start);
    start = slash == std::string::npos ? options.root.size() : slash + 1;
    if (part.empty()) continue;
    dir += "/" + part;
    Status s = fs.Mkdir(dir);
    if (!s.ok() && s.code() != Code::kAlreadyExists) return s;
    HANGAR_TRY(EnableControllers(fs, dir, enable));
  }
  std::set<std::string> controllers = enable;
  if (fs.Exists(dir + "/cgroup.freeze")) controllers.insert("freezer");
  return CgroupBackendPtr(new CgroupV2(std::move(v2_mount), std::move(options), fs, controllers));
}

}  // namespace hangar::node
