#include "process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <memory>
#include <thread>

#include "hangar/base/child.h"
#include "hangar/base/log.h"
#include "protocol.h"

namespace hangar::envd::internal {

namespace {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
constexpr TimePoint kNever = TimePoint::max();
constexpr size_t kChunk = 32 << 10;     // stdout/stderr data events (as E2B's envd)
constexpr size_t kPtyChunk = 16 << 10;  // pty data events

// --- the child ---------------------------------------------------------------------------------

enum ChildStep : int {
  kSetsid = 1,
  kTty,
  kStdio,
  kChdir,
  kSetgroups,
  kSetgid,
  kSetuid,
  kCloexec,
  kExec
};

const char* StepName(int step) {
  switch (step) {
    case kSetsid:
      return "setsid()";
    case kTty:
      return "ioctl(TIOCSCTTY)";
    case kStdio:
      return "dup2(stdio)";
    case kChdir:
      return "fchdir(cwd)";
    case kSetgroups:
      return "setgroups()";
    case kSetgid:
      return "setresgid()";
    case kSetuid:
      return "setresuid()";
    case kCloexec:
      return "close-on-exec of envd's descriptors";
    case kExec:
      return "exec";
    default:
      return "child setup";
  }
}

struct ChildFailure {
  int step = 0;
  int err = 0;
};

// Everything the child needs, prepared before the clone: the child runs on envd's memory
// (CLONE_VM|CLONE_VFORK, posix_spawn's way) until its exec, so it may only make system calls
// (no allocation, no locks) and must touch nothing but this plan and its own stack.
struct ChildPlan {
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  int tty_fd = -1;  // the pty slave: becomes the controlling terminal
  int cwd_fd = -1;
  // A descriptor opened without close-on-exec: tells the child whether close_range's
  // CLOSE_RANGE_CLOEXEC took effect (a kernel may accept the call and ignore the flag).
  int canary_fd = -1;
  ChildFailure failure;  // written by a child that fails before its exec; read after the clone
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::vector<std::string> candidates;  // paths to try, in PATH order
  std::vector<std::string> argv_storage, env_storage;
  std::vector<char*> argv, envp;
};

// The child shares the parent's memory, and the parent sleeps until the child's exec or exit
// (CLONE_VFORK): the failure is simply stored in the plan.
[[noreturn]] void Die(ChildPlan& p, int step, int err) noexcept {
  p.failure.step = step;
  p.failure.err = err;
  ::_exit(127);
}

// Marks every descriptor above 2 close-on-exec, listing /proc/self/fd: the way for kernels
// without close_range's CLOSE_RANGE_CLOEXEC (gVisor's sentry among them). Raw system calls and a
// stack buffer only: this runs in the child. Returns 0 or the errno that stopped it.
int CloexecByListing() noexcept {
  int dir = static_cast<int>(
      ::syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir < 0) return errno;
  alignas(8) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      ::close(dir);
      return e;
    }
    if (n == 0) break;
    for (long off = 0; off < n;) {
      const auto* d = reinterpret_cast<const struct dirent64*>(buf + off);
      off += d->d_reclen;
      int fd = 0;
      bool digits = d->d_name[0] != '\0';
      for (const char* c = d->d_name; *c != '\0' && digits; ++c) {
        digits = *c >= '0' && *c <= '9';
        fd = fd * 10 + (*c - '0');
      }
      if (!digits || fd <= 2 || fd == dir) continue;
      if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 && errno != EBADF) {
        int e = errno;
        ::close(dir);
        return e;
      }
    }
  }
  ::close(dir);
  return 0;
}

