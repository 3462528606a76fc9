#include "node_role.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/statvfs.h>

#include <condition_variable>
#include <mutex>
#include <optional>

#include "hangar/api/client.h"
#include "hangar/api/json.h"
#include "hangar/base/base64.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "hangar/control/api.h"
#include "hangar/e2b/proxy.h"
#include "hangar/envd/client.h"
#include "hangar/gvisor/gvisor_driver.h"
#include "hangar/microvm/microvm_driver.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/ns_driver.h"
#include "hangar/node/seccomp.h"
#include "hangar/node/supervisor.h"
#include "hangar/node/userns.h"
#include "hangar/storage/template_store.h"

namespace hangar::daemon {

void AddNodeOptions(ConfigSchema& s) {
  s.Add({.key = "node.cgroup_root",
         .default_value = "hangar",
         .help = "cgroup directory (in every hierarchy) that holds the sandboxes' groups"});
  s.Add({.key = "node.uid_base",
         .type = OptionType::kInt,
         .default_value = "100000",
         .help = "first host uid/gid of the sandboxes' id ranges (65536 ids each)",
         .min = 65536,
         .max = int64_t{1} << 31});
  s.Add({.key = "node.uid_slots",
         .type = OptionType::kInt,
         .default_value = "4096",
         .help = "number of id ranges, i.e. the most sandboxes the node can hold",
         .min = 1,
         .max = 30000});
  s.Add({.key = "node.disk_pool",
         .default_value = "1024:2",
         .help = "pre-formatted sandbox disks to keep ready: size_mb:count[,size_mb:count...]"});
  s.Add({.key = "node.envd_path",
         .default_value = "",
         .help = "host path of the envd binary every sandbox runs; default: envd next to hangard"});
  s.Add({.key = "node.token",
         .default_value = "",
         .help = "bearer token of the node API; default: random, kept in <data_dir>/node.token"});
  s.Add({.key = "node.base_template",
         .default_value = "base",
         .help = "name of the Debian 12 template built in the background on first start "
                 "(mmdebstrap; a few minutes); empty: build none"});
  s.Add({.key = "node.id",
         .default_value = "",
         .help = "this node's id in the fleet; default: node-<hostname>"});
  s.Add({.key = "node.pool",
         .default_value = "shared",
         .help = "the pool this node serves (the control plane's pools: shared, hardened, "
                 "isolated)"});
  s.Add({.key = "node.drivers",
         .default_value = "ns,gvisor,microvm",
         .help = "isolation drivers to load: ns (shared tier), gvisor (hardened), microvm "
                 "(isolated); one this host cannot run is reported with the reason"});
  s.Add({.key = "node.hardened_pool",
         .default_value = "hardened",
         .help = "pool this node's gvisor driver serves (it reports as <node.id>-gvisor)"});
  s.Add({.key = "node.isolated_pool",
         .default_value = "isolated",
         .help = "pool this node's microvm driver serves (it reports as <node.id>-microvm)"});
  s.Add({.key = "node.guest_kernel_dir",
         .default_value = "/var/cache/hangar/guest-kernel",
         .help = "the microVM guest kernel cache (scripts/fetch-guest-kernel.sh fills it)"});
  s.Add({.key = "node.control_url",
         .default_value = "",
         .help = "control plane to report to, e.g. http://10.0.0.1:7070; embedded: this "
                 "process; empty with --role node: report to nobody (drive it with hangar node)"});
  s.Add({.key = "node.join_token",
         .default_value = "",
         .help = "token the control plane's /internal API expects (its <data_dir>/join.token); "
                 "embedded: shared automatically"});
  s.Add({.key = "node.advertise_url",
         .default_value = "",
         .help = "URL the control plane uses to reach this node's API; default: "
                 "http://<listen address>"});
  s.Add({.key = "node.heartbeat_ms",
         .type = OptionType::kInt,
         .default_value = "2000",
         .help = "how often the node reports to the control plane",
         .min = 50,
         .max = 600'000});
  s.Add({.key = "node.iops_capacity",
         .type = OptionType::kInt,
         .default_value = "20000",
         .help = "disk IOPS this node offers to the scheduler (sum of its sandboxes' budgets)",
         .min = 0,
         .max = 100'000'000});
  s.Add({.key = "node.warm_pool",
         .default_value = "",
         .help = "sandboxes kept started and ready per template: template:count[:disk_mb][,...]; "
                 "a create with that template and exactly that disk size claims one (ids and "
                 "limits applied at claim); empty: none"});
  s.Add({.key = "node.microvm_warm_pool",
         .default_value = "",
         .help = "microVMs kept restored and paused per shape: "
                 "template:count[:disk_mb[:memory_mb[:vcpus]]][,...] (defaults 1024, 512, 1); a "
                 "microvm create of exactly that shape with no env claims one; empty: none"});
  s.Add({.key = "node.default_write_bps",
         .type = OptionType::kInt,
         .default_value = "0",
         .help = "write bytes/s limit of a sandbox whose request sets none (its own disk); 0: none",
         .min = 0,
         .max = int64_t{1} << 40});
  s.Add({.key = "node.default_write_iops",
         .type = OptionType::kInt,
         .default_value = "0",
         .help = "write IOPS limit of a sandbox whose request sets none; 0: none",
         .min = 0,
         .max = 10'000'000});
  s.Add({.key = "node.max_sandboxes",
         .type = OptionType::kInt,
         .default_value = "1000",
         .help = "most sandboxes this node runs at once",
         .min = 1,
         .max = 30000});
}

namespace {

Result<std::map<uint64_t, size_t>> ParseDiskPool(std::string_view text) {
  std::map<uint64_t, size_t> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    std::string_view item =
        text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    unsigned long long size = 0, count = 0;
    char extra = 0;
    std::string s(item);
    if (std::sscanf(s.c_str(), "%llu:%llu%c", &size, &count, &extra) != 2 || size == 0) {
      return Status::InvalidArgument(
          fmt::format("node.disk_pool item '{}' must be size_mb:count", item));
    }
    out[size] = count;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

// "base:4,tiny:2:256" → entries. Every pooled sandbox holds a uid range (node.uid_slots).
Result<std::vector<node::WarmPoolEntry>> ParseWarmPool(std::string_view text) {
  std::vector<node::WarmPoolEntry> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    std::string item(text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos));
    auto bad = [&] {
      return Status::InvalidArgument(fmt::format(
          "node.warm_pool item '{}' must be template:count[:disk_mb], e.g. base:4:1024", item));
    };
    size_t c1 = item.find(':');
    if (c1 == std::string::npos || c1 == 0) return bad();
    node::WarmPoolEntry e;
    e.template_name = item.substr(0, c1);
    unsigned long long count = 0, disk = 1024;
    char extra = 0;
    std::string rest = item.substr(c1 + 1);
    int n = std::sscanf(rest.c_str(), "%llu:%llu%c", &count, &disk, &extra);
    if (n < 1 || n > 2 || count == 0 || count > 1000 || disk == 0) return bad();
    e.size = count;
    e.disk_mb = static_cast<int64_t>(disk);
    out.push_back(std::move(e));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

Result<std::string> LoadOrCreateToken(const std::string& data_dir, const std::string& configured) {
  if (!configured.empty()) return configured;
  std::string path = data_dir + "/node.token";
  if (auto t = ReadFile(path); t.ok() && t->size() >= 32) {
    std::string tok = *t;
    while (!tok.empty() && (tok.back() == '\n' || tok.back() == ' ')) tok.pop_back();
    return tok;
  }
  std::string tok = RandomHex(24);
  HANGAR_TRY(WriteFileAtomic(path, tok + "\n", 0600));
  return tok;
}

std::string DefaultEnvdPath() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "envd";
  return (exe.parent_path() / "envd").string();
}

// --- JSON ↔ specs ----------------------------------------------------------------------------

Status CheckKeys(const nlohmann::json& obj, std::string_view where,
                 std::initializer_list<std::string_view> allowed) {
  if (!obj.is_object()) return Status::InvalidArgument(fmt::format("{} must be an object", where));
  for (const auto& [k, v] : obj.items()) {
    bool ok = false;
    for (auto a : allowed) ok = ok || a == k;
    if (!ok) {
      return Status::InvalidArgument(
          fmt::format("unknown field '{}{}{}'", where, where.empty() ? "" : ".", k));
    }
  }
  return Status::Ok();
}

Result<int64_t> GetInt(const nlohmann::json& obj, std::string_view key, int64_t fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) {
    return Status::InvalidArgument(fmt::format("'{}' must be an integer", key));
  }
  return it->get<int64_t>();
}

Result<std::map<std::string, std::string>> GetStringMap(const nlohmann::json& obj,
                                                        std::string_view key) {
  std::map<std::string, std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) return Status::InvalidArgument(fmt::format("'{}' must be an object", key));
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) {
      return Status::InvalidArgument(fmt::format("'{}.{}' must be a string", key, k));
    }
    out[k] = v.get<std::string>();
  }
  return out;
}

