#include "hangar/gvisor/gvisor_driver.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/gvisor/bundle.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/sandbox_storage.h"
#include "hangar/storage/disk.h"
#include "hangar/storage/recovery.h"
#include "hangar/storage/template_store.h"
#include "runsc.h"

namespace hangar::gvisor {

namespace {

using Json = nlohmann::json;
using node::SandboxState;

constexpr char kDriverName[] = "gvisor";
constexpr size_t kMaxIdLength = 40;
constexpr char kCgroupFsRoot[] = "/sys/fs/cgroup";

struct Paths {
  std::string dir, state, config, disk, rootfs, run, socket, console;
  Paths(const std::string& sandboxes_dir, const std::string& id)
      : dir(sandboxes_dir + "/" + id),
        state(dir + "/state.json"),
        config(dir + "/config.json"),
        disk(dir + "/disk"),
        rootfs(dir + "/rootfs"),
        run(dir + "/run"),
        socket(run + "/" + kSocketName),
        console(dir + "/console.log") {}
};

// Replaces `path` with `data` (temporary file + rename, no fsync: see ns_driver.h on why state
// files need to survive an agent crash, not a machine crash).
Status WriteReplace(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  {
    HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    HANGAR_TRY(WriteAll(fd.get(), data));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("rename({}, {})", tmp, path));
  }
  return Status::Ok();
}

Result<std::string> FindInPath(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) != 0) {
      return Status::FailedPrecondition(fmt::format("runsc not found at {}", name));
    }
    return name;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return Status::FailedPrecondition(
      fmt::format("{} not found in PATH (install the Debian package runsc)", name));
}

bool HaveCapSysAdmin() {
  auto status = ReadFile("/proc/self/status");
  if (!status.ok()) return false;
  size_t at = status->find("CapEff:");
  if (at == std::string::npos) return false;
  uint64_t eff = std::strtoull(status->c_str() + at + 7, nullptr, 16);
  return (eff >> 21) & 1;
}

// Every cgroup v1 hierarchy (and a cgroup2 mount) under /sys/fs/cgroup, symlinked aliases
// skipped: runsc creates the sandbox's group in all of them, the backend manages five.
std::vector<std::string> CgroupHierarchies() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kCgroupFsRoot, ec)) {
    if (e.is_symlink(ec) || !e.is_directory(ec)) continue;
    out.push_back(e.path().string());
  }
  return out;
}

// Removes <hierarchy>/<root>/<id> wherever it is left (empty groups runsc created and did not
// remove, e.g. after a crash). Processes are gone by then (the backend killed the group).
void SweepCgroupDirs(const std::string& root, const std::string& id) {
  for (const std::string& h : CgroupHierarchies()) {
    const std::string dir = h + "/" + root + "/" + id;
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
      log::Warn("removing a cgroup directory failed",
                {{"dir", dir}, {"error", std::strerror(errno)}});
    }
  }
}

// Names of groups below <hierarchy>/<root> in any hierarchy.
std::set<std::string> CgroupDirNames(const std::string& root) {
  std::set<std::string> names;
  std::error_code ec;
  for (const std::string& h : CgroupHierarchies()) {
    for (const auto& e : std::filesystem::directory_iterator(h + "/" + root, ec)) {
      if (e.is_directory(ec)) names.insert(e.path().filename().string());
    }
  }
  return names;
}

// envd answers GET /health with 204 once it serves.
Status WaitForEnvd(const std::string& socket_path, std::chrono::milliseconds timeout,
                   int sandbox_pidfd) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{sandbox_pidfd, POLLIN, 0};
    if (sandbox_pidfd >= 0 && ::poll(&pfd, 1, 0) > 0) {
      return Status::Unavailable("the gVisor sandbox exited before envd became ready");
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket(AF_UNIX)");
    UniqueFd s(fd);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      static constexpr std::string_view kReq =
          "GET /health HTTP/1.1\r\nHost: envd\r\nConnection: close\r\n\r\n";
      if (WriteAll(fd, kReq).ok()) {
        char buf[64];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n >= 12 && buf[9] == '2') return Status::Ok();
        last_error = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "no answer";
      }
    } else {
      last_error = std::strerror(errno);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return Status::DeadlineExceeded(fmt::format("envd did not answer on {} within {} ms ({})",
                                              socket_path, timeout.count(), last_error));
}

class GvisorDriver;

