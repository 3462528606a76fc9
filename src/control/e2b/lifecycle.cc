#include "hangar/e2b/lifecycle.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <charconv>
#include <regex>

#include <fmt/format.h>

#include "hangar/api/error.h"
#include "hangar/api/json.h"
#include "hangar/api/query.h"
#include "hangar/base/clock.h"
#include "hangar/control/api.h"
#include "hangar/envd/version.h"

namespace hangar::e2b {
namespace {

using control::Task;
using control::TaskState;
using control::Team;
using nlohmann::json;

// Metadata keys Hangar keeps for itself; never accepted from a caller.
constexpr std::string_view kReservedPrefix = "hangar.";
constexpr std::string_view kSecureKey = "hangar.e2b.secure";
constexpr int64_t kDefaultTimeoutS = 15;  // E2B's API default when the body has none
constexpr int64_t kMaxListLimit = 1000;

// --- E2B's error shape -------------------------------------------------------------------------

api::Response E2bError(int http_status, std::string message) {
  return api::JsonResponse({{"code", http_status}, {"message", std::move(message)}}, http_status);
}

api::Response E2bError(const Status& st) {
  return E2bError(api::HttpStatusFor(st.code()), st.message());
}

// Runs `fn`; any error becomes E2B's {code, message} body.
template <typename Fn>
api::Handler Wrap(control::ControlService* svc, Fn fn) {
  return [svc, fn](const api::Request& req) -> Result<api::Response> {
    auto team = svc->Authenticate(control::ApiKeyOf(req));
    if (!team.ok()) return E2bError(401, "Invalid API key: " + team.status().message());
    Result<api::Response> r = fn(req, *team);
    if (!r.ok()) return E2bError(r.status());
    return r;
  };
}

Result<json> Body(const api::Request& req) {
  if (req.body().empty()) return json::object();
  HANGAR_ASSIGN_OR_RETURN(json body, api::ParseJsonBody(req));
  if (!body.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  return body;
}

Result<int64_t> Seconds(const json& body, std::string_view name, int64_t fallback) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > control::CreateLimits::kMaxTimeoutS) {
    return Status::InvalidArgument(
        fmt::format("'{}' must be an integer number of seconds from 0 "
                    "to {}",
                    name, control::CreateLimits::kMaxTimeoutS));
  }
  return std::max<int64_t>(it->get<int64_t>(), 1);
}

Result<std::map<std::string, std::string>> Strings(const json& body, std::string_view name,
                                                   const std::regex& key_re,
                                                   std::string_view key_rule) {
  std::map<std::string, std::string> out;
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_object()) {
    return Status::InvalidArgument(fmt::format("'{}' must be an object of strings", name));
  }
  if (it->size() > control::CreateLimits::kMaxEnvEntries) {
    return Status::InvalidArgument(
        fmt::format("'{}' has more than {} entries", name, control::CreateLimits::kMaxEnvEntries));
  }
  for (const auto& [k, v] : it->items()) {
    if (!std::regex_match(k, key_re)) {
      return Status::InvalidArgument(
          fmt::format("'{}' key '{}' is not valid ({})", name, k, key_rule));
    }
    if (!v.is_string())
      return Status::InvalidArgument(fmt::format("'{}.{}' must be a string", name, k));
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > control::CreateLimits::kMaxString || s.find('\0') != std::string::npos) {
      return Status::InvalidArgument(fmt::format("'{}.{}' must be at most {} bytes without NUL",
                                                 name, k, control::CreateLimits::kMaxString));
    }
    out[k] = s;
  }
  return out;
}

