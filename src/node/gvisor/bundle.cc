#include "hangar/gvisor/bundle.h"

#include <fmt/format.h>

#include "hangar/node/caps.h"

namespace hangar::gvisor {

namespace {

using Json = nlohmann::json;

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 40) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

Status CheckAbsolute(const char* what, const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return Status::InvalidArgument(
        fmt::format("{} must be an absolute path, got '{}'", what, path));
  }
  return Status::Ok();
}

Json Capabilities() {
  Json names = Json::array();
  const node::CapMask mask = node::DefaultSandboxCapabilities();
  for (int cap = 0; cap < 64; ++cap) {
    if (mask & (node::CapMask{1} << cap)) names.push_back(node::CapabilityName(cap));
  }
  return Json{{"bounding", names},
              {"effective", names},
              {"permitted", names},
              {"inheritable", Json::array()},
              {"ambient", Json::array()}};
}

Json Mount(const std::string& dest, const std::string& type, const std::string& source,
           std::vector<std::string> options) {
  return Json{{"destination", dest}, {"type", type}, {"source", source}, {"options", options}};
}

Json Throttle(uint32_t major, uint32_t minor, int64_t rate) {
  return Json{{"major", major}, {"minor", minor}, {"rate", rate}};
}

}  // namespace

Result<nlohmann::json> MakeOciConfig(const BundleSpec& b) {
  const node::SandboxSpec& s = b.sandbox;
  if (!ValidId(s.id)) {
    return Status::InvalidArgument(
        fmt::format("sandbox id '{}' must be 1-40 characters of [a-z0-9]", s.id));
  }
  HANGAR_TRY(CheckAbsolute("rootfs", b.rootfs));
  HANGAR_TRY(CheckAbsolute("init_host_path", b.init_host_path));
  HANGAR_TRY(CheckAbsolute("socket_dir", b.socket_dir));
  HANGAR_TRY(CheckAbsolute("cgroups_path", b.cgroups_path));
  if (b.argv.empty() || b.argv[0].empty()) return Status::InvalidArgument("argv must not be empty");
  const node::Resources& r = s.resources;
  if (r.memory_mb <= 0 || r.cpu_millis <= 0 || r.pids <= 0) {
    return Status::InvalidArgument(
        fmt::format("resources must be positive (cpu_millis {}, memory_mb {}, pids {})",
                    r.cpu_millis, r.memory_mb, r.pids));
  }

  Json env = Json::array();
  std::map<std::string, std::string> vars = {
      {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}};
  for (const auto& [k, v] : s.env) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos) {
      return Status::InvalidArgument(fmt::format("env name '{}' is invalid", k));
    }
    vars[k] = v;
  }
  for (const auto& [k, v] : vars) env.push_back(k + "=" + v);

  const int64_t memory = r.memory_mb << 20;
  Json process = {
      {"terminal", false},
      {"user", {{"uid", 0}, {"gid", 0}}},
      {"args", b.argv},
      {"env", env},
      {"cwd", "/"},
      {"capabilities", Capabilities()},
      {"rlimits", Json::array({{{"type", "RLIMIT_NOFILE"}, {"hard", 1048576}, {"soft", 1048576}}})},
      {"noNewPrivileges", true},
  };

  Json mounts = Json::array({
      Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
      Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
      Mount("/dev/pts", "devpts", "devpts",
            {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}),
      Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
      Mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
      Mount("/tmp", "tmpfs", "tmpfs",
            {"nosuid", "nodev", "mode=1777", fmt::format("size={}", memory / 2)}),
      Mount(kInitPathInside, "bind", b.init_host_path, {"rbind", "ro", "nosuid", "nodev"}),
      Mount(kSocketDirInside, "bind", b.socket_dir, {"rbind", "rw", "nosuid", "nodev", "noexec"}),
      Mount(kInternalSocketDirInside, "tmpfs", "tmpfs",
            {"nosuid", "nodev", "noexec", "mode=700", "size=64k"}),
  });

  Json resources = {
      {"memory", {{"limit", memory}, {"swap", memory}}},
      {"cpu", {{"quota", r.cpu_millis * 100}, {"period", 100000}}},
      {"pids", {{"limit", r.pids}}},
  };
  if (b.disk_major != 0 || b.disk_minor != 0) {
    Json io = Json::object();
    auto add = [&](const char* key, int64_t rate) {
      if (rate > 0) io[key] = Json::array({Throttle(b.disk_major, b.disk_minor, rate)});
    };
    add("throttleReadIOPSDevice", r.read_iops);
    add("throttleWriteIOPSDevice", r.write_iops);
    add("throttleReadBpsDevice", r.read_bps);
    add("throttleWriteBpsDevice", r.write_bps);
    if (!io.empty()) resources["blockIO"] = io;
  }

  Json linux_ = {
      {"namespaces", Json::array({{{"type", "pid"}},
                                  {{"type", "ipc"}},
                                  {{"type", "uts"}},
                                  {{"type", "mount"}},
                                  {{"type", "network"}}})},
      {"cgroupsPath", b.cgroups_path},
      {"resources", resources},
      {"maskedPaths",
       {"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
        "/sys/devices/virtual/powercap"}},
      {"readonlyPaths", {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}},
  };

  return Json{
      {"ociVersion", "1.0.2"},
      {"process", process},
      {"root", {{"path", b.rootfs}, {"readonly", false}}},
      {"hostname", s.id},
      {"mounts", mounts},
      {"linux", linux_},
  };
}

}  // namespace hangar::gvisor