class GvisorSandbox final : public node::Sandbox {
 public:
  GvisorSandbox(GvisorDriver* driver, node::SandboxInfo info, Paths paths)
      : driver_(driver), info_(std::move(info)), paths_(std::move(paths)) {}
  ~GvisorSandbox() override = default;  // a live sandbox outlives its object

  node::SandboxInfo Info() const override {
    std::lock_guard lock(mu_);
    return info_;
  }
  node::EnvdEndpoint Envd() const override { return node::EnvdEndpoint{paths_.socket, "", ""}; }
  Result<node::Usage> GetUsage() override;
  Status Pause() override;
  Status Resume() override;
  Status Stop(std::chrono::milliseconds grace) override;
  Status Destroy() override;

 private:
  friend class GvisorDriver;
  Status KillAll();

  GvisorDriver* driver_;
  mutable std::mutex mu_;
  node::SandboxInfo info_;
  const Paths paths_;
  bool destroyed_ = false;
  // Resources, in creation order.
  storage::Disk disk_;
  ScopedMount rootfs_;
  bool cgroup_created_ = false;
  std::optional<dev_t> root_io_rule_;
  bool runsc_container_ = false;  // runsc may hold a container of this id
  UniqueFd sandbox_pidfd_;
};

class GvisorDriver final : public node::Driver {
 public:
  explicit GvisorDriver(GvisorDriverOptions o)
      : o_(std::move(o)),
        clock_(o_.clock ? o_.clock : &SystemClock::Instance()),
        sandboxes_dir_(o_.data_dir + "/sb") {}
  ~GvisorDriver() override = default;

  std::string_view Name() const override { return kDriverName; }
  Status Available() const override { return GvisorAvailable(o_); }
  Result<node::SandboxPtr> Create(const node::SandboxSpec& spec) override;
  Result<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> Recover() override;

  Status Open();

  const internal::Runsc& runsc() const { return *runsc_; }
  node::CgroupBackend& cgroups() { return *cgroups_; }
  const GvisorDriverOptions& options() const { return o_; }
  const std::string& platform() const { return platform_.platform; }

 private:
  Status Start(GvisorSandbox& sb, const node::SandboxSpec& spec, const storage::TemplateInfo& tmpl);
  Status ApplyLimits(GvisorSandbox& sb, const node::Resources& r);
  Status WriteState(const GvisorSandbox& sb, const node::SandboxSpec& spec);
  node::SandboxPtr AdoptOrDestroy(const std::string& id, node::RecoveryReport& report,
                                  std::set<std::string>& live_images);
  void SweepRootIoRules(const std::set<std::string>& live_devices);

  GvisorDriverOptions o_;
  Clock* clock_;
  std::string sandboxes_dir_;
  PlatformChoice platform_;
  std::optional<internal::Runsc> runsc_;
  node::CgroupBackendPtr cgroups_;
  std::unique_ptr<storage::DiskPool> pool_;
  std::mutex mu_;
  std::set<std::string> creating_;
  std::optional<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> recovered_;
};

