#include "hangar/node/ns_driver.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "contain.h"
#include "file_util.h"
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/sandbox_storage.h"
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

// Blocks every signal for its lifetime: a CLONE_VM child runs on the agent's memory, so no
// handler of the agent may run in it (the child restores the mask itself before its exec).
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old_);
  }
  ~SignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  const sigset_t& old() const { return old_; }

 private:
  sigset_t old_;
};

constexpr size_t kHelperStack = 64 * 1024;

// A user namespace mapping 0..count-1 inside to the range outside, held by an fd. It serves
// twice: as the id-map of the template's lower layer and as the namespace the sandbox's init
// enters. A short-lived child creates it; the fd keeps it alive after the child exits. The
// child shares this process's memory (CLONE_VM on a small stack of its own): no copy of the
// agent's page tables (measured 7.2 -> 1.0 ms).
Result<UniqueFd> MakeUserNamespace(const IdRange& range) {
  HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(kHelperStack));
  pid_t parent = ::getpid();
  pid_t pid;
  {
    SignalsBlocked blocked;
    // The helper only exists until the parent has mapped it and opened its namespace; then it
    // is SIGKILLed. No pipe to wait on: a helper (or sandbox child) cloned meanwhile by another
    // thread inherits copies of every descriptor, and two helpers each holding the other's
    // write end would wait for EOF forever (seen with the warm pool's refill beside Create).
    pid = ::clone(
        [](void* arg) -> int {
          ::prctl(PR_SET_PDEATHSIG, SIGKILL);
          if (::getppid() != *static_cast<pid_t*>(arg)) return 0;  // the parent already died
          for (;;) ::pause();  // every signal is blocked: only SIGKILL ends it
        },
        stack.top(), CLONE_NEWUSER | CLONE_VM | SIGCHLD, &parent);
  }
  if (pid < 0) return Status::FromErrno(errno, "clone(CLONE_NEWUSER|CLONE_VM)");
  Child holder = Child::Adopt(pid);
  Status maps = WriteIdMaps(pid, range, SetgroupsPolicy::kAllow);
  Result<UniqueFd> fd =
      maps.ok() ? OpenFile(fmt::format("/proc/{}/ns/user", pid), O_RDONLY) : Result<UniqueFd>(maps);
  (void)holder.Signal(SIGKILL);
  (void)holder.Wait();  // the stack must outlive the child
  return fd;
}

// Namespaces made ahead, off the start path (as the disk pool makes disks): network namespaces
// with their loopback up, and user namespaces each mapping a uid range leased for it under an
// internal owner name ("nspool-<hex>", never a sandbox id or slot name). One background thread
// keeps `netns` and `userns` of them ready; after a Take it waits `refill_delay` first, so a
// replacement is not made beside the start that took one. Every namespace is handed out once:
// a used one lives and dies with its sandbox, never comes back.
//
// Ownership: the thread is the agent's, in the initial user namespace, so each network
// namespace is owned by the initial user namespace — as the one the sandbox child's clone made
// before. Root inside the sandbox (root of its own child user namespace) has no CAP_NET_ADMIN
// over it. The user namespaces are the same ones MakeUserNamespace makes at Create.
// Cleanup: the namespaces are held by descriptors only (no bind mounts, no processes), so they
// go when the pool closes them or the agent dies; the leases of unused user namespaces are
// released by the destructor, or after a crash by recovery (IdRangeAllocator::Reconcile frees
// leases whose owner is no live sandbox and in whose range no process runs).
class NamespacePool {
 public:
  struct Options {
    size_t netns = 0;
    size_t userns = 0;
    std::chrono::milliseconds refill_delay{200};
    std::chrono::milliseconds retry_after{1000};
  };
  struct UserNs {
    IdRange range;
    UniqueFd fd;
  };

