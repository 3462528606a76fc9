// HttpClient: a small synchronous HTTP/1.1 client for the CLI and for control → node calls.
//
//   HANGAR_ASSIGN_OR_RETURN(HttpClient client, HttpClient::Create("http://127.0.0.1:8080"));
//   HANGAR_ASSIGN_OR_RETURN(nlohmann::json sb, client.CallJson("POST", "/v1/sandboxes", spec));
//   HANGAR_TRY(client.Stream("POST", "/v1/sandboxes/sb1/exec", body,
//                            [](std::string_view data) { return WriteAll(1, data); }));
//
// Errors are Status values, never exceptions. Transport failures name the peer:
//   "connect 127.0.0.1:8080: Connection refused" (unavailable),
//   "GET http://127.0.0.1:8080/v1/x: timed out after 30000 ms" (deadline_exceeded).
// Do() returns any HTTP response, 4xx and 5xx included; CallJson() and Stream() turn a non-2xx
// response into the Status its error body carries (see error.h), so a server-side not_found is
// a not_found here too.
//
// One connection is kept alive between calls. A call that fails on a reused connection before
// any byte of the response arrived (the server closed it while idle) is retried once on a new
// connection: the server closes only idle connections, so the request was not processed.
//
// Open() + ReadBody() are the two halves of a call whose response is consumed as it arrives
// (what a proxy needs): Open sends the request — its body from memory or from a BodyReader, so
// an upload need not be held whole — and returns the status and headers of any response;
// ReadBody then hands out the body piece by piece.
//
// Thread safety: none; use one client per thread (they are cheap) — except AbortHandle(), whose
// result may be called from any thread at any time, even after the client is gone. Plain HTTP
// only, over TCP or a Unix socket (no TLS).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"

namespace hangar::api {

struct ClientOptions {
  // Bounds a whole call: connect, send, and receive the complete response (for Stream: up to
  // the response header).
  std::chrono::milliseconds timeout{30'000};
  // Sent with every request, e.g. {"Authorization", "Bearer ..."}.
  std::vector<std::pair<std::string, std::string>> headers;
  size_t max_response_bytes = 64 * 1024 * 1024;
};

// Per-request settings on top of ClientOptions.
struct RequestOptions {
  // Sent when there is a body (and with every POST, whose empty body still has a type); "" sends
  // none.
  std::string content_type = "application/json";
  // Extra headers for this request; they replace ClientOptions::headers of the same name.
  std::vector<std::pair<std::string, std::string>> headers;
};

struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  bool ok() const { return status >= 200 && status < 300; }
  std::string_view header(std::string_view name) const;  // case-insensitive; "" if absent
  Status ToStatus() const;                               // ok for 2xx
  Result<nlohmann::json> Json() const;                   // the body parsed
};

// Produces an upload's body: fills `buffer` with up to `size` bytes and returns how many; 0 at
// the end of the body; an error stops the call (the connection is closed) and is returned.
using BodyReader = std::function<Result<size_t>(char* buffer, size_t size)>;

class HttpClient {
 public:
  // base_url: "http://host:port" or "host:port" (port defaults to 80), or "unix:/path/to.sock"
  // for a server on a Unix socket (sent with "Host: localhost").
  static Result<HttpClient> Create(std::string_view base_url, ClientOptions options = {});
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  ~HttpClient();

  // `path` is the request target: "/v1/sandboxes?state=running" (encode parts with
  // PercentEncode from query.h). An empty content_type sends none.
  Result<ClientResponse> Do(std::string_view method, std::string_view path, std::string body = {},
                            std::string_view content_type = "application/json");
  // Do() with per-request headers and content type.
  Result<ClientResponse> Send(std::string_view method, std::string_view path, std::string body,
                              const RequestOptions& options);
  Result<ClientResponse> Get(std::string_view path);
  Result<ClientResponse> Post(std::string_view path, const nlohmann::json& body);
  Result<ClientResponse> Delete(std::string_view path);

  // The JSON call the CLI wants: a null `body` sends none; a 2xx response's body is parsed
  // (an empty one gives null); any other response becomes its Status.
  Result<nlohmann::json> CallJson(std::string_view method, std::string_view path,
                                  const nlohmann::json& body = nullptr);

  // Sends the request and calls on_data with the body as it arrives, piece by piece (chunk
  // boundaries are not preserved). on_data returning an error stops the call, closes the
  // connection (which the server sees as a hang-up) and is returned. idle_timeout bounds the
  // wait for each piece (0: wait as long as the stream lasts).
  using DataCallback = std::function<Status(std::string_view data)>;
  Status Stream(std::string_view method, std::string_view path, std::string body,
                const DataCallback& on_data,
                std::chrono::milliseconds idle_timeout = std::chrono::milliseconds(0));
  // Stream() with per-request headers and content type (e.g. Connect's application/connect+json).
  Status Stream(std::string_view method, std::string_view path, std::string body,
                const RequestOptions& options, const DataCallback& on_data,
                std::chrono::milliseconds idle_timeout = std::chrono::milliseconds(0));

  // The first half of a streamed call: sends the request and reads the response's status line
  // and header, whatever the status; the returned body is empty. ClientOptions::timeout bounds
  // the whole (the connect, the send, the wait for the header). Until ReadBody() has returned 0
  // or an error, the connection belongs to this response: the next call on this client drops it
  // (closes the connection) first.
  Result<ClientResponse> Open(std::string_view method, std::string_view path, std::string body,
                              const RequestOptions& options);
  // Open() with the body produced by `body` as it is sent: with Content-Length `body_length`
  // when given (the reader must then produce exactly that many bytes — a short body is
  // invalid_argument), else with chunked transfer encoding. Such a call always uses a new
  // connection (a body that was read cannot be sent again), and ClientOptions::timeout bounds
  // the connect, each piece's write and the wait for the response header separately. If the
  // server answers before it has read the whole body (e.g. 413), that answer is returned.
  Result<ClientResponse> Open(std::string_view method, std::string_view path,
                              const BodyReader& body, std::optional<uint64_t> body_length,
                              const RequestOptions& options);
  // The next piece of the opened response's body, at most `size` bytes into `buffer`: 0 once the
  // body is complete (the connection is then reusable if the server keeps it alive).
  // idle_timeout bounds the wait for each piece (0: no bound). Errors: failed_precondition with
  // no response open; deadline_exceeded; unavailable when the connection fails or the body is
  // truncated; cancelled after an abort.
  Result<size_t> ReadBody(char* buffer, size_t size,
                          std::chrono::milliseconds idle_timeout = std::chrono::milliseconds(0));

  // A function that aborts this client's call in flight from any thread (e.g. a stream's
  // OnCancel callback): the call's socket is closed, the blocked Open/ReadBody/Send returns
  // cancelled at once, and every later call on this client returns cancelled too. Calling it
  // never blocks, may happen any number of times and is harmless once the client is destroyed.
  std::function<void()> AbortHandle();

  // Closes the kept-alive connection.
  void Disconnect();

 private:
  struct Impl;
  explicit HttpClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hangar::api