Status GvisorDriver::Open() {
  if (!o_.templates) return Status::InvalidArgument("gvisor driver: templates are required");
  if (o_.data_dir.empty() || o_.data_dir[0] != '/') {
    return Status::InvalidArgument(
        fmt::format("gvisor driver: data_dir must be an absolute path, got '{}'", o_.data_dir));
  }
  const size_t socket_len = Paths(sandboxes_dir_, std::string(kMaxIdLength, 'x')).socket.size();
  if (socket_len >= sizeof(sockaddr_un::sun_path)) {
    return Status::InvalidArgument(fmt::format(
        "gvisor driver: data_dir '{}' is too long: envd socket paths would be {} bytes (max {})",
        o_.data_dir, socket_len, sizeof(sockaddr_un::sun_path) - 1));
  }
  if (o_.sentry_memory_overhead_mb < 0 || o_.sentry_pids_overhead < 0) {
    return Status::InvalidArgument("gvisor driver: sentry overheads must not be negative");
  }
  HANGAR_TRY(GvisorAvailable(o_));
  HANGAR_ASSIGN_OR_RETURN(std::string binary, FindInPath(o_.runsc_path));
  HANGAR_ASSIGN_OR_RETURN(platform_, ChoosePlatform(binary, o_.platform));
  log::Info("gvisor platform", {{"platform", platform_.platform}, {"reason", platform_.reason}});
  internal::RunscOptions ro;
  ro.binary = binary;
  ro.root = o_.data_dir + "/runsc";
  ro.platform = platform_.platform;
  ro.extra_flags = o_.extra_runsc_flags;
  ro.timeout = o_.runsc_timeout;
  runsc_.emplace(ro);
  HANGAR_TRY(MakeDirs(sandboxes_dir_));
  HANGAR_TRY(MakeDirs(ro.root));
  ::chmod(o_.data_dir.c_str(), 0700);
  ::chmod(ro.root.c_str(), 0700);

  HANGAR_ASSIGN_OR_RETURN(node::CgroupLayout layout, node::DetectCgroupLayout());
  node::CgroupOptions co;
  co.root = o_.cgroup_root;
  HANGAR_ASSIGN_OR_RETURN(cgroups_, node::MakeCgroupBackend(layout, co));

  // Recovery: adopt what is whole, destroy the rest.
  node::RecoveryReport report;
  std::vector<node::SandboxPtr> adopted;
  std::set<std::string> live_images, live, live_devices;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(sandboxes_dir_, ec)) {
    const std::string id = entry.path().filename().string();
    if (node::SandboxPtr sb = AdoptOrDestroy(id, report, live_images)) {
      live.insert(id);
      live_devices.insert(sb->Info().disk_device);
      adopted.push_back(std::move(sb));
    }
  }
  // runsc containers, cgroups and disks that no adopted sandbox owns.
  if (auto containers = runsc_->List(); containers.ok()) {
    for (const auto& c : *containers) {
      if (live.count(c.id)) continue;
      if (Status st = runsc_->Delete(c.id); !st.ok()) {
        log::Warn("deleting an orphan runsc container failed",
                  {{"id", c.id}, {"error", st.ToString()}});
      }
    }
  } else {
    log::Warn("runsc list failed", {{"error", containers.status().ToString()}});
  }
  if (auto groups = cgroups_->List(); groups.ok()) {
    for (const auto& g : *groups) {
      if (live.count(g)) continue;
      if (Status st = cgroups_->KillAndRemove(g); !st.ok()) {
        log::Warn("removing an orphan cgroup failed", {{"cgroup", g}, {"error", st.ToString()}});
      }
    }
  }
  for (const std::string& name : CgroupDirNames(o_.cgroup_root)) {
    if (!live.count(name)) SweepCgroupDirs(o_.cgroup_root, name);
  }
  HANGAR_ASSIGN_OR_RETURN(auto disks, storage::RecoverDisks(o_.data_dir, live_images));
  SweepRootIoRules(live_devices);
  if (disks.cleaned() > 0 || !report.destroyed.empty() || !report.adopted.empty()) {
    log::Info("gvisor driver recovered", {{"adopted", report.adopted.size()},
                                          {"destroyed", report.destroyed.size()},
                                          {"disk_items_cleaned", disks.cleaned()}});
  }
  recovered_.emplace(std::move(report), std::move(adopted));

  o_.disk_pool.data_dir = o_.data_dir;
  if (o_.premount_disks) o_.disk_pool.premount = o_.disk_pool.attach = true;
  HANGAR_ASSIGN_OR_RETURN(pool_, storage::DiskPool::Create(o_.disk_pool));
  pool_->StartBackgroundRefill();
  return Status::Ok();
}

// As the ns driver's sweep: root blkio rules on loop devices no live sandbox of this driver
// owns (unbound loop devices, or bound to one of this driver's images).
void GvisorDriver::SweepRootIoRules(const std::set<std::string>& live_devices) {
  auto rules = cgroups_->RootDeviceLimits();
  if (!rules.ok()) return;
  const std::string ours = storage::DisksDir(o_.data_dir);
  for (const node::IoDeviceLimit& r : *rules) {
    const std::string dev = fmt::format("{}:{}", r.major, r.minor);
    if (live_devices.count(dev)) continue;
    auto backing = ReadFile(fmt::format("/sys/dev/block/{}/loop/backing_file", dev));
    bool stale = backing.ok() ? backing->rfind(ours, 0) == 0 : r.major == 7;
    if (!stale) continue;
    if (Status st = cgroups_->SetRootDeviceLimit({r.major, r.minor, 0, 0, 0, 0}); !st.ok()) {
      log::Warn("clearing a stale root blkio rule failed",
                {{"device", dev}, {"error", st.ToString()}});
    }
  }
}