  NamespacePool(IdRangeAllocator* ids, Options o) : ids_(ids), o_(o) {
    if (o_.netns > 0 || o_.userns > 0) thread_ = std::thread([this] { Loop(); });
  }
  ~NamespacePool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    net_.clear();  // closing the last reference destroys each namespace
    for (UserNs& u : users_) {
      u.fd.Reset();
      if (Status st = ids_->Release(u.range.slot); !st.ok()) {
        log::Warn("releasing a pooled uid range failed", {{"error", st.ToString()}});
      }
    }
  }
  NamespacePool(const NamespacePool&) = delete;
  NamespacePool& operator=(const NamespacePool&) = delete;

  // A pre-made network namespace, or an invalid descriptor when none is ready.
  UniqueFd TakeNetns() {
    std::lock_guard lock(mu_);
    if (net_.empty()) return UniqueFd();
    UniqueFd fd = std::move(net_.front());
    net_.pop_front();
    Taken();
    return fd;
  }

  // A pre-made user namespace whose range's lease now names `owner`, or nullopt when none is
  // ready (or renaming its lease failed: then it is released and the caller makes one).
  std::optional<UserNs> TakeUserns(const std::string& owner) {
    std::optional<UserNs> u;
    {
      std::lock_guard lock(mu_);
      if (users_.empty()) return std::nullopt;
      u.emplace(std::move(users_.front()));
      users_.pop_front();
      Taken();
    }
    if (Status st = ids_->Rename(u->range.slot, owner); !st.ok()) {
      log::Warn("renaming a pooled uid range lease failed; making a user namespace instead",
                {{"owner", owner}, {"error", st.ToString()}});
      u->fd.Reset();
      (void)ids_->Release(u->range.slot);
      return std::nullopt;
    }
    return u;
  }

  bool WaitFull(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return FullLocked(); });
  }

 private:
  bool FullLocked() const {
    return (net_broken_ || net_.size() >= o_.netns) && users_.size() >= o_.userns;
  }
  void Taken() {
    last_take_ = std::chrono::steady_clock::now();
    cv_.notify_all();
  }

  Result<UserNs> MakeUser() {
    // Fresh randomness per name: a generator's state would be shared by a fork of the agent.
    std::random_device rd;
    const std::string owner = fmt::format("nspool-{:08x}{:08x}", rd(), rd());
    HANGAR_ASSIGN_OR_RETURN(IdRange range, ids_->Allocate(owner));
    Result<UniqueFd> fd = MakeUserNamespace(range);
    if (!fd.ok()) {
      (void)ids_->Release(range.slot);
      return fd.status();
    }
    return UserNs{range, std::move(*fd)};
  }

  void Loop() {
    // This thread's own network namespace, to come back to after making each new one.
    Result<UniqueFd> home = OpenFile("/proc/thread-self/ns/net", O_RDONLY);
    std::unique_lock lock(mu_);
    if (!home.ok()) {
      log::Warn("no network namespace pool", {{"error", home.status().ToString()}});
      net_broken_ = true;
    }
    while (!stop_) {
      const bool want_net = !net_broken_ && net_.size() < o_.netns;
      const bool want_user = users_.size() < o_.userns;
      if (!want_net && !want_user) {
        cv_.notify_all();  // full: WaitFull
        cv_.wait(lock);
        continue;
      }
      const auto quiet_until = last_take_ + o_.refill_delay;
      if (std::chrono::steady_clock::now() < quiet_until) {
        cv_.wait_until(lock, quiet_until, [this] { return stop_; });
        continue;
      }
      lock.unlock();
      Status failed;
      std::optional<UniqueFd> net;
      std::optional<UserNs> user;
      if (want_net) {
        auto ns = internal::MakeNetworkNamespace(home->get());
        if (ns.ok()) {
          net.emplace(std::move(*ns));
        } else {
          failed = ns.status();
        }
      }
      if (want_user) {
        auto u = MakeUser();
        if (u.ok()) {
          user.emplace(std::move(*u));
        } else if (failed.ok()) {
          failed = u.status();
        }
      }
      lock.lock();
      if (net) net_.push_back(std::move(*net));
      if (user) users_.push_back(std::move(*user));
      cv_.notify_all();
      if (!failed.ok()) {
        if (want_net && !net) {
          // The cold path makes its own (CLONE_NEWNET); a thread that could not come back to
          // its namespace must make no more.
          net_broken_ = true;
        }
        log::Warn("namespace pool: making a namespace failed", {{"error", failed.ToString()}});
        cv_.wait_for(lock, o_.retry_after, [this] { return stop_; });
      }
    }
  }

  IdRangeAllocator* ids_;
  const Options o_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<UniqueFd> net_;
  std::deque<UserNs> users_;
  bool net_broken_ = false;
  bool stop_ = false;
  std::chrono::steady_clock::time_point last_take_{};
  std::thread thread_;
};

// What the claim helper does inside a pooled sandbox: hostname = the public id, /tmp resized
// to the claimed memory limit. Runs in a CLONE_VM|CLONE_VFORK child (setns(CLONE_NEWNS) is
// refused to a thread sharing its fs with others); allocation-free.
struct ClaimHelper {
  int pidfd = -1;
  const char* hostname = nullptr;
  const char* tmp_options = nullptr;
  int step = 0;
  int err = 0;
};

int RunClaimHelper(void* arg) {
  auto* h = static_cast<ClaimHelper*>(arg);
  auto fail = [h](int step) {
    h->step = step;
    h->err = errno;
    return 1;
  };
  if (::setns(h->pidfd, CLONE_NEWUTS | CLONE_NEWNS) != 0) return fail(1);
  if (::sethostname(h->hostname, __builtin_strlen(h->hostname)) != 0) return fail(2);
  if (::mount(nullptr, "/tmp", nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV, h->tmp_options) != 0) {
    return fail(3);
  }
  return 0;
}

