// cgroup v1 backend: one directory per sandbox in each of the cpu, cpuacct, memory, pids,
// blkio and freezer hierarchies (co-mounted controllers share one directory).
//
// Known limits of v1 (see README): a sandbox group's blkio throttle does not see buffered
// writeback (issued from the root group): SetRootDeviceLimit puts the same rule on the root
// group for the sandbox's own loop device; there is no cgroup.kill, so teardown
// freezes, kills every listed pid, thaws and waits.
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

constexpr const char* kThrottleFiles[4] = {
    "blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device",
    "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"};

class CgroupV1 final : public CgroupBackend {
 public:
  CgroupV1(std::map<std::string, std::string> mounts, CgroupOptions options, CgroupFs& fs)
      : mounts_(std::move(mounts)), options_(std::move(options)), fs_(fs) {
    for (const auto& [controller, mount] : mounts_) {
      if (IsUsed(controller)) roots_.insert(mount + "/" + options_.root);
    }
  }

  CgroupMode mode() const override { return CgroupMode::kV1; }
  const std::set<std::string>& controllers() const override { return controllers_; }

  Status Create(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    for (const auto& [controller, mount] : mounts_) {
      if (IsUsed(controller)) HANGAR_TRY(MkdirBelow(fs_, mount, options_.root));
    }
    std::vector<std::string> created;
    for (const std::string& dir : Paths(name)) {
      Status s = fs_.Mkdir(dir);
      if (!s.ok()) {
        // Roll back: nothing of a failed Create stays behind. A leftover of a crashed run
        // (AlreadyExists) is not ours to remove here; List() reports it for reconciliation.
        for (auto it = created.rbegin(); it != created.rend(); ++it) (void)fs_.Rmdir(*it);
        return s;
      }
      created.push_back(dir);
    }
    return Status::Ok();
  }

  Status SetLimits(std::string_view name, const CgroupLimits& limits) override {
    HANGAR_TRY(ValidateCgroupName(name));
    HANGAR_TRY(SetCpu(name, limits.cpu_millicores));
    HANGAR_TRY(SetMemory(name, limits.memory_bytes));
    HANGAR_TRY(fs_.Write(Dir("pids", name) + "/pids.max",
                         limits.pids_max == 0 ? "max" : std::to_string(limits.pids_max)));
    return SetIo(name, limits.io);
  }

  Status AddPid(std::string_view name, pid_t pid) override {
    HANGAR_TRY(ValidateCgroupName(name));
    for (const std::string& dir : Paths(name)) {
      HANGAR_TRY(fs_.Write(dir + "/cgroup.procs", std::to_string(pid)));
    }
    return Status::Ok();
  }

  Status Freeze(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    return FreezeDir(Dir("freezer", name));
  }

  Status Thaw(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    return fs_.Write(Dir("freezer", name) + "/freezer.state", "THAWED");
  }

  Result<CgroupUsage> ReadUsage(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    CgroupUsage u;
    HANGAR_ASSIGN_OR_RETURN(uint64_t cpu_ns, ReadUint(Dir("cpuacct", name) + "/cpuacct.usage"));
    u.cpu_usec = cpu_ns / 1000;
    std::string mem = Dir("memory", name);
    HANGAR_ASSIGN_OR_RETURN(u.memory_current, ReadUint(mem + "/memory.usage_in_bytes"));
    HANGAR_ASSIGN_OR_RETURN(u.memory_peak, ReadUint(mem + "/memory.max_usage_in_bytes"));
    HANGAR_ASSIGN_OR_RETURN(u.pids_current, ReadUint(Dir("pids", name) + "/pids.current"));
    HANGAR_ASSIGN_OR_RETURN(u.io, ReadIo(name));
    return u;
  }

