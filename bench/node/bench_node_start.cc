// bench_node_start: how fast a shared-tier sandbox starts, against its peers, in one run.
//
//   bench_node_start [--iterations N] [--warmup N] [--pooled N] [--envd PATH | --no-envd]
//                    [--no-phases] [--netns-pool N] [--userns-pool N]
//
// Peers and Hangar run interleaved (one of each per round, in rotating order) so the machine's
// load drifts over all of them alike; ratios are the figures to compare. The peers are started
// and timed by a small helper process (see PeerHelperMain), not by this agent-sized one.
//   fork+exec      fork() + execv("/usr/bin/true") + waitpid — the floor; for reference also
//                  posix_spawn (CLONE_VM|CLONE_VFORK) and fork+exec from this process
//   bwrap          bwrap --unshare-all --ro-bind <mini rootfs> / --proc /proc --dev /dev true
//   crun           crun --cgroup-manager=disabled run (a minimal bundle over the same rootfs;
//                  crun's default namespaces pid, net, ipc, uts, mount); the helper runs in a
//                  mount namespace without /sys/fs/cgroup/unified (crun refuses hybrid
//                  cgroups otherwise)
//   hangar cold    NsDriver::Create → the init exited; init = the host's /usr/bin/true (same
//                  binary as the peers, run inside against the template's copy of its libc);
//                  fresh namespaces, uid range, cgroup; disk taken from the driver's
//                  pre-formatted pool (each round waits until the pool has refilled)
//   hangar cold+envd  Create with envd as init (returns once envd answers /health) + the first
//                  command (/usr/bin/true) through hangar::envd::Client → exited
// Then:
//                  (--netns-pool / --userns-pool: the driver's namespace pool sizes, default
//                  4 and 2; each round also waits, untimed, until that pool is full)
//   phases         every building block of NsDriver::Start alone, in its order, through the
//                  public APIs: CLONE_VM user-namespace helper, pre-mounted pool disk, spawner
//                  mount namespace, CLONE_VM|CLONE_VFORK child running contain.h's checklist
//                  as the driver does, split by timestamps the child takes; rounds rotate over
//                  cgroup join via `tasks`/cgroup.procs x pre-made netns/CLONE_NEWNET
//   pooled         sandboxes made ahead (envd up): claim → first command exited through envd,
//                  beside a fork+exec sample each
// Exit 0 unless something failed (timings are reported, never asserted).
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "bench_node_common.h"
#include "contain.h"    // the sandbox child's checklist, timed as the driver runs it
#include "file_util.h"  // WriteFileReplace: state files as the driver writes them (no fsync)
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/mount.h"
#include "hangar/node/caps.h"
#include "hangar/storage/disk_pool.h"
#ifdef HANGAR_BENCH_HAVE_ENVD
#include "hangar/envd/client.h"
#endif

namespace hangar::bench {
namespace {

using namespace std::chrono_literals;

struct Flags {
  int iterations = 60;
  int warmup = 3;
  int pooled = 100;
  bool phases = true;
  bool use_envd = true;
  std::string envd_path;  // default: envd next to this binary
  int netns_pool = -1;    // -1: the driver's default (4)
  int userns_pool = 2;    // the driver's default
};

std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto num = [&](int& out, int min) {
      if (i + 1 >= argc) return false;
      out = std::atoi(argv[++i]);
      return out >= min;
    };
    bool ok = true;
    if (a == "--iterations")
      ok = num(f.iterations, 1);
    else if (a == "--warmup")
      ok = num(f.warmup, 0);
    else if (a == "--pooled")
      ok = num(f.pooled, 0);
    else if (a == "--no-phases")
      f.phases = false;
    else if (a == "--no-envd")
      f.use_envd = false;
    else if (a == "--envd" && i + 1 < argc)
      f.envd_path = argv[++i];
    else if (a == "--netns-pool")
      ok = num(f.netns_pool, 0);
    else if (a == "--userns-pool")
      ok = num(f.userns_pool, 0);
    else
      ok = false;
    if (!ok) return std::nullopt;
  }
  return f;
}

// --- peers ---------------------------------------------------------------------------------------

