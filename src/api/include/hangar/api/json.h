// JSON in and out of handlers (nlohmann::json), without exceptions leaking out.
//
//   HANGAR_ASSIGN_OR_RETURN(nlohmann::json body, ParseJsonBody(req));
//   return JsonResponse({{"id", id}}, 201);
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "hangar/api/http.h"
#include "hangar/base/status.h"

namespace hangar::api {

// Parses a JSON document. Malformed input → invalid_argument naming the byte offset and the
// problem: "invalid JSON at byte 17: syntax error while parsing object - unexpected '}'; ..."
Result<nlohmann::json> ParseJson(std::string_view text);
// ParseJson of the request body; an empty body is its own invalid_argument ("request body is
// empty; expected a JSON document"). The server maps invalid_argument to 400.
Result<nlohmann::json> ParseJsonBody(const Request& req);

// Serializes without throwing: invalid UTF-8 in strings is replaced by U+FFFD rather than
// aborting a response that is already being produced.
std::string DumpJson(const nlohmann::json& value);
// A JSON response (Content-Type: application/json).
Response JsonResponse(const nlohmann::json& value, int status = 200);

}  // namespace hangar::api