  Result<std::vector<pid_t>> Pids(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    std::vector<std::string> dirs;
    for (const std::string& p : Paths(name)) {
      HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> tree, TreePostOrder(fs_, p));
      dirs.insert(dirs.end(), tree.begin(), tree.end());
    }
    return PidsIn(fs_, dirs);
  }

  Status KillAndRemove(std::string_view name) override {
    HANGAR_TRY(ValidateCgroupName(name));
    std::vector<std::string> dirs;  // every hierarchy, children before parents
    for (const std::string& p : Paths(name)) {
      HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> tree, TreePostOrder(fs_, p));
      dirs.insert(dirs.end(), tree.begin(), tree.end());
    }
    if (dirs.empty()) return Status::Ok();
    std::string freezer = Dir("freezer", name);
    bool has_freezer = fs_.Exists(freezer + "/freezer.state");
    // Frozen tasks cannot fork and cannot exit, so the pid list read next is complete and no
    // pid in it can be recycled before kill() reaches it. Freezing can stall on a task in
    // uninterruptible sleep; killing proceeds regardless.
    if (has_freezer) (void)FreezeDir(freezer);
    HANGAR_TRY(KillUntilEmpty(fs_, dirs, options_.settle_timeout, [&]() -> Status {
      // v1-frozen tasks act on SIGKILL only once thawed.
      return has_freezer ? fs_.Write(freezer + "/freezer.state", "THAWED") : Status::Ok();
    }));
    return RemoveDirs(fs_, dirs, options_.settle_timeout);
  }

  Status Rename(std::string_view from, std::string_view to) override {
    HANGAR_TRY(ValidateCgroupName(from));
    HANGAR_TRY(ValidateCgroupName(to));
    std::vector<std::string> done;
    for (const std::string& root : roots_) {
      std::string a = root + "/" + std::string(from), b = root + "/" + std::string(to);
      Status s = fs_.Rename(a, b);
      if (!s.ok()) {
        for (const std::string& r : done) {
          (void)fs_.Rename(r + "/" + std::string(to), r + "/" + std::string(from));
        }
        return s;
      }
      done.push_back(root);
    }
    return Status::Ok();
  }

  Status SetRootDeviceLimit(const IoDeviceLimit& d) override {
    const std::string root = mounts_.at("blkio");
    const std::string dev = std::to_string(d.major) + ":" + std::to_string(d.minor);
    const uint64_t values[4] = {d.riops, d.wiops, d.rbps, d.wbps};
    Status first;
    for (int i = 0; i < 4; ++i) {
      // Every file is written even if one fails, so a clear never leaves half a rule.
      Status s = fs_.Write(root + "/" + kThrottleFiles[i], dev + " " + std::to_string(values[i]));
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

  Result<std::vector<IoDeviceLimit>> RootDeviceLimits() override {
    const std::string root = mounts_.at("blkio");
    std::map<std::pair<uint32_t, uint32_t>, IoDeviceLimit> by_dev;
    for (int i = 0; i < 4; ++i) {
      HANGAR_ASSIGN_OR_RETURN(std::string text, fs_.Read(root + "/" + kThrottleFiles[i]));
      for (std::string_view line : SplitLines(text)) {
        size_t sp = line.find(' ');
        if (sp == std::string_view::npos) continue;
        auto dev = ParseDevice(line.substr(0, sp));
        auto v = ParseUint64(line.substr(sp + 1));
        if (!dev.ok() || !v.ok()) continue;
        IoDeviceLimit& l = by_dev[*dev];
        l.major = dev->first;
        l.minor = dev->second;
        uint64_t* fields[4] = {&l.riops, &l.wiops, &l.rbps, &l.wbps};
        *fields[i] = *v;
      }
    }
    std::vector<IoDeviceLimit> out;
    for (auto& [dev, l] : by_dev) out.push_back(l);
    return out;
  }

  Result<std::vector<std::string>> List() override {
    std::set<std::string> names;
    for (const std::string& root : roots_) {
      if (!fs_.Exists(root)) continue;
      HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> sub, fs_.ListDirs(root));
      names.insert(sub.begin(), sub.end());
    }
    return std::vector<std::string>(names.begin(), names.end());
  }

  Status RemoveRoot() override {
    for (const auto& [controller, mount] : mounts_) {
      if (!IsUsed(controller)) continue;
      // Remove the root's own components from the deepest up; stop at the first in use.
      std::string rel = options_.root;
      while (!rel.empty()) {
        Status s = fs_.Rmdir(mount + "/" + rel);
        if (!s.ok() && s.code() != Code::kNotFound) return s;
        size_t slash = rel.rfind('/');
        rel = slash == std::string::npos ? "" : rel.substr(0, slash);
      }
    }
    return Status::Ok();
  }

  std::vector<std::string> Paths(std::string_view name) const override {
    std::vector<std::string> out;
    for (const std::string& root : roots_) out.push_back(root + "/" + std::string(name));
    return out;
  }

 private:
  static bool IsUsed(const std::string& controller) {
    static const std::set<std::string> kUsed = {"cpu",  "cpuacct", "memory",
                                                "pids", "blkio",   "freezer"};
    return kUsed.count(controller) > 0;
  }

  std::string Dir(const std::string& controller, std::string_view name) const {
    return mounts_.at(controller) + "/" + options_.root + "/" + std::string(name);
  }

  Result<uint64_t> ReadUint(const std::string& path) {
    HANGAR_ASSIGN_OR_RETURN(std::string text, fs_.Read(path));
    auto v = ParseUint64(text);
    if (!v.ok()) return v.status().With(path);
    return v;
  }

  Status FreezeDir(const std::string& dir) {
    HANGAR_TRY(fs_.Write(dir + "/freezer.state", "FROZEN"));
    return WaitFor(
        options_.settle_timeout,
        [&]() -> Result<bool> {
          HANGAR_ASSIGN_OR_RETURN(std::string state, fs_.Read(dir + "/freezer.state"));
          return state.rfind("FROZEN", 0) == 0;
        },
        "freeze of " + dir);
  }

  Status SetCpu(std::string_view name, uint64_t millicores) {
    std::string dir = Dir("cpu", name);
    HANGAR_TRY(fs_.Write(dir + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUsec)));
    if (millicores == 0) return fs_.Write(dir + "/cpu.cfs_quota_us", "-1");
    HANGAR_ASSIGN_OR_RETURN(uint64_t quota, CpuQuotaUsec(millicores));
    return fs_.Write(dir + "/cpu.cfs_quota_us", std::to_string(quota));
  }

  Status SetMemory(std::string_view name, uint64_t bytes) {
    std::string dir = Dir("memory", name);
    std::string value = bytes == 0 ? "-1" : std::to_string(bytes);
    std::string memsw = dir + "/memory.memsw.limit_in_bytes";
    // memsw (memory+swap) must stay >= the memory limit at every step: lift it first, then set
    // memory, then pin memsw to the same value so the sandbox cannot spill into swap.
    bool has_memsw = fs_.Exists(memsw);
    if (has_memsw) HANGAR_TRY(fs_.Write(memsw, "-1"));
    HANGAR_TRY(fs_.Write(dir + "/memory.limit_in_bytes", value));
    if (has_memsw) HANGAR_TRY(fs_.Write(memsw, value));
    return Status::Ok();
  }

  Status SetIo(std::string_view name, const std::vector<IoDeviceLimit>& io) {
    std::string dir = Dir("blkio", name);
    for (int i = 0; i < 4; ++i) {
      std::string file = dir + "/" + kThrottleFiles[i];
      // Rules for devices no longer listed are removed (value 0), so one call states the
      // whole I/O policy.
      HANGAR_ASSIGN_OR_RETURN(std::string current, fs_.Read(file));
      std::set<std::string> wanted;
      for (const IoDeviceLimit& d : io) {
        std::string dev = std::to_string(d.major) + ":" + std::to_string(d.minor);
        const uint64_t values[4] = {d.riops, d.wiops, d.rbps, d.wbps};
        wanted.insert(dev);
        HANGAR_TRY(fs_.Write(file, dev + " " + std::to_string(values[i])));
      }
      for (std::string_view line : SplitLines(current)) {
        std::string dev(line.substr(0, line.find(' ')));
        if (!wanted.count(dev)) HANGAR_TRY(fs_.Write(file, dev + " 0"));
      }
    }
    return Status::Ok();
  }

  // blkio.throttle.io_serviced / io_service_bytes: "MAJ:MIN Read N" lines, then "Total N".
  Result<std::vector<IoDeviceUsage>> ReadIo(std::string_view name) {
    std::map<std::pair<uint32_t, uint32_t>, IoDeviceUsage> by_dev;
    std::string dir = Dir("blkio", name);
    for (bool bytes : {false, true}) {
      std::string file = dir + (bytes ? "/blkio.throttle.io_service_bytes_recursive"
                                      : "/blkio.throttle.io_serviced_recursive");
      HANGAR_ASSIGN_OR_RETURN(std::string text, fs_.Read(file));
      for (std::string_view line : SplitLines(text)) {
        size_t sp1 = line.find(' ');
        size_t sp2 = line.find(' ', sp1 + 1);
        if (sp1 == std::string_view::npos || sp2 == std::string_view::npos) continue;  // Total
        auto dev = ParseDevice(line.substr(0, sp1));
        if (!dev.ok()) continue;
        std::string_view op = line.substr(sp1 + 1, sp2 - sp1 - 1);
        HANGAR_ASSIGN_OR_RETURN(uint64_t v, ParseUint64(line.substr(sp2 + 1)));
        IoDeviceUsage& u = by_dev[*dev];
        u.major = dev->first;
        u.minor = dev->second;
        if (op == "Read") (bytes ? u.rbytes : u.rios) = v;
        if (op == "Write") (bytes ? u.wbytes : u.wios) = v;
      }
    }
    std::vector<IoDeviceUsage> out;
    for (auto& [dev, u] : by_dev) out.push_back(u);
    return out;
  }

  std::map<std::string, std::string> mounts_;
  CgroupOptions options_;
  CgroupFs& fs_;
  std::set<std::string> roots_;  // distinct <mount>/<root> directories
  const std::set<std::string> controllers_ = {"cpu", "memory", "pids", "io", "freezer"};
};

}  // namespace

Result<CgroupBackendPtr> MakeCgroupV1Backend(std::map<std::string, std::string> v1_mounts,
                                             CgroupOptions options, CgroupFs& fs) {
  for (const char* c : {"cpu", "cpuacct", "memory", "pids", "blkio", "freezer"}) {
    if (!v1_mounts.count(c)) {
      return Status::FailedPrecondition(std::string("cgroup v1 hierarchy for ") + c +
                                        " is not mounted");
    }
  }
  if (options.root.empty() || options.root.front() == '/' ||
      options.root.find("..") != std::string::npos) {
    return Status::InvalidArgument("cgroup root must be a relative path without ..: \"" +
                                   options.root + "\"");
  }
  return CgroupBackendPtr(new CgroupV1(std::move(v1_mounts), std::move(options), fs));
}

}  // namespace hangar::node