Status RunInSandbox(int init_pidfd, const std::string& hostname, uint64_t tmp_bytes) {
  ClaimHelper h;
  h.pidfd = init_pidfd;
  h.hostname = hostname.c_str();
  const std::string tmp = fmt::format("size={}", tmp_bytes);
  h.tmp_options = tmp.c_str();
  HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(kHelperStack));
  pid_t pid;
  {
    SignalsBlocked blocked;
    pid =
        ::clone(RunClaimHelper, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &h);
  }
  if (pid < 0) return Status::FromErrno(errno, "clone(CLONE_VM|CLONE_VFORK) claim helper");
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (h.step != 0) {
    static constexpr const char* kWhat[] = {"", "setns(init, CLONE_NEWUTS|CLONE_NEWNS)",
                                            "sethostname", "remount /tmp"};
    return Status::FromErrno(h.err, kWhat[h.step]).With("claiming a pooled sandbox");
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return Status::Internal("claim helper died");
  }
  return Status::Ok();
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

// Runs one no-op command (`true`) through envd's process.Process/Start and reads the stream to
// its end, so a pool slot's envd has run its command path once before the slot is offered: the
// claimed sandbox's first command is then not envd's first. Best effort: a template without
// `true` still warms everything up to the exec.
Status WarmUpEnvd(const std::string& socket_path, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket(AF_UNIX)");
  UniqueFd s(fd);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, fmt::format("connect({})", socket_path));
  }
  // One Connect envelope: flags 0, big-endian length, the JSON message.
  static constexpr std::string_view kMsg = R"({"process":{"cmd":"true"}})";
  std::string body = {'\0', '\0', '\0', '\0', static_cast<char>(kMsg.size())};
  body += kMsg;
  std::string req = fmt::format(
      "POST /process.Process/Start HTTP/1.1\r\nHost: envd\r\nContent-Type: "
      "application/connect+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      body.size(), body);
  HANGAR_TRY(WriteAll(fd, req));
  // Until the process's end event (or envd closes the connection); the answer is small.
  char buf[4096];
  std::string head;
  while (head.size() < (64 << 10) && head.find("\"end\":{") == std::string::npos) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "reading envd's answer to the warm-up command");
    }
    head.append(buf, static_cast<size_t>(n));
  }
  if (head.size() < 12 || head.compare(9, 3, "200") != 0) {
    return Status::Unavailable(fmt::format("envd answered the warm-up command with '{}'",
                                           head.substr(0, head.find('\r'))));
  }
  return Status::Ok();
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

// Pool slots are named so that no sandbox id can collide with them (ids have no '-').
constexpr std::string_view kSlotPrefix = "pool-";
bool IsSlotName(std::string_view name) { return name.rfind(kSlotPrefix, 0) == 0; }

