// E2B's lifecycle REST API over the ControlService, so the stock e2b SDK (E2B_API_URL) creates,
// lists, connects to, pauses and kills Hangar sandboxes. docs/e2b-compat.md lists what the SDK
// can do; docs/api/openapi.yaml documents the routes.
//
// Routes (X-API-Key or Authorization: Bearer — the same team API keys as /v1):
//   POST /sandboxes, POST /v2/sandboxes            create; 201 {sandboxID, templateID, clientID,
//                                                  envdVersion, envdAccessToken, ...}
//   GET  /v2/sandboxes, GET /sandboxes             list (metadata, state, limit, nextToken;
//                                                  X-Next-Token header)
//   GET  /sandboxes/{id}                           details (404 once it has ended)
//   DELETE /sandboxes/{id}                         kill; 204
//   POST /sandboxes/{id}/timeout {timeout}         TTL = now + timeout; 204
//   POST /sandboxes/{id}/refreshes {duration}      TTL extended to now + duration; 204
//   POST /sandboxes/{id}/connect, /v2/.../connect  200 running / 201 resumed; body as create
//   POST /sandboxes/{id}/pause, /resume            freeze / thaw (every tier)
// Errors: {"code": <HTTP status>, "message"} as E2B answers them (not /v1's shape).
//
// Semantics, and where they differ from E2B's hosted service:
//  - a sandbox is an idle Hangar task (no command): it goes through the same router — E2B
//    metadata become its labels — and scheduler as any task, and shows up in `hangar ls`; the
//    tier chosen is added to the metadata it reports as "hangar.tier";
//  - "base" (the SDK's default template) is LifecycleOptions::default_template; a template whose
//    nodes report no /bin/bash is refused at create (the SDK runs commands with bash -l -c);
//  - the envd access token is derived, not stored: HMAC-SHA256(secret, sandbox id). It is issued
//    unless the request says `secure: false`; the traffic proxy checks it;
//  - pause freezes the sandbox's processes where it runs (its memory stays reserved and its
//    timeout keeps running); E2B's pause persists it to storage instead;
//  - no internet access (allow_internet_access: true is refused), no snapshots, fork, volume
//    mounts, MCP gateway or network rules: a clear 400 naming the feature.
//
// Thread safety: routes may run concurrently (the service is thread-safe).
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "hangar/api/router.h"
#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/control/service.h"
#include "hangar/e2b/proxy.h"

namespace hangar::e2b {

struct LifecycleOptions {
  control::ControlService* service = nullptr;
  Clock* clock = nullptr;  // the service's clock (TTL arithmetic); nullptr: the system clock
  // Key of the access tokens (at least 32 bytes; kept in <data_dir>/e2b.secret by the daemon).
  std::string token_secret;
  std::string default_template = "base";  // what templateID "base" (and "") maps to
  // Resources of an E2B sandbox (E2B sizes them by template; Hangar by these defaults).
  int64_t cpu_millis = 1000;
  int64_t memory_mb = 512;
  int64_t disk_mb = 1024;
};

Status AddLifecycleRoutes(api::Router& router, const LifecycleOptions& options);

// The sandbox's envd access token: lower-case hex HMAC-SHA256(secret, "envd-access:" + id).
std::string AccessToken(std::string_view secret, std::string_view sandbox_id);

// ProxyOptions::resolve for the traffic proxy: a running (or paused) sandbox of any team, its
// node, and the token its callers must show ("" for a sandbox created with secure: false).
std::function<Result<ProxyTarget>(std::string_view)> TrafficResolver(
    control::ControlService* service, std::string token_secret);

}  // namespace hangar::e2b