// fork + execv + waitpid; returns ms, or -1 if the program failed.
double TimeProgram(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  auto t0 = SteadyClock::now();
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  double ms = MsSince(t0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? ms : -1;
}

// posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), no copy of the parent's page tables) +
// waitpid: what a spawner that does not fork the agent's address space pays.
double TimeSpawn(const char* path) {
  char* argv[] = {const_cast<char*>(path), nullptr};
  auto t0 = SteadyClock::now();
  pid_t pid;
  if (::posix_spawn(&pid, path, nullptr, nullptr, argv, environ) != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  double ms = MsSince(t0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? ms : -1;
}

// The peers run from a helper: this binary re-executed with --peer-helper, a small process
// (nothing allocated, no threads) — the parent a shell or a container engine's CLI would be.
// Forking a process copies its page tables, so timing the peers from this benchmark (which
// holds drivers, pools and threads, like hangard) would charge them for our size. The helper
// unshares its mount namespace and unmounts /sys/fs/cgroup/unified there, which crun needs on
// a hybrid host. It answers each request line ("true", "spawn", "bwrap", "crun") with "<ms>"
// (-1 if the program failed).
int PeerHelperMain(const std::string& peer_root, const std::string& crun_dir) {
  if (::unshare(CLONE_NEWNS) != 0) return std::perror("unshare(CLONE_NEWNS)"), 1;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return std::perror("mount(/, MS_REC|MS_PRIVATE)"), 1;
  }
  if (::umount2("/sys/fs/cgroup/unified", MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return std::perror("umount2(/sys/fs/cgroup/unified)"), 1;
  }
  const std::vector<std::string> bwrap = {
      "/usr/bin/bwrap", "--unshare-all", "--ro-bind", peer_root, "/",
      "--proc",         "/proc",         "--dev",     "/dev",    "/usr/bin/true"};
  std::string line;
  int n = 0;
  while (std::getline(std::cin, line)) {
    double ms = -1;
    if (line == "true") {
      ms = TimeProgram({"/usr/bin/true"});
    } else if (line == "spawn") {
      ms = TimeSpawn("/usr/bin/true");
    } else if (line == "bwrap") {
      ms = TimeProgram(bwrap);
    } else if (line == "crun") {
      ms = TimeProgram({"/usr/bin/crun", "--root", crun_dir + "/state", "--cgroup-manager=disabled",
                        "run", "--bundle", crun_dir, fmt::format("b{}-{}", ::getpid(), n++)});
    }
    std::printf("%.4f\n", ms);
    std::fflush(stdout);
  }
  return 0;
}

class PeerHelper {
 public:
  // Prepares crun's bundle (crun's default spec, running /usr/bin/true over `rootfs`: pid,
  // net, ipc, uts and mount namespaces) and starts the helper.
  static Result<PeerHelper> Start(const std::string& rootfs, const std::string& crun_dir) {
    PeerHelper p;
    if (::access("/usr/bin/crun", X_OK) == 0) {
      HANGAR_TRY(MakeDirs(crun_dir + "/state"));
      HANGAR_TRY(RunCommand({"/usr/bin/crun", "spec", "-b", crun_dir}).status());
      HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile(crun_dir + "/config.json"));
      auto j = nlohmann::json::parse(text, nullptr, false);
      if (j.is_discarded()) return Status::Internal("crun spec wrote no JSON");
      j["process"]["args"] = {"/usr/bin/true"};
      j["process"]["terminal"] = false;
      j["root"] = {{"path", rootfs}, {"readonly", true}};
      j["linux"].erase("resources");
      HANGAR_TRY(WriteFile(crun_dir + "/config.json", j.dump(2)));
    }
    std::error_code ec;
    std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    SpawnOptions so;
    so.pipe_stdin = true;
    so.capture_stdout = true;
    so.death_signal = SIGKILL;
    HANGAR_ASSIGN_OR_RETURN(p.child_, Child::Spawn({self, "--peer-helper", rootfs, crun_dir}, so));
    HANGAR_ASSIGN_OR_RETURN(double t, p.Run("true"));
    if (t < 0) return Status::Unavailable("the peer helper cannot run /usr/bin/true");
    return p;
  }
  PeerHelper() = default;
  PeerHelper(PeerHelper&&) = default;
  PeerHelper& operator=(PeerHelper&&) = default;
  ~PeerHelper() {
    if (child_.running()) {
      child_.stdin_fd().Reset();  // EOF: the helper exits
      (void)child_.WaitFor(5s);
    }
  }

  // Runs one peer; its time in ms, or -1 if the peer failed.
  Result<double> Run(const std::string& what) {
    HANGAR_TRY(WriteAll(child_.stdin_fd().get(), what + "\n"));
    std::string line;
    char c;
    for (;;) {
      ssize_t n = ::read(child_.stdout_fd().get(), &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::Unavailable("peer helper exited");
      if (c == '\n') break;
      line += c;
    }
    return std::atof(line.c_str());
  }

 private:
  Child child_;
};

// --- the building blocks of NsDriver::Start, one by one
// ---------------------------------------------

// As the driver's helper: a CLONE_VM child (small stack, no copy of this process's page tables)
// in a new user namespace, mapped, held by an fd; then SIGKILLed and reaped.
Result<UniqueFd> MakeUserNamespace(const node::IdRange& range) {
  constexpr size_t kStack = 64 * 1024;
  HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(kStack));
  pid_t pid;
  {
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = ::clone(
        [](void*) -> int {
          for (;;) ::pause();
        },
        stack.top(), CLONE_NEWUSER | CLONE_VM | SIGCHLD, nullptr);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  if (pid < 0) return Status::FromErrno(errno, "clone(CLONE_NEWUSER|CLONE_VM)");
  Child holder = Child::Adopt(pid);
  Status maps = node::WriteIdMaps(pid, range, node::SetgroupsPolicy::kAllow);
  Result<UniqueFd> fd =
      maps.ok() ? OpenFile(fmt::format("/proc/{}/ns/user", pid), O_RDONLY) : Result<UniqueFd>(maps);
  (void)holder.Signal(SIGKILL);
  (void)holder.Wait();
  return fd;
}

Result<ScopedMount> MountIdmapped(const std::string& source, const std::string& target,
                                  int userns_fd) {
  int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, source.c_str(),
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (tree < 0) return Status::FromErrno(errno, "open_tree");
  UniqueFd tree_fd(tree);
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (::syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr)) {
    return Status::FromErrno(errno, "mount_setattr(MOUNT_ATTR_IDMAP)");
  }
  if (::syscall(SYS_move_mount, tree, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH)) {
    return Status::FromErrno(errno, "move_mount");
  }
  return ScopedMount(target);
}

Result<UniqueFd> ListenUnix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return Status::InvalidArgument("socket path");
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  UniqueFd sock(fd);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, "bind");
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd, 128) != 0) return Status::FromErrno(errno, "listen");
  return sock;
}

// Today's building blocks of NsDriver::Start, in its order (the sandbox child's checklist
// through contain.h, timed inside the child). Phase 9 is split by the child's own timestamps.
constexpr const char* kPhaseNames[] = {
    "1 uid range lease (O_EXCL file, no fsync)",
    "2 user namespace (CLONE_VM helper, maps, fd)",
    "3 disk: pool Take (pre-mounted) + MS_MOVE + chown",
    "4 template: id-mapped bind (open_tree)",
    "5 overlay mount",
    "6 cgroup create + limits (incl. io)",
    "7 envd socket + console",
    "8 plan + open_tree(root) + netns Take",
    "9a clone(VM|VFORK|ns) until the child runs",
    "9b child: cgroup join + setsid",
    "9c child: setns net/mnt, unshare, attach root",
    "9d child: ~40 mount ops (/dev, /proc, /sys, /tmp)",
    "9e child: pivot_root + detach old root",
    "9f child: hostname, (lo up), setns user, root",
    "9g child: rlimits, caps, fds, seccomp, signals",
    "9h exec until clone returns (vfork release)",
    "10 init /usr/bin/true runs to exit",
    "11 state.json (atomic write, no fsync)",
};
constexpr size_t kPhases = std::size(kPhaseNames);
constexpr size_t kChildFirst = 8;  // 9a