std::string NewSlotName() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  return fmt::format("{}{:016x}", kSlotPrefix, rng());
}

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
  EnvdEndpoint Envd() const override {
    std::lock_guard lock(mu_);
    return EnvdEndpoint{paths_.socket, "", ""};
  }
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
  std::optional<dev_t> root_io_rule_;  // the root blkio rule for the disk (v1)
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
  ~NsDriver() override;

  std::string_view Name() const override { return kDriverName; }
  Status Available() const override;
  Result<SandboxPtr> Create(const SandboxSpec& spec) override;
  Result<std::pair<RecoveryReport, std::vector<SandboxPtr>>> Recover() override;

  Status Open();  // recovery, then the disk pool, then the warm pool

  const NsDriverOptions& options() const { return o_; }
  CgroupBackend& cgroups() { return *o_.cgroups; }
  IdRangeAllocator& ids() { return *o_.ids; }

  WarmPoolStats warm_stats() const;
  bool WaitWarmFull(std::chrono::milliseconds timeout) const;
  bool WaitNamespacesFull(std::chrono::milliseconds timeout) const {
    return !ns_pool_ || ns_pool_->WaitFull(timeout);
  }

 private:
  struct WarmSlots {
    WarmPoolEntry entry;
    std::deque<std::unique_ptr<NsSandbox>> ready;
    size_t in_flight = 0;
  };

  // `pooled_namespaces`: take pre-made namespaces from the namespace pool (cold Creates only;
  // warm pool slots start in the background and make their own, so that refilling the warm
  // pool never sets off namespace-pool refills beside a claim).
  Status Start(NsSandbox& sb, const SandboxSpec& spec, const storage::TemplateInfo& tmpl,
               bool pooled_namespaces);
  Status ApplyLimits(NsSandbox& sb, const Resources& r);
  Status Claim(NsSandbox& sb, const SandboxSpec& spec);
  Status WriteState(const NsSandbox& sb, const SandboxSpec& spec);
  Result<SandboxPtr> AdoptOrDestroy(const std::string& id, RecoveryReport& report,
                                    std::set<std::string>& live_images);
  void SweepRootIoRules(const std::vector<SandboxPtr>& adopted);
  // The warm pool.
  std::unique_ptr<NsSandbox> TakeWarm(const SandboxSpec& spec);
  bool WarmFullLocked() const;
  void RefillLoop();
  Status StartSlot(size_t entry);

  NsDriverOptions o_;
  Clock* clock_;
  std::string sandboxes_dir_;
  UniqueFd init_binary_;
  // The small mount namespace sandbox children copy (contain.h, MakeSpawnerNamespace); invalid
  // if it could not be made: then they copy the agent's (slower with many sandboxes).
  UniqueFd spawner_ns_;
  int last_cap_ = 0;
  std::unique_ptr<storage::DiskPool> pool_;
  std::unique_ptr<NamespacePool> ns_pool_;  // made after recovery (which frees its old leases)
  std::mutex mu_;
  std::set<std::string> creating_;  // ids being created (a second Create is already_exists)
  std::optional<std::pair<RecoveryReport, std::vector<SandboxPtr>>> recovered_;

  mutable std::mutex warm_mu_;
  mutable std::condition_variable warm_cv_;
  std::deque<WarmSlots> warm_;  // a deque: never copies its elements
  WarmPoolStats warm_stats_;
  std::chrono::steady_clock::time_point last_claim_{};
  bool warm_stop_ = false;
  std::thread refiller_;
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
  HANGAR_TRY(CheckRange("default_write_bps", o_.default_write_bps, 0, o_.bounds.max_bps));
  HANGAR_TRY(CheckRange("default_write_iops", o_.default_write_iops, 0, o_.bounds.max_iops));
  for (const WarmPoolEntry& e : o_.warm_pool.entries) {
    if (e.size == 0) continue;
    if (e.template_name.empty()) return Status::InvalidArgument("warm pool: template is required");
    HANGAR_TRY(
        CheckRange("warm pool disk_mb", e.disk_mb, o_.bounds.min_disk_mb, o_.bounds.max_disk_mb));
  }
  HANGAR_TRY(Available());
  HANGAR_ASSIGN_OR_RETURN(last_cap_, LastCapability());
  HANGAR_ASSIGN_OR_RETURN(init_binary_, OpenFile(o_.init_path, O_RDONLY));
  // Keep the binary's descriptor high so no sandbox fd number (0-3) collides with it.
  int high = ::fcntl(init_binary_.get(), F_DUPFD_CLOEXEC, 100);
  if (high < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
  init_binary_.Reset(high);
  HANGAR_TRY(MakeDirs(sandboxes_dir_));
  if (auto ns = internal::MakeSpawnerNamespace(sandboxes_dir_); ns.ok()) {
    spawner_ns_ = std::move(*ns);
  } else {
    log::Warn("no spawner mount namespace; sandboxes copy the agent's",
              {{"error", ns.status().ToString()}});
  }

  RecoveryReport report;
  std::vector<SandboxPtr> adopted;
  std::set<std::string> live_images;
  size_t slots_destroyed = 0;
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
  // Pool slots are internal: never adopted, never reported as sandboxes.
  std::erase_if(report.destroyed, [&](const std::string& id) {
    if (!IsSlotName(id)) return false;
    ++slots_destroyed;
    return true;
  });
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
  SweepRootIoRules(adopted);
  if (disks.cleaned() > 0 || !report.destroyed.empty() || !report.adopted.empty() ||
      slots_destroyed > 0) {
    log::Info("ns driver recovered", {{"adopted", report.adopted.size()},
                                      {"destroyed", report.destroyed.size()},
                                      {"pool_slots_destroyed", slots_destroyed},
                                      {"disk_items_cleaned", disks.cleaned()}});
  }
  recovered_.emplace(std::move(report), std::move(adopted));

  o_.disk_pool.data_dir = o_.data_dir;
  if (o_.premount_disks) o_.disk_pool.premount = o_.disk_pool.attach = true;
  // A sandbox just created should not start beside the mkfs of its disk's replacement.
  o_.disk_pool.refill_delay = std::max(o_.disk_pool.refill_delay, o_.warm_pool.refill_delay);
  // The warm pool's refill takes its disks from the disk pool: keep one of its size ready.
  for (const WarmPoolEntry& e : o_.warm_pool.entries) {
    if (e.size == 0) continue;
    size_t& target = o_.disk_pool.targets[static_cast<uint64_t>(e.disk_mb)];
    target = std::max<size_t>(target, 1);
  }
  HANGAR_ASSIGN_OR_RETURN(pool_, storage::DiskPool::Create(o_.disk_pool));
  pool_->StartBackgroundRefill();
  if (o_.netns_pool > 0 || o_.userns_pool > 0) {
    NamespacePool::Options no;
    no.netns = o_.netns_pool;
    no.userns = o_.userns_pool;
    no.refill_delay = o_.disk_pool.refill_delay;
    ns_pool_ = std::make_unique<NamespacePool>(o_.ids, no);
  }

  for (const WarmPoolEntry& e : o_.warm_pool.entries) {
    if (e.size == 0) continue;
    warm_.emplace_back();
    warm_.back().entry = e;
  }
  if (!warm_.empty()) refiller_ = std::thread([this] { RefillLoop(); });
  return Status::Ok();
}

