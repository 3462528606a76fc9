// The control plane's HTTP API: REST/JSON under /v1 for people and agents (API keys, scoped to a
// team), /v1/admin for the operator (admin token), /internal/v1 for node agents (join token).
// docs/api/openapi.yaml is the contract; tests/contract validates responses against it.
//
// Authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`. Another team's sandbox is
// 404, never 403. Quota: 429 with Retry-After. No capacity and the caller said not to wait
// ("wait_for_capacity": false): 503 with Retry-After.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "hangar/api/router.h"
#include "hangar/base/status.h"
#include "hangar/control/service.h"

namespace hangar::control {

struct ApiOptions {
  ControlService* service = nullptr;
  std::string admin_token;  // /v1/admin/*
  std::string join_token;   // /internal/v1/* (node agents)
};

Status AddControlRoutes(api::Router& router, const ApiOptions& options);

// The API key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`; "" if none.
std::string_view ApiKeyOf(const api::Request& req);

// Bounds of a create request; every field is checked and a violation names the field.
struct CreateLimits {
  static constexpr int64_t kMinCpuMillis = 100, kMaxCpuMillis = 64'000;
  static constexpr int64_t kMinMemoryMb = 32, kMaxMemoryMb = 262'144;
  static constexpr int64_t kMinDiskMb = 64, kMaxDiskMb = 1'048'576;
  static constexpr int64_t kMaxIops = 1'000'000, kMaxIoBps = int64_t{100} << 30;
  static constexpr int64_t kMaxTimeoutS = 30 * 86400;
  static constexpr size_t kMaxListItems = 1000, kMaxMapEntries = 64, kMaxEnvEntries = 256;
  static constexpr size_t kMaxString = 4096, kMaxCommandArgs = 256;
};

// The POST /v1/sandboxes body → a validated request (unknown fields rejected).
Result<CreateRequest> CreateRequestFromJson(const nlohmann::json& body);
nlohmann::json TaskToJson(const Task& task);
nlohmann::json DecisionToJson(const RoutingDecision& decision);
nlohmann::json NodeToJson(const Node& node);

// The heartbeat a node agent sends (POST /internal/v1/nodes/heartbeat).
Result<NodeReport> NodeReportFromJson(const nlohmann::json& body);
nlohmann::json NodeReportToJson(const NodeReport& report);

}  // namespace hangar::control
