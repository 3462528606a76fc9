// ProcessManager: the processes envd starts for clients (process.Process in E2B's protocol).
//
// What it promises:
//  - Spawn starts cmd+args as the given user (setgroups + setresgid + setresuid in the child) in
//    its own session and process group, with stdout/stderr on pipes (or a pty), stdin on a pipe
//    or /dev/null, cwd and environment exactly as prepared by the caller. An exec failure is
//    reported by Spawn ("exec(nosuch): No such file or directory"), not as exit code 127.
//    The child is cloned posix_spawn's way (CLONE_VM|CLONE_VFORK, everything prepared before
//    the clone): no copy of envd's address space, so a command starts as fast as the first.
//  - Events go to every attached EventSink in order: start{pid} first, then data{stdout|stderr|
//    pty} as read (at most 32 KiB each), then end{exitCode, exited, status, error}. A sink that
//    goes away is dropped; the process keeps running (background commands reattach with Attach).
//  - The end event follows the exit and the draining of the output pipes. If a descendant keeps
//    the pipes open after the process exited (a daemon started with `&`), output is drained for
//    at most `exit_drain` more, so a command never hangs on its background children.
//  - A timeout kills the whole process group (SIGKILL); the stream then ends with
//    deadline_exceeded after the end event. Signals from SendSignal go to the process group too.
//  - Exits are retained for `retain` so a late Attach still learns the exit code.
//  - Output nobody is attached to is discarded (as E2B's envd does); a slow sink slows the
//    process (its pipe fills), never envd.
//
// Threads: one pump thread per running process (reads output, runs keepalives and deadlines);
// exits arrive from the Reaper. Thread safety: every method may be called from any thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"
#include "reaper.h"
#include "users.h"

namespace hangar::envd::internal {

// Where a process's events go: one client stream. Implemented by the RPC layer over a
// StreamWriter (Connect envelopes); a fake in tests.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // One ProcessEvent as proto3 JSON ({"start":{...}}, {"data":{...}}, {"end":{...}},
  // {"keepalive":{}}). May block while the client is slow. false once the client is gone.
  virtual bool Send(const nlohmann::json& event) = 0;
  // Ends the stream; the error, if any, is what the client sees. Called once.
  virtual void End(const Status& status) = 0;
};
using EventSinkPtr = std::shared_ptr<EventSink>;

struct SinkOptions {
  std::chrono::milliseconds keepalive{90'000};  // E2B's default without Keepalive-Ping-Interval
  std::chrono::milliseconds deadline{0};        // 0: none; else the stream ends deadline_exceeded
};

// process.ProcessConfig, echoed by List as the client sent it.
struct ProcessConfig {
  std::string cmd;
  std::vector<std::string> args;
  std::map<std::string, std::string> envs;
  std::optional<std::string> cwd;
};

struct SpawnRequest {
  ProcessConfig config;
  std::optional<std::string> tag;
  User user;
  UniqueFd cwd;                  // the working directory, opened O_PATH inside the root
  std::vector<std::string> env;  // "NAME=value", final
  bool stdin_pipe = false;       // else /dev/null
  bool pty = false;
  uint16_t cols = 80, rows = 24;         // pty size
  std::chrono::milliseconds timeout{0};  // 0: none
};

struct Selector {
  std::optional<uint32_t> pid;
  std::optional<std::string> tag;
  std::string ToString() const;
};

struct ProcessInfo {
  uint32_t pid = 0;
  std::optional<std::string> tag;
  ProcessConfig config;
};

class Process;

class ProcessManager {
 public:
  struct Options {
    std::chrono::milliseconds exit_drain{250};
    std::chrono::milliseconds retain{30'000};
    std::chrono::milliseconds stdin_write_timeout{10'000};
  };
  ProcessManager(Reaper* reaper, Options options);
  ~ProcessManager();  // kills what still runs and joins the pump threads
  ProcessManager(const ProcessManager&) = delete;
  ProcessManager& operator=(const ProcessManager&) = delete;

  // Starts the process; `sink` gets start{pid} before Spawn returns, then the events.
  Result<uint32_t> Spawn(SpawnRequest request, EventSinkPtr sink, SinkOptions sink_options);
  // Attaches `sink` to a running process (start{pid}, then live events), or answers start+end
  // for one that exited within `retain`. not_found otherwise.
  Status Attach(const Selector& selector, EventSinkPtr sink, SinkOptions sink_options);

  std::vector<ProcessInfo> List() const;
  // Writes to the process's stdin pipe (or its pty). failed_precondition when it has none.
  Status SendInput(const Selector& selector, std::string_view data, bool to_pty);
  Status CloseStdin(const Selector& selector);
  Status Signal(const Selector& selector, int sig);
  Status Resize(const Selector& selector, uint16_t cols, uint16_t rows);

  // Shutdown: signals every process group; returns true once all exited within `wait`.
  bool SignalAllAndWait(int sig, std::chrono::milliseconds wait);
  size_t running() const;

 private:
  friend class Process;
  Result<std::shared_ptr<Process>> Find(const Selector& selector) const;
  void OnFinished(const std::shared_ptr<Process>& p, const nlohmann::json& end);

  Reaper* reaper_;
  const Options options_;
  mutable std::mutex mu_;
  std::map<uint32_t, std::shared_ptr<Process>> running_;
  struct Retained {
    std::optional<std::string> tag;
    nlohmann::json end;
    std::chrono::steady_clock::time_point expiry;
  };
  std::map<uint32_t, Retained> retained_;
  std::condition_variable exited_cv_;  // with mu_: a process left running_

  // Pump threads are detached; the destructor waits for this count to reach zero.
  std::mutex pumps_mu_;
  std::condition_variable pumps_cv_;
  int pumps_ = 0;
};

}  // namespace hangar::envd::internal
