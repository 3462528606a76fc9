#include "hangar/microvm/microvm_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "hangar/microvm/qemu_args.h"
#include "hangar/microvm/qmp.h"
#include "hangar/node/ns_driver.h"
#include "hangar/storage/template_store.h"

namespace hangar::microvm {

namespace {

constexpr char kDriverName[] = "microvm";
constexpr uint16_t kEnvdGuestPort = 49983;
constexpr char kGuestEnvd[] = "/.hangar/envd";
// The file the guest's envd reads its token from (--access-token-file; tmpfs, root only).
constexpr char kGuestTokenFile[] = "/.hangar/run/token";
// Warm pool slots: a '-' makes the name an invalid sandbox id, so a slot never collides with one.
constexpr std::string_view kSlotPrefix = "pool-";
// Unfinished snapshot builds: upper case, which no template name (the prefix of a finished
// snapshot's directory) can start with; also a valid cgroup name and guest hostname.
constexpr char kSnapshotBuildPrefix[] = "Building-";

bool IsSlotName(std::string_view name) { return name.rfind(kSlotPrefix, 0) == 0; }

bool Exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

Status CheckPathForQemu(const std::string& p) {
  // QEMU option values are comma-separated; a comma in a path would change their meaning.
  if (p.find(',') != std::string::npos) {
    return Status::InvalidArgument(fmt::format("path '{}' must not contain ','", p));
  }
  return Status::Ok();
}

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Waits until the process behind `pidfd` exits (true) or `timeout` passes (false).
bool WaitPidfd(int pidfd, std::chrono::milliseconds timeout) {
  pollfd pfd{pidfd, POLLIN, 0};
  int r;
  do {
    r = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

// The command line of `pid` as one string (NULs as spaces), "" if gone.
std::string Cmdline(pid_t pid) {
  auto text = ReadFile(fmt::format("/proc/{}/cmdline", pid));
  if (!text.ok()) return "";
  std::string s = *text;
  for (char& c : s) {
    if (c == '\0') c = ' ';
  }
  return s;
}

// GET /health over TCP: 2xx once envd serves.
Status WaitForEnvdTcp(uint16_t port, std::chrono::milliseconds timeout, int vmm_pidfd) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    if (vmm_pidfd >= 0 && WaitPidfd(vmm_pidfd, std::chrono::milliseconds(0))) {
      return Status::Unavailable("the VM exited before envd became ready (see console.log)");
    }
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket(AF_INET)");
    UniqueFd s(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      static constexpr std::string_view kReq =
          "GET /health HTTP/1.1\r\nHost: envd\r\nConnection: close\r\n\r\n";
      if (::send(fd, kReq.data(), kReq.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(kReq.size())) {
        char buf[64];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n >= 12 && buf[9] == '2') return Status::Ok();
        // The forward accepts before the guest does; a reset means envd is not up yet.
        last = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "connection closed";
      }
    } else {
      last = std::strerror(errno);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::DeadlineExceeded(fmt::format(
      "envd did not answer on 127.0.0.1:{} within {} ms ({})", port, timeout.count(), last));
}

struct Paths {
  std::string dir, state, disk, qmp, pid, console, fw;
  Paths() = default;
  Paths(const std::string& parent, const std::string& name)
      : dir(parent + "/" + name),
        state(dir + "/state.json"),
        disk(dir + "/disk.qcow2"),
        qmp(dir + "/qmp.sock"),
        pid(dir + "/qemu.pid"),
        console(dir + "/console.log"),
        fw(dir + "/fw") {}
};

// What one running VM is, apart from the sandbox bookkeeping.
struct Vm {
  Paths paths;
  pid_t pid = -1;
  UniqueFd pidfd;
  uint16_t port = 0;
  std::string token;
  std::string cgroup;  // "" when none was created
};

class MicroVmDriver;

class MicroVmSandbox final : public node::Sandbox {
 public:
  MicroVmSandbox(MicroVmDriver* d, node::SandboxInfo info, Vm vm, int64_t disk_mb)
      : driver_(d), info_(std::move(info)), vm_(std::move(vm)), disk_mb_(disk_mb) {}

  node::SandboxInfo Info() const override {
    std::lock_guard lock(mu_);
    return info_;
  }
  node::EnvdEndpoint Envd() const override {
    std::lock_guard lock(mu_);
    return node::EnvdEndpoint{"", fmt::format("127.0.0.1:{}", vm_.port), vm_.token};
  }
  Result<node::Usage> GetUsage() override;
  Status Pause() override;
  Status Resume() override;
  Status Stop(std::chrono::milliseconds grace) override;
  Status Destroy() override;

 private:
  friend class MicroVmDriver;
  Status KillVmm(std::chrono::milliseconds grace);

  MicroVmDriver* driver_;
  mutable std::mutex mu_;
  node::SandboxInfo info_;
  Vm vm_;
  int64_t disk_mb_;
  // The directory QEMU's command line names when it is not vm_.paths.dir (a claimed warm pool
  // slot keeps its slot name there); recovery matches the VMM by it.
  std::string vmm_dir_;
  bool destroyed_ = false;
};

struct SnapshotKey {
  std::string image;  // base image path
  int vcpus;
  int64_t memory_mb;
  std::string Name(const std::string& image_key) const {
    return fmt::format("{}-c{}-m{}", image_key, vcpus, memory_mb);
  }
};

class MicroVmDriver final : public node::Driver {
 public:
  explicit MicroVmDriver(MicroVmDriverOptions o)
      : o_(std::move(o)), clock_(o_.clock ? o_.clock : &SystemClock::Instance()) {}
  ~MicroVmDriver() override { StopPool(); }
  MicroVmDriver(const MicroVmDriver&) = delete;
  MicroVmDriver& operator=(const MicroVmDriver&) = delete;

  std::string_view Name() const override { return kDriverName; }
  Status Available() const override { return QemuAvailable(o_); }
  Result<node::SandboxPtr> Create(const node::SandboxSpec& spec) override;
  Result<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> Recover() override;

  Status Open();
  Status PrepareSnapshot(const std::string& template_name, int vcpus, int64_t memory_mb);

  node::CgroupBackend& cgroups() { return *o_.cgroups; }
  const std::string& sandboxes_dir() const { return sandboxes_dir_; }

  node::WarmPoolStats PoolStats() const;
  bool WaitForPool(std::chrono::milliseconds timeout) const;

 private:
  struct BaseImage {
    std::string path;
    std::string key;
    int64_t size_mb = 0;
  };
  Result<BaseImage> GetBaseImage(const storage::TemplateInfo& t);
  // Boots (or restores) a VM in `vm.paths.dir` (which exists); fills pid, pidfd, port.
  Status Launch(Vm& vm, const node::SandboxSpec& spec, const BaseImage& base,
                const std::string& incoming, const std::string& layer_from);
  Status WriteState(const MicroVmSandbox& sb, const node::SandboxSpec& spec);
  bool UseKvm() const;
  std::string SnapshotDir(const BaseImage& base, int vcpus, int64_t memory_mb) const {
    return fmt::format("{}/{}-c{}-m{}-{}", snapshots_dir_, base.key, vcpus, memory_mb,
                       VmLayoutKey());
  }
  // What a saved VM state depends on besides the template and its shape: the device set
  // (kVmLayoutVersion), the guest command line, the accelerator, the QEMU build and the guest
  // kernel + initramfs. A snapshot whose key differs is never restored (Open removes it).
  std::string VmLayoutKey() const;
  Status Claim(MicroVmSandbox& sb, const node::SandboxSpec& spec);
  // Waits for an -incoming restore to finish loading, then starts the VM (QMP cont).
  Status StartRestored(QmpClient& qmp);
  // Runs the guest's envd with `args` as root (the restore / claim set-up).
  Status GuestSetup(const Vm& vm, const std::vector<std::string>& args);
  // A restored VM's envd takes the snapshot's token, which every VM of that snapshot shares,
  // and its kernel RNG has the snapshot's state: gives it a token and RNG state of its own.
  Status RekeyAndSetUp(Vm& vm, std::vector<std::string> setup_args);
  node::CgroupLimits LimitsFor(const node::Resources& r) const;

  // Warm pool.
  Status CheckPool() const;  // the entries' bounds, before anything is touched
  void StartPool();
  void StopPool();
  void RefillLoop();
  void ConsoleGuardLoop();
  void CapConsoles();
  bool PoolFull() const;  // pool_mu_ held
  Result<std::unique_ptr<MicroVmSandbox>> StartSlot(const MicroVmWarmPoolEntry& e);
  Result<node::SandboxPtr> ClaimSlot(std::unique_ptr<MicroVmSandbox> slot,
                                     const node::SandboxSpec& spec);

  MicroVmDriverOptions o_;
  Clock* clock_;
  std::string sandboxes_dir_, images_dir_, snapshots_dir_;
  std::string qemu_version_;  // `qemu --version`'s first line, read at Open
  std::mutex image_mu_;       // serializes base image builds
  std::mutex snapshot_mu_;    // serializes snapshot builds
  std::optional<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> recovered_;

  mutable std::mutex pool_mu_;
  mutable std::condition_variable pool_cv_;
  std::vector<std::vector<std::unique_ptr<MicroVmSandbox>>> pool_ready_;  // per entry, FIFO
  std::vector<size_t> pool_starting_;                                     // per entry
  std::vector<std::chrono::steady_clock::time_point> pool_not_before_;    // per entry
  node::WarmPoolStats pool_stats_;
  bool pool_stop_ = false;
  std::thread refill_;
  std::thread console_guard_;
};

// --- host checks --------------------------------------------------------------------------

bool KvmUsable() {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

bool MicroVmDriver::UseKvm() const {
  if (o_.accel == "kvm") return true;
  if (o_.accel == "tcg") return false;
  return KvmUsable();
}

// --- base images --------------------------------------------------------------------------

Result<MicroVmDriver::BaseImage> MicroVmDriver::GetBaseImage(const storage::TemplateInfo& t) {
  struct stat envd {};
  if (::stat(o_.envd_path.c_str(), &envd) != 0) {
    return Status::FromErrno(errno, fmt::format("stat({})", o_.envd_path));
  }
  // The image depends on the template's content and on the envd binary inside it.
  const std::string identity = fmt::format("{}|{}|{}|{}|{}", t.name, t.digest, t.created_at,
                                           envd.st_size, envd.st_mtim.tv_sec);
  BaseImage img;
  img.key = fmt::format("{}-{:016x}", t.name, std::hash<std::string>{}(identity));
  img.path = fmt::format("{}/{}.ext4", images_dir_, img.key);
  std::lock_guard lock(image_mu_);
  struct stat st {};
  if (::stat(img.path.c_str(), &st) == 0) {
    img.size_mb = st.st_size >> 20;
    return img;
  }
  // Content + one block per entry for small files and directories + envd + room for the
  // journal and metadata; at least 100 MiB.
  const std::string tmp = img.path + ".tmp";
  ::unlink(tmp.c_str());
  // Debug info stays on the host (a RelWithDebInfo envd is ~15x its stripped size).
  std::string envd_copy = tmp + ".envd";
  if (!RunChecked({"strip", "--strip-debug", "-o", envd_copy, o_.envd_path}).ok()) {
    envd_copy = o_.envd_path;  // no binutils on this node: the binary as it is
  }
  struct stat copied {};
  ::stat(envd_copy.c_str(), &copied);
  auto fail = [&tmp, &envd_copy, this](Status s) {
    ::unlink(tmp.c_str());
    if (envd_copy != o_.envd_path) ::unlink(envd_copy.c_str());
    return s;
  };
  const uint64_t bytes = t.size_bytes + t.file_count * 4096 + static_cast<uint64_t>(copied.st_size);
  img.size_mb = std::max<int64_t>(100, static_cast<int64_t>(bytes * 13 / 10 >> 20) + 48);
  if (auto r = RunChecked({"mkfs.ext4", "-q", "-F", "-L", "hangar-root", "-E", "root_owner=0:0",
                           "-d", t.rootfs, tmp, fmt::format("{}M", img.size_mb)},
                          std::chrono::minutes(10));
      !r.ok()) {
    return fail(r.status().With("building the base image of template " + t.name));
  }
  const std::string cmds = fmt::format(
      "mkdir /.hangar\nwrite {} /.hangar/envd\nsif /.hangar/envd mode 0100755\n"
      "sif /.hangar/envd uid 0\nsif /.hangar/envd gid 0\n",
      envd_copy);
  const std::string cmd_file = tmp + ".debugfs";
  HANGAR_TRY(WriteFile(cmd_file, cmds));
  auto r = RunChecked({"debugfs", "-w", "-f", cmd_file, tmp});
  ::unlink(cmd_file.c_str());
  if (envd_copy != o_.envd_path) ::unlink(envd_copy.c_str());
  if (!r.ok()) return fail(r.status().With("adding envd to the base image"));
  // debugfs reports errors on stdout and exits 0: check the result instead.
  auto check = RunChecked({"debugfs", "-R", "stat /.hangar/envd", tmp});
  if (!check.ok() || check->find(fmt::format("Size: {}", copied.st_size)) == std::string::npos) {
    return fail(Status::Internal("envd is missing from the base image after debugfs"));
  }
  if (::chmod(tmp.c_str(), 0444) != 0) return fail(Status::FromErrno(errno, "chmod(image)"));
  if (::rename(tmp.c_str(), img.path.c_str()) != 0) {
    return fail(Status::FromErrno(errno, fmt::format("rename({})", img.path)));
  }
  log::Info("microvm base image built",
            {{"template", t.name}, {"image", img.path}, {"size_mb", img.size_mb}});
  return img;
}

// --- snapshots' compatibility ------------------------------------------------------------

std::string MicroVmDriver::VmLayoutKey() const {
  std::string identity = fmt::format("layout {}|{}|kvm {}|{}", kVmLayoutVersion, GuestCmdline(),
                                     UseKvm(), qemu_version_);
  for (const char* f : {"vmlinuz", "initrd.img"}) {
    struct stat st {};
    if (::stat((o_.kernel_dir + "/" + f).c_str(), &st) == 0) {
      identity += fmt::format("|{} {} {}.{}", f, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    }
  }
  return fmt::format("v{:016x}", std::hash<std::string>{}(identity));
}

// --- launching ----------------------------------------------------------------------------

Status MicroVmDriver::Launch(Vm& vm, const node::SandboxSpec& spec, const BaseImage& base,
                             const std::string& incoming, const std::string& layer_from) {
  const Paths& p = vm.paths;
  const node::Resources& r = spec.resources;
  HANGAR_TRY(MakeDirs(p.fw));
  if (layer_from.empty()) {
    HANGAR_TRY(RunChecked({"qemu-img", "create", "-q", "-f", "qcow2", "-b", base.path, "-F", "raw",
                           p.disk, fmt::format("{}M", incoming.empty() ? r.disk_mb : base.size_mb)})
                   .status()
                   .With("creating the disk layer"));
  } else {
    HANGAR_TRY(RunChecked({"cp", "--reflink=auto", layer_from, p.disk})
                   .status()
                   .With("copying the layer"));
  }
  // Settings the guest's stage 1 reads from fw_cfg (never on QEMU's command line, which any
  // host user can read).
  std::string env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  env.push_back('\0');
  for (const auto& [k, v] : spec.env) {
    env += k + "=" + v;
    env.push_back('\0');
  }
  HANGAR_TRY(WriteFileAtomic(p.fw + "/hostname", spec.id, 0600));
  HANGAR_TRY(WriteFileAtomic(p.fw + "/token", vm.token, 0600));
  HANGAR_TRY(WriteFileAtomic(p.fw + "/env", env, 0600));

  HANGAR_TRY(o_.cgroups->Create(vm.cgroup));
  HANGAR_TRY(o_.cgroups->SetLimits(vm.cgroup, LimitsFor(r)));

  VmConfig c;
  c.qemu_binary = o_.qemu_binary;
  c.kvm = UseKvm();
  c.kernel = o_.kernel_dir + "/vmlinuz";
  c.initrd = o_.kernel_dir + "/initrd.img";
  c.cmdline = GuestCmdline();
  c.vcpus = VcpusFor(r.cpu_millis);
  c.memory_mb = r.memory_mb;
  c.disk = p.disk;
  c.throttle = {r.read_iops, r.write_iops, r.read_bps, r.write_bps};
  c.console_log = p.console;
  c.qmp_socket = p.qmp;
  c.pid_file = p.pid;
  c.guest_port = kEnvdGuestPort;
  c.fw_cfg = {{"hostname", p.fw + "/hostname"}, {"token", p.fw + "/token"}, {"env", p.fw + "/env"}};
  c.incoming = incoming;
  // The shell joins the VM's cgroup before exec, so QEMU and every thread and child it makes
  // are charged there from the first page.
  std::string join;
  for (const std::string& dir : o_.cgroups->Paths(vm.cgroup)) {
    join += fmt::format("echo $$ > '{}/cgroup.procs' || exit 125; ", dir);
  }
  std::vector<std::string> argv = {"/bin/sh", "-c", join + "exec \"$@\"", "sh"};
  for (std::string& a : BuildQemuArgs(c)) argv.push_back(std::move(a));
  // With -daemonize the first process exits once the VM is set up: its stderr is the error.
  auto out = RunCommand(argv, std::chrono::seconds(60));
  if (!out.ok()) return out.status().With("starting QEMU");
  if (!out->status.success()) {
    return Status::Internal(
        fmt::format("QEMU failed to start ({}): {}", out->status.ToString(), out->err));
  }
  HANGAR_ASSIGN_OR_RETURN(std::string pid_text, ReadFile(p.pid));
  vm.pid = std::atoi(pid_text.c_str());
  if (vm.pid <= 0) return Status::Internal("QEMU wrote no pid");
  int pidfd = PidfdOpen(vm.pid);
  if (pidfd < 0) return Status::FromErrno(errno, "pidfd_open(qemu)").With("QEMU exited at once");
  vm.pidfd.Reset(pidfd);
  HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(p.qmp));
  HANGAR_ASSIGN_OR_RETURN(std::string usernet, qmp.Human("info usernet"));
  vm.port = ParseHostForwardPort(usernet);
  if (vm.port == 0) return Status::Internal("QEMU reported no host forward: " + usernet);
  return Status::Ok();
}

node::CgroupLimits MicroVmDriver::LimitsFor(const node::Resources& r) const {
  node::CgroupLimits limits;
  limits.cpu_millicores = static_cast<uint64_t>(r.cpu_millis);
  limits.memory_bytes = static_cast<uint64_t>(r.memory_mb + o_.vmm_overhead_mb) << 20;
  limits.pids_max = 512;  // VMM threads (vCPUs, I/O workers), not the guest's processes
  return limits;
}

Status MicroVmDriver::WriteState(const MicroVmSandbox& sb, const node::SandboxSpec& spec) {
  nlohmann::json j = {
      {"id", spec.id},
      {"template", spec.template_name},
      {"created_at", FormatRfc3339(sb.info_.created_at)},
      {"pid", sb.vm_.pid},
      {"port", sb.vm_.port},
      {"token", sb.vm_.token},
      {"cgroup", sb.vm_.cgroup},
      {"vmm_dir", sb.vmm_dir_.empty() ? sb.vm_.paths.dir : sb.vmm_dir_},
      {"disk_mb", spec.resources.disk_mb},
      {"resources",
       {{"cpu_millis", spec.resources.cpu_millis},
        {"memory_mb", spec.resources.memory_mb},
        {"disk_mb", spec.resources.disk_mb}}},
  };
  return WriteFileAtomic(sb.vm_.paths.state, j.dump(2), 0600);
}

Status MicroVmDriver::StartRestored(QmpClient& qmp) {
  // The snapshot was saved from a stopped VM and QEMU carries the run state over: once the
  // state is loaded ("inmigrate" -> "paused") the VM is started with `cont`.
  const auto deadline = std::chrono::steady_clock::now() + o_.boot_timeout;
  for (;;) {
    HANGAR_ASSIGN_OR_RETURN(nlohmann::json st, qmp.Execute("query-status"));
    std::string status = st.value("status", "");
    if (status == "running") return Status::Ok();
    if (status == "paused" || status == "postmigrate") {
      HANGAR_TRY(qmp.Execute("cont").status());
      continue;
    }
    if (status != "inmigrate" && status != "prelaunch") {
      return Status::Internal("restoring the snapshot failed: VM is " + status);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::DeadlineExceeded("restoring the snapshot took too long");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status MicroVmDriver::GuestSetup(const Vm& vm, const std::vector<std::string>& args) {
  HANGAR_ASSIGN_OR_RETURN(
      envd::Client client,
      envd::Client::Create({"", fmt::format("127.0.0.1:{}", vm.port), vm.token}));
  envd::Command cmd{
      .cmd = kGuestEnvd, .args = args, .user = "root", .timeout = std::chrono::seconds(30)};
  std::string err;
  HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo done,
                          client.Run(cmd, {.on_stderr = [&err](std::string_view s) { err += s; }}));
  if (done.exit_code != 0) {
    return Status::Internal(
        fmt::format("guest set-up after restore failed ({}): {}", done.status, err));
  }
  return Status::Ok();
}

// The new token goes into envd's token file first (files API, as root, authenticated with the
// old token); one command then runs the set-up, mixes fresh host random bytes into the guest
// kernel's pool and reseeds its CRNG (--seed-rng), and SIGHUPs envd (--reload-token), which
// re-reads the file. The reload is asynchronous: the new token is polled for, then the old one
// must be refused. If anything fails after the file was written (the HUP lost, envd still on
// the old token) the caller destroys the VM: a sandbox is never handed out on a shared token.
// The seed travels on the command's argv, visible inside this guest only for the instant the
// command runs (a tenant may know its own VM's seed; what matters is that no other VM shares it).
Status MicroVmDriver::RekeyAndSetUp(Vm& vm, std::vector<std::string> setup_args) {
  const std::string address = fmt::format("127.0.0.1:{}", vm.port);
  const std::string token = RandomHex(16);
  HANGAR_ASSIGN_OR_RETURN(envd::Client old_client, envd::Client::Create({"", address, vm.token}));
  HANGAR_TRY(old_client.WriteFile(kGuestTokenFile, token, "root")
                 .status()
                 .With("writing the sandbox's envd token"));
  setup_args.insert(setup_args.end(), {"--seed-rng", RandomHex(32), "--reload-token"});
  HANGAR_TRY(GuestSetup(vm, setup_args));
  HANGAR_ASSIGN_OR_RETURN(envd::Client new_client, envd::Client::Create({"", address, token}));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto back = new_client.ReadFile(kGuestTokenFile, "root");
    if (back.ok()) {
      if (*back != token) return Status::Internal("envd's token file does not hold the new token");
      break;
    }
    if (back.status().code() != Code::kUnauthenticated) {
      return back.status().With("checking envd's new token");
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::DeadlineExceeded("envd did not take its new token (SIGHUP lost?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (auto old = old_client.Stat("/", "root"); old.status().code() != Code::kUnauthenticated) {
    return Status::Internal(fmt::format("envd still accepts the snapshot's token ({})",
                                        old.ok() ? "ok" : old.status().ToString()));
  }
  vm.token = token;
  return Status::Ok();
}

// After a restore: the disk grows to the sandbox's size, the guest takes its identity, its own
// envd token and RNG state.
Status MicroVmDriver::Claim(MicroVmSandbox& sb, const node::SandboxSpec& spec) {
  HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(sb.vm_.paths.qmp));
  HANGAR_TRY(StartRestored(qmp));
  HANGAR_TRY(
      qmp.Execute("block_resize", {{"device", "root"}, {"size", spec.resources.disk_mb << 20}})
          .status());
  const int64_t now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_->WallNow().time_since_epoch())
          .count();
  return RekeyAndSetUp(sb.vm_, {"--grow-fs", "/", "--set-hostname", spec.id, "--set-clock-ns",
                                std::to_string(now_ns)});
}

Result<node::SandboxPtr> MicroVmDriver::Create(const node::SandboxSpec& spec) {
  HANGAR_TRY(node::ValidateSandboxSpec(spec, node::ResourceBounds{}));
  // Open checked the whole host; the kernel cache is what set-up scripts may replace since.
  if (!Exists(o_.kernel_dir + "/vmlinuz") || !Exists(o_.kernel_dir + "/initrd.img")) {
    return Status::FailedPrecondition(fmt::format(
        "guest kernel cache {} is incomplete (run scripts/fetch-guest-kernel.sh)", o_.kernel_dir));
  }
  HANGAR_ASSIGN_OR_RETURN(storage::TemplateInfo tmpl, o_.templates->Get(spec.template_name));
  HANGAR_ASSIGN_OR_RETURN(BaseImage base, GetBaseImage(tmpl));
  if (spec.resources.disk_mb < base.size_mb) {
    return Status::InvalidArgument(
        fmt::format("resources.disk_mb = {} is below the size of template {}'s disk image ({} MB)",
                    spec.resources.disk_mb, spec.template_name, base.size_mb));
  }
  const int vcpus = VcpusFor(spec.resources.cpu_millis);
  if (Exists(Paths(sandboxes_dir_, spec.id).dir)) {
    return Status::AlreadyExists(fmt::format("sandbox {} already exists", spec.id));
  }
  // The warm pool first: a paused VM of exactly this shape.
  {
    std::unique_ptr<MicroVmSandbox> slot;
    bool pooled_template = false;
    {
      std::lock_guard lock(pool_mu_);
      for (size_t i = 0; i < o_.warm_pool.entries.size() && i < pool_ready_.size(); ++i) {
        const MicroVmWarmPoolEntry& e = o_.warm_pool.entries[i];
        if (e.template_name != spec.template_name) continue;
        pooled_template = true;
        if (e.vcpus != vcpus || e.memory_mb != spec.resources.memory_mb ||
            e.disk_mb != spec.resources.disk_mb || !spec.env.empty() || pool_ready_[i].empty()) {
          continue;
        }
        slot = std::move(pool_ready_[i].front());
        pool_ready_[i].erase(pool_ready_[i].begin());
        pool_not_before_[i] = std::max(
            pool_not_before_[i], std::chrono::steady_clock::now() + o_.warm_pool.refill_delay);
        break;
      }
      if (pooled_template && !slot) ++pool_stats_.misses;
    }
    pool_cv_.notify_all();
    if (slot) {
      auto claimed = ClaimSlot(std::move(slot), spec);
      std::lock_guard lock(pool_mu_);
      if (claimed.ok()) {
        ++pool_stats_.claimed;
        return claimed;
      }
      ++pool_stats_.failures;
      if (claimed.status().code() == Code::kAlreadyExists) return claimed.status();
      // Falls through to the restore or cold path.
      log::Warn("microvm warm pool claim failed; restoring instead",
                {{"id", spec.id}, {"error", claimed.status().ToString()}});
    }
  }
  const std::string snap = SnapshotDir(base, vcpus, spec.resources.memory_mb);
  if (o_.auto_snapshot && spec.env.empty() && !Exists(snap + "/state.bin")) {
    if (Status st = PrepareSnapshot(spec.template_name, vcpus, spec.resources.memory_mb);
        !st.ok()) {
      log::Warn("microvm snapshot failed; booting cold", {{"error", st.ToString()}});
    }
  }
  const bool restore = spec.env.empty() && Exists(snap + "/state.bin");

  Vm vm;
  vm.paths = Paths(sandboxes_dir_, spec.id);
  if (::mkdir(vm.paths.dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) {
      return Status::AlreadyExists(fmt::format("sandbox {} already exists", spec.id));
    }
    return Status::FromErrno(errno, fmt::format("mkdir({})", vm.paths.dir));
  }
  vm.cgroup = spec.id;
  node::SandboxInfo info;
  info.id = spec.id;
  info.driver = kDriverName;
  info.created_at = clock_->WallNow();
  std::string layer_from, incoming;
  if (restore) {
    auto token = ReadFile(snap + "/token");
    if (token.ok()) {
      vm.token = *token;
      layer_from = snap + "/layer.qcow2";
      incoming = fmt::format("exec:cat {}", snap + "/state.bin");
    }
  }
  if (vm.token.empty()) vm.token = RandomHex(16);
  auto sb = std::make_unique<MicroVmSandbox>(this, std::move(info), std::move(vm),
                                             spec.resources.disk_mb);
  const auto t0 = std::chrono::steady_clock::now();
  Status st = Launch(sb->vm_, spec, base, incoming, layer_from);
  const auto t1 = std::chrono::steady_clock::now();
  if (st.ok()) sb->info_.init_pid = sb->vm_.pid;
  if (st.ok() && !incoming.empty()) {
    st = Claim(*sb, spec);  // which has had envd run a command: it serves
  } else if (st.ok()) {
    st = WaitForEnvdTcp(sb->vm_.port, o_.boot_timeout, sb->vm_.pidfd.get());
  }
  const auto t2 = std::chrono::steady_clock::now();
  if (st.ok()) {
    sb->info_.state = node::SandboxState::kRunning;
    st = WriteState(*sb, spec);
  }
  if (!st.ok()) {
    std::string console;
    if (auto text = ReadFile(sb->vm_.paths.console); text.ok()) {
      console = text->size() > 600 ? text->substr(text->size() - 600) : *text;
    }
    (void)sb->Destroy();
    if (!console.empty()) log::Warn("microvm boot failed", {{"id", spec.id}, {"console", console}});
    return st.With(fmt::format("creating microVM sandbox {}", spec.id));
  }
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  log::Info("microvm sandbox started", {{"id", spec.id},
                                        {"restored", !incoming.empty()},
                                        {"launch_ms", ms(t1 - t0)},
                                        {"ready_ms", ms(t2 - t1)},
                                        {"port", sb->vm_.port},
                                        {"pid", sb->vm_.pid}});
  return node::SandboxPtr(std::move(sb));
}

// --- snapshots ----------------------------------------------------------------------------

Status MicroVmDriver::PrepareSnapshot(const std::string& template_name, int vcpus,
                                      int64_t memory_mb) {
  HANGAR_TRY(QemuAvailable(o_));
  HANGAR_ASSIGN_OR_RETURN(storage::TemplateInfo tmpl, o_.templates->Get(template_name));
  HANGAR_ASSIGN_OR_RETURN(BaseImage base, GetBaseImage(tmpl));
  std::lock_guard lock(snapshot_mu_);
  const std::string dir = SnapshotDir(base, vcpus, memory_mb);
  if (Exists(dir + "/state.bin")) return Status::Ok();
  const std::string name = std::string(kSnapshotBuildPrefix) + RandomHex(6);
  Vm vm;
  vm.paths = Paths(snapshots_dir_, name);
  vm.cgroup = name;
  vm.token = RandomHex(16);
  HANGAR_TRY(MakeDirs(vm.paths.dir));
  node::SandboxSpec spec;
  spec.id = name;
  spec.template_name = template_name;
  spec.resources.cpu_millis = vcpus * 1000;
  spec.resources.memory_mb = memory_mb;
  spec.resources.disk_mb = base.size_mb;
  auto cleanup = [&](Status s) {
    if (vm.pidfd.valid()) {
      ::syscall(SYS_pidfd_send_signal, vm.pidfd.get(), SIGKILL, nullptr, 0);
      WaitPidfd(vm.pidfd.get(), std::chrono::seconds(10));
    }
    (void)o_.cgroups->KillAndRemove(vm.cgroup);
    (void)RemoveTree(vm.paths.dir);
    return s.With("preparing the snapshot of template " + template_name);
  };
  // Booted with a layer of the base image's size: a restore resizes its copy to disk_mb.
  if (Status st = Launch(vm, spec, base, "", ""); !st.ok()) return cleanup(st);
  if (Status st = WaitForEnvdTcp(vm.port, o_.boot_timeout, vm.pidfd.get()); !st.ok()) {
    return cleanup(st);
  }
  auto qmp = QmpClient::Connect(vm.paths.qmp, std::chrono::seconds(60));
  if (!qmp.ok()) return cleanup(qmp.status());
  const std::string state = vm.paths.dir + "/state.bin";
  for (auto [cmd, args] : std::initializer_list<std::pair<const char*, nlohmann::json>>{
           {"stop", nullptr}, {"migrate", {{"uri", fmt::format("exec:cat > {}", state)}}}}) {
    if (auto r = qmp->Execute(cmd, args); !r.ok()) return cleanup(r.status());
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  for (;;) {
    auto m = qmp->Execute("query-migrate");
    if (!m.ok()) return cleanup(m.status());
    std::string status = m->value("status", "");
    if (status == "completed") break;
    if (status == "failed" || status == "cancelled" ||
        std::chrono::steady_clock::now() > deadline) {
      return cleanup(Status::Internal("saving the VM state: migration " + status + " " +
                                      m->value("error-desc", "")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  (void)qmp->Execute("quit");
  if (!WaitPidfd(vm.pidfd.get(), std::chrono::seconds(30))) {
    return cleanup(Status::Internal("QEMU did not quit after saving the snapshot"));
  }
  vm.pidfd.Reset();
  (void)o_.cgroups->KillAndRemove(vm.cgroup);
  if (Status st = WriteFileAtomic(vm.paths.dir + "/token", vm.token, 0600); !st.ok()) {
    return cleanup(st);
  }
  if (::rename(vm.paths.disk.c_str(), (vm.paths.dir + "/layer.qcow2").c_str()) != 0 ||
      ::rename(vm.paths.dir.c_str(), dir.c_str()) != 0) {
    return cleanup(Status::FromErrno(errno, "rename(snapshot)"));
  }
  log::Info("microvm snapshot saved", {{"template", template_name}, {"dir", dir}});
  return Status::Ok();
}

// --- warm pool ----------------------------------------------------------------------------

Status MicroVmDriver::CheckPool() const {
  for (const MicroVmWarmPoolEntry& e : o_.warm_pool.entries) {
    if (e.template_name.empty() || e.vcpus < 1 || e.vcpus > 64 || e.memory_mb < 32 ||
        e.disk_mb < 64 || e.size > 100) {
      return Status::InvalidArgument(fmt::format(
          "warm pool entry '{}' ({} VMs, {} vCPUs, {} MB memory, {} MB disk) is out of bounds "
          "(1-64 vCPUs, memory >= 32, disk >= 64, at most 100 VMs)",
          e.template_name, e.size, e.vcpus, e.memory_mb, e.disk_mb));
    }
  }
  return Status::Ok();
}

void MicroVmDriver::StartPool() {
  const auto& entries = o_.warm_pool.entries;
  std::lock_guard lock(pool_mu_);
  pool_ready_.resize(entries.size());
  pool_starting_.assign(entries.size(), 0);
  pool_not_before_.assign(entries.size(), std::chrono::steady_clock::time_point{});
  if (std::any_of(entries.begin(), entries.end(), [](const auto& e) { return e.size > 0; })) {
    refill_ = std::thread([this] { RefillLoop(); });
  }
  console_guard_ = std::thread([this] { ConsoleGuardLoop(); });
}

void MicroVmDriver::ConsoleGuardLoop() {
  std::unique_lock lock(pool_mu_);
  while (!pool_stop_) {
    lock.unlock();
    CapConsoles();
    lock.lock();
    pool_cv_.wait_for(lock, o_.console_check, [this] { return pool_stop_; });
  }
}

// QEMU appends to console.log (O_APPEND): truncating it under QEMU is safe, its next write lands
// at the new end.
void MicroVmDriver::CapConsoles() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(sandboxes_dir_, ec)) {
    const std::string path = e.path().string() + "/console.log";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || st.st_size <= o_.console_max_bytes) continue;
    if (::truncate(path.c_str(), 0) != 0) continue;
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
      std::string line =
          fmt::format("\n[hangar: the console passed {} bytes; what came before was dropped]\n",
                      o_.console_max_bytes);
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
    log::Warn("microvm console cut back", {{"sandbox", e.path().filename().string()},
                                           {"bytes", static_cast<int64_t>(st.st_size)}});
  }
}

void MicroVmDriver::StopPool() {
  {
    std::lock_guard lock(pool_mu_);
    pool_stop_ = true;
  }
  pool_cv_.notify_all();
  if (refill_.joinable()) refill_.join();
  if (console_guard_.joinable()) console_guard_.join();
  std::vector<std::unique_ptr<MicroVmSandbox>> left;
  {
    std::lock_guard lock(pool_mu_);
    for (auto& ready : pool_ready_) {
      for (auto& slot : ready) left.push_back(std::move(slot));
      ready.clear();
    }
  }
  for (auto& slot : left) (void)slot->Destroy();
}

bool MicroVmDriver::PoolFull() const {
  for (size_t i = 0; i < pool_ready_.size(); ++i) {
    if (pool_ready_[i].size() < o_.warm_pool.entries[i].size) return false;
  }
  return true;
}

void MicroVmDriver::RefillLoop() {
  std::unique_lock lock(pool_mu_);
  const auto& entries = o_.warm_pool.entries;
  while (!pool_stop_) {
    const auto now = std::chrono::steady_clock::now();
    auto wake = std::chrono::steady_clock::time_point::max();
    size_t pick = entries.size();
    for (size_t i = 0; i < entries.size(); ++i) {
      if (pool_ready_[i].size() + pool_starting_[i] >= entries[i].size) continue;
      if (pool_not_before_[i] > now) {
        wake = std::min(wake, pool_not_before_[i]);
        continue;
      }
      pick = i;
      break;
    }
    if (pick == entries.size()) {
      if (wake == std::chrono::steady_clock::time_point::max()) {
        pool_cv_.wait(lock);
      } else {
        pool_cv_.wait_until(lock, wake);
      }
      continue;
    }
    ++pool_starting_[pick];
    lock.unlock();
    auto slot = StartSlot(entries[pick]);
    lock.lock();
    --pool_starting_[pick];
    if (slot.ok()) {
      ++pool_stats_.created;
      pool_ready_[pick].push_back(std::move(*slot));  // StopPool destroys it if stopping
    } else {
      ++pool_stats_.failures;
      pool_not_before_[pick] = std::chrono::steady_clock::now() + o_.warm_pool.retry_after;
      log::Warn("microvm warm pool refill failed",
                {{"template", entries[pick].template_name}, {"error", slot.status().ToString()}});
    }
    pool_cv_.notify_all();
  }
}

// A VM restored from the entry's snapshot, its disk grown to the entry's size, envd answering,
// then paused until a claim.
Result<std::unique_ptr<MicroVmSandbox>> MicroVmDriver::StartSlot(const MicroVmWarmPoolEntry& e) {
  HANGAR_ASSIGN_OR_RETURN(storage::TemplateInfo tmpl, o_.templates->Get(e.template_name));
  HANGAR_ASSIGN_OR_RETURN(BaseImage base, GetBaseImage(tmpl));
  if (e.disk_mb < base.size_mb) {
    return Status::InvalidArgument(
        fmt::format("warm pool disk_mb = {} is below the size of template {}'s disk image ({} MB)",
                    e.disk_mb, e.template_name, base.size_mb));
  }
  HANGAR_TRY(PrepareSnapshot(e.template_name, e.vcpus, e.memory_mb));
  const std::string snap = SnapshotDir(base, e.vcpus, e.memory_mb);
  HANGAR_ASSIGN_OR_RETURN(std::string token, ReadFile(snap + "/token"));
  const std::string name = std::string(kSlotPrefix) + RandomHex(6);
  Vm vm;
  vm.paths = Paths(sandboxes_dir_, name);
  vm.cgroup = name;
  vm.token = token;
  if (::mkdir(vm.paths.dir.c_str(), 0700) != 0) {
    return Status::FromErrno(errno, fmt::format("mkdir({})", vm.paths.dir));
  }
  node::SandboxSpec spec;
  spec.id = name;
  spec.template_name = e.template_name;
  spec.resources.cpu_millis = e.vcpus * 1000;
  spec.resources.memory_mb = e.memory_mb;
  spec.resources.disk_mb = e.disk_mb;
  node::SandboxInfo info;
  info.id = name;
  info.driver = kDriverName;
  auto sb = std::make_unique<MicroVmSandbox>(this, std::move(info), std::move(vm), e.disk_mb);
  Status st = Launch(sb->vm_, spec, base, fmt::format("exec:cat {}", snap + "/state.bin"),
                     snap + "/layer.qcow2");
  if (st.ok()) {
    sb->info_.init_pid = sb->vm_.pid;
    auto qmp = QmpClient::Connect(sb->vm_.paths.qmp);
    st = qmp.status();
    if (st.ok()) st = StartRestored(*qmp);
    if (st.ok()) {
      st = qmp->Execute("block_resize", {{"device", "root"}, {"size", e.disk_mb << 20}}).status();
    }
    // Its own token and RNG state now: the slot is restored from the same snapshot as its
    // siblings, and a claim must not be slowed by the re-keying.
    if (st.ok()) st = RekeyAndSetUp(sb->vm_, {"--grow-fs", "/"});
    if (st.ok()) st = qmp->Execute("stop").status();
  }
  if (!st.ok()) {
    (void)sb->Destroy();
    return st.With("starting a warm pool VM of template " + e.template_name);
  }
  sb->info_.state = node::SandboxState::kPaused;
  return sb;
}

// The slot becomes sandbox spec.id: its directory is renamed (never over an existing one), the
// spec's limits applied, the VM resumed and the guest given its hostname and the clock.
Result<node::SandboxPtr> MicroVmDriver::ClaimSlot(std::unique_ptr<MicroVmSandbox> sb,
                                                  const node::SandboxSpec& spec) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string slot_dir = sb->vm_.paths.dir;
  Paths to(sandboxes_dir_, spec.id);
  if (::renameat2(AT_FDCWD, slot_dir.c_str(), AT_FDCWD, to.dir.c_str(), RENAME_NOREPLACE) != 0) {
    const int err = errno;
    (void)sb->Destroy();
    if (err == EEXIST || err == ENOTEMPTY) {
      return Status::AlreadyExists(fmt::format("sandbox {} already exists", spec.id));
    }
    return Status::FromErrno(err, fmt::format("rename({}, {})", slot_dir, to.dir));
  }
  sb->vm_.paths = std::move(to);
  sb->vmm_dir_ = slot_dir;
  sb->info_.id = spec.id;
  sb->info_.created_at = clock_->WallNow();
  sb->disk_mb_ = spec.resources.disk_mb;
  Status st = [&]() -> Status {
    const node::Resources& r = spec.resources;
    HANGAR_TRY(o_.cgroups->SetLimits(sb->vm_.cgroup, LimitsFor(r)));
    HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(sb->vm_.paths.qmp));
    if (r.read_iops > 0 || r.write_iops > 0 || r.read_bps > 0 || r.write_bps > 0) {
      HANGAR_TRY(qmp.Execute("block_set_io_throttle", {{"device", "root"},
                                                       {"bps", 0},
                                                       {"bps_rd", r.read_bps},
                                                       {"bps_wr", r.write_bps},
                                                       {"iops", 0},
                                                       {"iops_rd", r.read_iops},
                                                       {"iops_wr", r.write_iops}})
                     .status()
                     .With("applying the I/O limits"));
    }
    HANGAR_TRY(qmp.Execute("cont").status());
    const int64_t now_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_->WallNow().time_since_epoch())
            .count();
    // Reseeded again: slots were reseeded when restored, but a claim costs one more argument.
    return GuestSetup(sb->vm_, {"--set-hostname", spec.id, "--set-clock-ns", std::to_string(now_ns),
                                "--seed-rng", RandomHex(32)});
  }();
  if (st.ok()) {
    sb->info_.state = node::SandboxState::kRunning;
    st = WriteState(*sb, spec);
  }
  if (!st.ok()) {
    (void)sb->Destroy();
    return st.With(fmt::format("claiming a warm pool VM for sandbox {}", spec.id));
  }
  log::Info("microvm sandbox started from the warm pool",
            {{"id", spec.id},
             {"slot", slot_dir.substr(slot_dir.rfind('/') + 1)},
             {"claim_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - t0)
                              .count()},
             {"port", sb->vm_.port}});
  return node::SandboxPtr(std::move(sb));
}

node::WarmPoolStats MicroVmDriver::PoolStats() const {
  std::lock_guard lock(pool_mu_);
  node::WarmPoolStats s = pool_stats_;
  s.ready = 0;
  for (const auto& r : pool_ready_) s.ready += r.size();
  return s;
}

bool MicroVmDriver::WaitForPool(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(pool_mu_);
  return pool_cv_.wait_for(lock, timeout, [this] { return PoolFull(); });
}

// --- open and recovery --------------------------------------------------------------------

Status MicroVmDriver::Open() {
  if (o_.data_dir.empty() || o_.templates == nullptr || o_.cgroups == nullptr) {
    return Status::InvalidArgument("microvm driver needs data_dir, templates and cgroups");
  }
  HANGAR_TRY(CheckPathForQemu(o_.data_dir));
  HANGAR_TRY(CheckPathForQemu(o_.kernel_dir));
  if (o_.accel != "auto" && o_.accel != "tcg" && o_.accel != "kvm") {
    return Status::InvalidArgument("accel must be auto, tcg or kvm, got '" + o_.accel + "'");
  }
  HANGAR_TRY(CheckPool());
  HANGAR_TRY(QemuAvailable(o_));
  sandboxes_dir_ = o_.data_dir + "/sandboxes";
  images_dir_ = o_.data_dir + "/images";
  snapshots_dir_ = o_.data_dir + "/snapshots";
  for (const std::string& d : {o_.data_dir, sandboxes_dir_, images_dir_, snapshots_dir_}) {
    HANGAR_TRY(MakeDirs(d));
    ::chmod(d.c_str(), 0700);
  }
  // Part of the snapshots' key. A binary that cannot say its version will not start a VM
  // either: Create reports that, with QEMU's own error.
  if (auto v = RunChecked({o_.qemu_binary, "--version"}); v.ok()) {
    qemu_version_ = v->substr(0, v->find('\n'));
  } else {
    log::Warn("microvm: cannot read the QEMU version", {{"error", v.status().ToString()}});
  }
  node::RecoveryReport report;
  std::vector<node::SandboxPtr> adopted;
  // What the adopted VMMs' command lines name, and their cgroups: everything else is swept.
  std::set<std::string> adopted_qmp, adopted_cgroups;
  std::set<std::string> dirs;
  if (DIR* d = ::opendir(sandboxes_dir_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') dirs.insert(e->d_name);
    }
    ::closedir(d);
  }
  for (const std::string& id : dirs) {
    Vm vm;
    vm.paths = Paths(sandboxes_dir_, id);
    vm.cgroup = id;
    if (IsSlotName(id)) {
      // An unclaimed warm pool VM of a previous run: never adopted, not a sandbox to report.
      std::string qmp = vm.paths.qmp;
      if (auto pid = ReadFile(vm.paths.pid); pid.ok()) {
        vm.pid = std::atoi(pid->c_str());
        if (vm.pid > 0 && Cmdline(vm.pid).find(qmp) != std::string::npos) {
          int fd = PidfdOpen(vm.pid);
          if (fd >= 0) vm.pidfd.Reset(fd);
        }
      }
      node::SandboxInfo info;
      info.id = id;
      info.driver = kDriverName;
      MicroVmSandbox slot(this, std::move(info), std::move(vm), 0);
      Status st = slot.Destroy();
      log::Info("microvm warm pool VM of a previous run destroyed",
                {{"slot", id}, {"ok", st.ok()}});
      continue;
    }
    std::string cmd_qmp = vm.paths.qmp;  // the QMP path the VMM's command line names
    node::SandboxInfo info;
    info.id = id;
    info.driver = kDriverName;
    int64_t disk_mb = 0;
    bool whole = false;
    if (auto text = ReadFile(vm.paths.state); text.ok()) {
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_object() && j.value("id", "") == id) {
        vm.pid = j.value("pid", -1);
        vm.port = j.value("port", uint16_t{0});
        vm.token = j.value("token", "");
        vm.cgroup = j.value("cgroup", id);
        cmd_qmp = j.value("vmm_dir", vm.paths.dir) + "/qmp.sock";
        disk_mb = j.value("disk_mb", int64_t{0});
        // The pid must still be this sandbox's VMM (pids are reused).
        if (vm.pid > 0 && Cmdline(vm.pid).find(cmd_qmp) != std::string::npos) {
          int fd = PidfdOpen(vm.pid);
          if (fd >= 0) vm.pidfd.Reset(fd);
          if (auto q = QmpClient::Connect(vm.paths.qmp, std::chrono::seconds(5)); q.ok()) {
            auto st = q->Execute("query-status");
            if (st.ok()) {
              std::string s = st->value("status", "");
              info.state =
                  s == "paused" ? node::SandboxState::kPaused : node::SandboxState::kRunning;
              whole = s == "running" || s == "paused";
            }
          }
        }
      }
    }
    info.init_pid = vm.pid;
    auto sb = std::make_unique<MicroVmSandbox>(this, std::move(info), std::move(vm), disk_mb);
    if (cmd_qmp != sb->vm_.paths.qmp) sb->vmm_dir_ = cmd_qmp.substr(0, cmd_qmp.rfind('/'));
    if (whole) {
      report.adopted.push_back(id);
      adopted_qmp.insert(cmd_qmp);
      adopted_cgroups.insert(sb->vm_.cgroup);
      adopted.push_back(std::move(sb));
    } else {
      if (sb->vm_.pid > 0 && Cmdline(sb->vm_.pid).find(cmd_qmp) == std::string::npos) {
        sb->vm_.pid = -1;  // not ours any more
        sb->vm_.pidfd.Reset();
      }
      (void)sb->Destroy();
      report.destroyed.push_back(id);
    }
  }
  // VMMs that name one of our directories but have no state (killed mid-Create), and
  // unfinished snapshot builds.
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      pid_t pid = std::atoi(e->d_name);
      if (pid <= 0) continue;
      std::string cmd = Cmdline(pid);
      if (cmd.find("-qmp unix:") == std::string::npos) continue;
      bool stray = false;
      if (cmd.find("unix:" + snapshots_dir_ + "/") != std::string::npos) stray = true;
      if (cmd.find("unix:" + sandboxes_dir_ + "/") != std::string::npos) {
        stray = std::none_of(adopted_qmp.begin(), adopted_qmp.end(), [&](const auto& qmp) {
          return cmd.find("unix:" + qmp + ",") != std::string::npos;
        });
      }
      if (stray) {
        int fd = PidfdOpen(pid);
        if (fd >= 0) {
          UniqueFd owned(fd);
          ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);
          WaitPidfd(fd, std::chrono::seconds(10));
        }
      }
    }
    ::closedir(d);
  }
  if (auto groups = o_.cgroups->List(); groups.ok()) {
    for (const std::string& g : *groups) {
      if (!adopted_cgroups.count(g)) (void)o_.cgroups->KillAndRemove(g);
    }
  }
  // Unfinished snapshot builds ("Building-…" directories; finished ones are named by their key),
  // and snapshots of another VM layout (devices, kernel, QEMU: see VmLayoutKey), which could
  // only fail to restore or, worse, restore into a VM that differs from what the node believes.
  if (DIR* d = ::opendir(snapshots_dir_.c_str())) {
    const std::string current = "-" + VmLayoutKey();
    std::vector<std::string> left;
    while (dirent* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n == "." || n == "..") continue;
      const bool stale = n.size() < current.size() ||
                         n.substr(n.size() - current.size()) != std::string_view(current);
      const bool unfinished = n.rfind(kSnapshotBuildPrefix, 0) == 0;
      if (unfinished || stale) left.push_back(std::string(n));
    }
    ::closedir(d);
    for (const std::string& n : left) {
      if (n.rfind(kSnapshotBuildPrefix, 0) != 0) {
        log::Info("microvm snapshot of another VM layout removed", {{"snapshot", n}});
      }
      (void)RemoveTree(snapshots_dir_ + "/" + n);
    }
  }
  if (DIR* d = ::opendir(images_dir_.c_str())) {
    std::vector<std::string> left;
    while (dirent* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n.find(".tmp") != std::string_view::npos) left.push_back(std::string(n));
    }
    ::closedir(d);
    for (const std::string& n : left) ::unlink((images_dir_ + "/" + n).c_str());
  }
  recovered_.emplace(std::move(report), std::move(adopted));
  StartPool();
  return Status::Ok();
}

