#include "hangar/control/api.h"

#include <charconv>
#include <fstream>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "hangar/api/error.h"
#include "hangar/api/json.h"
#include "hangar/base/clock.h"

namespace hangar::control {
namespace {

using nlohmann::json;

// --- validation helpers ---------------------------------------------------------------------

Status CheckKeys(const json& obj, std::string_view where,
                 std::initializer_list<std::string_view> allowed) {
  if (!obj.is_object()) {
    return Status::InvalidArgument(
        fmt::format("{} must be a JSON object", where.empty() ? "the body" : where));
  }
  for (const auto& [k, v] : obj.items()) {
    bool ok = false;
    for (auto a : allowed) ok = ok || a == k;
    if (!ok) {
      return Status::InvalidArgument(
          fmt::format("unknown field '{}{}{}'", where, where.empty() ? "" : ".", k));
    }
  }
  return Status::Ok();
}

Result<int64_t> IntField(const json& obj, std::string_view name, int64_t fallback, int64_t lo,
                         int64_t hi, std::string_view where = "") {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return fallback;
  std::string field = where.empty() ? std::string(name) : fmt::format("{}.{}", where, name);
  if (!it->is_number_integer()) {
    return Status::InvalidArgument(fmt::format("'{}' must be an integer", field));
  }
  int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return Status::InvalidArgument(
        fmt::format("'{}' must be between {} and {} (got {})", field, lo, hi, v));
  }
  return v;
}

Result<std::string> StringField(const json& obj, std::string_view name, std::string fallback,
                                size_t max = CreateLimits::kMaxString) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_string()) return Status::InvalidArgument(fmt::format("'{}' must be a string", name));
  std::string v = it->get<std::string>();
  if (v.size() > max) {
    return Status::InvalidArgument(fmt::format("'{}' is longer than {} bytes", name, max));
  }
  if (v.find('\0') != std::string::npos) {
    return Status::InvalidArgument(fmt::format("'{}' contains a NUL byte", name));
  }
  return v;
}

Result<std::vector<std::string>> StringList(const json& obj, std::string_view name,
                                            size_t max_items) {
  std::vector<std::string> out;
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_array()) {
    return Status::InvalidArgument(fmt::format("'{}' must be an array of strings", name));
  }
  if (it->size() > max_items) {
    return Status::InvalidArgument(fmt::format("'{}' has more than {} items", name, max_items));
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const json& v = (*it)[i];
    if (!v.is_string()) {
      return Status::InvalidArgument(fmt::format("'{}[{}]' must be a string", name, i));
    }
    const auto& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > CreateLimits::kMaxString || s.find('\0') != std::string::npos) {
      return Status::InvalidArgument(fmt::format("'{}[{}]' must be 1 to {} bytes without NUL", name,
                                                 i, CreateLimits::kMaxString));
    }
    out.push_back(s);
  }
  return out;
}

const std::regex& KeyPattern() {
  static const std::regex re("^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$");
  return re;
}

Result<std::map<std::string, std::string>> StringMap(const json& obj, std::string_view name,
                                                     size_t max_entries, bool env_keys) {
  std::map<std::string, std::string> out;
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) {
    return Status::InvalidArgument(fmt::format("'{}' must be an object of strings", name));
  }
  if (it->size() > max_entries) {
    return Status::InvalidArgument(fmt::format("'{}' has more than {} entries", name, max_entries));
  }
  static const std::regex env_re("^[A-Za-z_][A-Za-z0-9_]{0,255}$");
  for (const auto& [k, v] : it->items()) {
    bool key_ok = env_keys ? std::regex_match(k, env_re) : std::regex_match(k, KeyPattern());
    if (!key_ok) {
      return Status::InvalidArgument(
          fmt::format("'{}' key '{}' is not valid ({})", name, k,
                      env_keys ? "an environment variable name" : "1-63 of A-Z a-z 0-9 . _ / -"));
    }
    if (!v.is_string()) {
      return Status::InvalidArgument(fmt::format("'{}.{}' must be a string", name, k));
    }
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > CreateLimits::kMaxString || s.find('\0') != std::string::npos) {
      return Status::InvalidArgument(fmt::format("'{}.{}' must be at most {} bytes without NUL",
                                                 name, k, CreateLimits::kMaxString));
    }
    out[k] = s;
  }
  return out;
}

