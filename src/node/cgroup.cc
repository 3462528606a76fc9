// Layout detection, shared helpers and the RAII owner; the backends are in cgroup_v1.cc and
// cgroup_v2.cc.
#include "hangar/node/cgroup.h"

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <set>
#include <string>
#include <thread>

#include "cgroup_internal.h"
#include "file_util.h"
#include "hangar/base/log.h"

namespace hangar::node {
namespace {

// Controllers the v1 backend drives.
constexpr std::string_view kV1Required[] = {"cpu", "cpuacct", "memory", "pids", "blkio", "freezer"};
// Every v1 controller name the kernel may list in a cgroup mount's super options.
const std::set<std::string_view> kV1Known = {
    "cpu",   "cpuacct",    "cpuset",   "memory",  "devices", "freezer", "net_cls",
    "blkio", "perf_event", "net_prio", "hugetlb", "pids",    "rdma",    "misc"};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 4, v, 8);
      if (ec == std::errc() && p == s.data() + i + 4) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

}  // namespace

std::string_view CgroupModeName(CgroupMode mode) { return mode == CgroupMode::kV1 ? "v1" : "v2"; }

Result<CgroupLayout> ParseCgroupLayout(std::string_view mountinfo) {
  CgroupLayout layout;
  for (std::string_view line : SplitLines(mountinfo)) {
    // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
    std::vector<std::string_view> f = Split(line, ' ');
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
    std::string_view fstype = dash[1];
    std::string mount_point = Unescape(f[4]);
    if (fstype == "cgroup2") {
      if (layout.v2_mount.empty()) layout.v2_mount = mount_point;
    } else if (fstype == "cgroup") {
      for (std::string_view opt : Split(dash[3], ',')) {
        if (kV1Known.count(opt) && !layout.v1_mounts.count(std::string(opt))) {
          layout.v1_mounts.emplace(std::string(opt), mount_point);
        }
      }
    }
  }
  if (layout.v1_mounts.empty()) {
    if (layout.v2_mount.empty()) {
      return Status::FailedPrecondition("no cgroup or cgroup2 filesystem in mountinfo");
    }
    layout.mode = CgroupMode::kV2;
    return layout;
  }
  std::string missing;
  for (std::string_view c : kV1Required) {
    if (!layout.v1_mounts.count(std::string(c))) {
      missing += missing.empty() ? "" : ",";
      missing += c;
    }
  }
  if (!missing.empty()) {
    return Status::FailedPrecondition(
        "cgroup v1 hierarchies are mounted but lack controllers " + missing +
        " (a layout that splits controllers between v1 and v2 is not supported)");
  }
  layout.mode = CgroupMode::kV1;
  return layout;
}

Result<CgroupLayout> DetectCgroupLayout() {
  HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile("/proc/self/mountinfo"));
  return ParseCgroupLayout(text);
}

Status ValidateCgroupName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 64 && name != "." && name != "..";
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '.' || c == '-');
  }
  if (!ok) {
    return Status::InvalidArgument("invalid cgroup name \"" + std::string(name) +
                                   "\": want [A-Za-z0-9_.-]{1,64}, not . or ..");
  }
  return Status::Ok();
}

Result<CgroupBackendPtr> MakeCgroupBackend(const CgroupLayout& layout, CgroupOptions options,
                                           CgroupFs& fs) {
  if (layout.mode == CgroupMode::kV1) {
    return MakeCgroupV1Backend(layout.v1_mounts, std::move(options), fs);
  }
  return MakeCgroupV2Backend(layout.v2_mount, std::move(options), fs);
}

// ---- ScopedCgroup ----

Result<ScopedCgroup> ScopedCgroup::Create(CgroupBackend& backend, std::string name) {
  HANGAR_TRY(backend.Create(name));
  return ScopedCgroup(&backend, std::move(name));
}

ScopedCgroup::~ScopedCgroup() {
  if (backend_ == nullptr) return;
  Status s = backend_->KillAndRemove(name_);
  if (!s.ok()) {
    log::Error("cgroup left behind", {{"name", name_}, {"error", s.ToString()}});
  }
}

Status ScopedCgroup::Remove() {
  if (backend_ == nullptr) return Status::Ok();
  Status s = backend_->KillAndRemove(name_);
  if (s.ok()) backend_ = nullptr;
  return s;
}

std::string ScopedCgroup::Release() {
  backend_ = nullptr;
  return std::move(name_);
}

// ---- helpers shared by both backends ----

