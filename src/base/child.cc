#include "hangar/base/child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace hangar {

std::string ExitStatus::ToString() const {
  if (signal != 0) return fmt::format("killed by signal {} ({})", signal, strsignal(signal));
  return fmt::format("exit code {}", code);
}

namespace {
ExitStatus Decode(int wstatus) {
  ExitStatus s;
  if (WIFEXITED(wstatus)) {
    s.code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    s.signal = WTERMSIG(wstatus);
  }
  return s;
}

// Reports errno to the parent and exits (forked child, before exec).
[[noreturn]] void FailChild(int report_fd, int err) {
  (void)!::write(report_fd, &err, sizeof err);
  ::_exit(127);
}

// Runs in the forked child before exec: only async-signal-safe calls.
[[noreturn]] void ExecChild(const std::vector<std::string>& argv, const SpawnOptions& opt,
                            char* const* envp, int in_fd, int out_fd, int err_fd, int report_fd) {
  auto fail = [report_fd](int err) { FailChild(report_fd, err); };
  if (opt.death_signal != 0 && ::prctl(PR_SET_PDEATHSIG, opt.death_signal) != 0) fail(errno);
  if (opt.new_process_group && ::setpgid(0, 0) != 0) fail(errno);
  if (in_fd >= 0 && ::dup2(in_fd, STDIN_FILENO) < 0) fail(errno);
  if (out_fd >= 0 && ::dup2(out_fd, STDOUT_FILENO) < 0) fail(errno);
  if (err_fd >= 0 && ::dup2(err_fd, STDERR_FILENO) < 0) fail(errno);
  if (opt.cwd && ::chdir(opt.cwd->c_str()) != 0) fail(errno);
  // Restore default signal dispositions and mask a parent may have changed.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  if (envp) {
    ::execvpe(args[0], args.data(), envp);
  } else {
    ::execvp(args[0], args.data());
  }
  FailChild(report_fd, errno);
}
}  // namespace

Result<Child> Child::Spawn(const std::vector<std::string>& argv, const SpawnOptions& opt) {
  if (argv.empty() || argv[0].empty()) return Status::InvalidArgument("spawn: empty argv");
  Pipe in, out, err;
  if (opt.pipe_stdin) {
    HANGAR_ASSIGN_OR_RETURN(in, MakePipe());
  }
  if (opt.capture_stdout) {
    HANGAR_ASSIGN_OR_RETURN(out, MakePipe());
  }
  if (opt.capture_stderr) {
    HANGAR_ASSIGN_OR_RETURN(err, MakePipe());
  }
  HANGAR_ASSIGN_OR_RETURN(Pipe report, MakePipe());

  // Everything the child needs is built before fork: no allocation after it.
  std::vector<std::string> env_strings;
  std::vector<char*> envp;
  if (opt.env) {
    for (const auto& [k, v] : *opt.env) env_strings.push_back(k + "=" + v);
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
  }

  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, fmt::format("fork() for {}", argv[0]));
  if (pid == 0) {
    ExecChild(argv, opt, opt.env ? envp.data() : nullptr, in.read.get(), out.write.get(),
              err.write.get(), report.write.get());
  }
  report.write.Reset();
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report.read.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  Child c;
  c.pid_ = pid;
  if (n == sizeof child_errno) {
    (void)c.Wait();
    return Status::FromErrno(child_errno, fmt::format("exec({})", argv[0]));
  }
  c.stdin_ = std::move(in.write);
  c.stdout_ = std::move(out.read);
  c.stderr_ = std::move(err.read);
  return c;
}

Child::~Child() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    (void)Wait();
  }
}

Child::Child(Child&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      exit_(std::move(o.exit_)),
      stdin_(std::move(o.stdin_)),
      stdout_(std::move(o.stdout_)),
      stderr_(std::move(o.stderr_)) {}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    if (running()) {
      ::kill(pid_, SIGKILL);
      (void)Wait();
    }
    pid_ = std::exchange(o.pid_, -1);
    exit_ = std::move(o.exit_);
    stdin_ = std::move(o.stdin_);
    stdout_ = std::move(o.stdout_);
    stderr_ = std::move(o.stderr_);
  }
  return *this;
}

Status Child::Signal(int sig) {
  if (!running()) return Status::FailedPrecondition("signal: process not running");
  if (::kill(pid_, sig) != 0)
    return Status::FromErrno(errno, fmt::format("kill({}, {})", pid_, sig));
  return Status::Ok();
}

