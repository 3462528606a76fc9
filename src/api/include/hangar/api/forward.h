// Forward: a route handler's way to hand a request on to another HTTP server (a reverse proxy
// for one call) and stream the answer back.
//
//   HANGAR_TRY(router.Post("/sb/{id}/envd/{rest...}", [](const Request& req) -> Result<Response> {
//     return Forward(req, {.base_url = "unix:/run/envd.sock", .target = "/health",
//                          .set_headers = {{"X-Access-Token", token}}},
//                    {.request_headers = {"Content-Type", "X-Metadata-*"}});
//   }, {.max_body_bytes = size_t{1} << 30, .stream_body = true}));
//
// Promises:
//  - The upstream gets the request's method, the given target, the request headers named in
//    ForwardOptions::request_headers (plus Upstream::set_headers, which replace them) and the
//    body: read through Request::ReadBody as it is sent, so on a RouteOptions::stream_body route
//    an upload is never held whole (with the client's Content-Length when it sent one, else
//    chunked). Host, framing and hop-by-hop headers are never copied.
//  - The answer has the upstream's status, Content-Type and the response headers named in
//    ForwardOptions::response_headers, and its body as the upstream produced it (no decoding:
//    gzip stays gzip). A small answer with a Content-Length (up to inline_bytes) is returned
//    whole; any other is streamed (Response::Stream) as it arrives by a producer thread that
//    lives exactly as long as the upstream call: when the client goes away (or the server shuts
//    down) the upstream connection is closed at once — a stream that would never end on its own
//    (a `sleep 1000` command's output) does not leave a thread or a connection behind.
//  - An upstream that cannot be reached or fails before its header: 502 with the error body of
//    error.h ({"code":"unavailable","message":"connect unix:/x: No such file or directory"});
//    no header within ForwardOptions::timeout: 504 (deadline_exceeded). An upstream that fails
//    mid-body: the client's response is cut short (an aborted chunked body), never made to look
//    complete.
//  - Returns a non-ok Status only for a bad Upstream (base URL, target) or a failure reading
//    the client's body (the route's limits: resource_exhausted, deadline_exceeded...).
//
// Call it from a handler on a blocking route (RouteOptions::blocking or stream_body): it waits
// for the upstream's header. Thread safety: reentrant; it shares nothing between calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "hangar/api/http.h"
#include "hangar/base/status.h"

namespace hangar::api {

struct Upstream {
  std::string base_url;  // "http://host:port" or "unix:/path/to.sock" (HttpClient's forms)
  std::string target;    // path and query as sent: "/files?path=a%20b"
  // Set on the upstream request, replacing a copied header of the same name.
  std::vector<std::pair<std::string, std::string>> set_headers;
};

struct ForwardOptions {
  // Request headers copied when the client sent them, case-insensitive; a name ending in '*' is
  // a prefix ("X-Metadata-*"). Content-Type is copied unless set_headers replaces it.
  std::vector<std::string> request_headers;
  // Response headers copied back (Content-Type always is), same matching.
  std::vector<std::string> response_headers = {"Content-Encoding",
                                               "Content-Disposition",
                                               "Content-Language",
                                               "Cache-Control",
                                               "ETag",
                                               "Last-Modified",
                                               "Vary",
                                               "Connect-*",
                                               "Grpc-*"};
  // Bounds connecting, sending the request and waiting for the response header.
  std::chrono::milliseconds timeout{60'000};
  // Bounds each wait for more of a streamed body (0: as long as the stream lasts, e.g. a
  // command's output or a directory watch).
  std::chrono::milliseconds idle_timeout{0};
  // Answers with a Content-Length up to this are read whole and returned without a thread.
  size_t inline_bytes = 256 * 1024;
  // The streamed answer's buffer (backpressure towards the upstream).
  StreamOptions stream;
};

Result<Response> Forward(const Request& request, const Upstream& upstream,
                         const ForwardOptions& options = {});

// Forwarded bodies being streamed right now (their producer threads), for tests and metrics.
size_t ForwardStreamsInFlight();

// True if `name` is matched by `patterns` (ForwardOptions' rules: case-insensitive, a trailing
// '*' matches a prefix).
bool HeaderMatches(std::string_view name, const std::vector<std::string>& patterns);

}  // namespace hangar::api
