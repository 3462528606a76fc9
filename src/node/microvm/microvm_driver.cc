#include "hangar/microvm/microvm_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
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

std::string RandomHex(size_t bytes) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  std::string s;
  for (size_t i = 0; i < bytes; i += 8) s += fmt::format("{:016x}", rng());
  return s.substr(0, bytes * 2);
}

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

  std::string_view Name() const override { return kDriverName; }
  Status Available() const override { return QemuAvailable(o_); }
  Result<node::SandboxPtr> Create(const node::SandboxSpec& spec) override;
  Result<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> Recover() override;

  Status Open();
  Status PrepareSnapshot(const std::string& template_name, int vcpus, int64_t memory_mb);

  node::CgroupBackend& cgroups() { return *o_.cgroups; }
  const std::string& sandboxes_dir() const { return sandboxes_dir_; }

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
    return fmt::format("{}/{}-c{}-m{}", snapshots_dir_, base.key, vcpus, memory_mb);
  }
  Status Claim(MicroVmSandbox& sb, const node::SandboxSpec& spec);

  MicroVmDriverOptions o_;
  Clock* clock_;
  std::string sandboxes_dir_, images_dir_, snapshots_dir_;
  std::mutex image_mu_;     // serializes base image builds
  std::mutex snapshot_mu_;  // serializes snapshot builds
  std::optional<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> recovered_;
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

  node::CgroupLimits limits;
  limits.cpu_millicores = static_cast<uint64_t>(r.cpu_millis);
  limits.memory_bytes = static_cast<uint64_t>(r.memory_mb + o_.vmm_overhead_mb) << 20;
  limits.pids_max = 512;  // VMM threads (vCPUs, I/O workers), not the guest's processes
  HANGAR_TRY(o_.cgroups->Create(vm.cgroup));
  HANGAR_TRY(o_.cgroups->SetLimits(vm.cgroup, limits));

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

Status MicroVmDriver::WriteState(const MicroVmSandbox& sb, const node::SandboxSpec& spec) {
  nlohmann::json j = {
      {"id", spec.id},
      {"template", spec.template_name},
      {"created_at", FormatRfc3339(sb.info_.created_at)},
      {"pid", sb.vm_.pid},
      {"port", sb.vm_.port},
      {"token", sb.vm_.token},
      {"cgroup", sb.vm_.cgroup},
      {"disk_mb", spec.resources.disk_mb},
      {"resources",
       {{"cpu_millis", spec.resources.cpu_millis},
        {"memory_mb", spec.resources.memory_mb},
        {"disk_mb", spec.resources.disk_mb}}},
  };
  return WriteFileAtomic(sb.vm_.paths.state, j.dump(2), 0600);
}

// After a restore: the disk grows to the sandbox's size and the guest takes its identity.
Status MicroVmDriver::Claim(MicroVmSandbox& sb, const node::SandboxSpec& spec) {
  HANGAR_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(sb.vm_.paths.qmp));
  // The snapshot was saved from a stopped VM and QEMU carries the run state over: once the
  // state is loaded ("inmigrate" -> "paused") the VM is started with `cont`.
  const auto deadline = std::chrono::steady_clock::now() + o_.boot_timeout;
  for (;;) {
    HANGAR_ASSIGN_OR_RETURN(nlohmann::json st, qmp.Execute("query-status"));
    std::string status = st.value("status", "");
    if (status == "running") break;
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
  HANGAR_TRY(
      qmp.Execute("block_resize", {{"device", "root"}, {"size", spec.resources.disk_mb << 20}})
          .status());
  HANGAR_ASSIGN_OR_RETURN(
      envd::Client client,
      envd::Client::Create({"", fmt::format("127.0.0.1:{}", sb.vm_.port), sb.vm_.token}));
  const int64_t now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_->WallNow().time_since_epoch())
          .count();
  envd::Command cmd{.cmd = kGuestEnvd,
                    .args = {"--grow-fs", "/", "--set-hostname", spec.id, "--set-clock-ns",
                             std::to_string(now_ns)},
                    .user = "root",
                    .timeout = std::chrono::seconds(30)};
  std::string err;
  HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo done,
                          client.Run(cmd, {.on_stderr = [&err](std::string_view s) { err += s; }}));
  if (done.exit_code != 0) {
    return Status::Internal(
        fmt::format("guest set-up after restore failed ({}): {}", done.status, err));
  }
  return Status::Ok();
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
  const std::string name = "snap" + RandomHex(6);
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
  HANGAR_TRY(QemuAvailable(o_));
  sandboxes_dir_ = o_.data_dir + "/sandboxes";
  images_dir_ = o_.data_dir + "/images";
  snapshots_dir_ = o_.data_dir + "/snapshots";
  for (const std::string& d : {o_.data_dir, sandboxes_dir_, images_dir_, snapshots_dir_}) {
    HANGAR_TRY(MakeDirs(d));
    ::chmod(d.c_str(), 0700);
  }
  node::RecoveryReport report;
  std::vector<node::SandboxPtr> adopted;
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
        disk_mb = j.value("disk_mb", int64_t{0});
        // The pid must still be this sandbox's VMM (pids are reused).
        if (vm.pid > 0 && Cmdline(vm.pid).find(vm.paths.qmp) != std::string::npos) {
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
    if (whole) {
      report.adopted.push_back(id);
      adopted.push_back(std::move(sb));
    } else {
      if (sb->vm_.pid > 0 && Cmdline(sb->vm_.pid).find(sb->vm_.paths.qmp) == std::string::npos) {
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
        stray = std::none_of(report.adopted.begin(), report.adopted.end(), [&](const auto& id) {
          return cmd.find(Paths(sandboxes_dir_, id).qmp) != std::string::npos;
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
      if (std::find(report.adopted.begin(), report.adopted.end(), g) == report.adopted.end()) {
        (void)o_.cgroups->KillAndRemove(g);
      }
    }
  }
  // Unfinished snapshot builds ("snap…" directories; finished ones are named by their key).
  if (DIR* d = ::opendir(snapshots_dir_.c_str())) {
    std::vector<std::string> left;
    while (dirent* e = ::readdir(d)) {
      if (std::string_view(e->d_name).rfind("snap", 0) == 0) left.push_back(e->d_name);
    }
    ::closedir(d);
    for (const std::string& n : left) (void)RemoveTree(snapshots_dir_ + "/" + n);
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

Status PrepareSnapshot(node::Driver& driver, const std::string& template_name, int vcpus,
                       int64_t memory_mb) {
  auto* d = dynamic_cast<MicroVmDriver*>(&driver);
  if (d == nullptr) return Status::InvalidArgument("not a microvm driver");
  return d->PrepareSnapshot(template_name, vcpus, memory_mb);
}

}  // namespace hangar::microvm
