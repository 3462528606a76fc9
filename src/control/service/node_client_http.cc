// NodeClient over the node API (HTTP/JSON, bearer token).
#include <fmt/format.h>

#include "hangar/api/client.h"
#include "hangar/api/query.h"
#include "hangar/control/node_client.h"

namespace hangar::control {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(60);

class HttpNodeClient final : public NodeClient {
 public:
  Result<NodeSandbox> CreateSandbox(const Node& node, const nlohmann::json& spec) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    HANGAR_ASSIGN_OR_RETURN(nlohmann::json j, c.CallJson("POST", "/node/v1/sandboxes", spec));
    return ToSandbox(j);
  }

  Status DestroySandbox(const Node& node, const std::string& id) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    auto r = c.CallJson("DELETE", SandboxPath(id));
    if (!r.ok() && r.status().code() != Code::kNotFound) return r.status();
    return Status::Ok();
  }

  Result<std::vector<NodeSandbox>> ListSandboxes(const Node& node) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    HANGAR_ASSIGN_OR_RETURN(nlohmann::json j, c.CallJson("GET", "/node/v1/sandboxes"));
    std::vector<NodeSandbox> out;
    for (const auto& s : j.value("sandboxes", nlohmann::json::array())) out.push_back(ToSandbox(s));
    return out;
  }

  Status SetTimeout(const Node& node, const std::string& id, int64_t timeout_s) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    return c.CallJson("POST", SandboxPath(id) + "/timeout", {{"timeout_s", timeout_s}}).status();
  }

  Status Pause(const Node& node, const std::string& id) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    return c.CallJson("POST", SandboxPath(id) + "/pause", nlohmann::json::object()).status();
  }

  Status Resume(const Node& node, const std::string& id) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    return c.CallJson("POST", SandboxPath(id) + "/resume", nlohmann::json::object()).status();
  }

  Result<nlohmann::json> Usage(const Node& node, const std::string& id) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    return c.CallJson("GET", SandboxPath(id) + "/usage");
  }

  Status Exec(const Node& node, const std::string& id, const nlohmann::json& command,
              const ExecEventCallback& on_event) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    std::string pending;
    return c.Stream(
        "POST", SandboxPath(id) + "/exec", command.dump(), [&](std::string_view data) -> Status {
          pending.append(data);
          size_t nl;
          while ((nl = pending.find('\n')) != std::string::npos) {
            auto ev = nlohmann::json::parse(pending.substr(0, nl), nullptr, false);
            pending.erase(0, nl + 1);
            if (ev.is_discarded() || !ev.is_object()) {
              return Status::Internal(fmt::format("node {}: malformed exec event", node.id));
            }
            HANGAR_TRY(on_event(ev));
          }
          return Status::Ok();
        });
  }

  Result<std::string> ReadFile(const Node& node, const std::string& id, const std::string& path,
                               const std::string& user) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    HANGAR_ASSIGN_OR_RETURN(auto r, c.Get(FilesPath(id, path, user, false)));
    HANGAR_TRY(r.ToStatus());
    return std::move(r.body);
  }

  Result<nlohmann::json> WriteFile(const Node& node, const std::string& id, const std::string& path,
                                   std::string data, const std::string& user) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    HANGAR_ASSIGN_OR_RETURN(auto r, c.Do("PUT", FilesPath(id, path, user, false), std::move(data),
                                         "application/octet-stream"));
    HANGAR_TRY(r.ToStatus());
    return r.Json();
  }

  Result<nlohmann::json> ListDir(const Node& node, const std::string& id, const std::string& path,
                                 const std::string& user) override {
    HANGAR_ASSIGN_OR_RETURN(auto c, Connect(node));
    return c.CallJson("GET", FilesPath(id, path, user, true));
  }

 private:
  static Result<api::HttpClient> Connect(const Node& node) {
    api::ClientOptions o;
    o.timeout = kCallTimeout;
    o.headers = {{"Authorization", "Bearer " + node.token}};
    auto c = api::HttpClient::Create(node.url, o);
    if (!c.ok()) return c.status().With(fmt::format("node {}", node.id));
    return c;
  }
  static std::string SandboxPath(const std::string& id) {
    return "/node/v1/sandboxes/" + api::PercentEncode(id);
  }
  static std::string FilesPath(const std::string& id, const std::string& path,
                               const std::string& user, bool list) {
    std::string p = SandboxPath(id) + "/files?path=" + api::PercentEncode(path);
    if (!user.empty()) p += "&user=" + api::PercentEncode(user);
    if (list) p += "&list=1";
    return p;
  }
  static NodeSandbox ToSandbox(const nlohmann::json& j) {
    NodeSandbox s;
    s.id = j.value("id", "");
    s.state = j.value("state", "");
    s.info = j;
    return s;
  }
};

}  // namespace

std::unique_ptr<NodeClient> NewHttpNodeClient() { return std::make_unique<HttpNodeClient>(); }

}  // namespace hangar::control