bool Truthy(const json& body, std::string_view name) {
  auto it = body.find(name);
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

bool Present(const json& body, std::string_view name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return false;
  if ((it->is_object() || it->is_array()) && it->empty()) return false;
  return true;
}

std::string Time(int64_t ms) {
  return FormatRfc3339(Clock::WallTime(std::chrono::milliseconds(ms)));
}

int64_t NowMs(const LifecycleOptions& o) {
  Clock* c = o.clock != nullptr ? o.clock : &SystemClock::Instance();
  return std::chrono::duration_cast<std::chrono::milliseconds>(c->WallNow().time_since_epoch())
      .count();
}

bool IsSecure(const Task& t) {
  auto it = t.metadata.find(kSecureKey);
  return it == t.metadata.end() || *it != "false";
}

// The metadata a caller sees: theirs, plus the tier Hangar chose.
json Metadata(const Task& t) {
  json m = json::object();
  for (const auto& [k, v] : t.metadata.items()) {
    if (std::string_view(k).substr(0, kReservedPrefix.size()) != kReservedPrefix) m[k] = v;
  }
  m["hangar.tier"] = std::string(control::TierName(t.tier));
  return m;
}

std::string E2bState(TaskState s) { return s == TaskState::kPaused ? "paused" : "running"; }

// The body of create and connect (E2B's `Sandbox`).
json SandboxJson(const Task& t, const std::string& secret) {
  json j = {{"sandboxID", t.id},
            {"templateID", t.template_name},
            {"clientID", t.node_id.empty() ? "hangar" : t.node_id},
            {"envdVersion", std::string(envd::kEnvdVersion)},
            {"alias", nullptr},
            {"domain", nullptr},
            {"trafficAccessToken", nullptr}};
  j["envdAccessToken"] = IsSecure(t) ? json(AccessToken(secret, t.id)) : json(nullptr);
  return j;
}

// E2B's `ListedSandbox` / `SandboxDetail`.
json DetailJson(const Task& t, const std::string& secret, bool with_token) {
  int64_t started = t.started_ms ? t.started_ms : t.created_ms;
  json j = {{"sandboxID", t.id},
            {"templateID", t.template_name},
            {"alias", nullptr},
            {"clientID", t.node_id.empty() ? "hangar" : t.node_id},
            {"startedAt", Time(started)},
            {"endAt", Time(t.deadline_ms ? t.deadline_ms : started + t.timeout_s * 1000)},
            {"cpuCount", (t.resources.cpu_millis + 999) / 1000},
            {"memoryMB", t.resources.memory_mb},
            {"diskSizeMB", t.resources.disk_mb},
            {"metadata", Metadata(t)},
            {"state", E2bState(t.state)},
            {"envdVersion", std::string(envd::kEnvdVersion)}};
  if (with_token) {
    j["envdAccessToken"] = IsSecure(t) ? json(AccessToken(secret, t.id)) : json(nullptr);
    j["domain"] = nullptr;
  }
  return j;
}

// A sandbox E2B would still know: not ended. Ended ones are 404 as in E2B.
Result<Task> Live(control::ControlService* svc, const Team& team, const std::string& id) {
  HANGAR_ASSIGN_OR_RETURN(Task t, svc->Get(team, id));
  if (control::IsTerminal(t.state)) {
    return Status::NotFound(fmt::format("sandbox '{}' not found (it is {}: {})", id,
                                        control::TaskStateName(t.state), t.reason));
  }
  return t;
}

// Refuses what an E2B create can ask for and Hangar cannot do, naming the feature.
Status CheckUnsupported(const json& body) {
  if (Truthy(body, "allow_internet_access")) {
    return Status::InvalidArgument(
        "allow_internet_access: Hangar sandboxes have no network access beyond loopback (an "
        "egress allowlist is planned); leave it unset or false");
  }
  if (Truthy(body, "autoPause")) {
    return Status::InvalidArgument(
        "autoPause: pausing on timeout is not supported (Hangar's pause freezes a sandbox in "
        "place, it does not persist it); the sandbox is killed at its timeout");
  }
  if (Present(body, "network")) {
    return Status::InvalidArgument("network: per-sandbox network rules are not supported yet");
  }
  if (Present(body, "mcp")) return Status::InvalidArgument("mcp: the MCP gateway is not supported");
  if (Present(body, "volumeMounts")) {
    return Status::InvalidArgument("volumeMounts: volumes are not supported");
  }
  return Status::Ok();
}

Result<control::CreateRequest> CreateFromBody(const json& body, const LifecycleOptions& o) {
  HANGAR_TRY(CheckUnsupported(body));
  control::CreateRequest cr;
  Task& t = cr.task;
  auto tmpl = body.find("templateID");
  if (tmpl != body.end() && !tmpl->is_null() && !tmpl->is_string()) {
    return Status::InvalidArgument("'templateID' must be a string");
  }
  std::string name = tmpl != body.end() && tmpl->is_string() ? tmpl->get<std::string>() : "";
  if (name.empty() || name == "base") name = o.default_template;
  static const std::regex name_re("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
  if (!std::regex_match(name, name_re)) {
    return Status::InvalidArgument(fmt::format("'templateID' '{}' is not a valid name", name));
  }
  t.template_name = name;
  HANGAR_ASSIGN_OR_RETURN(t.timeout_s, Seconds(body, "timeout", kDefaultTimeoutS));
  static const std::regex label_re("^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$");
  static const std::regex env_re("^[A-Za-z_][A-Za-z0-9_]{0,255}$");
  HANGAR_ASSIGN_OR_RETURN(auto metadata,
                          Strings(body, "metadata", label_re, "1-63 of A-Z a-z 0-9 . _ / -"));
  if (metadata.size() > control::CreateLimits::kMaxMapEntries) {
    return Status::InvalidArgument(
        fmt::format("'metadata' has more than {} entries", control::CreateLimits::kMaxMapEntries));
  }
  for (const auto& [k, v] : metadata) {
    if (std::string_view(k).substr(0, kReservedPrefix.size()) == kReservedPrefix) {
      return Status::InvalidArgument(
          fmt::format("'metadata' key '{}': the prefix 'hangar.' is reserved", k));
    }
  }
  HANGAR_ASSIGN_OR_RETURN(t.env, Strings(body, "envVars", env_re, "an environment variable name"));
  if (auto s = body.find("secure"); s != body.end() && !s->is_null() && !s->is_boolean()) {
    return Status::InvalidArgument("'secure' must be a boolean");
  }
  bool secure = !body.contains("secure") || body["secure"].is_null() || body["secure"].get<bool>();
  // Routed like any task: the metadata are its labels.
  t.labels = metadata;
  t.metadata = json(metadata);
  t.metadata[std::string(kSecureKey)] = secure ? "true" : "false";
  t.resources.cpu_millis = o.cpu_millis;
  t.resources.memory_mb = o.memory_mb;
  t.resources.disk_mb = o.disk_mb;
  cr.require_bash = true;
  return cr;
}

Result<api::Response> Create(const api::Request& req, const Team& team, const LifecycleOptions& o) {
  HANGAR_ASSIGN_OR_RETURN(json body, Body(req));
  HANGAR_ASSIGN_OR_RETURN(control::CreateRequest cr, CreateFromBody(body, o));
  auto out = o.service->Create(team, std::move(cr));
  if (!out.ok()) {
    if (out.status().code() == Code::kResourceExhausted)
      return E2bError(429, out.status().message());
    return out.status();
  }
  Task t = out->task;
  if (t.state == TaskState::kRunning) return api::JsonResponse(SandboxJson(t, o.token_secret), 201);
  if (control::IsTerminal(t.state)) {
    return E2bError(t.reason.find("template") != std::string::npos ? 400 : 500,
                    fmt::format("sandbox {} failed to start: {}", t.id, t.reason));
  }
  // Still pending or starting after the service's wait: E2B callers expect a usable sandbox or
  // an error, so it is killed (with the reason) rather than left to start unseen.
  (void)o.service->Kill(team, t.id);
  return E2bError(503,
                  fmt::format("sandbox {} did not start in time ({}); try again", t.id, t.reason));
}

// GET /v2/sandboxes: metadata=<urlencoded "k=v&k2=v2">, state (repeated or comma-separated),
// limit, nextToken.
Result<api::Response> List(const api::Request& req, const Team& team, const LifecycleOptions& o) {
  HANGAR_ASSIGN_OR_RETURN(api::QueryParams q, req.query());
  control::TaskFilter f;
  if (auto m = q.Get("metadata"); m && !m->empty()) {
    // The SDK encodes each key and value, then the pairs as a query string.
    HANGAR_ASSIGN_OR_RETURN(api::QueryParams pairs, api::QueryParams::Parse(*m));
    for (const auto& [k, v] : pairs.items()) {
      HANGAR_ASSIGN_OR_RETURN(std::string key, api::PercentDecode(k));
      HANGAR_ASSIGN_OR_RETURN(std::string value, api::PercentDecode(v));
      f.metadata[key] = value;
    }
  }
  for (auto v : q.GetAll("state")) {
    size_t at = 0;
    std::string_view all = v;
    while (at <= all.size()) {
      size_t end = std::min(all.find(',', at), all.size());
      std::string_view s = all.substr(at, end - at);
      at = end + 1;
      if (s.empty()) continue;
      if (s == "running") {
        f.states.push_back(TaskState::kRunning);
      } else if (s == "paused") {
        f.states.push_back(TaskState::kPaused);
      } else {
        return Status::InvalidArgument(fmt::format("state '{}' is not one of: running, paused", s));
      }
    }
  }
  if (f.states.empty()) f.states = {TaskState::kRunning, TaskState::kPaused};
  f.limit = 100;
  if (auto l = q.Get("limit")) {
    int64_t n = 0;
    auto [p, ec] = std::from_chars(l->data(), l->data() + l->size(), n);
    if (ec != std::errc() || p != l->data() + l->size() || n < 1 || n > kMaxListLimit) {
      return Status::InvalidArgument(
          fmt::format("'limit' must be an integer from 1 to {}", kMaxListLimit));
    }
    f.limit = static_cast<int>(n);
  }
  if (auto n = q.Get("nextToken")) f.page_token = std::string(*n);
  for (const char* unsupported : {"startedAfter", "template"}) {
    if (q.Has(unsupported)) {
      return Status::InvalidArgument(fmt::format("filter '{}' is not supported", unsupported));
    }
  }
  if (auto order = q.Get("order"); order && *order != "desc") {
    return Status::InvalidArgument("order: only 'desc' (newest first) is supported");
  }
  HANGAR_ASSIGN_OR_RETURN(control::TaskPage page, o.service->List(team, f));
  json items = json::array();
  for (const Task& t : page.tasks) items.push_back(DetailJson(t, o.token_secret, false));
  api::Response r = api::JsonResponse(items);
  if (!page.next_page_token.empty()) r.SetHeader("X-Next-Token", page.next_page_token);
  return r;
}

// connect: a running sandbox is answered as it is (200), a paused one resumed (201); a timeout
// in the body only ever extends its life.
Result<api::Response> Connect(const api::Request& req, const Team& team,
                              const LifecycleOptions& o) {
  std::string id(req.param("id"));
  HANGAR_ASSIGN_OR_RETURN(json body, Body(req));
  HANGAR_ASSIGN_OR_RETURN(int64_t timeout, Seconds(body, "timeout", 0));
  HANGAR_ASSIGN_OR_RETURN(Task t, Live(o.service, team, id));
  int status = 200;
  if (t.state == TaskState::kPaused) {
    HANGAR_ASSIGN_OR_RETURN(t, o.service->Resume(team, id));
    status = 201;
  }
  if (t.state != TaskState::kRunning) {
    return Status::FailedPrecondition(
        fmt::format("sandbox '{}' is {} ({})", id, control::TaskStateName(t.state), t.reason));
  }
  int64_t now = NowMs(o);
  if (timeout > 0 && now + timeout * 1000 > t.deadline_ms) {
    HANGAR_ASSIGN_OR_RETURN(t, o.service->SetTimeout(team, id, timeout));
  }
  return api::JsonResponse(SandboxJson(t, o.token_secret), status);
}

}  // namespace

std::string AccessToken(std::string_view secret, std::string_view sandbox_id) {
  std::string msg = "envd-access:" + std::string(sandbox_id);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), mac, &len);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) out += fmt::format("{:02x}", mac[i]);
  return out;
}

