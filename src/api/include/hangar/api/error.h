// The API's error convention: hangar::Status ↔ HTTP.
//
// Every error response of the API, whoever produces it (a handler, the router, the server's
// limits), has one body shape:
//   {"code": "not_found", "message": "sandbox sb1 not found"}
// where code is hangar::CodeName(status.code()). Clients branch on `code`, never on the text.
//
// Code → HTTP status (the non-obvious choices, with why):
//   invalid_argument 400 · unauthenticated 401 · permission_denied 403 · not_found 404
//   already_exists 409 · aborted 409 (a concurrent change; retry the read-modify-write)
//   failed_precondition 409 — the resource's state conflicts with the call (e.g. exec on a
//     stopped sandbox). Not 412: that one answers If-Match style conditional headers.
//   resource_exhausted 429 — quota or capacity. The server's own size limits send
//     resource_exhausted with 413 (body too large) and 431 (header too large) instead.
//   cancelled 499 — the client closed the request (nginx's convention; rarely seen by anyone).
//   unimplemented 501 · unavailable 503 · deadline_exceeded 504 · internal and unknown 500.
// Routing errors: unknown path → not_found/404; known path, wrong method → unimplemented/405
// with an Allow header.
//
// Thread safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "hangar/api/http.h"
#include "hangar/base/status.h"

namespace hangar::api {

int HttpStatusFor(Code code);

// The error body for `status` (serialized JSON, as above).
std::string ErrorBody(const Status& status);
// An error response: status from HttpStatusFor unless `http_status` overrides it (413, 431, ...).
Response ErrorResponse(const Status& status, int http_status = 0);

// Inverse of CodeName: "not_found" → Code::kNotFound.
std::optional<Code> CodeFromName(std::string_view name);
// The client side: the Status a non-2xx response stands for. Uses the error body when it has
// our shape; otherwise derives the code from the HTTP status and quotes the start of the body.
Status StatusFromHttp(int http_status, std::string_view body);

}  // namespace hangar::api
