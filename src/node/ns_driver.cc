#include "hangar/node/ns_driver.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "contain.h"
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/disk.h"
#include "hangar/storage/recovery.h"
#include "hangar/storage/template_store.h"

namespace hangar::node {

namespace {

constexpr char kDriverName[] = "ns";

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 40) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

Status CheckRange(std::string_view what, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return Status::InvalidArgument(
        fmt::format("resources.{} = {} is out of range [{}, {}]", what, v, lo, hi));
  }
  return Status::Ok();
}

// --- raw kernel helpers -------------------------------------------------------------------

long Clone3(uint64_t flags, int* pidfd) {
  clone_args args{};
  args.flags = flags | (pidfd ? CLONE_PIDFD : 0);
  args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  args.exit_signal = SIGCHLD;
  return ::syscall(SYS_clone3, &args, sizeof args);
}

// A user namespace mapping 0..count-1 inside to the range outside, held by an fd. It serves
// twice: as the id-map of the template's lower layer and as the namespace the sandbox's init
// enters. A short-lived child creates it; the fd keeps it alive after the child exits.
Result<UniqueFd> MakeUserNamespace(const IdRange& range) {
  HANGAR_ASSIGN_OR_RETURN(Pipe sync, MakePipe());
  long pid = Clone3(CLONE_NEWUSER, nullptr);
  if (pid < 0) return Status::FromErrno(errno, "clone3(CLONE_NEWUSER)");
  if (pid == 0) {
    char c;
    sync.write.Reset();
    while (::read(sync.read.get(), &c, 1) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  Child holder = Child::Adopt(static_cast<pid_t>(pid));
  sync.read.Reset();
  HANGAR_TRY(WriteIdMaps(static_cast<pid_t>(pid), range, SetgroupsPolicy::kAllow));
  auto fd = OpenFile(fmt::format("/proc/{}/ns/user", pid), O_RDONLY);
  sync.write.Reset();  // lets the holder exit
  (void)holder.Wait();
  return fd;
}

// Mounts `source` at `target` as a read-only bind whose ids are mapped through `userns_fd`.
Result<ScopedMount> MountIdmapped(const std::string& source, const std::string& target,
                                  int userns_fd) {
  int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, source.c_str(),
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (tree < 0) return Status::FromErrno(errno, fmt::format("open_tree({})", source));
  UniqueFd tree_fd(tree);
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (::syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) !=
      0) {
    return Status::FromErrno(errno, fmt::format("mount_setattr({}, MOUNT_ATTR_IDMAP)", source));
  }
  if (::syscall(SYS_move_mount, tree, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return Status::FromErrno(errno, fmt::format("move_mount({} -> {})", source, target));
  }
  return ScopedMount(target);
}

// A listening Unix socket at `path`, made by the node so the sandbox cannot point it elsewhere.
Result<UniqueFd> ListenUnix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument(fmt::format("socket path too long: {}", path));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket(AF_UNIX)");
  UniqueFd sock(fd);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, fmt::format("bind({})", path));
  }
  if (::chmod(path.c_str(), 0600) != 0) return Status::FromErrno(errno, "chmod(envd.sock)");
  if (::listen(fd, 128) != 0) return Status::FromErrno(errno, fmt::format("listen({})", path));
  return sock;
}

// envd answers GET /health with 204 once it serves.
Status WaitForEnvd(const std::string& socket_path, std::chrono::milliseconds timeout,
                   int init_pidfd) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{init_pidfd, POLLIN, 0};
    if (init_pidfd >= 0 && ::poll(&pfd, 1, 0) > 0) {
      return Status::Unavailable("sandbox init exited before envd became ready");
    }
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket(AF_UNIX)");
    UniqueFd s(fd);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    timeval tv{0, 200'000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      static constexpr std::string_view kReq =
          "GET /health HTTP/1.1\r\nHost: envd\r\nConnection: close\r\n\r\n";
      if (WriteAll(fd, kReq).ok()) {
        char buf[64];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n >= 12 && std::string_view(buf, 12).substr(9, 1) == "2") return Status::Ok();
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


}  // namespace