std::string NewSandboxId() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::string id;
  for (int i = 0; i < 20; ++i) id += kAlphabet[rd() % 36];
  return id;
}

}  // namespace

Result<std::pair<std::string, node::SandboxSpec>> SpecFromJson(const nlohmann::json& j) {
  HANGAR_TRY(
      CheckKeys(j, "", {"id", "template", "driver", "resources", "env", "timeout_s", "labels"}));
  node::SandboxSpec spec;
  spec.id = j.value("id", "");
  if (spec.id.empty()) spec.id = NewSandboxId();
  if (!j.contains("template") || !j["template"].is_string()) {
    return Status::InvalidArgument("'template' is required and must be a string");
  }
  spec.template_name = j["template"].get<std::string>();
  std::string driver = j.value("driver", "ns");
  if (auto it = j.find("resources"); it != j.end()) {
    HANGAR_TRY(CheckKeys(*it, "resources",
                         {"cpu_millis", "memory_mb", "disk_mb", "read_iops", "write_iops",
                          "read_bps", "write_bps", "pids"}));
    auto& r = spec.resources;
    HANGAR_ASSIGN_OR_RETURN(r.cpu_millis, GetInt(*it, "cpu_millis", r.cpu_millis));
    HANGAR_ASSIGN_OR_RETURN(r.memory_mb, GetInt(*it, "memory_mb", r.memory_mb));
    HANGAR_ASSIGN_OR_RETURN(r.disk_mb, GetInt(*it, "disk_mb", r.disk_mb));
    HANGAR_ASSIGN_OR_RETURN(r.read_iops, GetInt(*it, "read_iops", r.read_iops));
    HANGAR_ASSIGN_OR_RETURN(r.write_iops, GetInt(*it, "write_iops", r.write_iops));
    HANGAR_ASSIGN_OR_RETURN(r.read_bps, GetInt(*it, "read_bps", r.read_bps));
    HANGAR_ASSIGN_OR_RETURN(r.write_bps, GetInt(*it, "write_bps", r.write_bps));
    HANGAR_ASSIGN_OR_RETURN(r.pids, GetInt(*it, "pids", r.pids));
  }
  HANGAR_ASSIGN_OR_RETURN(spec.env, GetStringMap(j, "env"));
  HANGAR_ASSIGN_OR_RETURN(spec.labels, GetStringMap(j, "labels"));
  HANGAR_ASSIGN_OR_RETURN(int64_t timeout, GetInt(j, "timeout_s", 0));
  if (timeout < 0 || timeout > 30 * 86400) {
    return Status::InvalidArgument("'timeout_s' must be between 0 and 2592000");
  }
  spec.timeout = std::chrono::seconds(timeout);
  return std::make_pair(driver, spec);
}