std::string FormatMs(int64_t ms) {
  if (ms == 0) return "";
  return FormatRfc3339(Clock::WallTime(std::chrono::milliseconds(ms)));
}

json TimeOrNull(int64_t ms) { return ms == 0 ? json(nullptr) : json(FormatMs(ms)); }

// --- auth -------------------------------------------------------------------------------------

Status CheckToken(const api::Request& req, const std::string& want, std::string_view what) {
  std::string_view got = req.header("Authorization");
  if (want.empty() || got != "Bearer " + want) {
    return Status::Unauthenticated(fmt::format("{}: missing or wrong bearer token", what));
  }
  return Status::Ok();
}

api::Response WithRetryAfter(const Status& st, int seconds, int http_status) {
  api::Response r = api::ErrorResponse(st, http_status);
  r.SetHeader("Retry-After", std::to_string(seconds));
  return r;
}

Result<TaskFilter> FilterFromQuery(const api::QueryParams& q) {
  TaskFilter f;
  for (auto v : q.GetAll("state")) {
    size_t pos = 0;
    std::string_view s = v;
    while (pos <= s.size()) {
      size_t comma = s.find(',', pos);
      std::string_view item = s.substr(pos, comma == s.npos ? s.npos : comma - pos);
      if (!item.empty()) {
        HANGAR_ASSIGN_OR_RETURN(TaskState st, ParseTaskState(item));
        f.states.push_back(st);
      }
      if (comma == s.npos) break;
      pos = comma + 1;
    }
  }
  auto pairs = [](std::string_view param, std::vector<std::string_view> values,
                  std::map<std::string, std::string>& out) -> Status {
    for (auto v : values) {
      auto eq = v.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        return Status::InvalidArgument(fmt::format("query '{}={}' must be key=value", param, v));
      }
      out[std::string(v.substr(0, eq))] = std::string(v.substr(eq + 1));
    }
    return Status::Ok();
  };
  HANGAR_TRY(pairs("label", q.GetAll("label"), f.labels));
  HANGAR_TRY(pairs("metadata", q.GetAll("metadata"), f.metadata));
  if (auto l = q.Get("limit")) {
    int limit = 0;
    auto [p, ec] = std::from_chars(l->data(), l->data() + l->size(), limit);
    if (ec != std::errc() || p != l->data() + l->size() || limit < 1 || limit > 1000) {
      return Status::InvalidArgument("query 'limit' must be an integer from 1 to 1000");
    }
    f.limit = limit;
  }
  f.page_token = std::string(q.Get("page_token").value_or(""));
  return f;
}

}  // namespace

// --- JSON ↔ records -----------------------------------------------------------------------------