[[noreturn]] void RunChild(ChildPlan& p) noexcept {
  // envd blocks and ignores signals for itself; a command starts with the defaults. The child
  // has its own copy of the handler table (no CLONE_SIGHAND), so this does not touch envd's;
  // the parent blocks every signal around the clone, so no handler of envd's can run here.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) {
    if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (::setsid() < 0) Die(p, kSetsid, errno);
  if (p.tty_fd >= 0 && ::ioctl(p.tty_fd, TIOCSCTTY, 0) < 0) Die(p, kTty, errno);
  if (::dup2(p.stdin_fd, 0) < 0 || ::dup2(p.stdout_fd, 1) < 0 || ::dup2(p.stderr_fd, 2) < 0) {
    Die(p, kStdio, errno);
  }
  if (::fchdir(p.cwd_fd) < 0) Die(p, kChdir, errno);
  // Commands are the first thing the OOM killer should take, not envd (E2B does the same).
  int oom = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (oom >= 0) {
    (void)!::write(oom, "100", 3);
    ::close(oom);
  }
  if (p.switch_user) {
    // Raw system calls: glibc's wrappers would try to synchronise the credentials of threads
    // that do not exist in this child.
    if (::syscall(SYS_setgroups, p.groups.size(), p.groups.data()) != 0) {
      Die(p, kSetgroups, errno);
    }
    if (::syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) Die(p, kSetgid, errno);
    if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) Die(p, kSetuid, errno);
  }
  // Nothing of envd's but stdio reaches the command (its listening socket and connections
  // included): close_range where the kernel has it, else a walk of /proc/self/fd — never an
  // exec with a descriptor of envd's open.
  if (::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0 ||
      (p.canary_fd >= 0 && !(::fcntl(p.canary_fd, F_GETFD) & FD_CLOEXEC))) {
    if (int e = CloexecByListing(); e != 0) Die(p, kCloexec, e);
  }
  int err = ENOENT;
  for (const std::string& c : p.candidates) {
    ::execve(c.c_str(), p.argv.data(), p.envp.data());
    if (errno == EACCES) {
      err = EACCES;  // keep looking, as execvp does, but remember why
    } else if (errno != ENOENT && errno != ENOTDIR) {
      err = errno;
      break;
    }
  }
  Die(p, kExec, err);
}

std::string FindEnv(const std::vector<std::string>& env, std::string_view name) {
  for (const auto& kv : env) {
    if (kv.size() > name.size() && kv.compare(0, name.size(), name) == 0 &&
        kv[name.size()] == '=') {
      return kv.substr(name.size() + 1);
    }
  }
  return {};
}

// execvp's search, done in the parent so the child only calls execve.
std::vector<std::string> Candidates(const std::string& cmd, const std::vector<std::string>& env) {
  if (cmd.find('/') != std::string::npos) return {cmd};
  std::string path = FindEnv(env, "PATH");
  if (path.empty()) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find(':', i);
    if (j == std::string::npos) j = path.size();
    std::string dir = path.substr(i, j - i);
    out.push_back((dir.empty() ? std::string(".") : dir) + "/" + cmd);
    i = j + 1;
  }
  return out;
}

// Go's ProcessState.String(), which E2B's envd reports as `status` (and `error` when not 0).
std::string DescribeWait(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* d = ::sigdescr_np(WTERMSIG(status));
    std::string name = d ? d : "signal " + std::to_string(WTERMSIG(status));
    if (!name.empty())
      name[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(name[0])));
    std::string s = "signal: " + name;
    if (WCOREDUMP(status)) s += " (core dumped)";
    return s;
  }
  return "unknown wait status " + std::to_string(status);
}

nlohmann::json EndJson(int status) {
  nlohmann::json end = nlohmann::json::object();
  bool exited = WIFEXITED(status);
  int code = exited ? WEXITSTATUS(status) : -1;
  end["exitCode"] = code;
  end["exited"] = exited;
  end["status"] = DescribeWait(status);
  if (code != 0) end["error"] = end["status"];
  return end;
}

Status SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return Status::FromErrno(errno, "fcntl(O_NONBLOCK)");
  }
  return Status::Ok();
}

}  // namespace

std::string Selector::ToString() const {
  if (pid) return "process with pid " + std::to_string(*pid);
  if (tag) return "process with tag '" + *tag + "'";
  return "process (no selector)";
}

// --- Process -----------------------------------------------------------------------------------

class Process : public std::enable_shared_from_this<Process> {
 public:
  uint32_t pid = 0;
  std::optional<std::string> tag;
  ProcessConfig config;
  bool pty = false;