nlohmann::json InfoToJson(const node::SupervisedInfo& s) {
  const auto& i = s.sandbox;
  const auto& r = s.resources;
  nlohmann::json j = {
      {"id", i.id},
      {"driver", i.driver},
      {"state", node::StateName(i.state)},
      {"template", s.template_name},
      {"created_at", FormatRfc3339(i.created_at)},
      {"resources",
       {{"cpu_millis", r.cpu_millis},
        {"memory_mb", r.memory_mb},
        {"disk_mb", r.disk_mb},
        {"read_iops", r.read_iops},
        {"write_iops", r.write_iops},
        {"read_bps", r.read_bps},
        {"write_bps", r.write_bps},
        {"pids", r.pids}}},
      {"labels", s.labels},
      {"uid_base", i.uid_base},
      {"disk_device", i.disk_device},
      {"timeout_at", s.deadline ? nlohmann::json(FormatRfc3339(*s.deadline)) : nlohmann::json()},
  };
  if (!i.reason.empty()) j["reason"] = i.reason;
  return j;
}

nlohmann::json UsageToJson(const node::Usage& u) {
  return {{"cpu_usec", u.cpu_usec},
          {"memory_bytes", u.memory_bytes},
          {"memory_peak_bytes", u.memory_peak_bytes},
          {"io_read_ops", u.io_read_ops},
          {"io_write_ops", u.io_write_ops},
          {"io_read_bytes", u.io_read_bytes},
          {"io_write_bytes", u.io_write_bytes},
          {"disk_used_bytes", u.disk_used_bytes},
          {"disk_total_bytes", u.disk_total_bytes},
          {"disk_inodes_used", u.disk_inodes_used},
          {"disk_inodes_total", u.disk_inodes_total},
          {"pids", u.pids}};
}