Result<ExitStatus> Child::Wait() {
  if (exit_) return *exit_;
  if (pid_ <= 0) return Status::FailedPrecondition("wait: no process");
  int ws = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &ws, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Status::FromErrno(errno, fmt::format("waitpid({})", pid_));
  exit_ = Decode(ws);
  return *exit_;
}

Result<std::optional<ExitStatus>> Child::TryWait() {
  if (exit_) return std::optional<ExitStatus>(*exit_);
  if (pid_ <= 0) return Status::FailedPrecondition("wait: no process");
  int ws = 0;
  pid_t r = ::waitpid(pid_, &ws, WNOHANG);
  if (r < 0) return Status::FromErrno(errno, fmt::format("waitpid({}, WNOHANG)", pid_));
  if (r == 0) return std::optional<ExitStatus>();
  exit_ = Decode(ws);
  return std::optional<ExitStatus>(*exit_);
}

Result<ExitStatus> Child::WaitFor(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // A pidfd would avoid polling; 5 ms steps are cheap enough for helper commands.
  for (;;) {
    HANGAR_ASSIGN_OR_RETURN(auto st, TryWait());
    if (st) return *st;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      return Wait();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

pid_t Child::Release() {
  stdin_.Reset();
  stdout_.Reset();
  stderr_.Reset();
  return std::exchange(pid_, -1);
}

namespace {
// Drains stdout and stderr together so neither pipe can fill up and block the child.
Status DrainBoth(int out_fd, int err_fd, std::string& out, std::string& err,
                 std::chrono::steady_clock::time_point deadline) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_count = 2;
  char buf[16384];
  while (open_count > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::DeadlineExceeded("command timed out");
    int r = ::poll(fds, 2, static_cast<int>(left.count()));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "poll()");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? out : err).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
  return Status::Ok();
}
}  // namespace

Result<CommandOutput> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  SpawnOptions opt;
  opt.capture_stdout = opt.capture_stderr = true;
  opt.death_signal = SIGKILL;
  HANGAR_ASSIGN_OR_RETURN(Child child, Child::Spawn(argv, opt));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  CommandOutput result;
  Status drained =
      DrainBoth(child.stdout_fd().get(), child.stderr_fd().get(), result.out, result.err, deadline);
  if (!drained.ok()) {
    (void)child.Signal(SIGKILL);
    (void)child.Wait();
    return drained.With(fmt::format("{}", fmt::join(argv, " ")));
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  HANGAR_ASSIGN_OR_RETURN(result.status,
                          child.WaitFor(std::max(left, std::chrono::milliseconds(0))));
  return result;
}

Result<std::string> RunChecked(const std::vector<std::string>& argv,
                               std::chrono::milliseconds timeout) {
  HANGAR_ASSIGN_OR_RETURN(CommandOutput r, RunCommand(argv, timeout));
  if (!r.status.success()) {
    std::string err = r.err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return Status::Internal(
        fmt::format("`{}` failed with {}: {}", fmt::join(argv, " "), r.status.ToString(), err));
  }
  return std::move(r.out);
}

// --- CloneStack --------------------------------------------------------------------------

Result<CloneStack> CloneStack::Make(size_t bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (bytes == 0) return Status::InvalidArgument("clone stack of 0 bytes");
  CloneStack s;
  s.guard_ = page;
  s.mapped_ = page + (bytes + page - 1) / page * page;
  void* p = ::mmap(nullptr, s.mapped_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Status::FromErrno(errno, fmt::format("mmap(stack, {})", s.mapped_));
  s.base_ = p;
  if (::mprotect(p, page, PROT_NONE) != 0) {
    return Status::FromErrno(errno, "mprotect(stack guard)");  // ~CloneStack unmaps
  }
  return s;
}

CloneStack::~CloneStack() {
  if (base_ != nullptr) ::munmap(base_, mapped_);
}

CloneStack::CloneStack(CloneStack&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)),
      mapped_(std::exchange(o.mapped_, 0)),
      guard_(std::exchange(o.guard_, 0)) {}

CloneStack& CloneStack::operator=(CloneStack&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) ::munmap(base_, mapped_);
    base_ = std::exchange(o.base_, nullptr);
    mapped_ = std::exchange(o.mapped_, 0);
    guard_ = std::exchange(o.guard_, 0);
  }
  return *this;
}

}  // namespace hangar