  UniqueFd out;       // stdout, or the pty master
  UniqueFd err;       // stderr (pipe mode)
  UniqueFd input;     // stdin pipe's write end, or a dup of the pty master
  UniqueFd exit_efd;  // the reaper (or shutdown) wakes the pump here
  std::mutex input_mu;

  TimePoint kill_deadline = kNever;
  std::chrono::milliseconds timeout{0};

  void OnExit(int status) {
    {
      std::lock_guard lock(mu_);
      wait_status_ = status;
    }
    Wake();
  }
  void Abandon() {
    abandoned_ = true;
    Wake();
  }
  void Wake() {
    uint64_t one = 1;
    (void)!::write(exit_efd.get(), &one, sizeof one);
  }

  // Adds a sink (its start event first); false if the process already finished, with `end`
  // set to its end event.
  bool AddSink(EventSinkPtr sink, const SinkOptions& o, nlohmann::json* end) {
    std::lock_guard lock(mu_);
    if (finished_) {
      *end = end_;
      return false;
    }
    sink->Send({{"start", {{"pid", pid}}}});
    Sub s;
    s.sink = std::move(sink);
    s.keepalive = o.keepalive.count() > 0 ? o.keepalive : std::chrono::milliseconds(90'000);
    auto now = SteadyClock::now();
    s.next_keepalive = now + s.keepalive;
    s.deadline = o.deadline.count() > 0 ? now + o.deadline : kNever;
    subs_.push_back(std::move(s));
    return true;
  }

  void Pump(ProcessManager* mgr, std::chrono::milliseconds exit_drain);

 private:
  struct Sub {
    EventSinkPtr sink;
    std::chrono::milliseconds keepalive{0};
    TimePoint next_keepalive = kNever;
    TimePoint deadline = kNever;
  };
  void Broadcast(const nlohmann::json& event);
  void Tick(TimePoint now);
  TimePoint NextSubEvent();

  std::mutex mu_;
  std::vector<Sub> subs_;
  std::optional<int> wait_status_;
  bool finished_ = false;
  nlohmann::json end_;
  std::atomic<bool> abandoned_{false};
};

void Process::Broadcast(const nlohmann::json& event) {
  std::vector<EventSinkPtr> sinks;
  {
    std::lock_guard lock(mu_);
    for (const auto& s : subs_) sinks.push_back(s.sink);
  }
  std::vector<EventSink*> gone;
  for (const auto& s : sinks) {
    if (!s->Send(event)) gone.push_back(s.get());
  }
  std::lock_guard lock(mu_);
  auto now = SteadyClock::now();
  for (auto& s : subs_) s.next_keepalive = now + s.keepalive;
  if (gone.empty()) return;
  std::erase_if(subs_, [&](const Sub& s) {
    return std::find(gone.begin(), gone.end(), s.sink.get()) != gone.end();
  });
}

void Process::Tick(TimePoint now) {
  std::vector<EventSinkPtr> ping, expire;
  {
    std::lock_guard lock(mu_);
    for (auto& s : subs_) {
      if (s.deadline <= now) {
        expire.push_back(s.sink);
      } else if (s.next_keepalive <= now) {
        ping.push_back(s.sink);
        s.next_keepalive = now + s.keepalive;
      }
    }
    std::erase_if(subs_, [&](const Sub& s) { return s.deadline <= now; });
  }
  for (const auto& s : expire) {
    s->End(Status::DeadlineExceeded("the stream's deadline (Connect-Timeout-Ms) passed"));
  }
  std::vector<EventSink*> gone;
  for (const auto& s : ping) {
    if (!s->Send({{"keepalive", nlohmann::json::object()}})) gone.push_back(s.get());
  }
  if (gone.empty()) return;
  std::lock_guard lock(mu_);
  std::erase_if(subs_, [&](const Sub& s) {
    return std::find(gone.begin(), gone.end(), s.sink.get()) != gone.end();
  });
}

TimePoint Process::NextSubEvent() {
  std::lock_guard lock(mu_);
  TimePoint next = kNever;
  for (const auto& s : subs_) next = std::min({next, s.next_keepalive, s.deadline});
  return next;
}

void Process::Pump(ProcessManager* mgr, std::chrono::milliseconds exit_drain) {
  char buf[kChunk];
  const size_t chunk = pty ? kPtyChunk : kChunk;
  const char* out_name = pty ? "pty" : "stdout";
  bool exited = false;
  bool timed_out = false;
  TimePoint drain_deadline = kNever;
  for (;;) {
    TimePoint now = SteadyClock::now();
    TimePoint next = NextSubEvent();
    if (!exited && !timed_out) next = std::min(next, kill_deadline);
    if (exited) next = std::min(next, drain_deadline);
    int timeout_ms = -1;
    if (next != kNever) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(ms, 0, INT_MAX));
    }
    pollfd fds[3];
    int n = 0;
    int out_idx = -1, err_idx = -1, exit_idx = -1;
    if (out.valid()) {
      out_idx = n;
      fds[n++] = {out.get(), POLLIN, 0};
    }
    if (err.valid()) {
      err_idx = n;
      fds[n++] = {err.get(), POLLIN, 0};
    }
    if (!exited) {
      exit_idx = n;
      fds[n++] = {exit_efd.get(), POLLIN, 0};
    }
    int r = ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
    if (r < 0 && errno != EINTR) {
      log::Error("process pump: poll failed", {{"pid", pid}, {"errno", errno}});
      break;
    }
    now = SteadyClock::now();
    auto drain = [&](int idx, UniqueFd& fd, const char* name) {
      if (idx < 0 || fds[idx].revents == 0) return;
      ssize_t got = ::read(fd.get(), buf, chunk);
      if (got > 0) {
        Broadcast(
            {{"data", {{name, Base64Encode(std::string_view(buf, static_cast<size_t>(got)))}}}});
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.Reset();  // EOF, or EIO from a pty whose slave side is gone
      }
    };
    if (r > 0) {
      drain(out_idx, out, out_name);
      drain(err_idx, err, "stderr");
      if (exit_idx >= 0 && fds[exit_idx].revents) {
        uint64_t v;
        (void)!::read(exit_efd.get(), &v, sizeof v);
        if (abandoned_) break;
        std::lock_guard lock(mu_);
        if (wait_status_) {
          exited = true;
          drain_deadline = now + exit_drain;
        }
      }
    }
    if (exited && !out.valid() && !err.valid()) break;
    if (exited && now >= drain_deadline) break;
    if (!exited && !timed_out && now >= kill_deadline) {
      log::Info("process timed out; killing its process group",
                {{"pid", pid}, {"timeout_ms", timeout.count()}});
      ::kill(-static_cast<pid_t>(pid), SIGKILL);
      timed_out = true;
    }
    Tick(now);
  }
  out.Reset();
  err.Reset();
  {
    std::lock_guard lock(input_mu);
    input.Reset();
  }
  int status = 0;
  std::vector<Sub> subs;
  {
    std::lock_guard lock(mu_);
    status = wait_status_.value_or(W_EXITCODE(0, SIGKILL));
    end_ = EndJson(status);
    finished_ = true;
    subs = std::move(subs_);
    subs_.clear();
  }
  mgr->OnFinished(shared_from_this(), end_);
  Status end_status = Status::Ok();
  if (timed_out) {
    end_status = Status::DeadlineExceeded("process killed after its timeout of " +
                                          std::to_string(timeout.count()) + " ms");
  } else if (abandoned_) {
    end_status = Status::Unavailable("envd is shutting down");
  }
  for (auto& s : subs) {
    if (!abandoned_) s.sink->Send({{"end", end_}});
    s.sink->End(end_status);
  }
}