// Root blkio rules on loop devices that no live sandbox owns: a loop that is not bound (its
// sandbox is gone; a reused number would inherit the rule), or bound to one of our images that
// no adopted sandbox owns.
void NsDriver::SweepRootIoRules(const std::vector<SandboxPtr>& adopted) {
  auto rules = o_.cgroups->RootDeviceLimits();
  if (!rules.ok()) {
    log::Warn("reading root blkio rules failed", {{"error", rules.status().ToString()}});
    return;
  }
  std::set<std::string> live;
  for (const auto& s : adopted) live.insert(s->Info().disk_device);
  const std::string ours = storage::DisksDir(o_.data_dir);
  for (const IoDeviceLimit& r : *rules) {
    const std::string dev = fmt::format("{}:{}", r.major, r.minor);
    if (live.count(dev)) continue;
    std::string sys = fmt::format("/sys/dev/block/{}/loop/backing_file", dev);
    auto backing = ReadFile(sys);
    bool stale;
    if (!backing.ok()) {
      // Not a bound loop device. Only loop devices (major 7, or a block_ext loop with a
      // loop/ directory) can be ours.
      stale =
          r.major == 7 || ::access(fmt::format("/sys/dev/block/{}/loop", dev).c_str(), F_OK) == 0;
    } else {
      stale = backing->rfind(ours, 0) == 0;
    }
    if (!stale) continue;
    if (Status st = o_.cgroups->SetRootDeviceLimit({r.major, r.minor, 0, 0, 0, 0}); !st.ok()) {
      log::Warn("clearing a stale root blkio rule failed",
                {{"device", dev}, {"error", st.ToString()}});
    }
  }
}

NsDriver::~NsDriver() {
  {
    std::lock_guard lock(warm_mu_);
    warm_stop_ = true;
    warm_cv_.notify_all();
  }
  if (refiller_.joinable()) refiller_.join();
  std::vector<std::unique_ptr<NsSandbox>> slots;
  {
    std::lock_guard lock(warm_mu_);
    for (WarmSlots& w : warm_) {
      for (auto& sb : w.ready) slots.push_back(std::move(sb));
      w.ready.clear();
    }
  }
  for (auto& sb : slots) (void)sb->Destroy();
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
  if (std::unique_ptr<NsSandbox> slot = TakeWarm(spec)) {
    Status st = Claim(*slot, spec);
    if (st.ok()) {
      done();
      return SandboxPtr(std::move(slot));
    }
    log::Warn("claiming a pooled sandbox failed; starting cold",
              {{"id", spec.id}, {"error", st.ToString()}});
    {
      std::lock_guard lock(warm_mu_);
      ++warm_stats_.failures;
    }
    (void)slot->Destroy();
    // The slot may have been renamed onto the id's directory before it failed.
    if (::mkdir(paths.dir.c_str(), 0700) != 0 && errno != EEXIST) {
      int err = errno;
      done();
      return Status::FromErrno(err, fmt::format("mkdir({})", paths.dir));
    }
  }
  SandboxInfo info;
  info.id = spec.id;
  info.driver = kDriverName;
  info.created_at = clock_->WallNow();
  auto sb = std::make_unique<NsSandbox>(this, std::move(info), paths);
  Status st = Start(*sb, spec, tmpl, /*pooled_namespaces=*/true);
  done();
  if (!st.ok()) {
    (void)sb->Destroy();  // releases whatever Start got to
    return st.With(fmt::format("creating sandbox {}", spec.id));
  }
  return SandboxPtr(std::move(sb));
}

Status NsDriver::ApplyLimits(NsSandbox& sb, const Resources& r) {
  CgroupLimits limits;
  limits.cpu_millicores = static_cast<uint64_t>(r.cpu_millis);
  limits.memory_bytes = static_cast<uint64_t>(r.memory_mb) << 20;
  limits.pids_max = static_cast<uint64_t>(r.pids);
  IoDeviceLimit io;
  io.major = major(sb.disk_.dev());
  io.minor = minor(sb.disk_.dev());
  io.riops = static_cast<uint64_t>(r.read_iops);
  io.wiops = static_cast<uint64_t>(r.write_iops ? r.write_iops : o_.default_write_iops);
  io.rbps = static_cast<uint64_t>(r.read_bps);
  io.wbps = static_cast<uint64_t>(r.write_bps ? r.write_bps : o_.default_write_bps);
  const bool any_io = io.riops || io.wiops || io.rbps || io.wbps;
  if (any_io) limits.io.push_back(io);
  HANGAR_TRY(o_.cgroups->SetLimits(sb.info_.id, limits));
  if (any_io) {
    sb.root_io_rule_ = sb.disk_.dev();  // before the write: a half-written rule is cleared too
    HANGAR_TRY(o_.cgroups->SetRootDeviceLimit(io));
  } else if (sb.root_io_rule_) {
    HANGAR_TRY(o_.cgroups->SetRootDeviceLimit({io.major, io.minor, 0, 0, 0, 0}));
    sb.root_io_rule_.reset();
  }
  return Status::Ok();
}

