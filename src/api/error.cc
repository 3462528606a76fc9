#include "hangar/api/error.h"

#include <nlohmann/json.hpp>

#include "hangar/api/json.h"

namespace hangar::api {

int HttpStatusFor(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
      return 400;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
      return 409;
    case Code::kFailedPrecondition:
      return 409;
    case Code::kAborted:
      return 409;
    case Code::kResourceExhausted:
      return 429;
    case Code::kCancelled:
      return 499;
    case Code::kUnimplemented:
      return 501;
    case Code::kUnavailable:
      return 503;
    case Code::kDeadlineExceeded:
      return 504;
    case Code::kInternal:
      return 500;
  }
  return 500;
}

std::string ErrorBody(const Status& status) {
  nlohmann::json body = {{"code", CodeName(status.code())}, {"message", status.message()}};
  return DumpJson(body);
}

Response ErrorResponse(const Status& status, int http_status) {
  Response r;
  r.status = http_status != 0 ? http_status : HttpStatusFor(status.code());
  r.body = ErrorBody(status);
  return r;
}

std::optional<Code> CodeFromName(std::string_view name) {
  for (int i = static_cast<int>(Code::kOk); i <= static_cast<int>(Code::kInternal); ++i) {
    if (CodeName(static_cast<Code>(i)) == name) return static_cast<Code>(i);
  }
  return std::nullopt;
}

namespace {

Code CodeFromHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return Code::kInvalidArgument;
    case 401:
      return Code::kUnauthenticated;
    case 403:
      return Code::kPermissionDenied;
    case 404:
      return Code::kNotFound;
    case 405:
      return Code::kUnimplemented;
    case 408:
      return Code::kDeadlineExceeded;
    case 409:
      return Code::kFailedPrecondition;
    case 412:
      return Code::kFailedPrecondition;
    case 413:
      return Code::kResourceExhausted;
    case 429:
      return Code::kResourceExhausted;
    case 431:
      return Code::kResourceExhausted;
    case 499:
      return Code::kCancelled;
    case 501:
      return Code::kUnimplemented;
    case 502:
      return Code::kUnavailable;
    case 503:
      return Code::kUnavailable;
    case 504:
      return Code::kDeadlineExceeded;
    default:
      break;
  }
  if (http_status >= 400 && http_status < 500) return Code::kInvalidArgument;
  return Code::kInternal;
}

}  // namespace

Status StatusFromHttp(int http_status, std::string_view body) {
  if (http_status >= 200 && http_status < 300) return Status::Ok();
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("code") && j["code"].is_string() && j.contains("message") &&
      j["message"].is_string()) {
    std::optional<Code> code = CodeFromName(j["code"].get<std::string>());
    if (code && *code != Code::kOk) return Status(*code, j["message"].get<std::string>());
  }
  constexpr size_t kQuoteBytes = 200;
  std::string message = "HTTP " + std::to_string(http_status);
  if (!body.empty()) {
    message += ": ";
    message += body.substr(0, kQuoteBytes);
    if (body.size() > kQuoteBytes) message += "...";
  }
  return Status(CodeFromHttpStatus(http_status), std::move(message));
}

}  // namespace hangar::api