// The variants each round alternates between, for the cost of the two choices alone.
struct PhaseVariant {
  bool tasks_file;     // join the cgroup through v1 `tasks` (driver) or cgroup.procs (before)
  bool premade_netns;  // setns into a pre-made network namespace (driver) or CLONE_NEWNET
};
constexpr PhaseVariant kVariants[] = {{true, true}, {false, true}, {true, false}, {false, false}};

class PhaseBench {
 public:
  PhaseBench(storage::TemplateInfo tmpl, const node::SeccompProgram& seccomp)
      : tmpl_(std::move(tmpl)), seccomp_(seccomp) {}

  Status Open() {
    HANGAR_ASSIGN_OR_RETURN(tmp_, TempDir::Make("hangar-bench-phases-", "/var/tmp"));
    data_ = tmp_.path();
    HANGAR_ASSIGN_OR_RETURN(node::CgroupLayout layout, node::DetectCgroupLayout());
    node::CgroupOptions co;
    co.root = fmt::format("hangar-bench-phases-{}", ::getpid());
    HANGAR_ASSIGN_OR_RETURN(cgroups_, node::MakeCgroupBackend(layout, co));
    node::IdAllocatorOptions io;
    io.state_dir = data_ + "/ids";
    io.base = 4'000'000'000u;
    io.slots = 8;
    HANGAR_ASSIGN_OR_RETURN(ids_, node::IdRangeAllocator::Open(io));
    storage::DiskPoolOptions po;
    po.data_dir = data_;
    po.targets = {{64, 2}};
    po.attach = po.premount = true;  // as the driver's pool
    HANGAR_ASSIGN_OR_RETURN(pool_, storage::DiskPool::Create(po));
    HANGAR_TRY(pool_->Refill().status());
    HANGAR_ASSIGN_OR_RETURN(last_cap_, node::LastCapability());
    HANGAR_ASSIGN_OR_RETURN(init_, OpenFile("/usr/bin/true", O_RDONLY | O_CLOEXEC));
    int high = ::fcntl(init_.get(), F_DUPFD_CLOEXEC, 100);
    if (high < 0) return Status::FromErrno(errno, "fcntl");
    init_.Reset(high);
    HANGAR_TRY(MakeDirs(data_ + "/sandboxes"));
    HANGAR_ASSIGN_OR_RETURN(spawner_, node::internal::MakeSpawnerNamespace(data_ + "/sandboxes"));
    HANGAR_ASSIGN_OR_RETURN(home_netns_, OpenFile("/proc/thread-self/ns/net", O_RDONLY));
    return Status::Ok();
  }

  ~PhaseBench() {
    pool_.reset();
    if (cgroups_) (void)cgroups_->RemoveRoot();
  }