node::SandboxPtr GvisorDriver::AdoptOrDestroy(const std::string& id, node::RecoveryReport& report,
                                              std::set<std::string>& live_images) {
  Paths p(sandboxes_dir_, id);
  node::SandboxInfo info;
  info.id = id;
  info.driver = kDriverName;
  auto sb = std::make_unique<GvisorSandbox>(this, info, p);
  sb->runsc_container_ = true;  // delete --force is a no-op when runsc has none
  sb->cgroup_created_ = true;   // KillAndRemove is idempotent
  Json state;
  if (auto text = ReadFile(p.state); text.ok()) state = Json::parse(*text, nullptr, false);
  const bool valid = state.is_object() && state.value("id", "") == id;
  std::string image = valid ? state.value("disk_image", "") : "";
  auto container = runsc_->State(id);
  auto mounts = MountsUnder(p.rootfs);
  const bool alive = container.ok() && container->pid > 0 &&
                     (container->status == "running" || container->status == "paused");
  if (valid && alive && !image.empty() && mounts.ok() && !mounts->empty()) {
    auto disk = storage::Disk::Adopt(image, state.value("disk_mb", uint64_t{0}));
    if (disk.ok() && disk->attached()) {
      sb->disk_ = std::move(*disk);
      sb->rootfs_ = ScopedMount(p.rootfs);
      sb->info_.state =
          container->status == "paused" ? SandboxState::kPaused : SandboxState::kRunning;
      sb->info_.init_pid = container->pid;
      int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, container->pid, 0));
      if (pidfd >= 0) sb->sandbox_pidfd_.Reset(pidfd);
      sb->info_.disk_device = fmt::format("{}:{}", major(sb->disk_.dev()), minor(sb->disk_.dev()));
      sb->root_io_rule_ = sb->disk_.dev();
      // state.json keeps created_at as text for people; the adopted object carries the time
      // of adoption.
      sb->info_.created_at = clock_->WallNow();
      live_images.insert(image);
      report.adopted.push_back(id);
      return sb;
    }
  }
  // Not whole: its image is not live, so RecoverDisks detaches and deletes it.
  (void)sb->Destroy();
  report.destroyed.push_back(id);
  return nullptr;
}

Result<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> GvisorDriver::Recover() {
  if (!recovered_) return std::make_pair(node::RecoveryReport{}, std::vector<node::SandboxPtr>{});
  auto out = std::move(*recovered_);
  recovered_.reset();
  return out;
}

Result<node::SandboxPtr> GvisorDriver::Create(const node::SandboxSpec& spec) {
  HANGAR_TRY(node::ValidateSandboxSpec(spec, o_.bounds));
  HANGAR_ASSIGN_OR_RETURN(storage::TemplateInfo tmpl, o_.templates->Get(spec.template_name));
  {
    std::lock_guard lock(mu_);
    if (!creating_.insert(spec.id).second) {
      return Status::AlreadyExists(fmt::format("sandbox {} is being created", spec.id));
    }
  }
  auto done = [&] {
    std::lock_guard lock(mu_);
    creating_.erase(spec.id);
  };
  Paths paths(sandboxes_dir_, spec.id);
  if (::mkdir(paths.dir.c_str(), 0700) != 0) {
    int err = errno;
    done();
    if (err == EEXIST) return Status::AlreadyExists(fmt::format("sandbox {} exists", spec.id));
    return Status::FromErrno(err, fmt::format("mkdir({})", paths.dir));
  }
  node::SandboxInfo info;
  info.id = spec.id;
  info.driver = kDriverName;
  info.created_at = clock_->WallNow();
  auto sb = std::make_unique<GvisorSandbox>(this, std::move(info), paths);
  Status st = Start(*sb, spec, tmpl);
  done();
  if (!st.ok()) {
    (void)sb->Destroy();
    return st.With(fmt::format("creating gvisor sandbox {}", spec.id));
  }
  return node::SandboxPtr(std::move(sb));
}