Result<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> MicroVmDriver::Recover() {
  if (!recovered_) return std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>{};
  auto r = std::move(*recovered_);
  recovered_.reset();
  return r;
}

// --- MicroVmSandbox -----------------------------------------------------------------------

Result<node::Usage> MicroVmSandbox::GetUsage() {
  std::lock_guard lock(mu_);
  node::Usage u;
  HANGAR_ASSIGN_OR_RETURN(node::CgroupUsage cg, driver_->cgroups().ReadUsage(vm_.cgroup));
  u.cpu_usec = cg.cpu_usec;
  u.memory_bytes = cg.memory_current;
  u.memory_peak_bytes = cg.memory_peak;
  u.pids = cg.pids_current;
  HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(vm_.paths.qmp));
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json stats, qmp.Execute("query-blockstats"));
  for (const auto& dev : stats) {
    if (dev.value("device", "") != "root") continue;
    const auto& s = dev["stats"];
    u.io_read_ops = s.value("rd_operations", uint64_t{0});
    u.io_write_ops = s.value("wr_operations", uint64_t{0});
    u.io_read_bytes = s.value("rd_bytes", uint64_t{0});
    u.io_write_bytes = s.value("wr_bytes", uint64_t{0});
  }
  // What the sandbox holds on the host: its layer's allocated bytes (the base is shared).
  struct stat st {};
  if (::stat(vm_.paths.disk.c_str(), &st) == 0) {
    u.disk_used_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  }
  u.disk_total_bytes = static_cast<uint64_t>(disk_mb_) << 20;
  return u;
}