Status NsDriver::Start(NsSandbox& sb, const SandboxSpec& spec, const storage::TemplateInfo& tmpl,
                       bool pooled_namespaces) {
  NamespacePool* ns_pool = pooled_namespaces ? ns_pool_.get() : nullptr;
  const Paths& p = sb.paths_;
  const Resources& r = spec.resources;

  // 1. Ids: a host uid/gid range of its own, and the user namespace that maps it — made ahead
  // by the namespace pool when it has one ready.
  if (auto pooled = ns_pool ? ns_pool->TakeUserns(spec.id) : std::nullopt) {
    sb.range_ = pooled->range;
    sb.userns_ = std::move(pooled->fd);
  } else {
    HANGAR_ASSIGN_OR_RETURN(IdRange allocated, o_.ids->Allocate(spec.id));
    sb.range_ = allocated;
    HANGAR_ASSIGN_OR_RETURN(sb.userns_, MakeUserNamespace(allocated));
  }
  const IdRange range = *sb.range_;
  sb.info_.uid_base = range.first;

  // 2. Its own disk: the writable layer lives there, so the quota covers everything it writes.
  HANGAR_ASSIGN_OR_RETURN(sb.disk_, pool_->Take(static_cast<uint64_t>(r.disk_mb)));
  if (!sb.disk_.attached()) HANGAR_TRY(sb.disk_.Attach());
  HANGAR_TRY(MakeDirs(p.disk));
  if (sb.disk_.mounted()) {
    // Mounted ahead by the pool with upper/ and work/ made: move it into place.
    const std::string staging = sb.disk_.mount_point();
    HANGAR_TRY(sb.disk_.MoveMount(p.disk));
    ::rmdir(staging.c_str());
  } else {
    HANGAR_TRY(sb.disk_.Mount(p.disk));
    for (const char* d : {"/upper", "/work"}) {
      std::string path = p.disk + d;
      if (::mkdir(path.c_str(), 0755) != 0)
        return Status::FromErrno(errno, fmt::format("mkdir({})", path));
    }
    // lost+found belongs to host root; inside it would be an unusable nobody-owned directory.
    std::string lost = p.disk + "/lost+found";
    ::rmdir(lost.c_str());
  }
  sb.info_.disk_device = fmt::format("{}:{}", major(sb.disk_.dev()), minor(sb.disk_.dev()));
  for (const char* d : {"/upper", "/work"}) {
    std::string path = p.disk + d;
    if (::chown(path.c_str(), range.first, range.first) != 0) {
      return Status::FromErrno(errno, fmt::format("chown({}, {})", path, range.first));
    }
  }

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
  HANGAR_TRY(ApplyLimits(sb, r));

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
  HANGAR_ASSIGN_OR_RETURN(Pipe report, MakePipe());
  // The child joins its cgroup itself: this thread sleeps until the child's exec (CLONE_VFORK).
  // On v1 through `tasks`: the child is single-threaded, and moving one thread skips the
  // threadgroup lock whose write side waits for an RCU grace period (contain.h).
  for (const std::string& dir : o_.cgroups->Paths(spec.id)) {
    const std::string tasks = dir + "/tasks";
    plan.cgroup_join.push_back(
        plan.Keep(::access(tasks.c_str(), W_OK) == 0 ? tasks : dir + "/cgroup.procs"));
  }
  // The child builds its root in a copy of the spawner namespace, where the overlay is
  // attached (from a detached clone of it) at kSpawnerRoot; without one, in a copy of ours.
  UniqueFd rootfs_tree;
  if (spawner_ns_.valid()) {
    int tree = static_cast<int>(
        ::syscall(SYS_open_tree, AT_FDCWD, p.rootfs.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    if (tree < 0) return Status::FromErrno(errno, fmt::format("open_tree({})", p.rootfs));
    rootfs_tree.Reset(tree);
    plan.mntns_fd = spawner_ns_.get();
    plan.rootfs_tree_fd = rootfs_tree.get();
  }
  const std::string child_root = spawner_ns_.valid() ? internal::kSpawnerRoot : p.rootfs;
  plan.rootfs = plan.Keep(child_root);
  // /tmp is memory: bound it by the memory limit (the cgroup charges it anyway).
  internal::AddStandardMounts(plan, child_root, range.first + 5,
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
  // The id is the hostname, not an environment variable: a pooled sandbox's init started
  // before its id was known, and must look the same as a cold one.
  std::map<std::string, std::string> env = {
      {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}};
  for (const auto& [k, v] : spec.env) env[k] = v;
  for (const auto& [k, v] : env) plan.envp.push_back(const_cast<char*>(plan.Keep(k + "=" + v)));
  plan.envp.push_back(nullptr);
  // The report pipe must not land on 0-3 in the child (the plan rearranges those).
  {
    int high = ::fcntl(report.write.get(), F_DUPFD_CLOEXEC, 100);
    if (high < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
    report.write.Reset(high);
  }
  plan.report_fd = report.write.get();

  // posix_spawn's way (CLONE_VM|CLONE_VFORK): no copy of the agent's page tables; the stack
  // is the child's until its exec, which is when clone returns here.
  HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(256 * 1024));
  // A network namespace made ahead (taken last, so that nothing before wastes one); without
  // one the clone makes it. Either way it is this sandbox's alone and dies with it.
  UniqueFd netns = ns_pool ? ns_pool->TakeNetns() : UniqueFd();
  plan.netns_fd = netns.get();
  int pidfd = -1;
  pid_t pid;
  {
    SignalsBlocked blocked;
    plan.exec_sigmask = blocked.old();
    pid = ::clone(
        [](void* arg) -> int { internal::RunContained(*static_cast<internal::ContainPlan*>(arg)); },
        stack.top(),
        CLONE_VM | CLONE_VFORK | CLONE_PIDFD | (spawner_ns_.valid() ? 0 : CLONE_NEWNS) |
            (netns.valid() ? 0 : CLONE_NEWNET) | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
            SIGCHLD,
        &plan, &pidfd);
  }
  if (pid < 0) return Status::FromErrno(errno, "clone(VM|VFORK|NEWPID|NEWNET|NEWUTS|NEWIPC)");
  rootfs_tree.Reset();  // attached in the child's namespace, or dissolved if it failed first
  netns.Reset();        // the child is in it (or died): the sandbox's processes hold it now
  sb.init_.emplace(Child::Adopt(pid));
  sb.init_pidfd_.Reset(pidfd);
  sb.info_.init_pid = static_cast<int>(pid);
  report.write.Reset();
  console.Reset();

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

// --- warm pool ----------------------------------------------------------------------------

std::unique_ptr<NsSandbox> NsDriver::TakeWarm(const SandboxSpec& spec) {
  std::lock_guard lock(warm_mu_);
  bool pooled_template = false;
  for (WarmSlots& w : warm_) {
    if (w.entry.template_name != spec.template_name) continue;
    pooled_template = true;
    if (w.entry.disk_mb != spec.resources.disk_mb || w.entry.env != spec.env) continue;
    if (w.ready.empty()) continue;
    std::unique_ptr<NsSandbox> sb = std::move(w.ready.front());
    w.ready.pop_front();
    ++warm_stats_.claimed;
    last_claim_ = std::chrono::steady_clock::now();
    warm_cv_.notify_all();  // the refiller
    return sb;
  }
  if (pooled_template) ++warm_stats_.misses;
  return nullptr;
}

Status NsDriver::Claim(NsSandbox& sb, const SandboxSpec& spec) {
  std::lock_guard lock(sb.mu_);
  const std::string slot = sb.info_.id;
  const Resources& r = spec.resources;
  // Limits first, while nobody can use it yet; then what the inside sees; then the names.
  HANGAR_TRY(ApplyLimits(sb, r));
  HANGAR_TRY(RunInSandbox(sb.init_pidfd_.get(), spec.id, static_cast<uint64_t>(r.memory_mb) << 19));
  HANGAR_TRY(o_.cgroups->Rename(slot, spec.id));
  sb.info_.id = spec.id;  // the cgroup's name from here on
  HANGAR_TRY(o_.ids->Rename(sb.range_->slot, spec.id));
  Paths to(sandboxes_dir_, spec.id);
  // Replaces the empty directory Create made; the mounts below move with it.
  if (::rename(sb.paths_.dir.c_str(), to.dir.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("rename({}, {})", sb.paths_.dir, to.dir));
  }
  sb.paths_ = to;
  HANGAR_TRY(sb.disk_.MountPointRenamed(to.disk));
  (void)sb.lower_.Release();
  sb.lower_ = ScopedMount(to.lower);
  (void)sb.rootfs_.Release();
  sb.rootfs_ = ScopedMount(to.rootfs);
  sb.info_.created_at = clock_->WallNow();
  return WriteState(sb, spec);
}

bool NsDriver::WarmFullLocked() const {
  for (const WarmSlots& w : warm_) {
    if (w.ready.size() < w.entry.size) return false;
  }
  return true;
}

WarmPoolStats NsDriver::warm_stats() const {
  std::lock_guard lock(warm_mu_);
  WarmPoolStats s = warm_stats_;
  s.ready = 0;
  for (const WarmSlots& w : warm_) s.ready += w.ready.size();
  return s;
}

bool NsDriver::WaitWarmFull(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(warm_mu_);
  return warm_cv_.wait_for(lock, timeout, [this] { return WarmFullLocked(); });
}

Status NsDriver::StartSlot(size_t i) {
  const WarmPoolEntry& e = warm_[i].entry;  // entries never change after Open
  HANGAR_ASSIGN_OR_RETURN(storage::TemplateInfo tmpl, o_.templates->Get(e.template_name));
  SandboxSpec spec;
  spec.id = NewSlotName();
  spec.template_name = e.template_name;
  spec.resources = e.idle_resources;
  spec.resources.disk_mb = e.disk_mb;
  spec.env = e.env;
  Paths paths(sandboxes_dir_, spec.id);
  if (::mkdir(paths.dir.c_str(), 0700) != 0) {
    return Status::FromErrno(errno, fmt::format("mkdir({})", paths.dir));
  }
  SandboxInfo info;
  info.id = spec.id;
  info.driver = kDriverName;
  info.created_at = clock_->WallNow();
  auto sb = std::make_unique<NsSandbox>(this, std::move(info), paths);
  if (Status st = Start(*sb, spec, tmpl, /*pooled_namespaces=*/false); !st.ok()) {
    (void)sb->Destroy();
    return st.With(fmt::format("starting pool slot for template {}", e.template_name));
  }
  if (o_.wait_for_envd) {
    if (Status st = WarmUpEnvd(paths.socket, o_.envd_ready_timeout); !st.ok()) {
      log::Debug("pool slot: envd warm-up command failed (the slot is offered anyway)",
                 {{"slot", spec.id}, {"error", st.ToString()}});
    }
  }
  std::unique_lock lock(warm_mu_);
  --warm_[i].in_flight;
  if (warm_stop_) {
    lock.unlock();
    (void)sb->Destroy();  // the driver is going away; recovery would destroy it anyway
    return Status::Ok();
  }
  warm_[i].ready.push_back(std::move(sb));
  ++warm_stats_.created;
  warm_cv_.notify_all();
  return Status::Ok();
}

void NsDriver::RefillLoop() {
  std::unique_lock lock(warm_mu_);
  while (!warm_stop_) {
    size_t neediest = warm_.size();
    for (size_t i = 0; i < warm_.size(); ++i) {
      if (warm_[i].ready.size() + warm_[i].in_flight < warm_[i].entry.size) {
        neediest = i;
        break;
      }
    }
    if (neediest == warm_.size()) {
      warm_cv_.wait(lock);
      continue;
    }
    // Leave the CPU to a sandbox just claimed (see WarmPoolOptions::refill_delay).
    const auto quiet_until = last_claim_ + o_.warm_pool.refill_delay;
    if (std::chrono::steady_clock::now() < quiet_until) {
      warm_cv_.wait_until(lock, quiet_until, [this] { return warm_stop_; });
      continue;
    }
    ++warm_[neediest].in_flight;
    lock.unlock();
    Status st = StartSlot(neediest);
    lock.lock();
    if (!st.ok()) {
      // StartSlot gives in_flight back only on success.
      --warm_[neediest].in_flight;
      ++warm_stats_.failures;
      log::Warn("warm pool refill failed; retrying",
                {{"template", warm_[neediest].entry.template_name}, {"error", st.ToString()}});
      warm_cv_.wait_for(lock, o_.warm_pool.retry_after, [this] { return warm_stop_; });
    }
  }
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
  return WriteFileReplace(sb.paths_.state, j.dump(2), 0600);
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
    // Pool slots (not a valid id) are never adopted: the refill rebuilds the pool.
    if (!state.is_discarded() && ValidId(id) && state.value("id", "") == id) {
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
      if (sb->disk_.attached()) sb->root_io_rule_ = sb->disk_.dev();  // cleared on destroy
      live_images.insert(image);
      report.adopted.push_back(id);
      return SandboxPtr(std::move(sb));
    }
  }
  // Not whole: release everything it may hold. Its disk image is not live, so RecoverDisks
  // detaches and deletes it (and the sweep clears its root blkio rule); mounts under its
  // directory are detached here.
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
  std::string id;
  {
    std::lock_guard lock(mu_);
    id = info_.id;
  }
  Usage u;
  HANGAR_ASSIGN_OR_RETURN(CgroupUsage cg, driver_->cgroups().ReadUsage(id));
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
  keep(ReleaseSandboxStorage(driver_->cgroups(), root_io_rule_, disk_, paths_.dir));
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

WarmPoolStats GetWarmPoolStats(const Driver& driver) {
  const auto* ns = dynamic_cast<const NsDriver*>(&driver);
  return ns ? ns->warm_stats() : WarmPoolStats{};
}

bool WaitForWarmPool(const Driver& driver, std::chrono::milliseconds timeout) {
  const auto* ns = dynamic_cast<const NsDriver*>(&driver);
  return ns ? ns->WaitWarmFull(timeout) : true;
}

bool WaitForNamespacePool(const Driver& driver, std::chrono::milliseconds timeout) {
  const auto* ns = dynamic_cast<const NsDriver*>(&driver);
  return ns ? ns->WaitNamespacesFull(timeout) : true;
}

}  // namespace hangar::node