Status GvisorDriver::ApplyLimits(GvisorSandbox& sb, const node::Resources& r) {
  node::CgroupLimits limits;
  limits.cpu_millicores = static_cast<uint64_t>(r.cpu_millis);
  limits.memory_bytes = static_cast<uint64_t>(r.memory_mb + o_.sentry_memory_overhead_mb) << 20;
  limits.pids_max = static_cast<uint64_t>(r.pids + o_.sentry_pids_overhead);
  node::IoDeviceLimit io;
  io.major = major(sb.disk_.dev());
  io.minor = minor(sb.disk_.dev());
  io.riops = static_cast<uint64_t>(r.read_iops);
  io.wiops = static_cast<uint64_t>(r.write_iops);
  io.rbps = static_cast<uint64_t>(r.read_bps);
  io.wbps = static_cast<uint64_t>(r.write_bps);
  const bool any_io = io.riops || io.wiops || io.rbps || io.wbps;
  if (any_io) limits.io.push_back(io);
  HANGAR_TRY(cgroups_->SetLimits(sb.info_.id, limits));
  if (any_io) {
    sb.root_io_rule_ = sb.disk_.dev();  // before the write: a half-written rule is cleared too
    HANGAR_TRY(cgroups_->SetRootDeviceLimit(io));
  }
  return Status::Ok();
}

Status GvisorDriver::Start(GvisorSandbox& sb, const node::SandboxSpec& spec_in,
                           const storage::TemplateInfo& tmpl) {
  const Paths& p = sb.paths_;
  node::SandboxSpec spec = spec_in;
  node::Resources& r = spec.resources;
  if (r.write_iops == 0) r.write_iops = o_.default_write_iops;
  if (r.write_bps == 0) r.write_bps = o_.default_write_bps;

  // 1. Its own disk; the overlay's upper layer lives there.
  HANGAR_ASSIGN_OR_RETURN(sb.disk_, pool_->Take(static_cast<uint64_t>(r.disk_mb)));
  if (!sb.disk_.attached()) HANGAR_TRY(sb.disk_.Attach());
  HANGAR_TRY(MakeDirs(p.disk));
  if (sb.disk_.mounted()) {
    const std::string staging = sb.disk_.mount_point();
    HANGAR_TRY(sb.disk_.MoveMount(p.disk));
    ::rmdir(staging.c_str());
  } else {
    HANGAR_TRY(sb.disk_.Mount(p.disk));
    for (const char* d : {"/upper", "/work"}) {
      std::string path = p.disk + d;
      if (::mkdir(path.c_str(), 0755) != 0) {
        return Status::FromErrno(errno, fmt::format("mkdir({})", path));
      }
    }
    ::rmdir((p.disk + "/lost+found").c_str());
  }
  sb.info_.disk_device = fmt::format("{}:{}", major(sb.disk_.dev()), minor(sb.disk_.dev()));

  // 2. The root: template (lower, read-only) under the disk's upper layer. The gofer serves
  // this directory to the sentry; the sandbox never sees the host's mount table.
  HANGAR_TRY(MakeDirs(p.rootfs));
  HANGAR_ASSIGN_OR_RETURN(
      sb.rootfs_, ScopedMount::Mount("overlay", p.rootfs, "overlay", MS_NODEV,
                                     fmt::format("lowerdir={},upperdir={}/upper,workdir={}/work",
                                                 tmpl.rootfs, p.disk, p.disk)));

  // 3. Limits: the group in the hierarchies the backend manages, made before runsc so runsc
  // joins it (and leaves its limits alone) instead of creating it.
  HANGAR_TRY(cgroups_->Create(spec.id));
  sb.cgroup_created_ = true;
  HANGAR_TRY(ApplyLimits(sb, r));

  // 4. envd's socket directory (host side; envd creates the socket in it through the gofer)
  // and the console log, on the sandbox's own disk so its output counts against its quota.
  if (::mkdir(p.run.c_str(), 0700) != 0) {
    return Status::FromErrno(errno, fmt::format("mkdir({})", p.run));
  }
  const std::string console_file = p.disk + "/console.log";
  HANGAR_ASSIGN_OR_RETURN(UniqueFd console,
                          OpenFile(console_file, O_WRONLY | O_CREAT | O_APPEND, 0600));
  ::unlink(p.console.c_str());
  if (::symlink("disk/console.log", p.console.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("symlink({})", p.console));
  }

  // 5. The bundle.
  BundleSpec b;
  b.sandbox = spec;
  b.rootfs = p.rootfs;
  b.init_host_path = o_.envd_path;
  // envd serves on a sandbox-internal socket and relays the host-backed one to it.
  b.argv = {kInitPathInside, "--listen",
            fmt::format("unix:{}/{}", kInternalSocketDirInside, kSocketName), "--relay-from",
            fmt::format("{}/{}", kSocketDirInside, kSocketName)};
  for (const auto& a : o_.envd_args) b.argv.push_back(a);
  b.socket_dir = p.run;
  b.cgroups_path = fmt::format("/{}/{}", o_.cgroup_root, spec.id);
  b.disk_major = major(sb.disk_.dev());
  b.disk_minor = minor(sb.disk_.dev());
  HANGAR_ASSIGN_OR_RETURN(Json config, MakeOciConfig(b));
  HANGAR_TRY(WriteReplace(p.config, config.dump(1)));

  // 6. runsc.
  sb.runsc_container_ = true;
  HANGAR_ASSIGN_OR_RETURN(pid_t pid, runsc_->Run(spec.id, p.dir, console.get(), console_file));
  sb.info_.init_pid = pid;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return Status::FromErrno(errno, fmt::format("pidfd_open({})", pid));
  sb.sandbox_pidfd_.Reset(pidfd);

  if (o_.wait_for_envd) {
    HANGAR_TRY(WaitForEnvd(p.socket, o_.envd_ready_timeout, sb.sandbox_pidfd_.get()));
  }
  sb.info_.state = SandboxState::kRunning;
  return WriteState(sb, spec);
}