Result<CreateRequest> CreateRequestFromJson(const json& body) {
  HANGAR_TRY(
      CheckKeys(body, "",
                {"template", "command", "resources", "labels", "paths", "secrets", "egress",
                 "timeout_s", "env", "metadata", "tier", "repo", "priority", "wait_for_capacity"}));
  CreateRequest r;
  Task& t = r.task;
  HANGAR_ASSIGN_OR_RETURN(t.template_name, StringField(body, "template", "base", 64));
  static const std::regex tmpl("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");
  if (!std::regex_match(t.template_name, tmpl)) {
    return Status::InvalidArgument(
        fmt::format("'template' '{}' is not a valid template name (1-64 of A-Z a-z 0-9 . _ -)",
                    t.template_name));
  }
  HANGAR_ASSIGN_OR_RETURN(t.command, StringList(body, "command", CreateLimits::kMaxCommandArgs));
  if (auto it = body.find("resources"); it != body.end() && !it->is_null()) {
    HANGAR_TRY(CheckKeys(*it, "resources",
                         {"cpu", "cpu_millis", "memory_mb", "disk_mb", "iops", "io_bps"}));
    auto& res = t.resources;
    if (it->contains("cpu") && it->contains("cpu_millis")) {
      return Status::InvalidArgument("give 'resources.cpu' or 'resources.cpu_millis', not both");
    }
    if (auto c = it->find("cpu"); c != it->end()) {
      if (!c->is_number()) return Status::InvalidArgument("'resources.cpu' must be a number");
      double cores = c->get<double>();
      if (!(cores * 1000 >= CreateLimits::kMinCpuMillis &&
            cores * 1000 <= CreateLimits::kMaxCpuMillis)) {
        return Status::InvalidArgument(
            fmt::format("'resources.cpu' must be between {} and {} cores",
                        CreateLimits::kMinCpuMillis / 1000.0, CreateLimits::kMaxCpuMillis / 1000));
      }
      res.cpu_millis = static_cast<int64_t>(cores * 1000 + 0.5);
    }
    HANGAR_ASSIGN_OR_RETURN(res.cpu_millis,
                            IntField(*it, "cpu_millis", res.cpu_millis, CreateLimits::kMinCpuMillis,
                                     CreateLimits::kMaxCpuMillis, "resources"));
    HANGAR_ASSIGN_OR_RETURN(res.memory_mb,
                            IntField(*it, "memory_mb", res.memory_mb, CreateLimits::kMinMemoryMb,
                                     CreateLimits::kMaxMemoryMb, "resources"));
    HANGAR_ASSIGN_OR_RETURN(res.disk_mb,
                            IntField(*it, "disk_mb", res.disk_mb, CreateLimits::kMinDiskMb,
                                     CreateLimits::kMaxDiskMb, "resources"));
    HANGAR_ASSIGN_OR_RETURN(res.iops,
                            IntField(*it, "iops", 0, 0, CreateLimits::kMaxIops, "resources"));
    HANGAR_ASSIGN_OR_RETURN(res.io_bps,
                            IntField(*it, "io_bps", 0, 0, CreateLimits::kMaxIoBps, "resources"));
  }
  HANGAR_ASSIGN_OR_RETURN(t.labels, StringMap(body, "labels", CreateLimits::kMaxMapEntries, false));
  HANGAR_ASSIGN_OR_RETURN(auto meta,
                          StringMap(body, "metadata", CreateLimits::kMaxMapEntries, false));
  t.metadata = json::object();
  for (const auto& [k, v] : meta) t.metadata[k] = v;
  HANGAR_ASSIGN_OR_RETURN(t.env, StringMap(body, "env", CreateLimits::kMaxEnvEntries, true));
  HANGAR_ASSIGN_OR_RETURN(t.paths, StringList(body, "paths", CreateLimits::kMaxListItems));
  HANGAR_ASSIGN_OR_RETURN(t.secrets, StringList(body, "secrets", 100));
  HANGAR_ASSIGN_OR_RETURN(t.egress, StringList(body, "egress", 100));
  HANGAR_ASSIGN_OR_RETURN(t.repo, StringField(body, "repo", "", 512));
  HANGAR_ASSIGN_OR_RETURN(t.timeout_s,
                          IntField(body, "timeout_s", 300, 1, CreateLimits::kMaxTimeoutS));
  HANGAR_ASSIGN_OR_RETURN(int64_t prio, IntField(body, "priority", 0, -100, 100));
  t.priority = static_cast<int>(prio);
  if (auto it = body.find("tier"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return Status::InvalidArgument("'tier' must be a string");
    auto tier = ParseTier(it->get<std::string>());
    if (!tier.ok()) return tier.status().With("'tier'");
    t.requested_tier = *tier;
  }
  if (auto it = body.find("wait_for_capacity"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return Status::InvalidArgument("'wait_for_capacity' must be a boolean");
    r.wait_for_capacity = it->get<bool>();
  }
  return r;
}

json TaskToJson(const Task& t) {
  json j = {{"id", t.id},
            {"template", t.template_name},
            {"command", t.command},
            {"state", TaskStateName(t.state)},
            {"reason", t.reason},
            {"tier", TierName(t.tier)},
            {"requested_tier", t.requested_tier ? json(TierName(*t.requested_tier)) : json()},
            {"pool", t.pool},
            {"node", t.node_id.empty() ? json() : json(t.node_id)},
            {"resources",
             {{"cpu_millis", t.resources.cpu_millis},
              {"memory_mb", t.resources.memory_mb},
              {"disk_mb", t.resources.disk_mb},
              {"iops", t.resources.iops},
              {"io_bps", t.resources.io_bps}}},
            {"labels", t.labels},
            {"metadata", t.metadata},
            {"paths", t.paths},
            {"secrets", t.secrets},
            {"egress", t.egress},
            {"repo", t.repo},
            {"priority", t.priority},
            {"timeout_s", t.timeout_s},
            {"exit_code", t.exit_code ? json(*t.exit_code) : json()},
            {"created_at", FormatMs(t.created_ms)},
            {"updated_at", FormatMs(t.updated_ms)},
            {"started_at", TimeOrNull(t.started_ms)},
            {"ended_at", TimeOrNull(t.ended_ms)},
            {"timeout_at", TimeOrNull(t.deadline_ms)}};
  return j;
}

json DecisionToJson(const RoutingDecision& d) {
  return {
      {"sandbox", d.task_id},           {"tier", TierName(d.tier)},           {"rule", d.rule},
      {"explanation", d.explanation},   {"policy_version", d.policy_version}, {"trace", d.trace},
      {"decided_at", FormatMs(d.at_ms)}};
}

json NodeToJson(const Node& n) {
  return {{"id", n.id},
          {"pool", n.pool},
          {"url", n.url},
          {"drivers", n.drivers},
          {"status", NodeStatusName(n.status)},
          {"capacity",
           {{"cpu_millis", n.capacity.cpu_millis},
            {"memory_mb", n.capacity.memory_mb},
            {"disk_mb", n.capacity.disk_mb},
            {"iops", n.capacity.iops}}},
          {"usage", n.usage},
          {"last_heartbeat_at", TimeOrNull(n.last_heartbeat_ms)},
          {"registered_at", TimeOrNull(n.registered_ms)}};
}

Result<NodeReport> NodeReportFromJson(const json& body) {
  HANGAR_TRY(CheckKeys(body, "",
                       {"id", "pool", "url", "token", "drivers", "capacity", "usage", "templates",
                        "bash_templates", "sandboxes"}));
  NodeReport r;
  Node& n = r.node;
  HANGAR_ASSIGN_OR_RETURN(n.id, StringField(body, "id", "", 128));
  HANGAR_ASSIGN_OR_RETURN(n.pool, StringField(body, "pool", "", 64));
  HANGAR_ASSIGN_OR_RETURN(n.url, StringField(body, "url", "", 512));
  HANGAR_ASSIGN_OR_RETURN(n.token, StringField(body, "token", "", 256));
  if (n.id.empty() || n.pool.empty() || n.url.empty() || n.token.empty()) {
    return Status::InvalidArgument("heartbeat needs 'id', 'pool', 'url' and 'token'");
  }
  HANGAR_ASSIGN_OR_RETURN(n.drivers, StringList(body, "drivers", 16));
  HANGAR_ASSIGN_OR_RETURN(r.templates, StringList(body, "templates", 10000));
  HANGAR_ASSIGN_OR_RETURN(r.bash_templates, StringList(body, "bash_templates", 10000));
  if (auto c = body.find("capacity"); c != body.end()) {
    HANGAR_TRY(CheckKeys(*c, "capacity", {"cpu_millis", "memory_mb", "disk_mb", "iops"}));
    constexpr int64_t kBig = int64_t{1} << 40;
    HANGAR_ASSIGN_OR_RETURN(n.capacity.cpu_millis, IntField(*c, "cpu_millis", 0, 0, kBig));
    HANGAR_ASSIGN_OR_RETURN(n.capacity.memory_mb, IntField(*c, "memory_mb", 0, 0, kBig));
    HANGAR_ASSIGN_OR_RETURN(n.capacity.disk_mb, IntField(*c, "disk_mb", 0, 0, kBig));
    HANGAR_ASSIGN_OR_RETURN(n.capacity.iops, IntField(*c, "iops", 0, 0, kBig));
  }
  if (auto u = body.find("usage"); u != body.end() && u->is_object()) n.usage = *u;
  if (auto s = body.find("sandboxes"); s != body.end() && !s->is_null()) {
    if (!s->is_array()) return Status::InvalidArgument("'sandboxes' must be an array");
    for (const auto& e : *s) {
      if (!e.is_object() || !e.contains("id") || !e["id"].is_string()) {
        return Status::InvalidArgument("'sandboxes[]' items need a string 'id'");
      }
      r.sandboxes.push_back({e["id"].get<std::string>(), e.value("state", ""), e});
    }
  }
  return r;
}

json NodeReportToJson(const NodeReport& r) {
  json sandboxes = json::array();
  for (const auto& s : r.sandboxes) {
    json e = s.info.is_object() ? s.info : json::object();
    e["id"] = s.id;
    e["state"] = s.state;
    sandboxes.push_back(e);
  }
  return {{"id", r.node.id},
          {"pool", r.node.pool},
          {"url", r.node.url},
          {"token", r.node.token},
          {"drivers", r.node.drivers},
          {"capacity",
           {{"cpu_millis", r.node.capacity.cpu_millis},
            {"memory_mb", r.node.capacity.memory_mb},
            {"disk_mb", r.node.capacity.disk_mb},
            {"iops", r.node.capacity.iops}}},
          {"usage", r.node.usage},
          {"templates", r.templates},
          {"bash_templates", r.bash_templates},
          {"sandboxes", sandboxes}};
}

// --- routes -------------------------------------------------------------------------------------

std::string_view ApiKeyOf(const api::Request& req) {
  std::string_view auth = req.header("Authorization");
  if (auth.substr(0, 7) == "Bearer ") return auth.substr(7);
  return req.header("X-API-Key");
}

Status AddControlRoutes(api::Router& router, const ApiOptions& options) {
  ControlService* svc = options.service;
  if (svc == nullptr) return Status::InvalidArgument("AddControlRoutes: no service");
  // Every /v1 route (but admin) authenticates the caller's team first.
  auto team_route = [svc](auto handler) {
    return [svc, handler](const api::Request& req) -> Result<api::Response> {
      HANGAR_ASSIGN_OR_RETURN(Team team, svc->Authenticate(ApiKeyOf(req)));
      return handler(req, team);
    };
  };
  api::RouteOptions blocking{.blocking = true};
  std::string admin = options.admin_token, join = options.join_token;

  HANGAR_TRY(router.Post(
      "/v1/sandboxes",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(json body, api::ParseJsonBody(req));
        HANGAR_ASSIGN_OR_RETURN(CreateRequest cr, CreateRequestFromJson(body));
        std::string_view key = req.header("Idempotency-Key");
        if (key.size() > 256) {
          return Status::InvalidArgument("header 'Idempotency-Key' is longer than 256 bytes");
        }
        cr.task.idempotency_key = std::string(key);
        auto out = svc->Create(team, std::move(cr));
        if (!out.ok()) {
          if (out.status().code() == Code::kResourceExhausted) {
            return WithRetryAfter(out.status(), 5, 429);
          }
          if (out.status().code() == Code::kUnavailable) {
            return WithRetryAfter(out.status(), 10, 503);
          }
          return out.status();
        }
        const Task& t = out->task;
        // 202: accepted, not running yet (queued, or still starting — poll it).
        int status = !out->created                                                       ? 200
                     : t.state == TaskState::kPending || t.state == TaskState::kStarting ? 202
                                                                                         : 201;
        return api::JsonResponse(TaskToJson(t), status);
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/sandboxes",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto q, req.query());
        HANGAR_ASSIGN_OR_RETURN(TaskFilter f, FilterFromQuery(q));
        HANGAR_ASSIGN_OR_RETURN(TaskPage page, svc->List(team, f));
        json items = json::array();
        for (const auto& t : page.tasks) items.push_back(TaskToJson(t));
        return api::JsonResponse(
            {{"sandboxes", items},
             {"next_page_token",
              page.next_page_token.empty() ? json() : json(page.next_page_token)}});
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/sandboxes/{id}",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(Task t, svc->Get(team, std::string(req.param("id"))));
        return api::JsonResponse(TaskToJson(t));
      }),
      blocking));
  HANGAR_TRY(router.Delete(
      "/v1/sandboxes/{id}",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(Task t, svc->Kill(team, std::string(req.param("id"))));
        return api::JsonResponse(TaskToJson(t));
      }),
      blocking));
  HANGAR_TRY(router.Post(
      "/v1/sandboxes/{id}/timeout",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(json body, api::ParseJsonBody(req));
        HANGAR_TRY(CheckKeys(body, "", {"timeout_s"}));
        if (!body.contains("timeout_s")) return Status::InvalidArgument("'timeout_s' is required");
        HANGAR_ASSIGN_OR_RETURN(int64_t s,
                                IntField(body, "timeout_s", 0, 1, CreateLimits::kMaxTimeoutS));
        HANGAR_ASSIGN_OR_RETURN(Task t, svc->SetTimeout(team, std::string(req.param("id")), s));
        return api::JsonResponse(TaskToJson(t));
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/sandboxes/{id}/route",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto d, svc->Explain(team, std::string(req.param("id"))));
        return api::JsonResponse(DecisionToJson(d));
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/sandboxes/{id}/history",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto h, svc->History(team, std::string(req.param("id"))));
        json out = json::array();
        for (const auto& c : h) {
          out.push_back({{"state", TaskStateName(c.state)},
                         {"reason", c.reason},
                         {"node", c.node_id.empty() ? json() : json(c.node_id)},
                         {"at", FormatMs(c.at_ms)}});
        }
        return api::JsonResponse({{"history", out}});
      }),
      blocking));
  // Exec: proxied to the node as it streams (NDJSON events, see the node API).
  HANGAR_TRY(router.Post(
      "/v1/sandboxes/{id}/exec",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(json body, api::ParseJsonBody(req));
        HANGAR_TRY(
            CheckKeys(body, "", {"cmd", "args", "env", "cwd", "user", "timeout_ms", "stdin"}));
        HANGAR_ASSIGN_OR_RETURN(auto where, svc->Locate(team, std::string(req.param("id"))));
        auto [response, writer] = api::Response::Stream(200, "application/x-ndjson");
        std::thread([svc, node = where.first, id = where.second.id, body, writer] {
          (void)svc;
          auto client = NewHttpNodeClient();
          Status st = client->Exec(node, id, body, [&](const json& ev) -> Status {
            return writer->Write(ev.dump() + "\n");
          });
          if (!st.ok() && !writer->cancelled()) {
            (void)writer->Write(
                json{{"event", "error"}, {"code", CodeName(st.code())}, {"message", st.message()}}
                    .dump() +
                "\n");
          }
          writer->Close();
        }).detach();
        return std::move(response);
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/sandboxes/{id}/files",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto q, req.query());
        std::string path(q.Get("path").value_or(""));
        if (path.empty()) return Status::InvalidArgument("query parameter 'path' is required");
        std::string user(q.Get("user").value_or(""));
        HANGAR_ASSIGN_OR_RETURN(auto where, svc->Locate(team, std::string(req.param("id"))));
        auto client = NewHttpNodeClient();
        if (q.Has("list")) {
          HANGAR_ASSIGN_OR_RETURN(json entries,
                                  client->ListDir(where.first, where.second.id, path, user));
          return api::JsonResponse(entries);
        }
        HANGAR_ASSIGN_OR_RETURN(std::string data,
                                client->ReadFile(where.first, where.second.id, path, user));
        return api::Response::Text(std::move(data), 200, "application/octet-stream");
      }),
      blocking));
  HANGAR_TRY(router.Put(
      "/v1/sandboxes/{id}/files",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto q, req.query());
        std::string path(q.Get("path").value_or(""));
        if (path.empty()) return Status::InvalidArgument("query parameter 'path' is required");
        HANGAR_ASSIGN_OR_RETURN(auto where, svc->Locate(team, std::string(req.param("id"))));
        auto client = NewHttpNodeClient();
        HANGAR_ASSIGN_OR_RETURN(json w,
                                client->WriteFile(where.first, where.second.id, path, req.body(),
                                                  std::string(q.Get("user").value_or(""))));
        return api::JsonResponse(w, 201);
      }),
      api::RouteOptions{.max_body_bytes = size_t{100} << 20, .blocking = true}));
  // Logs: the command's output events; ?follow=1 streams until the task ends.
  HANGAR_TRY(router.Get(
      "/v1/sandboxes/{id}/logs",
      team_route([svc](const api::Request& req, const Team& team) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto q, req.query());
        HANGAR_ASSIGN_OR_RETURN(Task t, svc->Get(team, std::string(req.param("id"))));
        std::string path = svc->LogPath(t.id);
        if (!q.Has("follow")) {
          std::ifstream in(path, std::ios::binary);
          std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
          return api::Response::Text(std::move(data), 200, "application/x-ndjson");
        }
        auto [response, writer] = api::Response::Stream(200, "application/x-ndjson");
        std::thread([svc, team, id = t.id, path, writer] {
          std::ifstream in;
          std::string line;
          for (;;) {
            if (!in.is_open()) in.open(path, std::ios::binary);
            bool wrote = false;
            while (in.is_open() && std::getline(in, line)) {
              if (in.eof()) {  // a partial last line: read it again when complete
                in.clear();
                in.seekg(-static_cast<std::streamoff>(line.size()), std::ios::cur);
                break;
              }
              if (!writer->Write(line + "\n").ok()) return;
              wrote = true;
            }
            if (in.is_open()) in.clear();
            auto cur = svc->Get(team, id);
            if (!cur.ok() || IsTerminal(cur->state)) {
              // Drain what the runner wrote last, then say how it ended.
              while (in.is_open() && std::getline(in, line)) {
                if (!writer->Write(line + "\n").ok()) return;
              }
              if (cur.ok()) {
                (void)writer->Write(
                    json{{"event", "end"},
                         {"state", TaskStateName(cur->state)},
                         {"reason", cur->reason},
                         {"exit_code", cur->exit_code ? json(*cur->exit_code) : json()}}
                        .dump() +
                    "\n");
              }
              writer->Close();
              return;
            }
            if (writer->cancelled()) return;
            if (!wrote) std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
        }).detach();
        return std::move(response);
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/nodes", team_route([svc](const api::Request&, const Team&) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(auto nodes, svc->Nodes());
        json out = json::array();
        for (const auto& n : nodes) out.push_back(NodeToJson(n));
        return api::JsonResponse({{"nodes", out}});
      }),
      blocking));
  HANGAR_TRY(router.Get(
      "/v1/pools", team_route([svc](const api::Request&, const Team&) -> Result<api::Response> {
        HANGAR_ASSIGN_OR_RETURN(json pools, svc->PoolStatus());
        return api::JsonResponse({{"pools", pools}});
      }),
      blocking));

  // Operator routes.
  HANGAR_TRY(router.Post(
      "/v1/admin/teams",
      [svc, admin](const api::Request& req) -> Result<api::Response> {
        HANGAR_TRY(CheckToken(req, admin, "admin API"));
        HANGAR_ASSIGN_OR_RETURN(json body, api::ParseJsonBody(req));
        HANGAR_TRY(CheckKeys(body, "", {"name", "max_concurrent"}));
        HANGAR_ASSIGN_OR_RETURN(std::string name, StringField(body, "name", "", 64));
        HANGAR_ASSIGN_OR_RETURN(int64_t max, IntField(body, "max_concurrent", 100, 1, 100000));
        HANGAR_ASSIGN_OR_RETURN(Team team, svc->CreateTeam(name, max));
        HANGAR_ASSIGN_OR_RETURN(auto key, svc->CreateApiKey(team.id, "initial"));
        return api::JsonResponse({{"id", team.id},
                                  {"name", team.name},
                                  {"max_concurrent", team.max_concurrent},
                                  {"api_key", key.first},
                                  {"api_key_id", key.second.id}},
                                 201);
      },
      blocking));
  HANGAR_TRY(router.Post(
      "/v1/admin/policy/reload",
      [svc, admin](const api::Request& req) -> Result<api::Response> {
        HANGAR_TRY(CheckToken(req, admin, "admin API"));
        HANGAR_TRY(svc->ReloadPolicy());
        return api::JsonResponse({{"policy_version", svc->PolicyVersion()}});
      },
      blocking));
  // Node agents.
  HANGAR_TRY(router.Post(
      "/internal/v1/nodes/heartbeat",
      [svc, join](const api::Request& req) -> Result<api::Response> {
        HANGAR_TRY(CheckToken(req, join, "node heartbeat"));
        HANGAR_ASSIGN_OR_RETURN(json body, api::ParseJsonBody(req));
        HANGAR_ASSIGN_OR_RETURN(NodeReport report, NodeReportFromJson(body));
        HANGAR_TRY(svc->Heartbeat(report));
        return api::JsonResponse({{"ok", true}});
      },
      api::RouteOptions{.max_body_bytes = size_t{16} << 20, .blocking = true}));
  return Status::Ok();
}

}  // namespace hangar::control
