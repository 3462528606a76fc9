// Router: (method, path pattern) → handler.
//
// Patterns are '/'-separated segments, each one of
//   literal      "sandboxes"   matches itself (compared after percent-decoding the request)
//   {name}       one non-empty segment, percent-decoded, available as req.param("name")
//   {name...}    last segment only: the rest of the path (zero or more segments, '/' kept)
// Precedence at each segment is literal, then {name}, then {name...}, so
// "/v1/sandboxes/pool" beats "/v1/sandboxes/{id}". A trailing '/' is significant.
// Unknown path → 404 not_found; known path, other method → 405 with "Allow: GET, HEAD";
// HEAD is served by the GET route with the body left out.
//
// Registration returns a Status (bad pattern, duplicate route, conflicting parameter names at
// the same position) so a typo fails the daemon's start-up instead of a request.
//
// Thread safety: build the router on one thread, then hand it to the Server; Match() and the
// server only read it afterwards, from any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/api/http.h"
#include "hangar/base/status.h"

namespace hangar::api {

using Handler = std::function<Result<Response>(const Request&)>;

struct RouteOptions {
  // Overrides ServerOptions::max_body_bytes for this route (e.g. file uploads).
  std::optional<size_t> max_body_bytes;
  // The handler may block (disk, SQLite, a call to a node): run it on the server's blocking
  // pool so it never stalls the I/O threads that serve every other connection.
  bool blocking = false;
  // Hand the body to the handler as it arrives (Request::ReadBody) instead of buffering it whole
  // first: for uploads larger than memory should hold. The handler runs on the blocking pool;
  // max_body_bytes still bounds the body and read_timeout each wait for more of it. A body the
  // handler leaves unread ends the connection after the response (it cannot be kept alive).
  bool stream_body = false;
};

struct Route {
  std::string method;
  std::string pattern;
  Handler handler;
  RouteOptions options;
};

struct RouteMatch {
  enum class Kind { kFound, kNotFound, kMethodNotAllowed, kBadPath };
  Kind kind = Kind::kNotFound;
  const Route* route = nullptr;  // kFound
  Request::Params params;        // kFound: (name, decoded value) in pattern order
  std::string allow;             // kMethodNotAllowed: "GET, HEAD, POST"
  Status error;                  // kBadPath: why the path is unusable
};

class Router {
 public:
  Router();
  ~Router();
  Router(Router&&) noexcept;
  Router& operator=(Router&&) noexcept;

  Status Handle(std::string_view method, std::string_view pattern, Handler handler,
                RouteOptions options = {});
  Status Get(std::string_view pattern, Handler h, RouteOptions o = {});
  Status Post(std::string_view pattern, Handler h, RouteOptions o = {});
  Status Put(std::string_view pattern, Handler h, RouteOptions o = {});
  Status Patch(std::string_view pattern, Handler h, RouteOptions o = {});
  Status Delete(std::string_view pattern, Handler h, RouteOptions o = {});

  // `path` is the raw request path (no query), as sent.
  RouteMatch Match(std::string_view method, std::string_view path) const;

 private:
  struct Node;
  std::unique_ptr<Node> root_;
};

}  // namespace hangar::api