  // One cold start through every building block; ms per phase in `out`. Everything is torn
  // down before returning (teardown time in `teardown_ms`).
  Status Once(int i, const PhaseVariant& v, std::array<double, kPhases>& out, double& teardown_ms) {
    const std::string id = fmt::format("p{}", i);
    const std::string dir = data_ + "/sandboxes/" + id;
    HANGAR_TRY(MakeDirs(dir));
    // The namespace the driver's pool would hand out, made before the clock starts.
    UniqueFd netns;
    if (v.premade_netns) {
      HANGAR_ASSIGN_OR_RETURN(netns, node::internal::MakeNetworkNamespace(home_netns_.get()));
    }
    // Owners in creation order; destroyed in reverse below (and on every early return).
    std::optional<node::IdRange> range;
    UniqueFd userns;
    storage::Disk disk;
    ScopedMount lower, rootfs;
    bool cgroup = false;
    std::optional<Child> init;
    auto cleanup = [&] {
      auto t0 = SteadyClock::now();
      if (cgroup) (void)cgroups_->KillAndRemove(id);
      if (init) {
        if (init->running()) (void)init->Signal(SIGKILL);
        (void)init->Wait();
        init.reset();
      }
      (void)rootfs.Unmount();
      (void)lower.Unmount();
      (void)disk.Destroy();
      userns.Reset();
      if (range) (void)ids_->Release(range->slot);
      (void)RemoveTree(dir);
      teardown_ms = MsSince(t0);
    };
    struct Guard {
      std::function<void()> f;
      ~Guard() { f(); }
    } guard{cleanup};

    auto t = SteadyClock::now();
    auto lap = [&](size_t phase) {
      out[phase] = MsSince(t);
      t = SteadyClock::now();
    };
    HANGAR_ASSIGN_OR_RETURN(range, ids_->Allocate(id));
    lap(0);
    HANGAR_ASSIGN_OR_RETURN(userns, MakeUserNamespace(*range));
    lap(1);
    HANGAR_ASSIGN_OR_RETURN(disk, pool_->Take(64));
    HANGAR_TRY(MakeDirs(dir + "/disk"));
    if (disk.mounted()) {
      const std::string staging = disk.mount_point();
      HANGAR_TRY(disk.MoveMount(dir + "/disk"));
      ::rmdir(staging.c_str());
    } else {
      return Status::Internal("the pool handed out a disk that is not mounted");
    }
    for (const char* d : {"/upper", "/work"}) {
      if (::chown((dir + "/disk" + d).c_str(), range->first, range->first) != 0) {
        return Status::FromErrno(errno, "chown");
      }
    }
    lap(2);
    HANGAR_TRY(MakeDirs(dir + "/lower"));
    HANGAR_TRY(MakeDirs(dir + "/rootfs"));
    HANGAR_ASSIGN_OR_RETURN(lower, MountIdmapped(tmpl_.rootfs, dir + "/lower", userns.get()));
    lap(3);
    HANGAR_ASSIGN_OR_RETURN(UniqueFd lfd, OpenFile(dir + "/lower", O_PATH | O_DIRECTORY));
    HANGAR_ASSIGN_OR_RETURN(UniqueFd ufd, OpenFile(dir + "/disk/upper", O_PATH | O_DIRECTORY));
    HANGAR_ASSIGN_OR_RETURN(UniqueFd wfd, OpenFile(dir + "/disk/work", O_PATH | O_DIRECTORY));
    HANGAR_ASSIGN_OR_RETURN(
        rootfs, ScopedMount::Mount("overlay", dir + "/rootfs", "overlay", MS_NODEV,
                                   fmt::format("lowerdir=/proc/thread-self/fd/{},upperdir=/proc/"
                                               "thread-self/fd/{},workdir=/proc/thread-self/fd/{}",
                                               lfd.get(), ufd.get(), wfd.get())));
    lap(4);
    HANGAR_TRY(cgroups_->Create(id));
    cgroup = true;
    node::CgroupLimits limits;
    limits.cpu_millicores = 1000;
    limits.memory_bytes = 64ull << 20;
    limits.pids_max = 64;
    limits.io.push_back({major(disk.dev()), minor(disk.dev()), 0, 0, 0, 0});
    HANGAR_TRY(cgroups_->SetLimits(id, limits));
    lap(5);
    HANGAR_ASSIGN_OR_RETURN(UniqueFd listen, ListenUnix(dir + "/envd.sock"));
    HANGAR_ASSIGN_OR_RETURN(
        UniqueFd console, OpenFile(dir + "/disk/console.log", O_WRONLY | O_CREAT | O_APPEND, 0600));
    if (::symlink("disk/console.log", (dir + "/console.log").c_str()) != 0) {
      return Status::FromErrno(errno, "symlink");
    }
    lap(6);
    // Step 6 of NsDriver::Start: the plan, the child, the report.
    node::internal::ContainPlan plan;
    HANGAR_ASSIGN_OR_RETURN(Pipe report, MakePipe());
    for (const std::string& cg : cgroups_->Paths(id)) {
      const std::string tasks = cg + "/tasks";
      plan.cgroup_join.push_back(plan.Keep(
          v.tasks_file && ::access(tasks.c_str(), W_OK) == 0 ? tasks : cg + "/cgroup.procs"));
    }
    int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, (dir + "/rootfs").c_str(),
                                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    if (tree < 0) return Status::FromErrno(errno, "open_tree(rootfs)");
    UniqueFd root_tree(tree);
    plan.mntns_fd = spawner_.get();
    plan.rootfs_tree_fd = root_tree.get();
    plan.rootfs = plan.Keep(node::internal::kSpawnerRoot);
    node::internal::AddStandardMounts(plan, node::internal::kSpawnerRoot, range->first + 5,
                                      32ull << 20);
    plan.hostname = plan.Keep(id);
    plan.userns_fd = userns.get();
    plan.keep_caps = node::DefaultSandboxCapabilities();
    plan.last_cap = last_cap_;
    plan.listen_fd = listen.get();
    plan.console_fd = console.get();
    plan.seccomp = &seccomp_;
    plan.init_fd = init_.get();
    plan.netns_fd = netns.get();
    plan.argv = {const_cast<char*>(plan.Keep("/usr/bin/true")), nullptr};
    plan.envp = {
        const_cast<char*>(plan.Keep("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")),
        nullptr};
    int high = ::fcntl(report.write.get(), F_DUPFD_CLOEXEC, 100);
    if (high < 0) return Status::FromErrno(errno, "fcntl");
    report.write.Reset(high);
    plan.report_fd = report.write.get();
    std::array<uint64_t, node::internal::kContainPhases> trace{};
    plan.trace = trace.data();
    HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(256 * 1024));
    lap(7);
    const uint64_t clone_ns = NowNs();
    int pidfd = -1;
    pid_t pid;
    {
      sigset_t all, old;
      sigfillset(&all);
      ::pthread_sigmask(SIG_SETMASK, &all, &old);
      plan.exec_sigmask = old;
      pid = ::clone(
          [](void* arg) -> int {
            node::internal::RunContained(*static_cast<node::internal::ContainPlan*>(arg));
          },
          stack.top(),
          CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
              (v.premade_netns ? 0 : CLONE_NEWNET) | SIGCHLD,
          &plan, &pidfd);
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    if (pid < 0) return Status::FromErrno(errno, "clone(VM|VFORK|ns)");
    const uint64_t returned_ns = NowNs();
    UniqueFd pidfd_owner(pidfd);
    init.emplace(Child::Adopt(pid));
    root_tree.Reset();
    netns.Reset();
    report.write.Reset();
    console.Reset();
    node::internal::ContainFailure failure;
    ssize_t n;
    do {
      n = ::read(report.read.get(), &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
    if (n == sizeof failure) return node::internal::DescribeFailure(plan, failure);
    // The child's timestamps split the clone: clone -> child start -> ... -> exec -> return.
    uint64_t prev = clone_ns;
    for (size_t k = 0; k < node::internal::kContainPhases; ++k) {
      out[kChildFirst + k] = (trace[k] - prev) / 1e6;
      prev = trace[k];
    }
    out[kChildFirst + node::internal::kContainPhases] = (returned_ns - prev) / 1e6;
    t = SteadyClock::now();
    if (!WaitForExit(pid, 10s)) return Status::DeadlineExceeded("init did not exit");
    lap(kPhases - 2);
    nlohmann::json state = {{"id", id},
                            {"init_pid", pid},
                            {"uid_slot", range->slot},
                            {"disk_image", disk.image_path()},
                            {"disk_mb", 64}};
    HANGAR_TRY(node::WriteFileReplace(dir + "/state.json", state.dump(2), 0600));
    lap(kPhases - 1);
    (void)pool_->Refill();  // untimed: the next round takes a ready disk
    return Status::Ok();
  }

  static uint64_t NowNs() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
  }

  // Namespace creation alone: clone(VM|VFORK) with the flags, child _exit(0), wait; with
  // `netns_fd` >= 0 the child enters that namespace with setns instead.
  static double CloneNs(uint64_t flags, int netns_fd = -1) {
    static CloneStack stack = std::move(CloneStack::Make(64 * 1024).value());
    auto t0 = SteadyClock::now();
    pid_t pid = ::clone(
        [](void* arg) -> int {
          int fd = *static_cast<int*>(arg);
          if (fd >= 0 && ::setns(fd, CLONE_NEWNET) != 0) ::_exit(1);
          ::_exit(0);
        },
        stack.top(), static_cast<int>(flags) | CLONE_VM | CLONE_VFORK | SIGCHLD,
        &netns_fd);
    if (pid < 0) return -1;
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? MsSince(t0) : -1;
  }
  int home_netns() const { return home_netns_.get(); }

 private:
  storage::TemplateInfo tmpl_;
  const node::SeccompProgram& seccomp_;
  TempDir tmp_;
  std::string data_;
  node::CgroupBackendPtr cgroups_;
  std::unique_ptr<node::IdRangeAllocator> ids_;
  std::unique_ptr<storage::DiskPool> pool_;
  int last_cap_ = 0;
  UniqueFd init_;
  UniqueFd spawner_;     // the spawner mount namespace (as the driver's)
  UniqueFd home_netns_;  // this thread's network namespace (MakeNetworkNamespace returns here)
};

// --- Hangar through the driver
// ----------------------------------------------------------------------

node::SandboxSpec Spec(const std::string& id) {
  node::SandboxSpec s;
  s.id = id;
  s.template_name = "mini";
  s.resources.disk_mb = 64;
  s.resources.memory_mb = 64;
  s.resources.pids = 64;
  return s;
}

constexpr size_t kPoolTarget = 3;

struct ColdSample {
  double total = 0, create = 0, destroy = 0;
};

// Create → init (/usr/bin/true) exited; then Destroy and wait for the pool to refill (untimed).
Result<ColdSample> HangarCold(BenchNode& node, const std::string& id) {
  ColdSample s;
  auto t0 = SteadyClock::now();
  HANGAR_ASSIGN_OR_RETURN(node::Sandbox * sb, node.Create(Spec(id)));
  s.create = MsSince(t0);
  if (!WaitForExit(sb->Info().init_pid, 10s)) return Status::DeadlineExceeded("init running");
  s.total = MsSince(t0);
  auto t1 = SteadyClock::now();
  HANGAR_TRY(node.Destroy(id));
  s.destroy = MsSince(t1);
  node.WaitForPool(kPoolTarget, 5s);
  (void)node::WaitForNamespacePool(node.driver(), 5s);
  return s;
}

#ifdef HANGAR_BENCH_HAVE_ENVD
// The first command through envd on a running sandbox: new client, Run(/usr/bin/true).
Result<double> EnvdFirstCommand(node::Sandbox& sb) {
  auto t0 = SteadyClock::now();
  node::EnvdEndpoint ep = sb.Envd();
  HANGAR_ASSIGN_OR_RETURN(envd::Client c,
                          envd::Client::Create({ep.unix_socket, ep.tcp, ep.access_token}));
  HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo done, c.Run(envd::Command{.cmd = "/usr/bin/true"}));
  if (done.exit_code != 0) return Status::Internal("true exited " + done.status);
  return MsSince(t0);
}