// --- ProcessManager ----------------------------------------------------------------------------

ProcessManager::ProcessManager(Reaper* reaper, Options options)
    : reaper_(reaper), options_(options) {}

ProcessManager::~ProcessManager() {
  std::vector<std::shared_ptr<Process>> procs;
  {
    std::lock_guard lock(mu_);
    for (auto& [pid, p] : running_) procs.push_back(p);
  }
  for (auto& p : procs) ::kill(-static_cast<pid_t>(p->pid), SIGKILL);
  std::unique_lock lock(pumps_mu_);
  if (!pumps_cv_.wait_for(lock, std::chrono::seconds(2), [&] { return pumps_ == 0; })) {
    // The reaper is gone or a child is stuck in the kernel: stop waiting for exits.
    for (auto& p : procs) p->Abandon();
    pumps_cv_.wait_for(lock, std::chrono::seconds(2), [&] { return pumps_ == 0; });
  }
}

Result<uint32_t> ProcessManager::Spawn(SpawnRequest req, EventSinkPtr sink, SinkOptions so) {
  auto proc = std::make_shared<Process>();
  proc->tag = req.tag;
  proc->config = req.config;
  proc->pty = req.pty;
  proc->timeout = req.timeout;
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return Status::FromErrno(errno, "eventfd()");
  proc->exit_efd.Reset(efd);

  ChildPlan plan;
  UniqueFd child_in, child_out, child_err, tty;
  if (req.pty) {
    int master = -1, slave = -1;
    winsize ws{};
    ws.ws_col = req.cols;
    ws.ws_row = req.rows;
    if (::openpty(&master, &slave, nullptr, nullptr, &ws) != 0) {
      return Status::FromErrno(errno, "openpty()");
    }
    proc->out.Reset(master);
    tty.Reset(slave);
    ::fcntl(master, F_SETFD, FD_CLOEXEC);
    ::fcntl(slave, F_SETFD, FD_CLOEXEC);
    // The terminal belongs to the user the shell runs as (best effort: root may not own it).
    if (req.user.uid != ::geteuid()) (void)!::fchown(slave, req.user.uid, static_cast<gid_t>(-1));
    HANGAR_TRY(SetNonBlocking(master));
    int dup = ::fcntl(master, F_DUPFD_CLOEXEC, 3);
    if (dup < 0) return Status::FromErrno(errno, "fcntl(F_DUPFD_CLOEXEC)");
    proc->input.Reset(dup);
    plan.stdin_fd = plan.stdout_fd = plan.stderr_fd = plan.tty_fd = slave;
  } else {
    HANGAR_ASSIGN_OR_RETURN(Pipe o, MakePipe());
    HANGAR_ASSIGN_OR_RETURN(Pipe e, MakePipe());
    proc->out = std::move(o.read);
    proc->err = std::move(e.read);
    child_out = std::move(o.write);
    child_err = std::move(e.write);
    if (req.stdin_pipe) {
      HANGAR_ASSIGN_OR_RETURN(Pipe i, MakePipe());
      child_in = std::move(i.read);
      proc->input = std::move(i.write);
      HANGAR_TRY(SetNonBlocking(proc->input.get()));
    } else {
      HANGAR_ASSIGN_OR_RETURN(child_in, OpenFile("/dev/null", O_RDONLY));
    }
    plan.stdin_fd = child_in.get();
    plan.stdout_fd = child_out.get();
    plan.stderr_fd = child_err.get();
  }
  plan.cwd_fd = req.cwd.get();
  UniqueFd canary(::fcntl(plan.cwd_fd, F_DUPFD, 3));  // deliberately not close-on-exec
  plan.canary_fd = canary.get();
  uid_t self = ::geteuid();
  if (self == 0) {
    plan.switch_user = true;
    plan.uid = req.user.uid;
    plan.gid = req.user.gid;
    plan.groups.push_back(req.user.gid);
    for (gid_t g : req.user.groups) plan.groups.push_back(g);
  } else if (req.user.uid != self || req.user.gid != ::getegid()) {
    return Status::PermissionDenied("envd runs as uid " + std::to_string(self) +
                                    " and cannot start processes as user '" + req.user.name +
                                    "' (uid " + std::to_string(req.user.uid) + ")");
  }
  plan.candidates = Candidates(req.config.cmd, req.env);
  plan.argv_storage.push_back(req.config.cmd);
  for (const auto& a : req.config.args) plan.argv_storage.push_back(a);
  plan.env_storage = std::move(req.env);
  for (auto& s : plan.argv_storage) plan.argv.push_back(s.data());
  plan.argv.push_back(nullptr);
  for (auto& s : plan.env_storage) plan.envp.push_back(s.data());
  plan.envp.push_back(nullptr);

  // The child's stack until its exec (it runs on envd's memory, not a copy of it: no page
  // tables of the 13-thread envd to copy, nothing to unshare at exec).
  constexpr size_t kChildStack = 64 << 10;
  HANGAR_ASSIGN_OR_RETURN(CloneStack stack, CloneStack::Make(kChildStack));
  std::weak_ptr<Process> weak = proc;
  HANGAR_ASSIGN_OR_RETURN(
      pid_t pid, reaper_->Spawn(
                     [&plan, &stack]() -> pid_t {
                       // No handler of envd's may run in the child before it resets them.
                       sigset_t all, old;
                       sigfillset(&all);
                       ::pthread_sigmask(SIG_SETMASK, &all, &old);
                       pid_t p = ::clone(
                           [](void* arg) -> int { RunChild(*static_cast<ChildPlan*>(arg)); },
                           stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
                       int err = errno;
                       ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
                       errno = err;
                       return p;
                     },
                     [weak](int status) {
                       if (auto p = weak.lock()) p->OnExit(status);
                     }));
  // CLONE_VFORK: the child has exec'd or exited by now.
  child_in.Reset();
  child_out.Reset();
  child_err.Reset();
  tty.Reset();
  if (plan.failure.step != 0) {
    const ChildFailure failure = plan.failure;
    std::string what = failure.step == kExec ? "exec(" + req.config.cmd + ")"
                                             : std::string(StepName(failure.step)) +
                                                   " before exec(" + req.config.cmd + ")";
    if (failure.step == kSetuid || failure.step == kSetgid) {
      what += " as uid " + std::to_string(req.user.uid);
    }
    return Status::FromErrno(failure.err, what);
  }
  proc->pid = static_cast<uint32_t>(pid);
  if (req.timeout.count() > 0) proc->kill_deadline = SteadyClock::now() + req.timeout;
  {
    std::lock_guard lock(mu_);
    running_[proc->pid] = proc;
    retained_.erase(proc->pid);  // a reused pid must not answer with the old exit
    if (proc->tag) {
      std::erase_if(retained_, [&](const auto& kv) { return kv.second.tag == proc->tag; });
    }
  }
  nlohmann::json unused;
  if (sink) proc->AddSink(std::move(sink), so, &unused);
  {
    std::lock_guard lock(pumps_mu_);
    ++pumps_;
  }
  std::thread([proc, this] {
    proc->Pump(this, options_.exit_drain);
    std::lock_guard lock(pumps_mu_);
    --pumps_;
    pumps_cv_.notify_all();
  }).detach();
  return proc->pid;
}

void ProcessManager::OnFinished(const std::shared_ptr<Process>& p, const nlohmann::json& end) {
  std::lock_guard lock(mu_);
  auto it = running_.find(p->pid);
  if (it != running_.end() && it->second == p) running_.erase(it);
  auto now = SteadyClock::now();
  std::erase_if(retained_, [&](const auto& kv) { return kv.second.expiry <= now; });
  retained_[p->pid] = Retained{p->tag, end, now + options_.retain};
  exited_cv_.notify_all();
}

Result<std::shared_ptr<Process>> ProcessManager::Find(const Selector& sel) const {
  std::lock_guard lock(mu_);
  if (sel.pid) {
    auto it = running_.find(*sel.pid);
    if (it != running_.end()) return it->second;
  } else if (sel.tag) {
    for (const auto& [pid, p] : running_) {
      if (p->tag == sel.tag) return p;
    }
  } else {
    return Status::InvalidArgument("a process selector needs a pid or a tag");
  }
  return Status::NotFound(sel.ToString() + " not found");
}

Status ProcessManager::Attach(const Selector& sel, EventSinkPtr sink, SinkOptions so) {
  auto found = Find(sel);
  nlohmann::json end;
  uint32_t pid = 0;
  if (found.ok()) {
    pid = (*found)->pid;
    if ((*found)->AddSink(sink, so, &end)) return Status::Ok();
  } else {
    if (found.status().code() != Code::kNotFound) return found.status();
    std::lock_guard lock(mu_);
    auto now = SteadyClock::now();
    bool hit = false;
    for (const auto& [rpid, r] : retained_) {
      if (r.expiry <= now) continue;
      if ((sel.pid && rpid == *sel.pid) || (!sel.pid && sel.tag && r.tag == sel.tag)) {
        pid = rpid;
        end = r.end;
        hit = true;
        break;
      }
    }
    if (!hit) return found.status();
  }
  // Exited already: the client still learns how it ended.
  sink->Send({{"start", {{"pid", pid}}}});
  sink->Send({{"end", end}});
  sink->End(Status::Ok());
  return Status::Ok();
}

std::vector<ProcessInfo> ProcessManager::List() const {
  std::lock_guard lock(mu_);
  std::vector<ProcessInfo> out;
  for (const auto& [pid, p] : running_) out.push_back({pid, p->tag, p->config});
  return out;
}

Status ProcessManager::SendInput(const Selector& sel, std::string_view data, bool to_pty) {
  HANGAR_ASSIGN_OR_RETURN(std::shared_ptr<Process> p, Find(sel));
  if (to_pty != p->pty) {
    return Status::FailedPrecondition(
        to_pty ? sel.ToString() + " has no pty; send its input as stdin"
               : sel.ToString() + " runs in a pty; send its input as pty input");
  }
  std::lock_guard lock(p->input_mu);
  if (!p->input.valid()) {
    return Status::FailedPrecondition(sel.ToString() +
                                      " has no open stdin (start it with stdin: true)");
  }
  auto deadline = SteadyClock::now() + options_.stdin_write_timeout;
  while (!data.empty()) {
    ssize_t n = ::write(p->input.get(), data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
      if (left.count() <= 0) {
        return Status::DeadlineExceeded(sel.ToString() + " did not read its input within " +
                                        std::to_string(options_.stdin_write_timeout.count()) +
                                        " ms");
      }
      pollfd pfd{p->input.get(), POLLOUT, 0};
      ::poll(&pfd, 1, static_cast<int>(left.count()));
      continue;
    }
    if (errno == EPIPE) return Status::FailedPrecondition(sel.ToString() + " closed its stdin");
    return Status::FromErrno(errno, "write(stdin of " + sel.ToString() + ")");
  }
  return Status::Ok();
}

Status ProcessManager::CloseStdin(const Selector& sel) {
  HANGAR_ASSIGN_OR_RETURN(std::shared_ptr<Process> p, Find(sel));
  if (p->pty) {
    return Status::FailedPrecondition(sel.ToString() +
                                      " runs in a pty; send Ctrl-D (0x04) to end its input");
  }
  std::lock_guard lock(p->input_mu);
  p->input.Reset();
  return Status::Ok();
}

Status ProcessManager::Signal(const Selector& sel, int sig) {
  HANGAR_ASSIGN_OR_RETURN(std::shared_ptr<Process> p, Find(sel));
  if (::kill(-static_cast<pid_t>(p->pid), sig) != 0 && errno != ESRCH) {
    return Status::FromErrno(errno,
                             "kill(-" + std::to_string(p->pid) + ", " + std::to_string(sig) + ")");
  }
  return Status::Ok();
}

Status ProcessManager::Resize(const Selector& sel, uint16_t cols, uint16_t rows) {
  HANGAR_ASSIGN_OR_RETURN(std::shared_ptr<Process> p, Find(sel));
  if (!p->pty) return Status::FailedPrecondition(sel.ToString() + " has no pty to resize");
  winsize ws{};
  ws.ws_col = cols;
  ws.ws_row = rows;
  std::lock_guard lock(p->input_mu);
  if (!p->input.valid() || ::ioctl(p->input.get(), TIOCSWINSZ, &ws) != 0) {
    return Status::FromErrno(p->input.valid() ? errno : EBADF, "ioctl(TIOCSWINSZ)");
  }
  return Status::Ok();
}

bool ProcessManager::SignalAllAndWait(int sig, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  for (const auto& [pid, p] : running_) ::kill(-static_cast<pid_t>(pid), sig);
  return exited_cv_.wait_for(lock, wait, [&] { return running_.empty(); });
}

size_t ProcessManager::running() const {
  std::lock_guard lock(mu_);
  return running_.size();
}

}  // namespace hangar::envd::internal