namespace {

Result<envd::Command> CommandFromJson(const nlohmann::json& j) {
  HANGAR_TRY(CheckKeys(j, "", {"cmd", "args", "env", "cwd", "user", "timeout_ms", "stdin"}));
  envd::Command c;
  if (!j.contains("cmd") || !j["cmd"].is_string() || j["cmd"].get<std::string>().empty()) {
    return Status::InvalidArgument("'cmd' is required and must be a non-empty string");
  }
  c.cmd = j["cmd"].get<std::string>();
  if (auto it = j.find("args"); it != j.end()) {
    if (!it->is_array()) return Status::InvalidArgument("'args' must be an array of strings");
    for (const auto& a : *it) {
      if (!a.is_string()) return Status::InvalidArgument("'args' must be an array of strings");
      c.args.push_back(a.get<std::string>());
    }
  }
  HANGAR_ASSIGN_OR_RETURN(c.env, GetStringMap(j, "env"));
  c.cwd = j.value("cwd", "");
  c.user = j.value("user", "");
  HANGAR_ASSIGN_OR_RETURN(int64_t t, GetInt(j, "timeout_ms", 0));
  if (t < 0) return Status::InvalidArgument("'timeout_ms' must be >= 0");
  c.timeout = std::chrono::milliseconds(t);
  if (auto it = j.find("stdin"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return Status::InvalidArgument("'stdin' must be a string");
    c.stdin_data = it->get<std::string>();
  }
  return c;
}

nlohmann::json EntryToJson(const envd::EntryInfo& e) {
  return {{"name", e.name},
          {"path", e.path},
          {"type", e.type == envd::FileType::kDirectory ? "dir"
                   : e.type == envd::FileType::kFile    ? "file"
                                                        : "other"},
          {"size", e.size},
          {"permissions", e.permissions},
          {"owner", e.owner},
          {"group", e.group},
          {"modified_at", FormatRfc3339(e.modified)}};
}

}  // namespace

struct NodeRole::State {
  std::string data_dir;
  std::string token;
  node::CgroupLayout layout;
  node::CgroupBackendPtr cgroups;
  std::unique_ptr<node::IdRangeAllocator> ids;
  std::optional<storage::TemplateStore> templates;
  node::SeccompProgram seccomp;
  node::DriverPtr ns_driver;
  node::DriverPtr gvisor_driver, microvm_driver;
  node::CgroupBackendPtr microvm_cgroups;
  std::map<std::string, std::string> unavailable;  // driver → why this host cannot run it
  // Who the node is to the control plane: one identity per driver it runs, each in its pool.
  struct Identity {
    std::string id, pool, driver;
  };
  std::vector<Identity> identities;
  std::unique_ptr<node::Supervisor> supervisor;
  std::thread template_builder;
  // Reporting to the control plane.
  std::string node_id, pool;
  int64_t iops_capacity = 0;
  std::chrono::milliseconds heartbeat_every{2000};
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_stop = false;
  std::thread heartbeats;
  ~State() {
    {
      std::lock_guard lk(hb_mu);
      hb_stop = true;
    }
    hb_cv.notify_all();
    if (heartbeats.joinable()) heartbeats.join();
    if (template_builder.joinable()) template_builder.join();
  }
  control::NodeReport Report(const Identity& who, const std::string& advertise_url) const;
};

// Every identity reports the host's whole capacity: the scheduler does not see contention
// between the pools of one host (docs/scheduling.md).
control::NodeReport NodeRole::State::Report(const Identity& who,
                                            const std::string& advertise_url) const {
  control::NodeReport r;
  r.node.id = who.id;
  r.node.pool = who.pool;
  r.node.url = advertise_url;
  r.node.token = token;
  r.node.drivers = {who.driver};
  r.node.capacity.cpu_millis = static_cast<int64_t>(::sysconf(_SC_NPROCESSORS_ONLN)) * 1000;
  r.node.capacity.memory_mb =
      static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE) / (1 << 20);
  struct statvfs vfs {};
  if (::statvfs(data_dir.c_str(), &vfs) == 0) {
    r.node.capacity.disk_mb =
        static_cast<int64_t>(vfs.f_blocks) * static_cast<int64_t>(vfs.f_frsize) / (1 << 20);
  }
  r.node.capacity.iops = iops_capacity;
  if (auto list = templates->List(); list.ok()) {
    for (const auto& t : *list) {
      r.templates.push_back(t.name);
      if (t.has_bash) r.bash_templates.push_back(t.name);
    }
  }
  for (const auto& i : supervisor->List()) {
    if (i.sandbox.driver != who.driver) continue;  // another identity's
    r.sandboxes.push_back(
        {i.sandbox.id, std::string(node::StateName(i.sandbox.state)), InfoToJson(i)});
  }
  r.node.usage = {{"sandboxes", r.sandboxes.size()}};
  return r;
}