Status MicroVmSandbox::Pause() {
  std::lock_guard lock(mu_);
  if (info_.state != node::SandboxState::kRunning) {
    return Status::FailedPrecondition(
        fmt::format("sandbox {} is {}, not running", info_.id, node::StateName(info_.state)));
  }
  HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(vm_.paths.qmp));
  HANGAR_TRY(qmp.Execute("stop").status());
  info_.state = node::SandboxState::kPaused;
  return Status::Ok();
}

Status MicroVmSandbox::Resume() {
  std::lock_guard lock(mu_);
  if (info_.state != node::SandboxState::kPaused) {
    return Status::FailedPrecondition(
        fmt::format("sandbox {} is {}, not paused", info_.id, node::StateName(info_.state)));
  }
  HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(vm_.paths.qmp));
  HANGAR_TRY(qmp.Execute("cont").status());
  info_.state = node::SandboxState::kRunning;
  return Status::Ok();
}

Status MicroVmSandbox::KillVmm(std::chrono::milliseconds grace) {
  if (vm_.pidfd.valid()) {
    if (grace.count() > 0) {
      // QMP quit: QEMU flushes its disk cache and exits.
      if (auto q = QmpClient::Connect(vm_.paths.qmp, grace); q.ok()) (void)q->Execute("quit");
      WaitPidfd(vm_.pidfd.get(), grace);
    }
    ::syscall(SYS_pidfd_send_signal, vm_.pidfd.get(), SIGKILL, nullptr, 0);
    if (!WaitPidfd(vm_.pidfd.get(), std::chrono::seconds(10))) {
      return Status::Internal(fmt::format("QEMU (pid {}) did not die", vm_.pid));
    }
    vm_.pidfd.Reset();
  }
  Status st;
  if (!vm_.cgroup.empty()) st = driver_->cgroups().KillAndRemove(vm_.cgroup);
  ::unlink(vm_.paths.qmp.c_str());
  return st;
}

