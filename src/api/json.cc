#include "hangar/api/json.h"

namespace hangar::api {

Result<nlohmann::json> ParseJson(std::string_view text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 18: <problem>";
    // keep only the problem, since the byte offset already says where.
    std::string_view what = e.what();
    size_t colon = what.find(": ");
    std::string_view problem = colon == std::string_view::npos ? what : what.substr(colon + 2);
    return Status::InvalidArgument("invalid JSON at byte " + std::to_string(e.byte) + ": " +
                                   std::string(problem));
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("invalid JSON: ") + e.what());
  }
}

Result<nlohmann::json> ParseJsonBody(const Request& req) {
  if (req.body().empty()) {
    return Status::InvalidArgument("request body is empty; expected a JSON document");
  }
  return ParseJson(req.body());
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Response JsonResponse(const nlohmann::json& value, int status) {
  Response r;
  r.status = status;
  r.body = DumpJson(value);
  return r;
}

}  // namespace hangar::api
