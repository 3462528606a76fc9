// FakeNodeClient: node agents in memory, for tests of the control service above the wire. A
// sandbox is created instantly unless a failure is injected; exec replays a scripted output.
// Everything it was asked is recorded so tests can assert on calls (e.g. what was destroyed).
// Thread safety: every method is safe from any thread.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "hangar/control/node_client.h"

namespace hangar::control::testing {

class FakeNodeClient final : public NodeClient {
 public:
  struct Script {
    std::vector<std::pair<std::string, std::string>> output;  // (stdout|stderr, base64 data)
    int exit_code = 0;
  };

  // Failure injection: the next creates on `node_id` fail with `status`.
  void FailCreates(const std::string& node_id, Status status) {
    std::lock_guard lk(mu_);
    fail_[node_id] = std::move(status);
  }
  void SetExecScript(Script s) {
    std::lock_guard lk(mu_);
    script_ = std::move(s);
  }
  // Puts a sandbox on a node as if something else made it (orphans, recovery).
  void Inject(const std::string& node_id, const std::string& id, const std::string& state) {
    std::lock_guard lk(mu_);
    sandboxes_[node_id][id] = state;
  }
  void Remove(const std::string& node_id, const std::string& id) {
    std::lock_guard lk(mu_);
    sandboxes_[node_id].erase(id);
  }
  std::set<std::string> On(const std::string& node_id) const {
    std::lock_guard lk(mu_);
    std::set<std::string> out;
    if (auto it = sandboxes_.find(node_id); it != sandboxes_.end()) {
      for (const auto& [id, st] : it->second) out.insert(id);
    }
    return out;
  }
  std::vector<NodeSandbox> Report(const std::string& node_id) const {
    std::lock_guard lk(mu_);
    std::vector<NodeSandbox> out;
    if (auto it = sandboxes_.find(node_id); it != sandboxes_.end()) {
      for (const auto& [id, st] : it->second) out.push_back({id, st, {{"id", id}, {"state", st}}});
    }
    return out;
  }
  int creates() const {
    std::lock_guard lk(mu_);
    return creates_;
  }
  std::vector<std::string> destroyed() const {
    std::lock_guard lk(mu_);
    return destroyed_;
  }
  std::vector<nlohmann::json> specs() const {
    std::lock_guard lk(mu_);
    return specs_;
  }

  Result<NodeSandbox> CreateSandbox(const Node& node, const nlohmann::json& spec) override {
    std::lock_guard lk(mu_);
    ++creates_;
    specs_.push_back(spec);
    if (auto it = fail_.find(node.id); it != fail_.end()) return it->second;
    std::string id = spec.value("id", "");
    auto& on = sandboxes_[node.id];
    if (on.count(id)) return Status::AlreadyExists("sandbox " + id + " exists");
    on[id] = "running";
    return NodeSandbox{id, "running", spec};
  }
  Status DestroySandbox(const Node& node, const std::string& id) override {
    std::lock_guard lk(mu_);
    destroyed_.push_back(id);
    sandboxes_[node.id].erase(id);
    return Status::Ok();
  }
  Result<std::vector<NodeSandbox>> ListSandboxes(const Node& node) override {
    return Report(node.id);
  }
  Status SetTimeout(const Node&, const std::string&, int64_t) override { return Status::Ok(); }
  Status Pause(const Node& n, const std::string& id) override { return SetState(n, id, "paused"); }
  Status Resume(const Node& n, const std::string& id) override {
    return SetState(n, id, "running");
  }
  // The node's state of a sandbox ("" if it has none).
  std::string StateOf(const std::string& node_id, const std::string& id) const {
    std::lock_guard lk(mu_);
    auto n = sandboxes_.find(node_id);
    if (n == sandboxes_.end()) return "";
    auto it = n->second.find(id);
    return it == n->second.end() ? "" : it->second;
  }
  Result<nlohmann::json> Usage(const Node&, const std::string&) override {
    return nlohmann::json::object();
  }
  Status Exec(const Node& node, const std::string& id, const nlohmann::json&,
              const ExecEventCallback& on_event) override {
    Script s;
    {
      std::lock_guard lk(mu_);
      if (!sandboxes_[node.id].count(id)) return Status::NotFound("sandbox " + id);
      s = script_;
    }
    for (const auto& [stream, data] : s.output) {
      HANGAR_TRY(on_event({{"event", stream}, {"data", data}}));
    }
    return on_event({{"event", "exit"}, {"exit_code", s.exit_code}});
  }
  Result<std::string> ReadFile(const Node&, const std::string&, const std::string&,
                               const std::string&) override {
    return Status::Unimplemented("fake node: files");
  }
  Result<nlohmann::json> WriteFile(const Node&, const std::string&, const std::string&, std::string,
                                   const std::string&) override {
    return Status::Unimplemented("fake node: files");
  }
  Result<nlohmann::json> ListDir(const Node&, const std::string&, const std::string&,
                                 const std::string&) override {
    return Status::Unimplemented("fake node: files");
  }

 private:
  Status SetState(const Node& n, const std::string& id, const std::string& state) {
    std::lock_guard lk(mu_);
    auto& on = sandboxes_[n.id];
    auto it = on.find(id);
    if (it == on.end()) return Status::NotFound("sandbox '" + id + "' not on node " + n.id);
    it->second = state;
    return Status::Ok();
  }

  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, std::string>> sandboxes_;
  std::map<std::string, Status> fail_;
  Script script_;
  int creates_ = 0;
  std::vector<std::string> destroyed_;
  std::vector<nlohmann::json> specs_;
};

}  // namespace hangar::control::testing