// Create with envd as init → first command exited.
Result<ColdSample> HangarColdEnvd(BenchNode& node, const std::string& id) {
  ColdSample s;
  auto t0 = SteadyClock::now();
  HANGAR_ASSIGN_OR_RETURN(node::Sandbox * sb, node.Create(Spec(id)));
  s.create = MsSince(t0);
  HANGAR_TRY(EnvdFirstCommand(*sb).status());
  s.total = MsSince(t0);
  auto t1 = SteadyClock::now();
  HANGAR_TRY(node.Destroy(id));
  s.destroy = MsSince(t1);
  node.WaitForPool(kPoolTarget, 5s);
  (void)node::WaitForNamespacePool(node.driver(), 5s);
  return s;
}
#endif

void Row(const char* name, const Summary& s, const Summary& floor) {
  std::printf("   %-44s %9.2f %9.2f   %6.2fx %6.2fx\n", name, s.median, s.p99,
              floor.median > 0 ? s.median / floor.median : 0,
              floor.p99 > 0 ? s.p99 / floor.p99 : 0);
}

int Run(const Flags& f) {
  std::printf("%s\n", LoadLine().c_str());
  auto policy = node::DefaultSeccompPolicy();
  if (!policy.ok()) return std::fprintf(stderr, "%s\n", policy.status().ToString().c_str()), 1;
  auto prog = node::CompileSeccompPolicy(*policy);
  if (!prog.ok()) return std::fprintf(stderr, "%s\n", prog.status().ToString().c_str()), 1;

  auto scratch = TempDir::Make("hangar-bench-start-", "/var/tmp");
  if (!scratch.ok()) return std::fprintf(stderr, "%s\n", scratch.status().ToString().c_str()), 1;
  auto store = storage::TemplateStore::Open({.root = scratch->path() + "/templates"});
  if (!store.ok()) return std::fprintf(stderr, "%s\n", store.status().ToString().c_str()), 1;
  auto tmpl = ImportMiniTemplate(*store, "mini", scratch->path() + "/mini");
  if (!tmpl.ok())
    return std::fprintf(stderr, "template: %s\n", tmpl.status().ToString().c_str()), 1;
  const std::string peer_root = scratch->path() + "/mini/rootfs";

  // Peers, from the small helper process.
  auto peers = PeerHelper::Start(peer_root, scratch->path() + "/crun");
  if (!peers.ok()) return std::fprintf(stderr, "peers: %s\n", peers.status().ToString().c_str()), 1;
  auto probe_peer = [&](const char* what) {
    auto ms = peers->Run(what);
    if (!ms.ok() || *ms < 0) {
      std::printf("%s: not measured (not installed or failed here)\n", what);
      return false;
    }
    return true;
  };
  const bool have_bwrap = probe_peer("bwrap");
  const bool have_crun = probe_peer("crun");

  // Hangar: one driver with /usr/bin/true as init, one with envd.
  BenchNodeOptions o;
  o.tag = "start";
  o.templates = &*store;
  o.seccomp = &*prog;
  o.init_path = "/usr/bin/true";
  o.disk_pool = {{64, kPoolTarget}};
  o.id_slots = 8;
  o.netns_pool = f.netns_pool;
  o.userns_pool = f.userns_pool;
  auto node_true = BenchNode::Open(o);
  if (!node_true.ok())
    return std::fprintf(stderr, "%s\n", node_true.status().ToString().c_str()), 1;

  std::unique_ptr<BenchNode> node_envd;
  std::string envd_note;
#ifdef HANGAR_BENCH_HAVE_ENVD
  std::string envd_path = f.envd_path.empty() ? SiblingBinary("envd") : f.envd_path;
  if (!f.use_envd) {
    envd_note = "envd: not used (--no-envd)";
  } else if (envd_path.empty()) {
    envd_note = "envd: not built next to this binary; first command = the sandbox's init";
  } else {
    BenchNodeOptions e = o;
    e.tag = "startenvd";
    e.init_path = envd_path;
    e.init_args = {"--listen-fd", "3", "--log-level", "warn"};
    e.wait_for_envd = true;
    e.id_slots = static_cast<uint32_t>(f.pooled + 8);
    auto n = BenchNode::Open(e);
    if (!n.ok()) return std::fprintf(stderr, "%s\n", n.status().ToString().c_str()), 1;
    node_envd = std::move(*n);
    node_envd->WaitForPool(kPoolTarget, 30s);
    // Does it work here? One sandbox, one command.
    auto probe = HangarColdEnvd(*node_envd, "probe");
    if (!probe.ok()) {
      envd_note = "envd: probe failed (" + probe.status().ToString() +
                  "); first command = the sandbox's init";
      node_envd.reset();
    } else {
      envd_note = "envd: " + envd_path;
    }
  }
#else
  envd_note = "envd: client library not in this build; first command = the sandbox's init";
#endif
  std::printf("%s\n", envd_note.c_str());
  (*node_true)->WaitForPool(kPoolTarget, 30s);

  // Interleaved rounds.
  std::vector<double> s_fork, s_spawn, s_fork_agent, s_bwrap, s_crun;
  std::vector<double> h_total, h_create, h_destroy, e_total, e_create, e_destroy;
  const int rounds = f.warmup + f.iterations;
  for (int i = 0; i < rounds && !StopRequested(); ++i) {
    const bool keep = i >= f.warmup;
    for (int k = 0; k < 5; ++k) {
      switch ((i + k) % 5) {
        case 0: {
          auto ms = peers->Run("true");
          auto sp = peers->Run("spawn");
          if (!ms.ok() || !sp.ok()) return std::fprintf(stderr, "peer helper died\n"), 1;
          double own = TimeProgram({"/usr/bin/true"});
          if (keep && *ms >= 0) s_fork.push_back(*ms);
          if (keep && *sp >= 0) s_spawn.push_back(*sp);
          if (keep && own >= 0) s_fork_agent.push_back(own);
          break;
        }
        case 1:
          if (have_bwrap) {
            auto ms = peers->Run("bwrap");
            if (!ms.ok()) return std::fprintf(stderr, "peer helper died\n"), 1;
            if (keep && *ms >= 0) s_bwrap.push_back(*ms);
          }
          break;
        case 2:
          if (have_crun) {
            auto ms = peers->Run("crun");
            if (!ms.ok()) return std::fprintf(stderr, "peer helper died\n"), 1;
            if (keep && *ms >= 0) s_crun.push_back(*ms);
          }
          break;
        case 3: {
          auto s = HangarCold(**node_true, fmt::format("t{}", i));
          if (!s.ok()) {
            std::fprintf(stderr, "hangar cold: %s\n", s.status().ToString().c_str());
            return StopRequested() ? 130 : 1;
          }
          if (keep) {
            h_total.push_back(s->total);
            h_create.push_back(s->create);
            h_destroy.push_back(s->destroy);
          }
          break;
        }
        case 4:
#ifdef HANGAR_BENCH_HAVE_ENVD
          if (node_envd) {
            auto s = HangarColdEnvd(*node_envd, fmt::format("e{}", i));
            if (!s.ok()) {
              std::fprintf(stderr, "hangar cold envd: %s\n", s.status().ToString().c_str());
              return StopRequested() ? 130 : 1;
            }
            if (keep) {
              e_total.push_back(s->total);
              e_create.push_back(s->create);
              e_destroy.push_back(s->destroy);
            }
          }
#endif
          break;
      }
    }
  }
  if (StopRequested()) return 130;

  Summary fork = Summarize(s_fork);
  std::printf("\n== Start -> first command exited (%d interleaved rounds after %d warm-up; ms)\n",
              f.iterations, f.warmup);
  std::printf("   %-44s %9s %9s   %7s %7s\n", "", "median", "p99", "/fork", "/fork");
  std::printf("   %-44s %9s %9s   %7s %7s\n", "", "", "", "median", "p99");
  Row("fork+exec /usr/bin/true (small parent)", fork, fork);
  Row("  ref: posix_spawn (CLONE_VM|VFORK)", Summarize(s_spawn), fork);
  Row("  ref: fork+exec from this agent-sized process", Summarize(s_fork_agent), fork);
  Summary bw = Summarize(s_bwrap), cr = Summarize(s_crun);
  if (have_bwrap) Row("bwrap --unshare-all (+ro-bind, proc, dev)", bw, fork);
  if (have_crun) Row("crun run (cgroups disabled)", cr, fork);
  Summary ht = Summarize(h_total);
  Row("hangar cold: init=/usr/bin/true -> exited", ht, fork);
  Row("  of which Create() (returns at exec)", Summarize(h_create), fork);
  Summary et = Summarize(e_total);
  if (!e_total.empty()) {
    Row("hangar cold: envd + first command via envd", et, fork);
    Row("  of which Create() (envd answers /health)", Summarize(e_create), fork);
  }
  Row("hangar Destroy (off the start path)", Summarize(h_destroy), fork);

  // Phases: each round runs one of kVariants (rotating), so the table (driver's variant) and
  // the two choices alone come from the same rounds.
  constexpr size_t kNumVariants = std::size(kVariants);
  std::array<std::array<std::vector<double>, kPhases>, kNumVariants> phase;
  std::array<std::vector<double>, kNumVariants> sum, child;
  std::vector<double> teardown, ns_nonet, ns_net, ns_setns, ns_user;
  if (f.phases && !StopRequested()) {
    PhaseBench pb(*tmpl, *prog);
    if (Status s = pb.Open(); !s.ok()) {
      return std::fprintf(stderr, "phases: %s\n", s.ToString().c_str()), 1;
    }
    const int phase_rounds = static_cast<int>(kNumVariants) * (f.warmup + f.iterations);
    for (int i = 0; i < phase_rounds && !StopRequested(); ++i) {
      const size_t v = static_cast<size_t>(i) % kNumVariants;
      std::array<double, kPhases> one{};
      double td = 0;
      if (Status s = pb.Once(i, kVariants[v], one, td); !s.ok()) {
        return std::fprintf(stderr, "phases: %s\n", s.ToString().c_str()), 1;
      }
      auto premade = node::internal::MakeNetworkNamespace(pb.home_netns());
      if (!premade.ok()) {
        return std::fprintf(stderr, "phases: %s\n", premade.status().ToString().c_str()), 1;
      }
      double nonet = PhaseBench::CloneNs(CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC);
      double net = PhaseBench::CloneNs(CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET);
      double setns =
          PhaseBench::CloneNs(CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC, premade->get());
      double fk = TimeProgram({"/usr/bin/true"});
      if (i < static_cast<int>(kNumVariants) * f.warmup) continue;
      double total = 0, in_child = 0;
      for (size_t p = 0; p < kPhases; ++p) {
        phase[v][p].push_back(one[p]);
        total += one[p];
        if (p >= kChildFirst && p < kPhases - 2) in_child += one[p];
      }
      sum[v].push_back(total);
      child[v].push_back(in_child);
      if (v == 0) teardown.push_back(td);
      ns_nonet.push_back(nonet);
      ns_net.push_back(net);
      ns_setns.push_back(setns);
      if (fk >= 0) ns_user.push_back(fk);
    }
    Summary st = Summarize(sum[0]);
    std::printf(
        "\n== Phases of the cold start, today's building blocks one by one (NsDriver::Start "
        "order; the child's checklist timed inside the child; %zu rounds; ms)\n",
        phase[0][0].size());
    std::printf("   %-50s %9s %9s   %7s\n", "", "median", "p99", "share");
    for (size_t p = 0; p < kPhases; ++p) {
      Summary s = Summarize(phase[0][p]);
      std::printf("   %-50s %9.2f %9.2f   %6.1f%%\n", kPhaseNames[p], s.median, s.p99,
                  st.median > 0 ? 100 * s.median / st.median : 0);
    }
    std::printf("   %-50s %9.2f %9.2f\n", "sum of phases (per round)", st.median, st.p99);
    std::printf("   %-50s %9.2f %9.2f\n", "teardown (kill, umount x3, disk destroy)",
                Summarize(teardown).median, Summarize(teardown).p99);
    std::printf(
        "   the two choices alone, same rounds (medians: clone+child+exec 9a-9h | cgroup join 9b "
        "| namespaces 9c | sum):\n");
    for (size_t v = 0; v < kNumVariants; ++v) {
      std::printf("     join via %-12s netns %-20s %7.2f | %6.2f | %6.2f | %7.2f\n",
                  kVariants[v].tasks_file ? "v1 tasks" : "cgroup.procs",
                  kVariants[v].premade_netns ? "pre-made (setns)" : "CLONE_NEWNET",
                  Summarize(child[v]).median, Summarize(phase[v][kChildFirst + 1]).median,
                  Summarize(phase[v][kChildFirst + 2]).median, Summarize(sum[v]).median);
    }
    std::printf(
        "   reference, same rounds: fork+exec %.2f; clone(VM|VFORK, pid,uts,ipc)+exit %.2f; "
        "+CLONE_NEWNET %.2f; +setns(pre-made netns) %.2f (medians)\n",
        Summarize(ns_user).median, Summarize(ns_nonet).median, Summarize(ns_net).median,
        Summarize(ns_setns).median);
    // Dominant phase.
    size_t top = 0;
    for (size_t p = 1; p < kPhases; ++p) {
      if (Summarize(phase[0][p]).median > Summarize(phase[0][top]).median) top = p;
    }
    std::printf("SUMMARY start.dominant_phase \"%s\" %.2f ms of %.2f ms\n", kPhaseNames[top],
                Summarize(phase[0][top]).median, st.median);
    std::printf(
        "SUMMARY start.phase_choices child(9a-9h) tasks+premade %.2f, procs+premade %.2f, "
        "tasks+newnet %.2f, procs+newnet %.2f ms\n",
        Summarize(child[0]).median, Summarize(child[1]).median, Summarize(child[2]).median,
        Summarize(child[3]).median);
  }

  // Pooled: the driver's warm pool (NsDriverOptions::warm_pool) keeps sandboxes started
  // ahead, envd up; Create claims one (limits rewritten, hostname set, renamed to the id).
  // Timed: Create (claim) + the first command through envd. Each round waits (untimed) for
  // the pool to refill, so every Create is a hit.
  Summary pooled, pooled_fork, next_cmd, claim_only;
#ifdef HANGAR_BENCH_HAVE_ENVD
  if (node_envd && f.pooled > 0 && !StopRequested()) {
    node_envd.reset();  // done with the cold envd node; the warm one has its own everything
    BenchNodeOptions w = o;
    w.tag = "startwarm";
    w.init_path = envd_path;
    w.init_args = {"--listen-fd", "3", "--log-level", "warn"};
    w.wait_for_envd = true;
    w.id_slots = 16;
    node::WarmPoolEntry entry;
    entry.template_name = "mini";
    entry.size = 2;
    entry.disk_mb = 64;
    entry.idle_resources = Spec("x").resources;
    w.warm_pool.entries.push_back(entry);
    auto warm = BenchNode::Open(w);
    if (!warm.ok())
      return std::fprintf(stderr, "pooled: %s\n", warm.status().ToString().c_str()), 1;
    std::vector<double> claim, claim_create, fk, next;
    for (int i = 0; i < f.pooled && !StopRequested(); ++i) {
      if (!node::WaitForWarmPool((*warm)->driver(), 30s)) {
        return std::fprintf(stderr, "pooled: the warm pool did not refill in 30 s\n"), 1;
      }
      auto f0r = peers->Run("true");
      double f0 = f0r.ok() ? *f0r : -1;
      const std::string id = fmt::format("w{}", i);
      auto t0 = SteadyClock::now();
      auto sb = (*warm)->Create(Spec(id));
      if (!sb.ok()) return std::fprintf(stderr, "pooled: %s\n", sb.status().ToString().c_str()), 1;
      double created = MsSince(t0);
      auto ms = EnvdFirstCommand(**sb);
      if (!ms.ok()) return std::fprintf(stderr, "pooled: %s\n", ms.status().ToString().c_str()), 1;
      double total = MsSince(t0);
      auto ms2 = EnvdFirstCommand(**sb);
      if (!ms2.ok())
        return std::fprintf(stderr, "pooled: %s\n", ms2.status().ToString().c_str()), 1;
      claim.push_back(total);
      claim_create.push_back(created);
      next.push_back(*ms2);
      if (f0 >= 0) fk.push_back(f0);
      (void)(*warm)->Destroy(id);
    }
    node::WarmPoolStats ws = node::GetWarmPoolStats((*warm)->driver());
    pooled = Summarize(claim);
    pooled_fork = Summarize(fk);
    next_cmd = Summarize(next);
    claim_only = Summarize(claim_create);
    std::printf(
        "\n== Pooled (driver warm pool, 2 ready, envd up): Create (claim) -> first command exited "
        "via envd (n=%zu, hits %zu, misses %zu; ms)\n",
        claim.size(), ws.claimed, ws.misses);
    std::printf("   %-44s %9s %9s   %7s %7s\n", "", "median", "p99", "/fork", "/fork");
    Row("fork+exec /usr/bin/true (same loop)", pooled_fork, pooled_fork);
    Row("pooled: Create (claim) + first command", pooled, pooled_fork);
    Row("  of which Create (claim)", claim_only, pooled_fork);
    Row("same sandbox, next command via envd", next_cmd, pooled_fork);
  }
#endif

  // Summary lines with the targets.
  const bool envd_cold = !e_total.empty();
  Summary cold = envd_cold ? et : ht;
  const char* cold_name = envd_cold ? "envd+first command" : "init=/usr/bin/true";
  std::printf("\n");
  std::printf("SUMMARY start.fork_exec median %.2f ms p99 %.2f ms\n", fork.median, fork.p99);
  if (have_bwrap)
    std::printf("SUMMARY start.bwrap median %.2f ms p99 %.2f ms\n", bw.median, bw.p99);
  if (have_crun) std::printf("SUMMARY start.crun median %.2f ms p99 %.2f ms\n", cr.median, cr.p99);
  std::printf("SUMMARY start.hangar_cold[init=true] median %.2f ms p99 %.2f ms\n", ht.median,
              ht.p99);
  if (envd_cold) {
    std::printf("SUMMARY start.hangar_cold[envd+first command] median %.2f ms p99 %.2f ms\n",
                et.median, et.p99);
  }
  std::printf("SUMMARY start.cold_p50/fork_exec_p50 [%s] %.2f (target <= 2.0)\n", cold_name,
              cold.median / fork.median);
  if (have_bwrap) {
    std::printf("SUMMARY start.cold_p50/bwrap_p50 [%s] %.2f (target <= 0.5)\n", cold_name,
                cold.median / bw.median);
  }
  if (pooled.n) {
    std::printf(
        "SUMMARY start.pooled_p99/fork_exec_p99 %.2f (pooled p99 %.2f ms, fork+exec p99 "
        "%.2f ms; target <= 1.5)\n",
        pooled.p99 / pooled_fork.p99, pooled.p99, pooled_fork.p99);
  } else {
    std::printf("SUMMARY start.pooled n/a (no envd: the driver has no pre-started sandbox path)\n");
  }
  std::printf("%s\n", LoadLine().c_str());
  return 0;
}

}  // namespace
}  // namespace hangar::bench

int main(int argc, char** argv) {
  using namespace hangar::bench;
  if (argc == 4 && std::string(argv[1]) == "--peer-helper") return PeerHelperMain(argv[2], argv[3]);
  auto flags = ParseFlags(argc, argv);
  if (!flags) {
    std::fprintf(stderr,
                 "usage: bench_node_start [--iterations N] [--warmup N] [--pooled N] "
                 "[--envd PATH | --no-envd] [--no-phases] [--netns-pool N] [--userns-pool N]\n");
    return 2;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_node_start needs root (namespaces, mounts, cgroups, loops)\n");
    return 2;
  }
  hangar::log::Init(hangar::log::Format::kText, hangar::log::Level::kWarn);
  InstallStopHandler();
  int rc = Run(*flags);
  if (StopRequested() && rc == 0) rc = 130;
  return rc;
}