namespace {

// The hardened (gvisor) and isolated (microvm) drivers, when configured and this host can run
// them; otherwise the reason is kept for /node/v1/info. The node then serves their pools too.
Status StartStrongDrivers(const Config& config, const std::string& data_dir, Clock& clock,
                          NodeRole::State& s, node::SupervisorOptions& so) {
  std::set<std::string> wanted;
  {
    std::string list = config.GetString("node.drivers");
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t comma = list.find(',', pos);
      std::string d =
          list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      if (!d.empty()) {
        if (d != "ns" && d != "gvisor" && d != "microvm") {
          return Status::InvalidArgument(
              fmt::format("node.drivers: unknown driver '{}' (ns, gvisor, microvm)", d));
        }
        wanted.insert(d);
      }
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  s.identities.push_back({s.node_id, s.pool, "ns"});
  std::string envd = config.GetString("node.envd_path");
  if (envd.empty()) envd = DefaultEnvdPath();
  if (wanted.count("gvisor")) {
    gvisor::GvisorDriverOptions go;
    go.data_dir = data_dir + "/gvisor";
    go.templates = &*s.templates;
    go.envd_path = envd;
    go.clock = &clock;
    go.cgroup_root = config.GetString("node.cgroup_root") + "-gvisor";
    go.default_write_bps = config.GetInt("node.default_write_bps");
    go.default_write_iops = config.GetInt("node.default_write_iops");
    if (Status st = gvisor::GvisorAvailable(go); !st.ok()) {
      s.unavailable["gvisor"] = st.message();
    } else if (auto d = gvisor::NewGvisorDriver(go); !d.ok()) {
      s.unavailable["gvisor"] = d.status().message();
    } else {
      s.gvisor_driver = std::move(*d);
      so.drivers["gvisor"] = s.gvisor_driver.get();
      s.identities.push_back(
          {s.node_id + "-gvisor", config.GetString("node.hardened_pool"), "gvisor"});
    }
  }
  if (wanted.count("microvm")) {
    microvm::MicroVmDriverOptions mo;
    mo.data_dir = data_dir + "/microvm";
    mo.templates = &*s.templates;
    mo.envd_path = envd;
    mo.kernel_dir = config.GetString("node.guest_kernel_dir");
    mo.clock = &clock;
    // Bad syntax stops the node (as node.warm_pool does), whether or not this host runs VMs.
    HANGAR_ASSIGN_OR_RETURN(mo.warm_pool.entries, microvm::ParseMicroVmWarmPool(
                                                      config.GetString("node.microvm_warm_pool")));
    Status st = microvm::QemuAvailable(mo);
    if (st.ok()) {
      node::CgroupOptions co;
      co.root = config.GetString("node.cgroup_root") + "-microvm";
      auto cg = node::MakeCgroupBackend(s.layout, co);
      if (!cg.ok()) {
        st = cg.status();
      } else {
        s.microvm_cgroups = std::move(*cg);
        mo.cgroups = s.microvm_cgroups.get();
        auto d = microvm::NewMicroVmDriver(mo);
        if (d.ok()) {
          s.microvm_driver = std::move(*d);
          so.drivers["microvm"] = s.microvm_driver.get();
          s.identities.push_back(
              {s.node_id + "-microvm", config.GetString("node.isolated_pool"), "microvm"});
        } else {
          st = d.status();
        }
      }
    }
    if (!st.ok()) s.unavailable["microvm"] = st.message();
  }
  for (const auto& [name, why] : s.unavailable) {
    log::Warn("driver unavailable on this host", {{"driver", name}, {"reason", why}});
  }
  return Status::Ok();
}

}  // namespace

NodeRole::NodeRole(std::unique_ptr<State> s) : s_(std::move(s)) {}
NodeRole::~NodeRole() = default;
const std::string& NodeRole::token() const { return s_->token; }

Result<std::unique_ptr<NodeRole>> NodeRole::Start(const Config& config, const std::string& data_dir,
                                                  Clock& clock) {
  auto s = std::make_unique<State>();
  s->data_dir = data_dir;
  // Everything that can rule the host out is checked before anything is written.
  if (::geteuid() != 0) {
    return Status::FailedPrecondition(
        "the node role needs root (namespaces, mounts, cgroups); run hangard as root or with "
        "--role control");
  }
  std::string envd_path = config.GetString("node.envd_path");
  if (envd_path.empty()) envd_path = DefaultEnvdPath();
  if (::access(envd_path.c_str(), X_OK) != 0) {
    return Status::FromErrno(errno, fmt::format("envd binary {} (node.envd_path)", envd_path));
  }
  HANGAR_ASSIGN_OR_RETURN(s->layout, node::DetectCgroupLayout());
  HANGAR_ASSIGN_OR_RETURN(auto pool_targets, ParseDiskPool(config.GetString("node.disk_pool")));
  HANGAR_ASSIGN_OR_RETURN(auto warm_pool, ParseWarmPool(config.GetString("node.warm_pool")));
  HANGAR_ASSIGN_OR_RETURN(s->token, LoadOrCreateToken(data_dir, config.GetString("node.token")));
  node::CgroupOptions co;
  co.root = config.GetString("node.cgroup_root");
  HANGAR_ASSIGN_OR_RETURN(s->cgroups, node::MakeCgroupBackend(s->layout, co));
  node::IdAllocatorOptions io;
  io.state_dir = data_dir + "/ids";
  io.base = static_cast<uint32_t>(config.GetInt("node.uid_base"));
  io.slots = static_cast<uint32_t>(config.GetInt("node.uid_slots"));
  HANGAR_ASSIGN_OR_RETURN(s->ids, node::IdRangeAllocator::Open(io));
  storage::TemplateStoreOptions to;
  to.root = data_dir + "/templates";
  to.clock = &clock;
  HANGAR_ASSIGN_OR_RETURN(auto store, storage::TemplateStore::Open(to));
  s->templates.emplace(std::move(store));
  HANGAR_ASSIGN_OR_RETURN(auto policy, node::DefaultSeccompPolicy());
  HANGAR_ASSIGN_OR_RETURN(s->seccomp, node::CompileSeccompPolicy(policy));

  node::NsDriverOptions no;
  no.data_dir = data_dir;
  no.templates = &*s->templates;
  no.cgroups = s->cgroups.get();
  no.ids = s->ids.get();
  no.seccomp = &s->seccomp;
  no.init_path = envd_path;
  no.init_args = {"--listen-fd", "3"};
  no.clock = &clock;
  no.disk_pool.targets = std::move(pool_targets);
  no.warm_pool.entries = std::move(warm_pool);
  no.default_write_bps = config.GetInt("node.default_write_bps");
  no.default_write_iops = config.GetInt("node.default_write_iops");
  HANGAR_ASSIGN_OR_RETURN(s->ns_driver, node::NewNsDriver(no));

  node::SupervisorOptions so;
  so.drivers = {{"ns", s->ns_driver.get()}};
  so.clock = &clock;
  so.max_sandboxes = static_cast<size_t>(config.GetInt("node.max_sandboxes"));
  s->node_id = config.GetString("node.id");
  if (s->node_id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    s->node_id = std::string("node-") + host;
  }
  s->pool = config.GetString("node.pool");
  s->iops_capacity = config.GetInt("node.iops_capacity");
  s->heartbeat_every = std::chrono::milliseconds(config.GetInt("node.heartbeat_ms"));
  HANGAR_TRY(StartStrongDrivers(config, data_dir, clock, *s, so));
  HANGAR_ASSIGN_OR_RETURN(s->supervisor, node::Supervisor::Start(so));
  if (std::string base = config.GetString("node.base_template");
      !base.empty() && !s->templates->Get(base).ok()) {
    // First start: build the default template without holding up the API. A create that names
    // it meanwhile fails with not_found naming the known templates.
    s->template_builder = std::thread([store = &*s->templates, base] {
      log::Info("building template", {{"name", base}, {"source", "debian bookworm (mmdebstrap)"}});
      auto t = store->BuildDebianBase(base, storage::DebianBaseOptions{});
      if (t.ok()) {
        log::Info("template ready", {{"name", base}, {"bytes", t->size_bytes}});
      } else {
        log::Error("template build failed", {{"name", base}, {"error", t.status().ToString()}});
      }
    });
  }
  log::Info("node role started", {{"cgroups", node::CgroupModeName(s->layout.mode)},
                                  {"sandboxes_recovered", s->supervisor->List().size()},
                                  {"envd", no.init_path}});
  return std::unique_ptr<NodeRole>(new NodeRole(std::move(s)));
}

void NodeRole::StartHeartbeats(const std::string& control_url, const std::string& join_token,
                               const std::string& advertise_url) {
  State* s = s_.get();
  s->heartbeats = std::thread([s, control_url, join_token, advertise_url] {
    std::optional<api::HttpClient> client;
    bool failing = false;
    std::unique_lock lk(s->hb_mu);
    while (!s->hb_stop) {
      lk.unlock();
      if (!client) {
        api::ClientOptions o;
        o.timeout = std::chrono::seconds(10);
        o.headers = {{"Authorization", "Bearer " + join_token}};
        auto c = api::HttpClient::Create(control_url, o);
        if (c.ok()) client.emplace(std::move(*c));
      }
      Status st = client ? Status::Ok() : Status::Unavailable("no client");
      for (const auto& who : s->identities) {
        if (!st.ok()) break;
        st = client
                 ->CallJson("POST", "/internal/v1/nodes/heartbeat",
                            control::NodeReportToJson(s->Report(who, advertise_url)))
                 .status();
      }
      if (!st.ok()) {
        client.reset();
        if (!failing)
          log::Warn("heartbeat failed", {{"control", control_url}, {"error", st.ToString()}});
      } else if (failing) {
        log::Info("heartbeat delivered again", {{"control", control_url}});
      }
      failing = !st.ok();
      lk.lock();
      s->hb_cv.wait_for(lk, s->heartbeat_every, [s] { return s->hb_stop; });
    }
  });
}

namespace {

// One call to the sandbox's envd for the E2B traffic proxy (e2b::ForwardToEnvd: envd's public
// routes only, envd's own token).
Result<api::Response> ForwardToEnvd(node::Supervisor* sup, const api::Request& req) {
  HANGAR_ASSIGN_OR_RETURN(node::EnvdEndpoint ep, sup->Envd(std::string(req.param("id"))));
  return e2b::ForwardToEnvd(req, req.param("path"),
                            ep.unix_socket.empty() ? "http://" + ep.tcp : "unix:" + ep.unix_socket,
                            ep.access_token);
}

}  // namespace

Status NodeRole::AddRoutes(api::Router& router) {
  State* s = s_.get();
  // Every node route checks the bearer token first.
  auto authed = [s](auto handler) {
    return [s, handler](const api::Request& req) -> Result<api::Response> {
      std::string_view auth = req.header("Authorization");
      if (auth != "Bearer " + s->token) {
        return Status::Unauthenticated("node API: missing or wrong bearer token");
      }
      return handler(req);
    };
  };
  api::RouteOptions blocking{.blocking = true};
  auto* sup = s->supervisor.get();

  HANGAR_TRY(router.Get(
      "/node/v1/info", authed([s](const api::Request&) -> Result<api::Response> {
        nlohmann::json drivers = nlohmann::json::object();
        for (const auto& [name, st] : s->supervisor->DriverStatus()) {
          drivers[name] = st.ok() ? nlohmann::json{{"available", true}}
                                  : nlohmann::json{{"available", false}, {"reason", st.message()}};
        }
        for (const auto& [name, why] : s->unavailable) {
          drivers[name] = {{"available", false}, {"reason", why}};
        }
        return api::JsonResponse({{"drivers", drivers},
                                  {"cgroups", node::CgroupModeName(s->layout.mode)},
                                  {"cpus", static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))},
                                  {"memory_mb", static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) *
                                                    ::sysconf(_SC_PAGESIZE) / (1 << 20)},
                                  {"sandboxes", s->supervisor->List().size()}});
      })));
  HANGAR_TRY(router.Get("/node/v1/templates",
                        authed([s](const api::Request&) -> Result<api::Response> {
                          HANGAR_ASSIGN_OR_RETURN(auto list, s->templates->List());
                          nlohmann::json out = nlohmann::json::array();
                          for (const auto& t : list) {
                            out.push_back({{"name", t.name},
                                           {"source", t.source},
                                           {"created_at", t.created_at},
                                           {"size_bytes", t.size_bytes},
                                           {"files", t.file_count},
                                           {"has_bash", t.has_bash},
                                           {"digest", t.digest}});
                          }
                          return api::JsonResponse({{"templates", out}});
                        }),
                        blocking));
  HANGAR_TRY(router.Post(
      "/node/v1/sandboxes", authed([sup](const api::Request& req) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(nlohmann::json body, api::ParseJsonBody(req));
        HANGAR_ASSIGN_OR_RETURN(auto parsed, SpecFromJson(body));
        HANGAR_ASSIGN_OR_RETURN(auto info, sup->Create(parsed.first, parsed.second));
        return api::JsonResponse(InfoToJson(info), 201);
      }),
      blocking));
  HANGAR_TRY(
      router.Get("/node/v1/sandboxes", authed([sup](const api::Request&) -> Result<api::Response> {
                   nlohmann::json out = nlohmann::json::array();
                   for (const auto& i : sup->List()) out.push_back(InfoToJson(i));
                   return api::JsonResponse({{"sandboxes", out}});
                 })));
  HANGAR_TRY(router.Get(
      "/node/v1/sandboxes/{id}", authed([sup](const api::Request& req) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto info, sup->Get(std::string(req.param("id"))));
        return api::JsonResponse(InfoToJson(info));
      })));
  HANGAR_TRY(router.Get("/node/v1/sandboxes/{id}/usage",
                        authed([sup](const api::Request& req) -> Result<api::Response> {
                          HANGAR_ASSIGN_OR_RETURN(auto u,
                                                  sup->GetUsage(std::string(req.param("id"))));
                          return api::JsonResponse(UsageToJson(u));
                        }),
                        blocking));
  for (const char* verb : {"pause", "resume", "stop"}) {
    std::string v = verb;
    HANGAR_TRY(router.Post(fmt::format("/node/v1/sandboxes/{{id}}/{}", verb),
                           authed([sup, v](const api::Request& req) -> Result<api::Response> {
                             std::string id(req.param("id"));
                             Status st = v == "pause"    ? sup->Pause(id)
                                         : v == "resume" ? sup->Resume(id)
                                                         : sup->Stop(id, std::chrono::seconds(5));
                             HANGAR_TRY(st);
                             HANGAR_ASSIGN_OR_RETURN(auto info, sup->Get(id));
                             return api::JsonResponse(InfoToJson(info));
                           }),
                           blocking));
  }
  HANGAR_TRY(router.Post("/node/v1/sandboxes/{id}/timeout",
                         authed([sup](const api::Request& req) -> Result<api::Response> {
                           HANGAR_ASSIGN_OR_RETURN(nlohmann::json body, api::ParseJsonBody(req));
                           HANGAR_TRY(CheckKeys(body, "", {"timeout_s"}));
                           HANGAR_ASSIGN_OR_RETURN(int64_t t, GetInt(body, "timeout_s", -1));
                           if (t < 0)
                             return Status::InvalidArgument(
                                 "'timeout_s' is required and must be >= 0");
                           std::string id(req.param("id"));
                           HANGAR_TRY(sup->SetTimeout(id, std::chrono::seconds(t)));
                           HANGAR_ASSIGN_OR_RETURN(auto info, sup->Get(id));
                           return api::JsonResponse(InfoToJson(info));
                         })));
  // Exec: the command's output as NDJSON events, streamed as it arrives:
  //   {"event":"stdout","data":"<base64>"} · {"event":"stderr",...} ·
  //   {"event":"exit","exit_code":0,"status":"exit status 0"} · {"event":"error","code","message"}
  HANGAR_TRY(router.Post(
      "/node/v1/sandboxes/{id}/exec",
      authed([sup](const api::Request& req) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(nlohmann::json body, api::ParseJsonBody(req));
        HANGAR_ASSIGN_OR_RETURN(envd::Command cmd, CommandFromJson(body));
        HANGAR_ASSIGN_OR_RETURN(node::EnvdEndpoint ep, sup->Envd(std::string(req.param("id"))));
        HANGAR_ASSIGN_OR_RETURN(envd::Client client,
                                envd::Client::Create({ep.unix_socket, ep.tcp, ep.access_token}));
        auto [response, writer] = api::Response::Stream(200, "application/x-ndjson");
        std::thread([client = std::move(client), cmd = std::move(cmd), writer]() mutable {
          auto emit = [&](const nlohmann::json& ev) { (void)writer->Write(ev.dump() + "\n"); };
          envd::OutputHandler out;
          out.on_stdout = [&](std::string_view d) {
            emit({{"event", "stdout"}, {"data", Base64Encode(d)}});
          };
          out.on_stderr = [&](std::string_view d) {
            emit({{"event", "stderr"}, {"data", Base64Encode(d)}});
          };
          auto done = client.Run(cmd, out);
          if (done.ok()) {
            emit({{"event", "exit"}, {"exit_code", done->exit_code}, {"status", done->status}});
          } else {
            emit({{"event", "error"},
                  {"code", CodeName(done.status().code())},
                  {"message", done.status().message()}});
          }
          writer->Close();
        }).detach();
        return std::move(response);
      }),
      blocking));
  // Files: raw bytes in and out; listing as JSON.
  HANGAR_TRY(router.Get(
      "/node/v1/sandboxes/{id}/files",
      authed([sup](const api::Request& req) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto q, req.query());
        std::string path(q.Get("path").value_or(""));
        if (path.empty()) return Status::InvalidArgument("query parameter 'path' is required");
        HANGAR_ASSIGN_OR_RETURN(node::EnvdEndpoint ep, sup->Envd(std::string(req.param("id"))));
        HANGAR_ASSIGN_OR_RETURN(envd::Client client,
                                envd::Client::Create({ep.unix_socket, ep.tcp, ep.access_token}));
        if (q.Has("list")) {
          HANGAR_ASSIGN_OR_RETURN(auto entries,
                                  client.ListDir(path, 1, std::string(q.Get("user").value_or(""))));
          nlohmann::json out = nlohmann::json::array();
          for (const auto& e : entries) out.push_back(EntryToJson(e));
          return api::JsonResponse({{"entries", out}});
        }
        HANGAR_ASSIGN_OR_RETURN(std::string data,
                                client.ReadFile(path, std::string(q.Get("user").value_or(""))));
        return api::Response::Text(std::move(data), 200, "application/octet-stream");
      }),
      blocking));
  HANGAR_TRY(router.Put(
      "/node/v1/sandboxes/{id}/files",
      authed([sup](const api::Request& req) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto q, req.query());
        std::string path(q.Get("path").value_or(""));
        if (path.empty()) return Status::InvalidArgument("query parameter 'path' is required");
        HANGAR_ASSIGN_OR_RETURN(node::EnvdEndpoint ep, sup->Envd(std::string(req.param("id"))));
        HANGAR_ASSIGN_OR_RETURN(envd::Client client,
                                envd::Client::Create({ep.unix_socket, ep.tcp, ep.access_token}));
        HANGAR_ASSIGN_OR_RETURN(
            auto w, client.WriteFile(path, req.body(), std::string(q.Get("user").value_or(""))));
        return api::JsonResponse({{"path", w.path}, {"name", w.name}}, 201);
      }),
      api::RouteOptions{.max_body_bytes = size_t{1} << 30, .blocking = true}));
  HANGAR_TRY(router.Delete("/node/v1/sandboxes/{id}",
                           authed([sup](const api::Request& req) -> Result<api::Response> {
                             HANGAR_TRY(sup->Destroy(std::string(req.param("id"))));
                             return api::Response::NoContent();
                           }),
                           blocking));
  // envd's public protocol (Connect RPC, /files, /health) for the E2B traffic proxy
  // (src/control/e2b/proxy.h): GET|POST /node/v1/sandboxes/{id}/envd/<envd path>?<query>.
  // Bodies stream through to envd as they arrive (stream_body), up to 1 GiB (/files uploads).
  for (const char* method : {"GET", "POST"}) {
    HANGAR_TRY(
        router.Handle(method, "/node/v1/sandboxes/{id}/envd/{path...}",
                      authed([sup](const api::Request& req) -> Result<api::Response> {
                        return ForwardToEnvd(sup, req);
                      }),
                      api::RouteOptions{.max_body_bytes = size_t{1} << 30, .stream_body = true}));
  }
  return Status::Ok();
}

}  // namespace hangar::daemon