Status GvisorDriver::WriteState(const GvisorSandbox& sb, const node::SandboxSpec& spec) {
  Json j = {
      {"id", spec.id},
      {"template", spec.template_name},
      {"created_at", FormatRfc3339(sb.info_.created_at)},
      {"sandbox_pid", sb.info_.init_pid},
      {"platform", platform_.platform},
      {"disk_image", sb.disk_.image_path()},
      {"disk_mb", sb.disk_.size_mb()},
      {"resources",
       {{"cpu_millis", spec.resources.cpu_millis},
        {"memory_mb", spec.resources.memory_mb},
        {"disk_mb", spec.resources.disk_mb},
        {"pids", spec.resources.pids}}},
  };
  return WriteReplace(sb.paths_.state, j.dump(2));
}

// --- GvisorSandbox ----------------------------------------------------------------------------

Result<node::Usage> GvisorSandbox::GetUsage() {
  std::lock_guard lock(mu_);
  node::Usage u;
  HANGAR_ASSIGN_OR_RETURN(node::CgroupUsage cg, driver_->cgroups().ReadUsage(info_.id));
  u.cpu_usec = cg.cpu_usec;
  u.memory_bytes = cg.memory_current;
  u.memory_peak_bytes = cg.memory_peak;
  u.pids = cg.pids_current;
  for (const auto& io : cg.io) {
    if (disk_.attached() && io.major == major(disk_.dev()) && io.minor == minor(disk_.dev())) {
      u.io_read_ops = io.rios;
      u.io_write_ops = io.wios;
      u.io_read_bytes = io.rbytes;
      u.io_write_bytes = io.wbytes;
    }
  }
  if (disk_.mounted()) {
    HANGAR_ASSIGN_OR_RETURN(storage::DiskUsage du, disk_.Usage());
    u.disk_used_bytes = du.bytes_used;
    u.disk_total_bytes = du.bytes_total;
    u.disk_inodes_used = du.inodes_used;
    u.disk_inodes_total = du.inodes_total;
  }
  return u;
}

Status GvisorSandbox::Pause() {
  std::lock_guard lock(mu_);
  if (info_.state != SandboxState::kRunning) {
    return Status::FailedPrecondition(
        fmt::format("sandbox {} is {}, not running", info_.id, node::StateName(info_.state)));
  }
  HANGAR_TRY(driver_->runsc().Pause(info_.id));
  info_.state = SandboxState::kPaused;
  return Status::Ok();
}

Status GvisorSandbox::Resume() {
  std::lock_guard lock(mu_);
  if (info_.state != SandboxState::kPaused) {
    return Status::FailedPrecondition(
        fmt::format("sandbox {} is {}, not paused", info_.id, node::StateName(info_.state)));
  }
  HANGAR_TRY(driver_->runsc().Resume(info_.id));
  info_.state = SandboxState::kRunning;
  return Status::Ok();
}

