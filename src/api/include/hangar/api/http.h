// Request, Response and StreamWriter: what a route handler sees and returns.
//
//   Result<Response> GetSandbox(const Request& req) {
//     HANGAR_ASSIGN_OR_RETURN(Sandbox sb, store.Get(req.param("id")));
//     return JsonResponse(ToJson(sb));
//   }
//
// A handler returns a Response or a non-ok Status; the server turns a Status into the one error
// body of the API (see error.h). An exception escaping a handler becomes a 500 and is logged.
//
// Streaming: Response::Stream() returns a response whose body is sent with chunked transfer
// encoding as the producer writes it, plus the StreamWriter the producer writes with — from any
// thread, typically a thread reading a process's stdout:
//
//   auto [response, writer] = Response::Stream(200, "application/x-ndjson");
//   writer->OnCancel([proc] { proc->Kill(); });  // client went away or server is stopping
//   std::thread([writer] { while (...) if (!writer->Write(line).ok()) return; writer->Close(); })
//       .detach();
//   return std::move(response);
//
// Thread safety: a Request is read-only and valid only during the handler call (copy what must
// outlive it). A Response is a value owned by one thread. Every StreamWriter method is safe to
// call from any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hangar/api/query.h"
#include "hangar/base/status.h"

namespace hangar::api {

namespace internal {
struct RequestData;
class StreamState;
struct StreamTicket;
}  // namespace internal

class Request {
 public:
  std::string_view method() const;        // "GET"
  std::string_view target() const;        // raw request target: "/v1/x?a=1"
  std::string_view path() const;          // target up to '?', not decoded
  std::string_view query_string() const;  // after '?', not decoded; "" if none
  // Header value by case-insensitive name; "" if absent.
  std::string_view header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  // Every header field in the order received, names as sent (e.g. to collect "X-Metadata-*").
  std::vector<std::pair<std::string_view, std::string_view>> headers() const;
  // The whole body; empty on routes with RouteOptions::stream_body (use ReadBody there).
  const std::string& body() const;
  // The next piece of the body, at most `size` bytes into `buffer`; 0 at its end. On a
  // stream_body route this waits for the client (deadline_exceeded after the server's
  // read_timeout, resource_exhausted past the route's body limit, unavailable if the client
  // goes away); elsewhere it reads from body(). Call it from the handler's thread only.
  Result<size_t> ReadBody(char* buffer, size_t size) const;
  // Value of a path parameter of the matched pattern ("{id}" → param("id")), percent-decoded;
  // "" if the pattern has no such parameter.
  std::string_view param(std::string_view name) const;
  // The decoded query string. Invalid percent-encoding → invalid_argument.
  Result<QueryParams> query() const;
  std::string_view remote() const;  // peer "ip:port", or "unix" over a Unix socket

  using Params = std::vector<std::pair<std::string_view, std::string>>;
  // Made by the server around its parsed message; handlers only receive one.
  Request(const internal::RequestData* data, const Params* params) : data_(data), params_(params) {}

 private:
  const internal::RequestData* data_;
  const Params* params_;
};

// Tunes one streamed response.
struct StreamOptions {
  // Bytes queued but not yet written to the socket before Write() blocks: the backpressure that
  // keeps a fast producer and a slow client from growing memory without bound.
  size_t buffer_bytes = 1 << 20;
};

class StreamWriter;

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Extra headers. Content-Length, Connection and Transfer-Encoding are set by the server.
  std::vector<std::pair<std::string, std::string>> headers;

  static Response Text(std::string body, int status = 200,
                       std::string content_type = "text/plain; charset=utf-8");
  static Response NoContent();  // 204
  // A streamed (chunked) response and the writer that produces its body. The status line and
  // headers are sent when the handler returns; the body as it is written.
  static std::pair<Response, std::shared_ptr<StreamWriter>> Stream(int status,
                                                                   std::string content_type,
                                                                   StreamOptions options = {});

  Response& SetHeader(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  bool is_stream() const { return stream != nullptr; }

  // Set by Stream(). A streamed Response that is never sent (the handler returned an error
  // instead, or the client left first) cancels its stream, so the producer is not left waiting.
  std::shared_ptr<internal::StreamTicket> stream;
};

// The producer's end of a streamed response. Hold it by the shared_ptr Response::Stream gives.
class StreamWriter {
 public:
  explicit StreamWriter(std::shared_ptr<internal::StreamState> state);
  // Dropping the writer without Close() aborts the stream (see Close), so a producer that dies
  // never leaves a client waiting forever.
  ~StreamWriter();
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Queues `data` as the next piece of the body. Blocks while the stream's buffer is full.
  // Returns cancelled once the stream is cancelled (the data is dropped), failed_precondition
  // after Close(). Inside a handler, or on a server I/O thread, it never blocks — nothing sends
  // the body until the handler has returned — so a full buffer returns resource_exhausted.
  Status Write(std::string data);
  // Ends the body. Ok: the client sees a complete response. Not ok: the connection is aborted so
  // the client sees a truncated body rather than a clean end; the reason is logged. Errors that
  // the client should read belong in the body itself (e.g. a final NDJSON error event).
  // Later calls are ignored.
  void Close(Status status = Status::Ok());
  // True once the client went away, a socket write failed or the server is shutting down.
  bool cancelled() const;
  // `cb` runs once when the stream is cancelled — on a server thread, so it must not block — or
  // at once on this thread if it already is. Use it to stop the producer (kill the process).
  void OnCancel(std::function<void()> cb);

 private:
  std::shared_ptr<internal::StreamState> state_;
};

}  // namespace hangar::api