Status MicroVmSandbox::Stop(std::chrono::milliseconds grace) {
  std::lock_guard lock(mu_);
  if (info_.state == node::SandboxState::kStopped) return Status::Ok();
  Status st = KillVmm(grace);
  info_.state = node::SandboxState::kStopped;
  info_.reason = "stopped";
  return st;
}

Status MicroVmSandbox::Destroy() {
  std::lock_guard lock(mu_);
  if (destroyed_) return Status::Ok();
  Status first = KillVmm(std::chrono::milliseconds(0));
  Status rm = RemoveTree(vm_.paths.dir);
  if (first.ok()) first = rm;
  destroyed_ = true;
  info_.state = node::SandboxState::kStopped;
  if (!first.ok()) {
    log::Warn("microvm destroy incomplete", {{"id", info_.id}, {"error", first.ToString()}});
  }
  return first;
}

}  // namespace

int VcpusFor(int64_t cpu_millis) {
  return static_cast<int>(std::max<int64_t>(1, (cpu_millis + 999) / 1000));
}

Status QemuAvailable(const MicroVmDriverOptions& o) {
  auto which = RunCommand({"/bin/sh", "-c", "command -v \"$0\"", o.qemu_binary});
  if (!which.ok() || !which->status.success()) {
    return Status::FailedPrecondition(
        fmt::format("{} not found (install qemu-system-x86)", o.qemu_binary));
  }
  for (const char* tool : {"qemu-img", "mkfs.ext4", "debugfs"}) {
    auto t = RunCommand({"/bin/sh", "-c", "command -v \"$0\"", tool});
    if (!t.ok() || !t->status.success()) {
      return Status::FailedPrecondition(fmt::format("{} not found", tool));
    }
  }
  for (const char* f : {"vmlinuz", "initrd.img"}) {
    if (!Exists(o.kernel_dir + "/" + f)) {
      return Status::FailedPrecondition(fmt::format(
          "guest kernel cache {} has no {} (run scripts/fetch-guest-kernel.sh)", o.kernel_dir, f));
    }
  }
  if (o.envd_path.empty() || ::access(o.envd_path.c_str(), R_OK) != 0) {
    return Status::FailedPrecondition(fmt::format("envd binary '{}' not readable", o.envd_path));
  }
  if (o.accel == "kvm" && !KvmUsable()) return Status::FailedPrecondition("no usable /dev/kvm");
  return Status::Ok();
}

