// Server: the asynchronous HTTP/1.1 server every Hangar API is served by.
//
//   Router router;
//   HANGAR_TRY(router.Get("/v1/version", [](const Request&) -> Result<Response> {
//     return JsonResponse({{"version", HANGAR_VERSION}});
//   }));
//   Server server({.address = "127.0.0.1", .port = 8080}, std::move(router));
//   HANGAR_TRY(server.Start());           // "listen 127.0.0.1:8080: Address already in use"
//   WaitForTerminationSignal();           // signals.h
//   server.Shutdown(std::chrono::seconds(10));
//
// Model: `threads` I/O threads, each running its own event loop; a connection lives on one of
// them for its whole life (so its state needs no locks) and is served by one coroutine.
// Handlers run on that I/O thread and must not block; routes marked RouteOptions::blocking run
// on a separate pool of at most `blocking_threads` instead — started on demand (a thread when
// every one so far is busy) and then kept, so a server that never blocks starts none and a
// short-lived one (envd in a sandbox that just started) does not pay for them up front.
// Keep-alive and pipelining are supported;
// streamed responses use chunked transfer encoding (see http.h).
//
// Limits and what the client sees (every error uses the body of error.h):
//   request header > max_header_bytes        → 431, connection closed
//   request body > max_body_bytes (or route)  → 413, connection closed (Content-Length is
//                                              checked before the body is read, so a client
//                                              sending "Expect: 100-continue" sends nothing)
//   malformed request                         → 400, connection closed
//   request not fully received in read_timeout → connection closed (the slowloris defence;
//                                              counted from accept, or from the first byte of a
//                                              later request on a kept-alive connection)
//   kept-alive connection idle > idle_timeout  → connection closed
//   socket write stalls > write_timeout        → connection closed, stream cancelled
//   more than max_connections open            → new connections closed at once
//
// Thread safety: Start and Shutdown are called from one controlling thread; port(),
// endpoint() and active_connections() from any thread. Nothing here throws.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "hangar/api/router.h"
#include "hangar/base/status.h"

namespace hangar::api {

// Where the server listens: `address`:`port` (TCP) by default; or a Unix socket at
// `unix_path`; or an already-listening socket handed over as `listen_fd` (TCP or Unix — socket
// activation, e.g. envd serving the socket the node created for it).
struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port; read it back with port()
  // Bind a Unix socket here instead of TCP. A stale socket file at the path is replaced (any
  // other kind of file is an already_exists error); the file is removed at Shutdown.
  std::string unix_path;
  // Serve on this listening SOCK_STREAM socket instead of binding one. Start takes ownership
  // (the descriptor is closed at Shutdown, or at once if Start fails).
  int listen_fd = -1;
  int threads = 0;  // I/O threads; 0: one per hardware thread
  int blocking_threads = 8;  // at most; started on demand
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds read_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds write_timeout{30'000};
  size_t max_connections = 10'000;
  // One log line per request (method, path, status, bytes, ms, remote). Benchmarks turn it off.
  bool access_log = true;
  std::string server_name = "hangar";  // the Server header
};

class Server {
 public:
  Server(ServerOptions options, Router router);
  // Shuts down with no grace if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts the threads. Errors name the address:
  // "listen 127.0.0.1:8080: Address already in use" (unavailable),
  // "listen fd 3: not a listening stream socket" (invalid_argument).
  Status Start();
  // The bound TCP port (useful with port 0; 0 for Unix sockets) and the endpoint:
  // "127.0.0.1:8080", "[::1]:8080" or "unix:/run/x.sock". Valid after a successful Start.
  uint16_t port() const;
  std::string endpoint() const;
  size_t active_connections() const;

  // Stops accepting (new connections are refused from here on), closes idle connections, lets
  // requests in flight finish and answers them with "Connection: close", and cancels streamed
  // responses (their StreamWriter sees cancelled() and its OnCancel callback runs, so the
  // producer can Close() and the client gets a clean end). Whatever is still open after `grace`
  // is closed by force. Returns when every connection and thread is gone: ok, or
  // deadline_exceeded saying how many connections had to be forced. Idempotent.
  Status Shutdown(std::chrono::milliseconds grace);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hangar::api
