#include "hangar/e2b/proxy.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cctype>
#include <charconv>
#include <memory>

#include <nlohmann/json.hpp>

#include "hangar/api/error.h"
#include "hangar/api/forward.h"
#include "hangar/api/json.h"
#include "hangar/api/query.h"
#include "hangar/base/base64.h"
#include "hangar/base/log.h"

namespace hangar::e2b {

namespace {

// Which protocol's error shape a route answers with.
enum class Kind { kConnect, kFiles };

// Request headers envd understands, passed on as sent (Content-Type always is).
const std::vector<std::string> kPassHeaders = {"Content-Encoding",
                                               "Accept",
                                               "Accept-Encoding",
                                               "Connect-Protocol-Version",
                                               "Connect-Timeout-Ms",
                                               "Connect-Accept-Encoding",
                                               "Connect-Content-Encoding",
                                               "Keepalive-Ping-Interval",
                                               "X-Metadata-*"};

bool ConstantTimeEquals(std::string_view given, std::string_view expected) {
  if (given.size() != expected.size()) return false;
  return CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

std::string Sha256(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return {};
  return std::string(reinterpret_cast<const char*>(md), len);
}

api::Response JsonError(int http_status, nlohmann::json body) {
  api::Response r;
  r.status = http_status;
  r.content_type = "application/json";
  r.body = api::DumpJson(body);
  return r;
}

// Connect's spelling of the codes used here, and envd's /files shape with the HTTP status.
api::Response RouteError(Kind kind, int http_status, std::string_view connect_code,
                         const std::string& message) {
  if (kind == Kind::kConnect) {
    return JsonError(http_status, {{"code", connect_code}, {"message", message}});
  }
  return JsonError(http_status, {{"code", http_status}, {"message", message}});
}

// E2B's proxy errors: the same JSON on every route (the SDK reads the 502 itself).
api::Response SandboxNotFound(std::string_view id) {
  return JsonError(502,
                   {{"sandboxId", id}, {"message", "The sandbox was not found"}, {"code", 502}});
}

api::Response PortClosed(std::string_view id, std::string_view port) {
  return JsonError(502, {{"sandboxId", id},
                         {"message", "The sandbox is running but port is not open"},
                         {"port", port},
                         {"code", 502}});
}

bool ValidSandboxId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

// The sandbox and port a call is for: E2b-Sandbox-Id / E2b-Sandbox-Port, else a Host of the
// form "<port>-<id>.<domain>" (E2B's sandbox host names). Port "" when not given.
struct Destination {
  std::string id;
  std::string port;
};

std::optional<Destination> FindDestination(const api::Request& req) {
  std::string_view id = req.header("E2b-Sandbox-Id");
  if (!id.empty()) return Destination{std::string(id), std::string(req.header("E2b-Sandbox-Port"))};
  std::string_view host = req.header("Host");
  size_t dash = host.find('-');
  size_t dot = host.find('.');
  if (dash == std::string_view::npos || dot == std::string_view::npos || dash == 0 ||
      dot < dash + 2) {
    return std::nullopt;
  }
  std::string_view port = host.substr(0, dash);
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return Destination{std::string(host.substr(dash + 1, dot - dash - 1)), std::string(port)};
}

// The raw query without the signature parameters, which are for this proxy alone.
std::string StripSignature(std::string_view query) {
  std::string out;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view item = query.substr(pos, amp - pos);
    std::string_view key = item.substr(0, item.find('='));
    auto decoded = api::PercentDecode(key, true);
    std::string_view k = decoded.ok() ? std::string_view(*decoded) : key;
    if (!item.empty() && k != "signature" && k != "signature_expiration") {
      if (!out.empty()) out += '&';
      out += item;
    }
    pos = amp + 1;
  }
  return out;
}

// envd's /files rule: X-Access-Token when present (and then it must match), else a signed URL.
Status CheckFilesAccess(const api::Request& req, std::string_view operation,
                        const std::string& token, Clock& clock) {
  std::string_view header = req.header("X-Access-Token");
  if (!header.empty()) {
    if (ConstantTimeEquals(header, token)) return Status::Ok();
    return Status::Unauthenticated("access token present in header but does not match");
  }
  HANGAR_ASSIGN_OR_RETURN(api::QueryParams q, req.query());
  auto signature = q.Get("signature");
  if (!signature) {
    return Status::Unauthenticated(
        "unauthorized access, please provide a valid access token or method signing if supported");
  }
  auto expiration = q.Get("signature_expiration");
  std::string expected =
      FilesSignature(q.Get("path").value_or(""), operation, q.Get("username").value_or(""), token,
                     expiration.value_or(""));
  if (!ConstantTimeEquals(*signature, expected))
    return Status::Unauthenticated("invalid signature");
  if (expiration) {
    long long exp = 0;
    auto [end, ec] =
        std::from_chars(expiration->data(), expiration->data() + expiration->size(), exp);
    if (expiration->empty() || ec != std::errc() ||
        end != expiration->data() + expiration->size()) {
      return Status::Unauthenticated("invalid signature expiration");
    }
    long long now =
        std::chrono::duration_cast<std::chrono::seconds>(clock.WallNow().time_since_epoch())
            .count();
    if (exp < now) return Status::Unauthenticated("signature is already expired");
  }
  return Status::Ok();
}

struct Shared {
  ProxyOptions options;
  Clock* clock;
};

// One route: `envd_path` is what follows /envd/ on the node ("files", "process.Process/Start").
Result<api::Response> Handle(const Shared& s, const api::Request& req, Kind kind,
                             const std::string& envd_path, bool needs_token) {
  std::optional<Destination> dest = FindDestination(req);
  if (!dest) {
    return RouteError(kind, 400, "invalid_argument",
                      "missing E2b-Sandbox-Id header: the sandbox this call is for");
  }
  if (!ValidSandboxId(dest->id)) return SandboxNotFound(dest->id);
  Result<ProxyTarget> target = s.options.resolve(dest->id);
  if (!target.ok()) {
    if (target.status().code() == Code::kNotFound) return SandboxNotFound(dest->id);
    log::Warn("e2b proxy: resolving a sandbox failed",
              {{"sandbox", dest->id}, {"error", target.status().ToString()}});
    return RouteError(kind, 503, "unavailable", target.status().message());
  }
  if (!dest->port.empty() && dest->port != std::to_string(kEnvdPort)) {
    return PortClosed(dest->id, dest->port);
  }

  if (needs_token && !target->access_token.empty()) {
    Status access;
    if (kind == Kind::kFiles) {
      access = CheckFilesAccess(req, req.method() == "POST" ? "write" : "read",
                                target->access_token, *s.clock);
    } else if (!ConstantTimeEquals(req.header("X-Access-Token"), target->access_token)) {
      access = Status::Unauthenticated(
          "unauthorized access, please provide a valid access token or method signing if "
          "supported");
    }
    if (!access.ok()) return RouteError(kind, 401, "unauthenticated", access.message());
  }

  std::string query(req.query_string());
  if (kind == Kind::kFiles) query = StripSignature(query);
  api::Upstream up;
  up.base_url = target->node.url;
  up.target = "/node/v1/sandboxes/" + api::PercentEncode(target->sandbox_id) + "/envd/" +
              envd_path + (query.empty() ? "" : "?" + query);
  up.set_headers.emplace_back("Authorization", "Bearer " + target->node.token);
  if (std::string_view user = req.header("Authorization"); !user.empty()) {
    up.set_headers.emplace_back("X-Envd-Authorization", std::string(user));
  }
  api::ForwardOptions fo;
  fo.request_headers = kPassHeaders;
  fo.timeout = s.options.node_timeout;
  return api::Forward(req, up, fo);
}

bool ValidMethod(std::string_view m) {
  if (m.empty() || m.size() > 64) return false;
  for (char c : m) {
    if (!std::isalpha(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

bool IsEnvdPublicPath(std::string_view path) {
  if (path == "health" || path == "files") return true;
  for (std::string_view service : {"process.Process/", "filesystem.Filesystem/"}) {
    if (path.substr(0, service.size()) == service) return ValidMethod(path.substr(service.size()));
  }
  return false;
}

Result<api::Response> ForwardToEnvd(const api::Request& req, std::string_view envd_path,
                                    const std::string& envd_url, const std::string& envd_token) {
  if (!IsEnvdPublicPath(envd_path)) {
    return Status::NotFound("no envd route /" + std::string(envd_path));
  }
  api::Upstream up;
  up.base_url = envd_url;
  up.target = "/" + std::string(envd_path);
  if (!req.query_string().empty()) up.target += "?" + std::string(req.query_string());
  if (!envd_token.empty()) up.set_headers.emplace_back("X-Access-Token", envd_token);
  if (std::string_view user = req.header("X-Envd-Authorization"); !user.empty()) {
    up.set_headers.emplace_back("Authorization", std::string(user));
  }
  api::ForwardOptions fo;
  fo.request_headers = kPassHeaders;
  return api::Forward(req, up, fo);
}

std::string FilesSignature(std::string_view path, std::string_view operation,
                           std::string_view username, std::string_view token,
                           std::string_view expiration) {
  std::string text = std::string(path) + ":" + std::string(operation) + ":" +
                     std::string(username) + ":" + std::string(token);
  if (!expiration.empty()) text += ":" + std::string(expiration);
  return "v1_" + Base64RawEncode(Sha256(text));
}

Status AddSandboxTrafficRoutes(api::Router& router, ProxyOptions options) {
  if (!options.resolve) {
    return Status::InvalidArgument("AddSandboxTrafficRoutes: ProxyOptions::resolve is required");
  }
  auto s = std::make_shared<Shared>();
  s->clock = options.clock != nullptr ? options.clock : &SystemClock::Instance();
  s->options = std::move(options);
  // Connect messages are small; uploads are bounded by the option. Every route streams its body
  // on (and runs on the blocking pool: it waits for the node's response header).
  api::RouteOptions rpc{.max_body_bytes = size_t{32} << 20, .stream_body = true};
  api::RouteOptions files{.max_body_bytes = s->options.max_upload_bytes, .stream_body = true};

  for (const char* service : {"process.Process", "filesystem.Filesystem"}) {
    std::string svc = service;
    HANGAR_TRY(router.Post(
        "/" + svc + "/{method}",
        [s, svc](const api::Request& req) -> Result<api::Response> {
          std::string_view method = req.param("method");
          if (!ValidMethod(method)) {
            return RouteError(Kind::kConnect, 404, "not_found",
                              "no procedure /" + svc + "/" + std::string(method));
          }
          return Handle(*s, req, Kind::kConnect, svc + "/" + std::string(method), true);
        },
        rpc));
  }
  auto files_handler = [s](const api::Request& req) -> Result<api::Response> {
    return Handle(*s, req, Kind::kFiles, "files", true);
  };
  HANGAR_TRY(router.Get("/files", files_handler, files));
  HANGAR_TRY(router.Post("/files", files_handler, files));
  HANGAR_TRY(router.Get(
      "/health",
      [s](const api::Request& req) -> Result<api::Response> {
        return Handle(*s, req, Kind::kFiles, "health", false);
      },
      rpc));
  return Status::Ok();
}

}  // namespace hangar::e2b