namespace cgroup_internal {

Result<uint64_t> CpuQuotaUsec(uint64_t millicores) {
  // millicores * period / 1000, refusing overflow (more than ~1.8e14 CPUs is not a request).
  if (millicores > UINT64_MAX / kCpuPeriodUsec) {
    return Status::InvalidArgument("cpu_millicores too large: " + std::to_string(millicores));
  }
  uint64_t quota = millicores * kCpuPeriodUsec / 1000;
  if (quota < kMinCpuQuotaUsec) {
    return Status::InvalidArgument("cpu_millicores " + std::to_string(millicores) +
                                   " is below the kernel minimum of 10 (1 ms per 100 ms)");
  }
  return quota;
}

Status WaitFor(std::chrono::milliseconds timeout, const std::function<Result<bool>()>& done,
               std::string_view what) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    HANGAR_ASSIGN_OR_RETURN(bool ok, done());
    if (ok) return Status::Ok();
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::DeadlineExceeded(std::string(what) + " did not happen within " +
                                      std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Result<std::vector<pid_t>> ParsePids(std::string_view text) {
  std::vector<pid_t> pids;
  for (std::string_view line : SplitLines(text)) {
    HANGAR_ASSIGN_OR_RETURN(uint64_t v, ParseUint64(line));
    pids.push_back(static_cast<pid_t>(v));
  }
  return pids;
}

Result<std::vector<std::string>> TreePostOrder(CgroupFs& fs, const std::string& dir) {
  std::vector<std::string> out;
  if (!fs.Exists(dir)) return out;
  auto children = fs.ListDirs(dir);
  if (!children.ok()) {
    if (children.status().code() == Code::kNotFound) return out;  // removed meanwhile
    return children.status();
  }
  for (const std::string& c : *children) {
    HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> sub, TreePostOrder(fs, dir + "/" + c));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  out.push_back(dir);
  return out;
}

Result<std::vector<pid_t>> PidsIn(CgroupFs& fs, const std::vector<std::string>& dirs) {
  std::set<pid_t> all;
  for (const std::string& d : dirs) {
    auto text = fs.Read(d + "/cgroup.procs");
    if (!text.ok()) {
      if (text.status().code() == Code::kNotFound) continue;
      return text.status();
    }
    HANGAR_ASSIGN_OR_RETURN(std::vector<pid_t> pids, ParsePids(*text));
    all.insert(pids.begin(), pids.end());
  }
  return std::vector<pid_t>(all.begin(), all.end());
}

Status KillUntilEmpty(CgroupFs& fs, const std::vector<std::string>& dirs,
                      std::chrono::milliseconds timeout,
                      const std::function<Status()>& after_first_kill) {
  bool first = true;
  std::vector<pid_t> last;
  Status waited = WaitFor(
      timeout,
      [&]() -> Result<bool> {
        HANGAR_ASSIGN_OR_RETURN(last, PidsIn(fs, dirs));
        for (pid_t pid : last) {
          if (::kill(pid, SIGKILL) != 0 && errno != ESRCH) {
            return Status::FromErrno(errno, "kill(" + std::to_string(pid) + ", SIGKILL)");
          }
        }
        if (first) {
          first = false;
          if (after_first_kill) HANGAR_TRY(after_first_kill());
        }
        return last.empty();
      },
      "all tasks leaving " + (dirs.empty() ? std::string() : dirs.back()));
  if (!waited.ok() && waited.code() == Code::kDeadlineExceeded) {
    std::string pids;
    for (pid_t p : last) pids += " " + std::to_string(p);
    return waited.With("tasks still present:" + pids);
  }
  return waited;
}

Status RemoveDirs(CgroupFs& fs, const std::vector<std::string>& dirs,
                  std::chrono::milliseconds timeout) {
  for (const std::string& d : dirs) {
    Status removed = WaitFor(
        timeout,
        [&]() -> Result<bool> {
          Status s = fs.Rmdir(d);
          if (s.ok() || s.code() == Code::kNotFound) return true;
          if (s.code() == Code::kUnavailable) return false;  // EBUSY: a task is still leaving
          return s;
        },
        "rmdir(" + d + ")");
    HANGAR_TRY(removed);
  }
  return Status::Ok();
}

Status MkdirBelow(CgroupFs& fs, const std::string& mount, const std::string& rel) {
  std::string path = mount;
  for (std::string_view part : Split(rel, '/')) {
    if (part.empty()) continue;
    path += "/";
    path += part;
    Status s = fs.Mkdir(path);
    if (!s.ok() && s.code() != Code::kAlreadyExists) return s;
  }
  return Status::Ok();
}

Result<std::pair<uint32_t, uint32_t>> ParseDevice(std::string_view s) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) {
    return Status::InvalidArgument("not a MAJ:MIN device: \"" + std::string(s) + "\"");
  }
  HANGAR_ASSIGN_OR_RETURN(uint64_t major, ParseUint64(s.substr(0, colon)));
  HANGAR_ASSIGN_OR_RETURN(uint64_t minor, ParseUint64(s.substr(colon + 1)));
  return std::make_pair(static_cast<uint32_t>(major), static_cast<uint32_t>(minor));
}

}  // namespace cgroup_internal
}  // namespace hangar::node
