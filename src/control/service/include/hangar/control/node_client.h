// NodeClient: how the control plane reaches node agents. The real one speaks the node API
// (/node/v1/..., HTTP/JSON with the node's bearer token; see docs/api/openapi.yaml); tests above
// the wire use FakeNodeClient (testing/fake_node_client.h), which behaves like a node that
// creates sandboxes instantly.
//
// Every call names the node it targets; errors carry the node's own Status (a node-side
// not_found stays not_found) or unavailable when the node cannot be reached.
// Thread safety: every method may be called from any thread concurrently.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"
#include "hangar/control/model.h"

namespace hangar::control {

// A sandbox as a node reports it.
struct NodeSandbox {
  std::string id;
  std::string state;  // the node's state name: "running", "paused", "stopped", ...
  nlohmann::json info = nlohmann::json::object();  // everything else the node said
};

// One event of a streamed command: {"event":"stdout"|"stderr","data":"<base64>"},
// {"event":"exit","exit_code":N,"status":"..."} or {"event":"error","code","message"}.
using ExecEventCallback = std::function<Status(const nlohmann::json& event)>;

class NodeClient {
 public:
  virtual ~NodeClient() = default;
  // `spec` is the node API create body: {id, template, driver, resources{...}, env, timeout_s,
  // labels}.
  virtual Result<NodeSandbox> CreateSandbox(const Node& node, const nlohmann::json& spec) = 0;
  virtual Status DestroySandbox(const Node& node, const std::string& id) = 0;  // ok if absent
  virtual Result<std::vector<NodeSandbox>> ListSandboxes(const Node& node) = 0;
  virtual Status SetTimeout(const Node& node, const std::string& id, int64_t timeout_s) = 0;
  virtual Status Pause(const Node& node, const std::string& id) = 0;
  virtual Status Resume(const Node& node, const std::string& id) = 0;
  virtual Result<nlohmann::json> Usage(const Node& node, const std::string& id) = 0;
  // Runs a command (node API exec body: {cmd, args, env, cwd, user, timeout_ms, stdin}) and calls
  // on_event for each event as it arrives; returns once the stream ends.
  virtual Status Exec(const Node& node, const std::string& id, const nlohmann::json& command,
                      const ExecEventCallback& on_event) = 0;
  virtual Result<std::string> ReadFile(const Node& node, const std::string& id,
                                       const std::string& path, const std::string& user) = 0;
  virtual Result<nlohmann::json> WriteFile(const Node& node, const std::string& id,
                                           const std::string& path, std::string data,
                                           const std::string& user) = 0;
  virtual Result<nlohmann::json> ListDir(const Node& node, const std::string& id,
                                         const std::string& path, const std::string& user) = 0;
};

// The node API over HTTP (hangar::api::HttpClient, one connection per call).
std::unique_ptr<NodeClient> NewHttpNodeClient();

}  // namespace hangar::control