Status ValidateSandboxSpec(const SandboxSpec& spec, const ResourceBounds& b) {
  if (!ValidId(spec.id)) {
    return Status::InvalidArgument(
        fmt::format("sandbox id '{}' must be 1-40 characters of [a-z0-9]", spec.id));
  }
  if (spec.template_name.empty()) return Status::InvalidArgument("template is required");
  const Resources& r = spec.resources;
  HANGAR_TRY(CheckRange("cpu_millis", r.cpu_millis, b.min_cpu_millis, b.max_cpu_millis));
  HANGAR_TRY(CheckRange("memory_mb", r.memory_mb, b.min_memory_mb, b.max_memory_mb));
  HANGAR_TRY(CheckRange("disk_mb", r.disk_mb, b.min_disk_mb, b.max_disk_mb));
  HANGAR_TRY(CheckRange("pids", r.pids, b.min_pids, b.max_pids));
  HANGAR_TRY(CheckRange("read_iops", r.read_iops, 0, b.max_iops));
  HANGAR_TRY(CheckRange("write_iops", r.write_iops, 0, b.max_iops));
  HANGAR_TRY(CheckRange("read_bps", r.read_bps, 0, b.max_bps));
  HANGAR_TRY(CheckRange("write_bps", r.write_bps, 0, b.max_bps));
  if (!spec.network.loopback_only || !spec.network.egress_allow.empty()) {
    return Status::Unimplemented("egress networking is not available on this node yet");
  }
  for (const auto& [k, v] : spec.env) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos) {
      return Status::InvalidArgument(fmt::format("env name '{}' is invalid", k));
    }
  }
  return Status::Ok();
}

namespace {

struct Paths {
  std::string dir, state, disk, lower, rootfs, socket, console;
  explicit Paths(const std::string& sandboxes_dir, const std::string& id)
      : dir(sandboxes_dir + "/" + id),
        state(dir + "/state.json"),
        disk(dir + "/disk"),
        lower(dir + "/lower"),
        rootfs(dir + "/rootfs"),
        socket(dir + "/envd.sock"),
        console(dir + "/console.log") {}
};

class NsDriver;

// Everything one sandbox holds. Members are released in reverse order of declaration, which
// is the reverse of creation: processes and cgroup first, then mounts, disk, ids, directory.
class NsSandbox final : public Sandbox {
 public:
  NsSandbox(NsDriver* driver, SandboxInfo info, Paths paths)
      : driver_(driver), info_(std::move(info)), paths_(std::move(paths)) {}
  ~NsSandbox() override;

  SandboxInfo Info() const override {
    std::lock_guard lock(mu_);
    return info_;
  }
  EnvdEndpoint Envd() const override { return EnvdEndpoint{paths_.socket, "", ""}; }
  Result<Usage> GetUsage() override;
  Status Pause() override;
  Status Resume() override;
  Status Stop(std::chrono::milliseconds grace) override;
  Status Destroy() override;

 private:
  friend class NsDriver;
  Status KillAll();

  NsDriver* driver_;
  mutable std::mutex mu_;
  SandboxInfo info_;
  Paths paths_;
  bool destroyed_ = false;
  // Resources, in creation order.
  std::optional<IdRange> range_;
  UniqueFd userns_;
  storage::Disk disk_;
  ScopedMount lower_;
  ScopedMount rootfs_;
  bool cgroup_created_ = false;
  UniqueFd listen_;
  UniqueFd init_pidfd_;
  std::optional<Child> init_;  // set when this process is the init's parent
};

class NsDriver final : public Driver {
 public:
  explicit NsDriver(NsDriverOptions o)
      : o_(std::move(o)),
        clock_(o_.clock ? o_.clock : &SystemClock::Instance()),
        sandboxes_dir_(o_.data_dir + "/sandboxes") {}

  std::string_view Name() const override { return kDriverName; }
  Status Available() const override;
  Result<SandboxPtr> Create(const SandboxSpec& spec) override;
  Result<std::pair<RecoveryReport, std::vector<SandboxPtr>>> Recover() override;