// Every process of the group first (sandbox, stubs, gofer: SIGKILL through the frozen cgroup),
// then runsc's container state and the hierarchies runsc made (`runsc delete --force` of a dead
// sandbox only cleans up; most of a destroy's time is that runsc invocation).
Status GvisorSandbox::KillAll() {
  Status first;
  if (cgroup_created_) {
    first = driver_->cgroups().KillAndRemove(info_.id);
    cgroup_created_ = false;
  }
  if (runsc_container_) {
    Status st = driver_->runsc().Delete(info_.id);
    if (first.ok() && !st.ok()) first = st;
    runsc_container_ = false;
  }
  SweepCgroupDirs(driver_->options().cgroup_root, info_.id);
  sandbox_pidfd_.Reset();
  return first;
}

Status GvisorSandbox::Stop(std::chrono::milliseconds grace) {
  std::lock_guard lock(mu_);
  if (info_.state == SandboxState::kStopped) return Status::Ok();
  if (info_.state == SandboxState::kPaused) (void)driver_->runsc().Resume(info_.id);
  if (sandbox_pidfd_.valid() && driver_->runsc().Kill(info_.id, "TERM", false).ok()) {
    // The sandbox process exits when its init (envd) does.
    pollfd pfd{sandbox_pidfd_.get(), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(grace.count()));
  }
  Status st = KillAll();
  info_.state = SandboxState::kStopped;
  info_.reason = "stopped";
  return st;
}

Status GvisorSandbox::Destroy() {
  std::lock_guard lock(mu_);
  if (destroyed_) return Status::Ok();
  Status first = KillAll();
  auto keep = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  keep(rootfs_.Unmount());
  keep(ReleaseSandboxStorage(driver_->cgroups(), root_io_rule_, disk_, paths_.dir));
  keep(RemoveTree(paths_.dir));
  destroyed_ = true;
  info_.state = SandboxState::kStopped;
  if (!first.ok()) {
    log::Warn("gvisor sandbox destroy incomplete", {{"id", info_.id}, {"error", first.ToString()}});
  }
  return first;
}

}  // namespace

Status GvisorAvailable(const GvisorDriverOptions& o) {
  HANGAR_TRY(FindInPath(o.runsc_path).status());
  if (::geteuid() != 0 || !HaveCapSysAdmin()) {
    return Status::FailedPrecondition(
        "the gvisor driver needs real root with CAP_SYS_ADMIN (runsc sets up namespaces, "
        "cgroups and its gofer)");
  }
  if (o.envd_path.empty() || o.envd_path[0] != '/' || ::access(o.envd_path.c_str(), X_OK) != 0) {
    return Status::FailedPrecondition(
        fmt::format("envd binary '{}' is not an absolute path to an executable", o.envd_path));
  }
  return Status::Ok();
}

Result<PlatformChoice> ChoosePlatform(const std::string& runsc_binary, const std::string& wanted) {
  HANGAR_ASSIGN_OR_RETURN(std::vector<std::string> known, internal::KnownPlatforms(runsc_binary));
  auto has = [&](const std::string& p) {
    return std::find(known.begin(), known.end(), p) != known.end();
  };
  if (!wanted.empty()) {
    if (!has(wanted)) {
      return Status::FailedPrecondition(
          fmt::format("runsc at {} does not offer platform '{}'", runsc_binary, wanted));
    }
    if (wanted == "kvm" && ::access("/dev/kvm", R_OK | W_OK) != 0) {
      return Status::FailedPrecondition("platform kvm needs /dev/kvm, which this host lacks");
    }
    return PlatformChoice{wanted, "configured"};
  }
  if (has("systrap")) return PlatformChoice{"systrap", "systrap is offered by this runsc"};
  return PlatformChoice{"ptrace",
                        "this runsc offers no systrap platform (Debian 12's runsc "
                        "20221219 predates it); kvm is not chosen automatically"};
}

Result<node::DriverPtr> NewGvisorDriver(GvisorDriverOptions options) {
  auto d = std::make_unique<GvisorDriver>(std::move(options));
  HANGAR_TRY(d->Open());
  return node::DriverPtr(std::move(d));
}

std::string GvisorPlatform(const node::Driver& driver) {
  const auto* g = dynamic_cast<const GvisorDriver*>(&driver);
  return g ? g->platform() : "";
}

std::vector<std::string> GvisorRunscPrefix(const node::Driver& driver) {
  const auto* g = dynamic_cast<const GvisorDriver*>(&driver);
  return g ? g->runsc().Argv({}) : std::vector<std::string>{};
}

}  // namespace hangar::gvisor