std::function<Result<ProxyTarget>(std::string_view)> TrafficResolver(
    control::ControlService* service, std::string token_secret) {
  return [service, secret = std::move(token_secret)](std::string_view id) -> Result<ProxyTarget> {
    HANGAR_ASSIGN_OR_RETURN(auto where, service->LocateAny(std::string(id)));
    ProxyTarget target;
    target.node = where.first;
    target.sandbox_id = where.second.id;
    if (IsSecure(where.second)) target.access_token = AccessToken(secret, where.second.id);
    return target;
  };
}

Status AddLifecycleRoutes(api::Router& router, const LifecycleOptions& options) {
  if (options.service == nullptr) return Status::InvalidArgument("AddLifecycleRoutes: no service");
  if (options.token_secret.size() < 32) {
    return Status::InvalidArgument("AddLifecycleRoutes: the token secret needs at least 32 bytes");
  }
  const LifecycleOptions o = options;
  control::ControlService* svc = o.service;
  api::RouteOptions blocking{.blocking = true};
  auto create =
      Wrap(svc, [o](const api::Request& req, const Team& team) { return Create(req, team, o); });
  HANGAR_TRY(router.Post("/sandboxes", create, blocking));
  HANGAR_TRY(router.Post("/v2/sandboxes", create, blocking));
  auto list =
      Wrap(svc, [o](const api::Request& req, const Team& team) { return List(req, team, o); });
  HANGAR_TRY(router.Get("/sandboxes", list, blocking));
  HANGAR_TRY(router.Get("/v2/sandboxes", list, blocking));
  HANGAR_TRY(router.Get(
      "/sandboxes/{id}",
      Wrap(svc,
           [o](const api::Request& req, const Team& team) -> Result<api::Response> {
             HANGAR_ASSIGN_OR_RETURN(Task t, Live(o.service, team, std::string(req.param("id"))));
             return api::JsonResponse(DetailJson(t, o.token_secret, true));
           }),
      blocking));
  HANGAR_TRY(
      router.Delete("/sandboxes/{id}",
                    Wrap(svc,
                         [o](const api::Request& req, const Team& team) -> Result<api::Response> {
                           std::string id(req.param("id"));
                           HANGAR_TRY(Live(o.service, team, id).status());
                           HANGAR_TRY(o.service->Kill(team, id).status());
                           return api::Response::NoContent();
                         }),
                    blocking));
  HANGAR_TRY(
      router.Post("/sandboxes/{id}/timeout",
                  Wrap(svc,
                       [o](const api::Request& req, const Team& team) -> Result<api::Response> {
                         std::string id(req.param("id"));
                         HANGAR_ASSIGN_OR_RETURN(json body, Body(req));
                         if (!body.contains("timeout")) {
                           return Status::InvalidArgument("'timeout' (seconds) is required");
                         }
                         HANGAR_ASSIGN_OR_RETURN(int64_t s, Seconds(body, "timeout", 0));
                         HANGAR_TRY(Live(o.service, team, id).status());
                         HANGAR_TRY(o.service->SetTimeout(team, id, s).status());
                         return api::Response::NoContent();
                       }),
                  blocking));
  HANGAR_TRY(router.Post(
      "/sandboxes/{id}/refreshes",
      Wrap(svc,
           [o](const api::Request& req, const Team& team) -> Result<api::Response> {
             std::string id(req.param("id"));
             HANGAR_ASSIGN_OR_RETURN(json body, Body(req));
             HANGAR_ASSIGN_OR_RETURN(int64_t s, Seconds(body, "duration", kDefaultTimeoutS));
             HANGAR_ASSIGN_OR_RETURN(Task t, Live(o.service, team, id));
             if (NowMs(o) + s * 1000 > t.deadline_ms) {
               HANGAR_TRY(o.service->SetTimeout(team, id, s).status());
             }
             return api::Response::NoContent();
           }),
      blocking));
  auto connect =
      Wrap(svc, [o](const api::Request& req, const Team& team) { return Connect(req, team, o); });
  HANGAR_TRY(router.Post("/sandboxes/{id}/connect", connect, blocking));
  HANGAR_TRY(router.Post("/v2/sandboxes/{id}/connect", connect, blocking));
  HANGAR_TRY(
      router.Post("/sandboxes/{id}/pause",
                  Wrap(svc,
                       [o](const api::Request& req, const Team& team) -> Result<api::Response> {
                         std::string id(req.param("id"));
                         HANGAR_ASSIGN_OR_RETURN(Task t, Live(o.service, team, id));
                         if (t.state == TaskState::kPaused) {
                           return E2bError(409, fmt::format("sandbox '{}' is already paused", id));
                         }
                         HANGAR_TRY(o.service->Pause(team, id).status());
                         return api::Response::NoContent();
                       }),
                  blocking));
  HANGAR_TRY(
      router.Post("/sandboxes/{id}/resume",
                  Wrap(svc,
                       [o](const api::Request& req, const Team& team) -> Result<api::Response> {
                         std::string id(req.param("id"));
                         HANGAR_ASSIGN_OR_RETURN(Task t, Live(o.service, team, id));
                         if (t.state == TaskState::kRunning) {
                           return E2bError(409, fmt::format("sandbox '{}' is already running", id));
                         }
                         HANGAR_ASSIGN_OR_RETURN(t, o.service->Resume(team, id));
                         return api::JsonResponse(SandboxJson(t, o.token_secret), 201);
                       }),
                  blocking));
  // What E2B has and Hangar does not (yet): a clear 400 instead of a 404 that reads like a typo.
  struct Missing {
    const char* method;
    const char* pattern;
    const char* why;
  };
  for (const Missing& m : {
           Missing{"GET", "/sandboxes/{id}/metrics",
                   "sandbox metrics are not available through the e2b API yet"},
           Missing{"GET", "/sandboxes/{id}/logs",
                   "use `hangar logs` or GET /v1/sandboxes/{id}/logs"},
           Missing{"POST", "/sandboxes/{id}/snapshots", "snapshots are not supported"},
           Missing{"POST", "/sandboxes/{id}/fork", "fork is not supported"},
           Missing{"PUT", "/sandboxes/{id}/network", "network rules are not supported yet"},
       }) {
    std::string why = m.why;
    HANGAR_TRY(router.Handle(
        m.method, m.pattern,
        Wrap(svc,
             [why](const api::Request& req, const Team& team) -> Result<api::Response> {
               (void)req;
               (void)team;
               return E2bError(400, why);
             }),
        blocking));
  }
  return Status::Ok();
}

}  // namespace hangar::e2b
