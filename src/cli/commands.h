// The subcommands of `hangar`, one function each, writing to the given streams so tests can
// drive them without a terminal. Each returns the process exit code.
#pragma once

#include <chrono>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include "hangar/api/client.h"
#include "hangar/base/status.h"

namespace hangar::cli {

struct GlobalOptions {
  std::string server = "http://127.0.0.1:7070";
  bool json = false;
  int timeout_ms = 5000;
  // Everything after the first `--`: a command and its own arguments, never parsed as ours.
  std::vector<std::string> trailing;
};

// GET /healthz and /v1/version; a one-paragraph summary, or one JSON object with --json.
int RunStatus(const GlobalOptions& g, std::ostream& out, std::ostream& err);

// --- hangar node: the node API (/node/v1) of one node agent ---
struct NodeOptions {
  std::string token;  // else $HANGAR_NODE_TOKEN, else <$HANGAR_DATA_DIR|/var/lib/hangar>/node.token
};
// A secret from the flag's value, else $env_var, else <$HANGAR_DATA_DIR|/var/lib/hangar>/file_name
// (trailing whitespace trimmed); unauthenticated saying all three when none has it.
Result<std::string> Credential(const std::string& given, const char* env_var,
                               std::string_view file_name, std::string_view what,
                               std::string_view flag);
Result<std::string> NodeToken(const NodeOptions& n);
// A client of `server` that sends `Authorization: Bearer <token>` with every request.
Result<api::HttpClient> BearerClient(const std::string& server, const std::string& token,
                                     std::chrono::milliseconds timeout);
Result<api::HttpClient> NodeClient(const GlobalOptions& g, const NodeOptions& n,
                                   std::chrono::milliseconds timeout);
// A JSON call; prints `human(result)` or, with --json, the JSON.
int RunNodeJson(const GlobalOptions& g, const NodeOptions& n, std::string_view method,
                const std::string& path, const nlohmann::json& body, std::ostream& out,
                std::ostream& err, const std::function<void(const nlohmann::json&)>& human);
void PrintSandboxTable(const nlohmann::json& list, std::ostream& out);
// Streams the command's stdout/stderr to ours; returns its exit code (137 if killed).
int RunNodeExec(const GlobalOptions& g, const NodeOptions& n, const std::string& id,
                const nlohmann::json& command, std::ostream& err);
// POSTs `command` to an exec endpoint (node or /v1) and prints its NDJSON events as they come;
// returns the command's exit code.
int StreamExec(api::HttpClient& client, const std::string& path, const nlohmann::json& command,
               std::ostream& err);
// Writes one exec or log event's data to our stdout/stderr; sets exit_code on exit/error events.
Status PrintEvent(const nlohmann::json& event, int& exit_code, std::ostream& err);
int RunNodeGetFile(const GlobalOptions& g, const NodeOptions& n, const std::string& id,
                   const std::string& path, std::ostream& err);
int RunNodePutFile(const GlobalOptions& g, const NodeOptions& n, const std::string& id,
                   const std::string& path, std::string data, std::ostream& out, std::ostream& err);
int Report(std::ostream& err, const Status& s);

// --- the fleet commands: the control plane's /v1 API ---
struct FleetOptions {
  std::string api_key;  // else $HANGAR_API_KEY, else <$HANGAR_DATA_DIR|/var/lib/hangar>/api.key
};
struct RunArgs {
  std::string tmpl = "base", tier, repo;
  std::vector<std::string> labels, paths, secrets, egress, env, argv;
  double cpu = 0;
  int64_t memory_mb = 0, disk_mb = 0, iops = 0, timeout_s = 300;
  bool no_wait = false, detach = false;
};
Result<std::string> ApiKey(const FleetOptions& f);
int RunRun(const GlobalOptions& g, const FleetOptions& f, const RunArgs& a, std::ostream& out,
           std::ostream& err);
int RunRouteTest(const std::string& policy_path, const std::string& tasks_path, bool as_json,
                 std::ostream& out, std::ostream& err);
// Registers run, ls, get, kill, logs, exec, nodes, pools, route on `app`.
void AddFleetCommands(CLI::App& app, GlobalOptions& g, FleetOptions& f, int& rc);

// "3d 4h", "12m 5s", "850ms".
std::string HumanDuration(std::chrono::milliseconds d);

}  // namespace hangar::cli
