// End-to-end test harness: real `hangard` and `hangar` processes on 127.0.0.1, each test with its
// own data directory, cgroup root and uid range, so tests never see each other's sandboxes.
//
// Promises:
//  - Hangard::Start returns once the daemon printed "listening on http://..." (or fails with its
//    log's tail); the daemon's stderr goes to <work>/hangard-<n>.log (kept for a failing test);
//  - a Hangard still running when destroyed is SIGKILLed and reaped (PR_SET_PDEATHSIG too, so a
//    crashed test leaves no daemon); sandboxes it left on the node are not its business: tests
//    kill them through the API and then call CountLeaks(), which counts what the kernel still
//    holds for a data directory (mounts, loop devices, cgroups);
//  - Api::Call never throws; every HTTP exchange uses a fresh connection, so an Api is safe to
//    share between threads.
// Expects: root (the node role), /bin/busybox (busybox-static) for the test template, and the
// binaries passed in by CMake (HANGARD_BIN, HANGAR_CLI_BIN).
// Thread safety: Hangard from one thread; Api from any.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/api/client.h"
#include "hangar/base/child.h"
#include "hangar/base/status.h"

namespace hangar::integration {

// Why a privileged end-to-end test cannot run here ("" when it can).
std::string SkipReason();

// Imports the busybox test template as `name` into <data_dir>/templates (created if missing).
Status ImportTemplate(const std::string& data_dir, const std::string& name = "base");

// Node-role settings unique to this process and `slot`, so concurrent tests (and other
// engineers' tests) never share a cgroup root or a uid range.
struct NodeIdentity {
  std::string cgroup_root;
  int64_t uid_base = 0;
};
NodeIdentity UniqueNodeIdentity(int slot);

class Hangard {
 public:
  Hangard() = default;
  Hangard(Hangard&&) = default;
  Hangard& operator=(Hangard&&) = default;
  ~Hangard();

  // hangard --role <role> --listen 127.0.0.1:0 --data-dir <data_dir> <flags...>; flags are
  // "--name value" pairs appended as given. `log_path` receives stderr (appended).
  static Result<Hangard> Start(const std::string& role, const std::string& data_dir,
                               const std::vector<std::string>& flags, const std::string& log_path);

  const std::string& url() const { return url_; }  // "http://127.0.0.1:PORT"
  pid_t pid() const { return child_.pid(); }
  bool running() const { return child_.running(); }
  Status Kill();  // SIGKILL, reaped
  Result<ExitStatus> Stop(std::chrono::milliseconds grace = std::chrono::seconds(20));  // SIGTERM
  std::string LogTail(size_t bytes = 4000) const;

 private:
  Child child_;
  std::string url_;
  std::string log_path_;
};

struct Reply {
  int status = 0;
  nlohmann::json body;  // null when the body is empty or not JSON
  std::string raw;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string Describe() const;                // "<status> <raw body>" for assertion messages
};

// A client of one daemon with one credential ("" = none).
class Api {
 public:
  Api() = default;
  Api(std::string url, std::string bearer) : url_(std::move(url)), bearer_(std::move(bearer)) {}
  // `body`: a JSON value (sent as JSON), or with raw_body set, those bytes as-is.
  Result<Reply> Call(std::string_view method, std::string_view path,
                     const nlohmann::json& body = nullptr,
                     std::vector<std::pair<std::string, std::string>> headers = {},
                     std::chrono::milliseconds timeout = std::chrono::seconds(120)) const;
  Result<Reply> Raw(std::string_view method, std::string_view path, std::string body,
                    std::string content_type,
                    std::vector<std::pair<std::string, std::string>> headers = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(120)) const;
  // POST /v1/sandboxes/{id}/exec (or the node API's path) and collect the NDJSON events.
  struct ExecResult {
    int http_status = 0;
    std::string out, err;
    std::optional<int> exit_code;
    std::string error;  // an {"event":"error"} message or the transport error
    std::vector<nlohmann::json> events;
  };
  ExecResult Exec(const std::string& path, const nlohmann::json& command) const;
  // Streams GET `path` (NDJSON) until the server ends it; every line parsed.
  Result<std::vector<nlohmann::json>> StreamLines(const std::string& path,
                                                  std::chrono::milliseconds timeout) const;
  const std::string& url() const { return url_; }
  const std::string& bearer() const { return bearer_; }

 private:
  std::string url_, bearer_;
};

std::string Base64Decode(std::string_view in);
std::string ReadToken(const std::string& path);  // file content without the trailing newline

// Polls `done` every 100 ms until it returns true or `limit` passes; returns its last answer.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit);

// What the kernel still holds for a data directory: mounts at or below it, loop devices backed
// by files below it, and the cgroups below <cgroup_root> in every hierarchy. `pool_*` are the
// part of mounts/loops that belong to the node's disk pool (<data_dir>/disks/...): pre-formatted
// spares, allowed to stay while the node runs.
struct Leaks {
  int mounts = 0, loops = 0, cgroups = 0;
  int pool_mounts = 0, pool_loops = 0;
  std::vector<std::string> details;
  std::string Describe() const;
};
Leaks CountLeaks(const std::string& data_dir, const std::string& cgroup_root);
// Removes the (empty) cgroup root directories of `cgroup_root` in every hierarchy.
void RemoveCgroupRoot(const std::string& cgroup_root);

// Runs `hangar` (the CLI) with args; out/err captured.
Result<CommandOutput> RunCli(const std::vector<std::string>& args,
                             std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace hangar::integration
