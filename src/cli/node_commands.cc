// `hangar node ...`: drives one node agent directly over the node API (/node/v1), without the
// control plane — the node-level harness of the shared tier.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "hangar/api/client.h"
#include "hangar/api/query.h"
#include "hangar/base/base64.h"
#include "hangar/base/fd.h"

namespace hangar::cli {

Result<std::string> Credential(const std::string& given, const char* env_var,
                               std::string_view file_name, std::string_view what,
                               std::string_view flag) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv(env_var); env && *env) return std::string(env);
  const char* dir = std::getenv("HANGAR_DATA_DIR");
  std::string path = fmt::format("{}/{}", dir && *dir ? dir : "/var/lib/hangar", file_name);
  auto t = ReadFile(path);
  if (!t.ok()) {
    return Status::Unauthenticated(
        fmt::format("no {}: pass {}, set {}, or run where {} is readable ({})", what, flag, env_var,
                    path, t.status().message()));
  }
  std::string value = *t;
  while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) value.pop_back();
  return value;
}

Result<std::string> NodeToken(const NodeOptions& n) {
  return Credential(n.token, "HANGAR_NODE_TOKEN", "node.token", "node token", "--node-token");
}

Result<api::HttpClient> BearerClient(const std::string& server, const std::string& token,
                                     std::chrono::milliseconds timeout) {
  api::ClientOptions opt;
  opt.timeout = timeout;
  opt.headers.emplace_back("Authorization", "Bearer " + token);
  return api::HttpClient::Create(server, opt);
}

Result<api::HttpClient> NodeClient(const GlobalOptions& g, const NodeOptions& n,
                                   std::chrono::milliseconds timeout) {
  HANGAR_ASSIGN_OR_RETURN(std::string token, NodeToken(n));
  return BearerClient(g.server, token, timeout);
}

int Report(std::ostream& err, const Status& s) {
  err << "hangar: error: " << s.message() << "\n";
  return 1;
}

int RunNodeJson(const GlobalOptions& g, const NodeOptions& n, std::string_view method,
                const std::string& path, const nlohmann::json& body, std::ostream& out,
                std::ostream& err, const std::function<void(const nlohmann::json&)>& human) {
  auto client = NodeClient(g, n, std::chrono::milliseconds(g.timeout_ms));
  if (!client.ok()) return Report(err, client.status());
  auto r = client->CallJson(method, path, body);
  if (!r.ok()) return Report(err, r.status());
  if (g.json || !human) {
    if (!r->is_null()) out << r->dump(2) << "\n";
  } else {
    human(*r);
  }
  return 0;
}

void PrintSandboxTable(const nlohmann::json& list, std::ostream& out) {
  out << fmt::format("{:<22} {:<8} {:<9} {:<14} {:>6} {:>7} {:>7}\n", "ID", "DRIVER", "STATE",
                     "TEMPLATE", "CPU_M", "MEM_MB", "DISK_MB");
  for (const auto& s : list) {
    const auto& r = s["resources"];
    out << fmt::format("{:<22} {:<8} {:<9} {:<14} {:>6} {:>7} {:>7}\n", s.value("id", ""),
                       s.value("driver", ""), s.value("state", ""), s.value("template", ""),
                       r.value("cpu_millis", 0), r.value("memory_mb", 0), r.value("disk_mb", 0));
  }
}

int StreamExec(api::HttpClient& client, const std::string& path, const nlohmann::json& command,
               std::ostream& err) {
  int exit_code = 1;
  std::string pending;
  Status st = client.Stream("POST", path, command.dump(), [&](std::string_view data) -> Status {
    pending.append(data);
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      auto ev = nlohmann::json::parse(pending.substr(0, nl), nullptr, false);
      pending.erase(0, nl + 1);
      if (ev.is_discarded()) return Status::Internal("malformed event from the server");
      HANGAR_TRY(PrintEvent(ev, exit_code, err));
    }
    return Status::Ok();
  });
  if (!st.ok()) return Report(err, st);
  return exit_code;
}

Status PrintEvent(const nlohmann::json& ev, int& exit_code, std::ostream& err) {
  std::string kind = ev.value("event", ev.value("stream", ""));
  if (kind == "stdout")
    HANGAR_TRY(WriteAll(STDOUT_FILENO, Base64Decode(ev.value("data", "")).value_or("")));
  if (kind == "stderr")
    HANGAR_TRY(WriteAll(STDERR_FILENO, Base64Decode(ev.value("data", "")).value_or("")));
  if (kind == "exit") exit_code = ev.value("exit_code", -1) < 0 ? 137 : ev.value("exit_code", 1);
  if (kind == "error") {
    err << "hangar: error: " << ev.value("message", "exec failed") << "\n";
    exit_code = 1;
  }
  return Status::Ok();
}

int RunNodeExec(const GlobalOptions& g, const NodeOptions& n, const std::string& id,
                const nlohmann::json& command, std::ostream& err) {
  // The stream lasts as long as the command: only the connection set-up is bounded.
  auto client = NodeClient(g, n, std::chrono::milliseconds(g.timeout_ms));
  if (!client.ok()) return Report(err, client.status());
  return StreamExec(*client, fmt::format("/node/v1/sandboxes/{}/exec", api::PercentEncode(id)),
                    command, err);
}

int RunNodeGetFile(const GlobalOptions& g, const NodeOptions& n, const std::string& id,
                   const std::string& path, std::ostream& err) {
  auto client = NodeClient(g, n, std::chrono::milliseconds(g.timeout_ms));
  if (!client.ok()) return Report(err, client.status());
  auto r = client->Get(fmt::format("/node/v1/sandboxes/{}/files?path={}", api::PercentEncode(id),
                                   api::PercentEncode(path)));
  if (!r.ok()) return Report(err, r.status());
  if (!r->ok()) return Report(err, r->ToStatus());
  if (Status s = WriteAll(STDOUT_FILENO, r->body); !s.ok()) return Report(err, s);
  return 0;
}

int RunNodePutFile(const GlobalOptions& g, const NodeOptions& n, const std::string& id,
                   const std::string& path, std::string data, std::ostream& out,
                   std::ostream& err) {
  auto client = NodeClient(g, n, std::chrono::milliseconds(g.timeout_ms));
  if (!client.ok()) return Report(err, client.status());
  auto r = client->Do("PUT",
                      fmt::format("/node/v1/sandboxes/{}/files?path={}", api::PercentEncode(id),
                                  api::PercentEncode(path)),
                      std::move(data), "application/octet-stream");
  if (!r.ok()) return Report(err, r.status());
  if (!r->ok()) return Report(err, r->ToStatus());
  if (g.json) out << r->body << "\n";
  return 0;
}

}  // namespace hangar::cli
