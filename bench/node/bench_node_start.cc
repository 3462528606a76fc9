// bench_node_start: how fast a shared-tier sandbox starts, against its peers, in one run.
//
//   bench_node_start [--iterations N] [--warmup N] [--pooled N] [--envd PATH | --no-envd]
//                    [--no-phases]
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
//   phases         every building block of NsDriver::Start alone, in its order, through the
//                  public APIs (the child checklist through contain.h, as the driver does)
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
#include "contain.h"  // the sandbox child's checklist, timed as the driver runs it
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

long Clone3(uint64_t flags, int* pidfd) {
  clone_args args{};
  args.flags = flags | (pidfd ? CLONE_PIDFD : 0);
  args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  args.exit_signal = SIGCHLD;
  return ::syscall(SYS_clone3, &args, sizeof args);
}

// As the driver's helper: a child in a new user namespace, mapped, held by an fd.
Result<UniqueFd> MakeUserNamespace(const node::IdRange& range) {
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
  HANGAR_TRY(node::WriteIdMaps(static_cast<pid_t>(pid), range, node::SetgroupsPolicy::kAllow));
  auto fd = OpenFile(fmt::format("/proc/{}/ns/user", pid), O_RDONLY);
  sync.write.Reset();
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

constexpr const char* kPhaseNames[] = {
    "1 uid range lease (O_EXCL file + fsync)",
    "2 user namespace helper (clone+map+fd)",
    "3 disk: pool Take",
    "4 disk: ext4 mount",
    "4b disk: upper/work dirs (mkdir, chown)",
    "5 template: id-mapped bind (open_tree)",
    "6 overlay mount",
    "7 cgroup create + limits (incl. io)",
    "8 envd socket + console",
    "9 clone3(ns) + contain + exec",
    "10 init /usr/bin/true runs to exit",
    "11 state.json (atomic write, fsync)",
};
constexpr size_t kPhases = std::size(kPhaseNames);

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
    HANGAR_ASSIGN_OR_RETURN(pool_, storage::DiskPool::Create(po));
    HANGAR_TRY(pool_->Refill().status());
    HANGAR_ASSIGN_OR_RETURN(last_cap_, node::LastCapability());
    HANGAR_ASSIGN_OR_RETURN(init_, OpenFile("/usr/bin/true", O_RDONLY | O_CLOEXEC));
    int high = ::fcntl(init_.get(), F_DUPFD_CLOEXEC, 100);
    if (high < 0) return Status::FromErrno(errno, "fcntl");
    init_.Reset(high);
    return Status::Ok();
  }

  ~PhaseBench() {
    pool_.reset();
    if (cgroups_) (void)cgroups_->RemoveRoot();
  }

  // One cold start through every building block; ms per phase in `out`. Everything is torn
  // down before returning (teardown time in `teardown_ms`).
  Status Once(int i, std::array<double, kPhases>& out, double& teardown_ms) {
    const std::string id = fmt::format("p{}", i);
    const std::string dir = data_ + "/sandboxes/" + id;
    HANGAR_TRY(MakeDirs(dir));
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
    lap(2);
    HANGAR_TRY(MakeDirs(dir + "/disk"));
    HANGAR_TRY(disk.Mount(dir + "/disk"));
    lap(3);
    for (const char* d : {"/upper", "/work"}) {
      std::string p = dir + "/disk" + d;
      if (::mkdir(p.c_str(), 0755) != 0) return Status::FromErrno(errno, "mkdir");
      if (::chown(p.c_str(), range->first, range->first) != 0) {
        return Status::FromErrno(errno, "chown");
      }
    }
    ::rmdir((dir + "/disk/lost+found").c_str());
    lap(4);
    HANGAR_TRY(MakeDirs(dir + "/lower"));
    HANGAR_TRY(MakeDirs(dir + "/rootfs"));
    HANGAR_ASSIGN_OR_RETURN(lower, MountIdmapped(tmpl_.rootfs, dir + "/lower", userns.get()));
    lap(5);
    HANGAR_ASSIGN_OR_RETURN(UniqueFd lfd, OpenFile(dir + "/lower", O_PATH | O_DIRECTORY));
    HANGAR_ASSIGN_OR_RETURN(UniqueFd ufd, OpenFile(dir + "/disk/upper", O_PATH | O_DIRECTORY));
    HANGAR_ASSIGN_OR_RETURN(UniqueFd wfd, OpenFile(dir + "/disk/work", O_PATH | O_DIRECTORY));
    HANGAR_ASSIGN_OR_RETURN(
        rootfs, ScopedMount::Mount("overlay", dir + "/rootfs", "overlay", MS_NODEV,
                                   fmt::format("lowerdir=/proc/thread-self/fd/{},upperdir=/proc/"
                                               "thread-self/fd/{},workdir=/proc/thread-self/fd/{}",
                                               lfd.get(), ufd.get(), wfd.get())));
    lap(6);
    HANGAR_TRY(cgroups_->Create(id));
    cgroup = true;
    node::CgroupLimits limits;
    limits.cpu_millicores = 1000;
    limits.memory_bytes = 64ull << 20;
    limits.pids_max = 64;
    limits.io.push_back({major(disk.dev()), minor(disk.dev()), 0, 0, 0, 0});
    HANGAR_TRY(cgroups_->SetLimits(id, limits));
    lap(7);
    HANGAR_ASSIGN_OR_RETURN(UniqueFd listen, ListenUnix(dir + "/envd.sock"));
    HANGAR_ASSIGN_OR_RETURN(
        UniqueFd console, OpenFile(dir + "/disk/console.log", O_WRONLY | O_CREAT | O_APPEND, 0600));
    if (::symlink("disk/console.log", (dir + "/console.log").c_str()) != 0) {
      return Status::FromErrno(errno, "symlink");
    }
    lap(8);
    // Step 6 of NsDriver::Start: the plan, the child, the report.
    node::internal::ContainPlan plan;
    HANGAR_ASSIGN_OR_RETURN(Pipe sync, MakePipe());
    HANGAR_ASSIGN_OR_RETURN(Pipe report, MakePipe());
    plan.rootfs = plan.Keep(dir + "/rootfs");
    node::internal::AddStandardMounts(plan, dir + "/rootfs", range->first + 5, 32ull << 20);
    plan.hostname = plan.Keep(id);
    plan.userns_fd = userns.get();
    plan.keep_caps = node::DefaultSandboxCapabilities();
    plan.last_cap = last_cap_;
    plan.listen_fd = listen.get();
    plan.console_fd = console.get();
    plan.seccomp = &seccomp_;
    plan.init_fd = init_.get();
    plan.argv = {const_cast<char*>(plan.Keep("/usr/bin/true")), nullptr};
    for (const std::string& e : std::vector<std::string>{
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + id,
             "HANGAR_SANDBOX_ID=" + id}) {
      plan.envp.push_back(const_cast<char*>(plan.Keep(e)));
    }
    plan.envp.push_back(nullptr);
    for (UniqueFd* fd : {&sync.read, &report.write}) {
      int high = ::fcntl(fd->get(), F_DUPFD_CLOEXEC, 100);
      if (high < 0) return Status::FromErrno(errno, "fcntl");
      fd->Reset(high);
    }
    plan.sync_fd = sync.read.get();
    plan.report_fd = report.write.get();
    int pidfd = -1;
    long pid =
        Clone3(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC, &pidfd);
    if (pid < 0) return Status::FromErrno(errno, "clone3");
    if (pid == 0) node::internal::RunContained(plan);
    UniqueFd pidfd_owner(pidfd);
    init.emplace(Child::Adopt(static_cast<pid_t>(pid)));
    sync.read.Reset();
    report.write.Reset();
    console.Reset();
    HANGAR_TRY(cgroups_->AddPid(id, static_cast<pid_t>(pid)));
    HANGAR_TRY(WriteAll(sync.write.get(), "g"));
    node::internal::ContainFailure failure;
    ssize_t n;
    do {
      n = ::read(report.read.get(), &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
    if (n == sizeof failure) return node::internal::DescribeFailure(plan, failure);
    lap(9);
    if (!WaitForExit(static_cast<pid_t>(pid), 10s)) {
      return Status::DeadlineExceeded("init did not exit");
    }
    lap(10);
    nlohmann::json state = {{"id", id},
                            {"init_pid", pid},
                            {"uid_slot", range->slot},
                            {"disk_image", disk.image_path()},
                            {"disk_mb", 64}};
    HANGAR_TRY(WriteFileAtomic(dir + "/state.json", state.dump(2), 0600));
    lap(11);
    (void)pool_->Refill();  // untimed: the next round takes a ready disk
    return Status::Ok();
  }

  // Experiments for the two costliest blocks, each variant on a fresh pooled disk:
  //   mount[0] as the driver does now: mount a pooled disk that mkfs just wrote
  //   mount[1] the same after the image was fsync'd (a pool could do that off the start path)
  //   mount[2] a disk the pool mounted ahead with upper/work made, moved into place with
  //            MS_MOVE, upper/work chowned to the range (replaces phases 4 and 4b)
  //   userns[0] the driver's helper (clone of this process);  userns[1] the same helper with
  //            CLONE_VM on a small stack (no copy of the agent's address space)
  Status Experiments(int i, std::array<std::vector<double>, 3>& mount,
                     std::array<std::vector<double>, 2>& userns, std::vector<double>& fsync_ms) {
    const std::string dir = fmt::format("{}/x{}", data_, i);
    HANGAR_TRY(MakeDirs(dir + "/target"));
    HANGAR_TRY(MakeDirs(dir + "/staging"));
    struct Cleanup {
      std::string d;
      ~Cleanup() { (void)RemoveTree(d); }
    } cleanup{dir};
    for (int v = 0; v < 3; ++v) {
      HANGAR_ASSIGN_OR_RETURN(storage::Disk disk, pool_->Take(64));
      if (v >= 1) {
        auto t0 = SteadyClock::now();
        HANGAR_ASSIGN_OR_RETURN(UniqueFd img, OpenFile(disk.image_path(), O_RDONLY));
        if (::fsync(img.get()) != 0) return Status::FromErrno(errno, "fsync(image)");
        if (v == 1) fsync_ms.push_back(MsSince(t0));
      }
      const std::string target = dir + "/target";
      if (v < 2) {
        auto t0 = SteadyClock::now();
        HANGAR_TRY(disk.Mount(target));
        mount[v].push_back(MsSince(t0));
        HANGAR_TRY(disk.Destroy());
      } else {
        // The pool's part, off the path: mount, upper/work made (root-owned), lost+found gone.
        HANGAR_TRY(disk.Mount(dir + "/staging"));
        for (const char* d : {"/upper", "/work"}) {
          if (::mkdir((dir + "/staging" + d).c_str(), 0755) != 0) {
            return Status::FromErrno(errno, "mkdir");
          }
        }
        ::rmdir((dir + "/staging/lost+found").c_str());
        // The start path's part: move it into place, hand upper/work to the sandbox's range.
        auto t0 = SteadyClock::now();
        if (::mount((dir + "/staging").c_str(), target.c_str(), nullptr, MS_MOVE, nullptr) != 0) {
          return Status::FromErrno(errno, "mount(MS_MOVE)");
        }
        for (const char* d : {"/upper", "/work"}) {
          if (::chown((target + d).c_str(), 4'000'000'000u, 4'000'000'000u) != 0) {
            return Status::FromErrno(errno, "chown");
          }
        }
        mount[2].push_back(MsSince(t0));
        ::umount2(target.c_str(), 0);
        (void)disk.Destroy();  // its own mount point is empty now; detaches and deletes
      }
      HANGAR_TRY(pool_->Refill().status());
    }
    HANGAR_ASSIGN_OR_RETURN(node::IdRange range, ids_->Allocate(fmt::format("x{}", i)));
    auto t0 = SteadyClock::now();
    auto a = MakeUserNamespace(range);
    userns[0].push_back(MsSince(t0));
    t0 = SteadyClock::now();
    auto b = MakeUserNamespaceVm(range);
    userns[1].push_back(MsSince(t0));
    (void)ids_->Release(range.slot);
    if (!a.ok()) return a.status();
    if (!b.ok()) return b.status();
    return Status::Ok();
  }

  // The user namespace helper sharing this process's memory: only a small stack is new.
  static Result<UniqueFd> MakeUserNamespaceVm(const node::IdRange& range) {
    HANGAR_ASSIGN_OR_RETURN(Pipe sync, MakePipe());
    constexpr size_t kStack = 64 * 1024;
    static thread_local std::vector<char> stack(kStack);
    // The child has its own descriptor table (no CLONE_FILES): it closes its copy of the write
    // end, so the parent's close is the EOF that lets it exit.
    int fds[2] = {sync.read.get(), sync.write.get()};
    pid_t pid = ::clone(
        [](void* arg) -> int {
          int* p = static_cast<int*>(arg);
          ::close(p[1]);
          char c;
          while (::read(p[0], &c, 1) < 0 && errno == EINTR) {
          }
          return 0;
        },
        stack.data() + kStack, CLONE_NEWUSER | CLONE_VM | SIGCHLD, fds);
    if (pid < 0) return Status::FromErrno(errno, "clone(CLONE_NEWUSER|CLONE_VM)");
    Child holder = Child::Adopt(pid);
    HANGAR_TRY(node::WriteIdMaps(pid, range, node::SetgroupsPolicy::kAllow));
    auto fd = OpenFile(fmt::format("/proc/{}/ns/user", pid), O_RDONLY);
    sync.write.Reset();
    (void)holder.Wait();
    return fd;
  }

  // Namespace creation alone: clone3 with the flags, child _exit(0), wait.
  static double CloneNs(uint64_t flags) {
    auto t0 = SteadyClock::now();
    long pid = Clone3(flags, nullptr);
    if (pid < 0) return -1;
    if (pid == 0) ::_exit(0);
    int st;
    while (::waitpid(static_cast<pid_t>(pid), &st, 0) < 0 && errno == EINTR) {
    }
    return MsSince(t0);
  }

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

  // Phases.
  std::array<std::vector<double>, kPhases> phase;
  std::vector<double> teardown, sum, ns_nonet, ns_net, ns_user, fsync_x;
  std::array<std::vector<double>, 3> mount_x;
  std::array<std::vector<double>, 2> userns_x;
  if (f.phases && !StopRequested()) {
    PhaseBench pb(*tmpl, *prog);
    if (Status s = pb.Open(); !s.ok()) {
      return std::fprintf(stderr, "phases: %s\n", s.ToString().c_str()), 1;
    }
    for (int i = 0; i < f.warmup + f.iterations && !StopRequested(); ++i) {
      std::array<double, kPhases> one{};
      double td = 0;
      if (Status s = pb.Once(i, one, td); !s.ok()) {
        return std::fprintf(stderr, "phases: %s\n", s.ToString().c_str()), 1;
      }
      double nonet = PhaseBench::CloneNs(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC);
      double net = PhaseBench::CloneNs(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
                                       CLONE_NEWNET);
      double fk = TimeProgram({"/usr/bin/true"});
      if (Status s = pb.Experiments(i, mount_x, userns_x, fsync_x); !s.ok()) {
        return std::fprintf(stderr, "experiments: %s\n", s.ToString().c_str()), 1;
      }
      if (i < f.warmup) {
        for (auto& v : mount_x) v.clear();
        for (auto& v : userns_x) v.clear();
        fsync_x.clear();
        continue;
      }
      double total = 0;
      for (size_t p = 0; p < kPhases; ++p) {
        phase[p].push_back(one[p]);
        total += one[p];
      }
      sum.push_back(total);
      teardown.push_back(td);
      ns_nonet.push_back(nonet);
      ns_net.push_back(net);
      if (fk >= 0) ns_user.push_back(fk);
    }
    Summary st = Summarize(sum);
    std::printf(
        "\n== Phases of the cold start, each building block alone through the public APIs "
        "(NsDriver::Start order; ms)\n");
    std::printf("   %-44s %9s %9s   %7s\n", "", "median", "p99", "share");
    for (size_t p = 0; p < kPhases; ++p) {
      Summary s = Summarize(phase[p]);
      std::printf("   %-44s %9.2f %9.2f   %6.1f%%\n", kPhaseNames[p], s.median, s.p99,
                  st.median > 0 ? 100 * s.median / st.median : 0);
    }
    std::printf("   %-44s %9.2f %9.2f\n", "sum of phases (per round)", st.median, st.p99);
    std::printf("   %-44s %9.2f %9.2f\n", "teardown (kill, umount x3, disk destroy)",
                Summarize(teardown).median, Summarize(teardown).p99);
    std::printf(
        "   reference, same rounds: fork+exec %.2f; clone3(mnt,pid,uts,ipc)+exit %.2f; "
        "+net %.2f (medians)\n",
        Summarize(ns_user).median, Summarize(ns_nonet).median, Summarize(ns_net).median);
    std::printf(
        "   fixes measured alone (medians / p99): disk mount as now %.2f / %.2f; after "
        "fsync of the image %.2f / %.2f (the fsync, off the path: %.2f); pre-mounted with "
        "upper/work + MS_MOVE + chown (replaces 4 and 4b) %.3f / %.3f\n",
        Summarize(mount_x[0]).median, Summarize(mount_x[0]).p99, Summarize(mount_x[1]).median,
        Summarize(mount_x[1]).p99, Summarize(fsync_x).median, Summarize(mount_x[2]).median,
        Summarize(mount_x[2]).p99);
    std::printf(
        "   user namespace helper as now %.2f / %.2f; with CLONE_VM (no mm copy) %.2f / "
        "%.2f\n",
        Summarize(userns_x[0]).median, Summarize(userns_x[0]).p99, Summarize(userns_x[1]).median,
        Summarize(userns_x[1]).p99);
    // Dominant phase.
    size_t top = 0;
    for (size_t p = 1; p < kPhases; ++p) {
      if (Summarize(phase[p]).median > Summarize(phase[top]).median) top = p;
    }
    std::printf("SUMMARY start.dominant_phase \"%s\" %.2f ms of %.2f ms\n", kPhaseNames[top],
                Summarize(phase[top]).median, st.median);
    // What a pre-built sandbox still pays: running the command.
    const double prepared = Summarize(phase[10]).median;
    std::printf(
        "SUMMARY start.pool_would_save %.2f ms of the %.2f ms sum (a pre-built sandbox "
        "pays only the command: %.2f ms)\n",
        st.median - prepared, st.median, prepared);
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
                 "[--envd PATH | --no-envd] [--no-phases]\n");
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