Result<node::DriverPtr> NewMicroVmDriver(MicroVmDriverOptions options) {
  auto d = std::make_unique<MicroVmDriver>(std::move(options));
  HANGAR_TRY(d->Open());
  return node::DriverPtr(std::move(d));
}

node::WarmPoolStats GetMicroVmWarmPoolStats(const node::Driver& driver) {
  const auto* d = dynamic_cast<const MicroVmDriver*>(&driver);
  return d ? d->PoolStats() : node::WarmPoolStats{};
}

bool WaitForMicroVmWarmPool(const node::Driver& driver, std::chrono::milliseconds timeout) {
  const auto* d = dynamic_cast<const MicroVmDriver*>(&driver);
  return d != nullptr && d->WaitForPool(timeout);
}

Result<std::vector<MicroVmWarmPoolEntry>> ParseMicroVmWarmPool(std::string_view text) {
  std::vector<MicroVmWarmPoolEntry> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    std::string item(text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos));
    auto bad = [&item](std::string_view why) {
      return Status::InvalidArgument(
          fmt::format("node.microvm_warm_pool item '{}' {}: want "
                      "template:count[:disk_mb[:memory_mb[:vcpus]]], e.g. base:2:1024:512:1",
                      item, why));
    };
    size_t c1 = item.find(':');
    if (c1 == std::string::npos || c1 == 0) return bad("has no template name");
    MicroVmWarmPoolEntry e;
    e.template_name = item.substr(0, c1);
    if (e.template_name.find_first_of(" \t") != std::string::npos) {
      return bad("has a space in the template name");
    }
    // count[:disk_mb[:memory_mb[:vcpus]]], each a plain decimal number.
    unsigned long long nums[4] = {0, 1024, 512, 1};
    std::string_view rest = std::string_view(item).substr(c1 + 1);
    for (size_t k = 0;; ++k) {
      size_t colon = rest.find(':');
      std::string_view num = rest.substr(0, colon);
      if (k == 4) return bad("has too many fields");
      if (num.empty() || num.size() > 9 ||
          !std::all_of(num.begin(), num.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
        return bad(k == 0 ? "has no count" : "has a field that is not a number");
      }
      nums[k] = std::stoull(std::string(num));
      if (colon == std::string_view::npos) break;
      rest = rest.substr(colon + 1);
    }
    const unsigned long long count = nums[0], disk = nums[1], memory = nums[2], vcpus = nums[3];
    if (count == 0 || count > 100) return bad("needs a count of 1-100");
    if (disk < 64) return bad("needs disk_mb >= 64");
    if (memory < 32 || memory > 256 * 1024) return bad("needs memory_mb of 32-262144");
    if (vcpus < 1 || vcpus > 64) return bad("needs 1-64 vcpus");
    e.size = count;
    e.disk_mb = static_cast<int64_t>(disk);
    e.memory_mb = static_cast<int64_t>(memory);
    e.vcpus = static_cast<int>(vcpus);
    for (const auto& other : out) {
      if (other.template_name == e.template_name && other.disk_mb == e.disk_mb &&
          other.memory_mb == e.memory_mb && other.vcpus == e.vcpus) {
        return bad("repeats the shape of an earlier item");
      }
    }
    out.push_back(std::move(e));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

Status PrepareSnapshot(node::Driver& driver, const std::string& template_name, int vcpus,
                       int64_t memory_mb) {
  auto* d = dynamic_cast<MicroVmDriver*>(&driver);
  if (d == nullptr) return Status::InvalidArgument("not a microvm driver");
  return d->PrepareSnapshot(template_name, vcpus, memory_mb);
}

}  // namespace hangar::microvm
