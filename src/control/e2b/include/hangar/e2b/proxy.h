// The sandbox traffic proxy: what E2B_SANDBOX_URL points at. The stock e2b SDK sends every
// in-sandbox call (Connect RPC to envd, GET/POST /files, GET /health) to one URL with the headers
// `E2b-Sandbox-Id` and `E2b-Sandbox-Port`; this proxy picks the sandbox by those headers (or, as
// E2B's own proxy, by a Host of the form `<port>-<sandboxId>.<domain>`), checks the sandbox's
// access token (X-Access-Token, or a signed /files URL), and forwards the call to the sandbox's
// envd through its node (`/node/v1/sandboxes/{id}/envd/...`, the node's bearer token) with
// api::Forward, streaming the response back as it comes.
//
// Routes: POST /process.Process/{method}, POST /filesystem.Filesystem/{method}, GET|POST /files,
// GET /health. Bodies stream through (RouteOptions::stream_body): a 1 GiB upload is never held
// whole here.
//
// Promises:
//  - only envd's public routes are forwarded (the routes above); anything else is the router's
//    404 and never reaches a node;
//  - a call whose token is missing or wrong never reaches a node: 401, shaped as the route's
//    protocol expects — Connect routes {"code":"unauthenticated","message"}, /files
//    {"code":401,"message"} (E2B envd's shapes, which the SDK maps to AuthenticationError);
//    /health needs no token; on /files a valid, unexpired signature for that path, operation
//    (GET read, POST write) and user replaces the token, as envd's signed URLs do — an
//    X-Access-Token that is present but wrong is refused even with a valid signature;
//  - the client's X-Access-Token, E2b-* headers and signature parameters never reach the node
//    or envd (the node adds envd's own token); the client's `Authorization: Basic` (the Linux
//    user) travels to the node as `X-Envd-Authorization`, which the node hands to envd as
//    Authorization — the node's own Authorization carries its bearer token;
//  - E2B's proxy answers, which the SDK understands: no sandbox id → 400; a port other than
//    49983 → 502 {"sandboxId","message":"The sandbox is running but port is not open","port",
//    "code":502}; an unknown or stopped sandbox (resolve → not_found) → 502 {"sandboxId",
//    "message":"The sandbox was not found","code":502}, which the SDK turns into
//    SandboxNotFoundError / TimeoutError ("probably not running anymore") and its health probe
//    into "not running"; a node that cannot be reached → 502 (api::Forward);
//  - a streamed call ends upstream when the client goes away (api::Forward).
//
// Thread safety: the routes may be served from any thread; resolve is called concurrently.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "hangar/api/router.h"
#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/control/model.h"

namespace hangar::e2b {

// The port E2B's envd listens on inside a sandbox; the only port Hangar sandboxes serve.
inline constexpr int kEnvdPort = 49983;

// Where a sandbox's traffic goes and what the client must show.
struct ProxyTarget {
  control::Node node;        // url and token of the node that runs it
  std::string sandbox_id;    // the id on that node
  std::string access_token;  // the E2B envdAccessToken; "" = the sandbox was created insecure
};

struct ProxyOptions {
  // Finds a running sandbox by its E2B id: not_found if there is none (or it is not running);
  // any other error is answered 503.
  std::function<Result<ProxyTarget>(std::string_view sandbox_id)> resolve;
  size_t max_upload_bytes = size_t{1} << 30;  // POST /files bodies
  // Bounds reaching the node and waiting for the response header (not a stream's length).
  std::chrono::milliseconds node_timeout{60'000};
  // For signature expirations (wall time); nullptr: the system clock.
  Clock* clock = nullptr;
};

// Adds the traffic routes to `router` (the same server as the lifecycle API, or another one).
// invalid_argument without a resolve function; the router's errors for duplicate routes.
Status AddSandboxTrafficRoutes(api::Router& router, ProxyOptions options);

// The node's half of the path (its route /node/v1/sandboxes/{id}/envd/{path...}): forwards one
// call to a sandbox's envd at `envd_url` ("unix:/path" or "http://host:port"), streamed both
// ways. Only envd's public routes pass (IsEnvdPublicPath; not_found otherwise, nothing sent);
// the caller's X-Access-Token is replaced by envd's own `envd_token`, and X-Envd-Authorization
// (the SDK's "Basic <user>:", renamed by the proxy since that hop's Authorization is the node's
// bearer token) becomes envd's Authorization.
Result<api::Response> ForwardToEnvd(const api::Request& req, std::string_view envd_path,
                                    const std::string& envd_url, const std::string& envd_token);
// envd's public routes: "health", "files", "process.Process/<Letters>",
// "filesystem.Filesystem/<Letters>". E2B's internal ones (/init, /envs, ...) never match.
bool IsEnvdPublicPath(std::string_view path);

// The signature of a /files URL as the SDK and envd compute it:
// "v1_" + base64raw(sha256("<path>:<operation>:<username>:<token>[:<expiration>]")).
// `expiration` empty: none. Exposed for tests and for tools that hand out signed URLs.
std::string FilesSignature(std::string_view path, std::string_view operation,
                           std::string_view username, std::string_view token,
                           std::string_view expiration = {});

}  // namespace hangar::e2b