  Status Open();  // recovery, then the disk pool

  const NsDriverOptions& options() const { return o_; }
  CgroupBackend& cgroups() { return *o_.cgroups; }
  IdRangeAllocator& ids() { return *o_.ids; }

 private:
  Status Start(NsSandbox& sb, const SandboxSpec& spec, const storage::TemplateInfo& tmpl);
  Status WriteState(const NsSandbox& sb, const SandboxSpec& spec);
  Result<SandboxPtr> AdoptOrDestroy(const std::string& id, RecoveryReport& report,
                                    std::set<std::string>& live_images);

  NsDriverOptions o_;
  Clock* clock_;
  std::string sandboxes_dir_;
  UniqueFd init_binary_;
  int last_cap_ = 0;
  std::unique_ptr<storage::DiskPool> pool_;
  std::mutex mu_;
  std::set<std::string> creating_;  // ids being created (a second Create is already_exists)
  std::optional<std::pair<RecoveryReport, std::vector<SandboxPtr>>> recovered_;
};

Status NsDriver::Available() const {
  if (::geteuid() != 0) return Status::FailedPrecondition("the ns driver needs root");
  if (::access("/proc/self/ns/user", F_OK) != 0) {
    return Status::FailedPrecondition("this kernel has no user namespaces");
  }
  return Status::Ok();
}

Status NsDriver::Open() {
  if (!o_.templates || !o_.cgroups || !o_.ids) {
    return Status::InvalidArgument("ns driver: templates, cgroups and ids are required");
  }
  HANGAR_TRY(Available());
  HANGAR_ASSIGN_OR_RETURN(last_cap_, LastCapability());
  HANGAR_ASSIGN_OR_RETURN(init_binary_, OpenFile(o_.init_path, O_RDONLY));
  // Keep the binary's descriptor high so no sandbox fd number (0-3) collides with it.
  int high = ::fcntl(init_binary_.get(), F_DUPFD_CLOEXEC, 100);
  if (high < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
  init_binary_.Reset(high);
  HANGAR_TRY(MakeDirs(sandboxes_dir_));

  RecoveryReport report;
  std::vector<SandboxPtr> adopted;
  std::set<std::string> live_images;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(sandboxes_dir_, ec)) {
    std::string id = entry.path().filename().string();
    auto sb = AdoptOrDestroy(id, report, live_images);
    if (!sb.ok()) {
      log::Warn("sandbox recovery failed", {{"id", id}, {"error", sb.status().ToString()}});
    } else if (*sb) {
      adopted.push_back(std::move(*sb));
    }
  }
  std::set<std::string> live;
  for (const auto& s : adopted) live.insert(s->Info().id);
  // Cgroups, uid leases and disks no live sandbox owns.
  if (auto groups = o_.cgroups->List(); groups.ok()) {
    for (const auto& g : *groups) {
      if (live.count(g)) continue;
      if (Status st = o_.cgroups->KillAndRemove(g); !st.ok()) {
        log::Warn("removing orphan cgroup failed", {{"cgroup", g}, {"error", st.ToString()}});
      }
    }
  }
  if (auto r = o_.ids->Reconcile(live); !r.ok()) {
    log::Warn("uid range reconcile failed", {{"error", r.status().ToString()}});
  }
  HANGAR_ASSIGN_OR_RETURN(auto disks, storage::RecoverDisks(o_.data_dir, live_images));
  if (disks.cleaned() > 0 || !report.destroyed.empty() || !report.adopted.empty()) {
    log::Info("ns driver recovered", {{"adopted", report.adopted.size()},
                                      {"destroyed", report.destroyed.size()},
                                      {"disk_items_cleaned", disks.cleaned()}});
  }
  recovered_.emplace(std::move(report), std::move(adopted));

  o_.disk_pool.data_dir = o_.data_dir;
  HANGAR_ASSIGN_OR_RETURN(pool_, storage::DiskPool::Create(o_.disk_pool));
  pool_->StartBackgroundRefill();
  return Status::Ok();
}

Result<std::pair<RecoveryReport, std::vector<SandboxPtr>>> NsDriver::Recover() {
  if (!recovered_) return std::make_pair(RecoveryReport{}, std::vector<SandboxPtr>{});
  auto out = std::move(*recovered_);
  recovered_.reset();
  return out;
}

Result<SandboxPtr> NsDriver::Create(const SandboxSpec& spec) {
  HANGAR_TRY(ValidateSandboxSpec(spec, o_.bounds));
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
  SandboxInfo info;
  info.id = spec.id;
  info.driver = kDriverName;
  info.created_at = clock_->WallNow();
  auto sb = std::make_unique<NsSandbox>(this, std::move(info), paths);
  Status st = Start(*sb, spec, tmpl);
  done();
  if (!st.ok()) {
    (void)sb->Destroy();  // releases whatever Start got to
    return st.With(fmt::format("creating sandbox {}", spec.id));
  }
  return SandboxPtr(std::move(sb));
}

Status NsDriver::Start(NsSandbox& sb, const SandboxSpec& spec, const storage::TemplateInfo& tmpl) {
  const Paths& p = sb.paths_;
  const Resources& r = spec.resources;

  // 1. Ids: a host uid/gid range of its own, and the user namespace that maps it.
  HANGAR_ASSIGN_OR_RETURN(IdRange range, o_.ids->Allocate(spec.id));
  sb.range_ = range;
  sb.info_.uid_base = range.first;
  HANGAR_ASSIGN_OR_RETURN(sb.userns_, MakeUserNamespace(range));

  // 2. Its own disk: the writable layer lives there, so the quota covers everything it writes.
  HANGAR_ASSIGN_OR_RETURN(sb.disk_, pool_->Take(static_cast<uint64_t>(r.disk_mb)));
  if (!sb.disk_.attached()) HANGAR_TRY(sb.disk_.Attach());
  HANGAR_TRY(MakeDirs(p.disk));
  HANGAR_TRY(sb.disk_.Mount(p.disk));
  sb.info_.disk_device = fmt::format("{}:{}", major(sb.disk_.dev()), minor(sb.disk_.dev()));
  for (const char* d : {"/upper", "/work"}) {
    std::string path = p.disk + d;
    if (::mkdir(path.c_str(), 0755) != 0)
      return Status::FromErrno(errno, fmt::format("mkdir({})", path));
    if (::chown(path.c_str(), range.first, range.first) != 0) {
      return Status::FromErrno(errno, fmt::format("chown({}, {})", path, range.first));
    }
  }
  // lost+found belongs to host root; inside it would be an unusable nobody-owned directory.
  std::string lost = p.disk + "/lost+found";
  ::rmdir(lost.c_str());

  // 3. Root file system: template (read-only, id-mapped) under the disk's upper layer.
  HANGAR_TRY(MakeDirs(p.lower));
  HANGAR_TRY(MakeDirs(p.rootfs));
  HANGAR_ASSIGN_OR_RETURN(sb.lower_, MountIdmapped(tmpl.rootfs, p.lower, sb.userns_.get()));
  // The layers are named by descriptor: the overlay's options are readable inside the sandbox
  // (/proc/self/mountinfo), and must not show the node's directory layout. thread-self, since
  // another thread may have its own descriptor table.
  HANGAR_ASSIGN_OR_RETURN(UniqueFd lower_dir, OpenFile(p.lower, O_PATH | O_DIRECTORY));
  HANGAR_ASSIGN_OR_RETURN(UniqueFd upper_dir, OpenFile(p.disk + "/upper", O_PATH | O_DIRECTORY));
  HANGAR_ASSIGN_OR_RETURN(UniqueFd work_dir, OpenFile(p.disk + "/work", O_PATH | O_DIRECTORY));
  HANGAR_ASSIGN_OR_RETURN(
      sb.rootfs_,
      ScopedMount::Mount("overlay", p.rootfs, "overlay", MS_NODEV,
                         fmt::format("lowerdir=/proc/thread-self/fd/{},upperdir=/proc/thread-self/"
                                     "fd/{},workdir=/proc/thread-self/fd/{}",
                                     lower_dir.get(), upper_dir.get(), work_dir.get())));

  // 4. Limits.
  HANGAR_TRY(o_.cgroups->Create(spec.id));
  sb.cgroup_created_ = true;
  CgroupLimits limits;
  limits.cpu_millicores = static_cast<uint64_t>(r.cpu_millis);
  limits.memory_bytes = static_cast<uint64_t>(r.memory_mb) << 20;
  limits.pids_max = static_cast<uint64_t>(r.pids);
  if (r.read_iops || r.write_iops || r.read_bps || r.write_bps) {
    IoDeviceLimit io;
    io.major = major(sb.disk_.dev());
    io.minor = minor(sb.disk_.dev());
    io.riops = static_cast<uint64_t>(r.read_iops);
    io.wiops = static_cast<uint64_t>(r.write_iops);
    io.rbps = static_cast<uint64_t>(r.read_bps);
    io.wbps = static_cast<uint64_t>(r.write_bps);
    limits.io.push_back(io);
  }
  HANGAR_TRY(o_.cgroups->SetLimits(spec.id, limits));

  // 5. envd's socket and the console log, made by the node. The log lives on the sandbox's own
  // disk (beside upper/, invisible inside), so what the sandbox prints counts against its quota
  // instead of filling the node's disk; console.log in the state directory points at it.
  HANGAR_ASSIGN_OR_RETURN(sb.listen_, ListenUnix(p.socket));
  const std::string console_file = p.disk + "/console.log";
  HANGAR_ASSIGN_OR_RETURN(UniqueFd console,
                          OpenFile(console_file, O_WRONLY | O_CREAT | O_APPEND, 0600));
  ::unlink(p.console.c_str());
  if (::symlink("disk/console.log", p.console.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("symlink({})", p.console));
  }

  // 6. The plan of the child, then the child.
  internal::ContainPlan plan;
  HANGAR_ASSIGN_OR_RETURN(Pipe sync, MakePipe());
  HANGAR_ASSIGN_OR_RETURN(Pipe report, MakePipe());
  plan.sync_fd = sync.read.get();
  plan.report_fd = report.write.get();
  plan.rootfs = plan.Keep(p.rootfs);
  // /tmp is memory: bound it by the memory limit (the cgroup charges it anyway).
  internal::AddStandardMounts(plan, p.rootfs, range.first + 5,
                              static_cast<uint64_t>(r.memory_mb) << 19);
  plan.hostname = plan.Keep(spec.id);
  plan.userns_fd = sb.userns_.get();
  plan.keep_caps = DefaultSandboxCapabilities();
  plan.last_cap = last_cap_;
  plan.listen_fd = sb.listen_.get();
  plan.console_fd = console.get();
  plan.seccomp = o_.seccomp;
  plan.init_fd = init_binary_.get();
  plan.argv.push_back(const_cast<char*>(plan.Keep(o_.init_path)));
  for (const auto& a : o_.init_args) plan.argv.push_back(const_cast<char*>(plan.Keep(a)));
  plan.argv.push_back(nullptr);
  std::map<std::string, std::string> env = {
      {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
      {"HOSTNAME", spec.id},
      {"HANGAR_SANDBOX_ID", spec.id}};
  for (const auto& [k, v] : spec.env) env[k] = v;
  for (const auto& [k, v] : env) plan.envp.push_back(const_cast<char*>(plan.Keep(k + "=" + v)));
  plan.envp.push_back(nullptr);
  // The sync and report pipes must not land on 0-3 in the child (the plan rearranges those).
  for (UniqueFd* fd : {&sync.read, &report.write}) {
    int high = ::fcntl(fd->get(), F_DUPFD_CLOEXEC, 100);
    if (high < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
    fd->Reset(high);
  }
  plan.sync_fd = sync.read.get();
  plan.report_fd = report.write.get();

  int pidfd = -1;
  long pid =
      Clone3(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC, &pidfd);
  if (pid < 0) return Status::FromErrno(errno, "clone3(NEWNS|NEWPID|NEWNET|NEWUTS|NEWIPC)");
  if (pid == 0) internal::RunContained(plan);
  sb.init_.emplace(Child::Adopt(static_cast<pid_t>(pid)));
  sb.init_pidfd_.Reset(pidfd);
  sb.info_.init_pid = static_cast<int>(pid);
  sync.read.Reset();
  report.write.Reset();
  console.Reset();

  HANGAR_TRY(o_.cgroups->AddPid(spec.id, static_cast<pid_t>(pid)));
  HANGAR_TRY(WriteAll(sync.write.get(), "g"));
  internal::ContainFailure failure;
  ssize_t n;
  do {
    n = ::read(report.read.get(), &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof failure) return internal::DescribeFailure(plan, failure);
  if (n != 0) return Status::Internal("sandbox child: short report");
  // The socket now belongs to envd; the node keeps its path, not the listener.
  sb.listen_.Reset();

  if (o_.wait_for_envd) {
    HANGAR_TRY(WaitForEnvd(p.socket, o_.envd_ready_timeout, sb.init_pidfd_.get()));
  }
  sb.info_.state = SandboxState::kRunning;
  return WriteState(sb, spec);
}

Status NsDriver::WriteState(const NsSandbox& sb, const SandboxSpec& spec) {
  nlohmann::json j = {
      {"id", spec.id},
      {"template", spec.template_name},
      {"created_at", FormatRfc3339(sb.info_.created_at)},
      {"init_pid", sb.info_.init_pid},
      {"uid_slot", sb.range_ ? sb.range_->slot : 0},
      {"disk_image", sb.disk_.image_path()},
      {"disk_mb", sb.disk_.size_mb()},
      {"resources",
       {{"cpu_millis", spec.resources.cpu_millis},
        {"memory_mb", spec.resources.memory_mb},
        {"disk_mb", spec.resources.disk_mb},
        {"pids", spec.resources.pids}}},
  };
  return WriteFileAtomic(sb.paths_.state, j.dump(2), 0600);
}

Result<SandboxPtr> NsDriver::AdoptOrDestroy(const std::string& id, RecoveryReport& report,
                                            std::set<std::string>& live_images) {
  Paths p(sandboxes_dir_, id);
  SandboxInfo info;
  info.id = id;
  info.driver = kDriverName;
  auto sb = std::make_unique<NsSandbox>(this, info, p);
  auto text = ReadFile(p.state);
  bool whole = false;
  nlohmann::json state;
  if (text.ok()) {
    state = nlohmann::json::parse(*text, nullptr, false);
    if (!state.is_discarded() && ValidId(id)) {
      int pid = state.value("init_pid", -1);
      int pidfd = pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1;
      if (pidfd >= 0) sb->init_pidfd_.Reset(pidfd);
      auto pids = o_.cgroups->Pids(id);
      bool init_in_group = pids.ok() && std::find(pids->begin(), pids->end(), pid) != pids->end();
      auto mounts = MountsUnder(p.rootfs);
      whole = pidfd >= 0 && init_in_group && mounts.ok() && !mounts->empty();
      sb->info_.init_pid = pid;
      sb->cgroup_created_ = pids.ok();
      uint32_t slot = state.value("uid_slot", 0u);
      sb->range_ = o_.ids->RangeOf(slot);
      sb->info_.uid_base = sb->range_->first;
    }
  }
  std::string image = state.is_object() ? state.value("disk_image", "") : "";
  if (whole && !image.empty()) {
    auto disk = storage::Disk::Adopt(image, state.value("disk_mb", uint64_t{0}));
    if (disk.ok()) {
      sb->disk_ = std::move(*disk);
      sb->lower_ = ScopedMount(p.lower);
      sb->rootfs_ = ScopedMount(p.rootfs);
      sb->info_.state = SandboxState::kRunning;
      sb->info_.disk_device = fmt::format("{}:{}", major(sb->disk_.dev()), minor(sb->disk_.dev()));
      live_images.insert(image);
      report.adopted.push_back(id);
      return SandboxPtr(std::move(sb));
    }
  }
  // Not whole: release everything it may hold. Its disk image is not live, so RecoverDisks
  // detaches and deletes it; mounts under its directory are detached here.
  sb->cgroup_created_ = true;  // KillAndRemove is idempotent
  if (!sb->range_) {
    if (auto leases = o_.ids->Leases(); leases.ok()) {
      for (const auto& [slot, owner] : *leases) {
        if (owner == id) sb->range_ = o_.ids->RangeOf(slot);
      }
    }
  }
  (void)sb->Destroy();
  report.destroyed.push_back(id);
  return SandboxPtr();
}

// --- NsSandbox ----------------------------------------------------------------------------

NsSandbox::~NsSandbox() = default;  // a live sandbox outlives its object: Destroy is explicit

Result<Usage> NsSandbox::GetUsage() {
  Usage u;
  HANGAR_ASSIGN_OR_RETURN(CgroupUsage cg, driver_->cgroups().ReadUsage(info_.id));
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

Status NsSandbox::Pause() {
  std::lock_guard lock(mu_);
  if (info_.state != SandboxState::kRunning) {
    return Status::FailedPrecondition(
        fmt::format("sandbox {} is {}, not running", info_.id, StateName(info_.state)));
  }
  HANGAR_TRY(driver_->cgroups().Freeze(info_.id));
  info_.state = SandboxState::kPaused;
  return Status::Ok();
}

Status NsSandbox::Resume() {
  std::lock_guard lock(mu_);
  if (info_.state != SandboxState::kPaused) {
    return Status::FailedPrecondition(
        fmt::format("sandbox {} is {}, not paused", info_.id, StateName(info_.state)));
  }
  HANGAR_TRY(driver_->cgroups().Thaw(info_.id));
  info_.state = SandboxState::kRunning;
  return Status::Ok();
}

Status NsSandbox::KillAll() {
  Status st;
  if (cgroup_created_) st = driver_->cgroups().KillAndRemove(info_.id);
  if (init_) {
    // Our own child cannot have been reaped, so its pid is still ours to signal; this covers
    // an init that never made it into the cgroup.
    if (init_->running()) (void)init_->Signal(SIGKILL);
    (void)init_->Wait();
    init_.reset();
  }
  init_pidfd_.Reset();
  cgroup_created_ = false;
  return st;
}

Status NsSandbox::Stop(std::chrono::milliseconds grace) {
  std::lock_guard lock(mu_);
  if (info_.state == SandboxState::kStopped) return Status::Ok();
  if (info_.state == SandboxState::kPaused) (void)driver_->cgroups().Thaw(info_.id);
  if (init_pidfd_.valid()) {
    ::syscall(SYS_pidfd_send_signal, init_pidfd_.get(), SIGTERM, nullptr, 0);
    pollfd pfd{init_pidfd_.get(), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(grace.count()));
  }
  Status st = KillAll();
  info_.state = SandboxState::kStopped;
  info_.reason = "stopped";
  return st;
}

Status NsSandbox::Destroy() {
  std::lock_guard lock(mu_);
  if (destroyed_) return Status::Ok();
  Status first = KillAll();
  auto keep = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  keep(rootfs_.Unmount());
  keep(lower_.Unmount());
  keep(disk_.Destroy());
  // Anything else still mounted below the directory (an interrupted earlier run).
  if (auto left = MountsUnder(paths_.dir); left.ok()) {
    for (const auto& m : *left) {
      ScopedMount owned(m);
      keep(owned.Unmount());
    }
  }
  userns_.Reset();
  if (range_) {
    keep(driver_->ids().Release(range_->slot));
    range_.reset();
  }
  keep(RemoveTree(paths_.dir));
  destroyed_ = true;
  info_.state = SandboxState::kStopped;
  if (!first.ok())
    log::Warn("sandbox destroy incomplete", {{"id", info_.id}, {"error", first.ToString()}});
  return first;
}

}  // namespace

Result<DriverPtr> NewNsDriver(NsDriverOptions options) {
  auto d = std::make_unique<NsDriver>(std::move(options));
  HANGAR_TRY(d->Open());
  return DriverPtr(std::move(d));
}

}  // namespace hangar::node
