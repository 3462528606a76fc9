// Child: owns a child process. On destruction a still-running child is killed (SIGKILL) and
// reaped, so no code path leaves a process behind. Move-only.
//
// Spawn() starts argv[0] (looked up in PATH) with optional stdio redirection. The exec
// failure of a missing program is reported by Spawn itself ("exec(nosuch): No such file or
// directory"), not as a mysterious exit code — a CLOEXEC pipe carries errno back.
// Thread safety: a value; Wait/Kill from one thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar {

struct SpawnOptions {
  std::optional<std::string> cwd;
  // nullopt: inherit the environment; otherwise exactly these variables.
  std::optional<std::map<std::string, std::string>> env;
  bool capture_stdout = false;  // Child::stdout_fd() readable
  bool capture_stderr = false;
  bool pipe_stdin = false;  // Child::stdin_fd() writable
  bool new_process_group = false;
  int death_signal = 0;  // PR_SET_PDEATHSIG in the child, e.g. SIGKILL
};

struct ExitStatus {
  int code = -1;   // exit code if exited
  int signal = 0;  // terminating signal if signalled
  bool exited() const { return signal == 0; }
  bool success() const { return signal == 0 && code == 0; }
  std::string ToString() const;
};

class Child {
 public:
  Child() = default;
  ~Child();
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  static Result<Child> Spawn(const std::vector<std::string>& argv,
                             const SpawnOptions& options = {});
  // Adopts an already-forked pid (e.g. from clone3 with namespaces).
  static Child Adopt(pid_t pid) {
    Child c;
    c.pid_ = pid;
    return c;
  }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !exit_.has_value(); }
  UniqueFd& stdin_fd() { return stdin_; }
  UniqueFd& stdout_fd() { return stdout_; }
  UniqueFd& stderr_fd() { return stderr_; }

  Status Signal(int sig);
  // Blocks until the child exits.
  Result<ExitStatus> Wait();
  // Non-blocking: nullopt while still running.
  Result<std::optional<ExitStatus>> TryWait();
  // Waits up to `timeout`, then SIGKILLs and reaps. Returns the exit status either way.
  Result<ExitStatus> WaitFor(std::chrono::milliseconds timeout);
  // Gives up ownership without killing (the pid is no longer reaped by this object).
  pid_t Release();

 private:
  pid_t pid_ = -1;
  std::optional<ExitStatus> exit_;
  UniqueFd stdin_, stdout_, stderr_;
};

// The stack of a clone(CLONE_VM) child (posix_spawn's way: the child runs on the caller's
// memory until its exec). Mapped, not filled: only the pages the child touches are faulted in —
// a zero-filled std::vector of 256 KiB is 64 page faults, ~1 ms on a VM, paid on every sandbox
// start. A PROT_NONE guard page below it turns an overflow into the child's SIGSEGV instead of
// a write into the caller's heap. Move-only; unmapped on destruction.
class CloneStack {
 public:
  CloneStack() = default;
  ~CloneStack();
  CloneStack(CloneStack&& o) noexcept;
  CloneStack& operator=(CloneStack&& o) noexcept;
  CloneStack(const CloneStack&) = delete;
  CloneStack& operator=(const CloneStack&) = delete;

  // `bytes` usable (rounded up to pages), plus the guard page.
  static Result<CloneStack> Make(size_t bytes);
  // What clone() takes: the highest address (stacks grow down), 16-byte aligned.
  void* top() const { return base_ == nullptr ? nullptr : static_cast<char*>(base_) + mapped_; }
  // The lowest usable address (the guard page is just below).
  void* bottom() const { return base_ == nullptr ? nullptr : static_cast<char*>(base_) + guard_; }

 private:
  void* base_ = nullptr;
  size_t mapped_ = 0;  // guard + usable
  size_t guard_ = 0;
};

// Runs argv to completion and captures stdout and stderr (for short helper commands such as
// mkfs or losetup). Fails with the command line and its stderr if it exits non-zero.
struct CommandOutput {
  ExitStatus status;
  std::string out;
  std::string err;
};
Result<CommandOutput> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(60));
Result<std::string> RunChecked(const std::vector<std::string>& argv,
                               std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace hangar
