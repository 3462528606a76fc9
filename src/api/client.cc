#include "hangar/api/client.h"

#include <atomic>
#include <mutex>
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "hangar/api/error.h"
#include "hangar/api/json.h"

#ifndef HANGAR_VERSION
#define HANGAR_VERSION "dev"
#endif

namespace hangar::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Protocol = asio::generic::stream_protocol;  // TCP or Unix
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

std::string_view ClientResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (beast::iequals(k, name)) return v;
  }
  return {};
}

Status ClientResponse::ToStatus() const { return StatusFromHttp(status, body); }

Result<nlohmann::json> ClientResponse::Json() const {
  if (body.empty()) return nlohmann::json();
  Result<nlohmann::json> j = ParseJson(body);
  if (!j.ok()) return j.status().With("response body");
  return j;
}

struct HttpClient::Impl {
  // What AbortHandle's function shares with the client: the flag every call checks, and (while
  // the client lives) the client to post the socket's close to.
  struct AbortState {
    std::mutex mu;
    std::atomic<bool> aborted{false};
    Impl* impl = nullptr;
  };

  Impl() : abort(std::make_shared<AbortState>()) { abort->impl = this; }
  ~Impl() {
    std::lock_guard lock(abort->mu);
    abort->impl = nullptr;
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  std::string host;
  std::string port;
  std::string unix_path;  // set for "unix:/path" base URLs
  std::string authority;  // "host:port" (or "localhost" over a Unix socket): the Host header
  std::string display;    // "http://host:port" or "unix:/path", for messages
  ClientOptions opts;
  asio::io_context ioc{1};
  std::optional<beast::basic_stream<Protocol>> stream;
  beast::flat_buffer buffer;
  std::shared_ptr<AbortState> abort;
  // Open(): the response whose body ReadBody() hands out, and what it was for (messages).
  std::optional<http::response_parser<http::buffer_body>> body_parser;
  bool close_after_body = false;  // the request was not sent whole: the connection is spent
  std::string open_method;
  std::string open_path;

  // Runs the asynchronous operation started by `start` to completion: the synchronous API on
  // top of Beast's timeouts, which only exist for asynchronous operations.
  template <typename Start>
  error_code Run(Start&& start) {
    if (abort->aborted.load()) return asio::error::operation_aborted;
    error_code result;
    start([&result](error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  std::string Describe(std::string_view method, std::string_view path) const {
    return std::string(method) + " " + display + std::string(path);
  }

  Status TransportError(std::string_view method, std::string_view path, const error_code& ec) {
    Disconnect();
    if (abort->aborted.load()) return Status::Cancelled(Describe(method, path) + ": aborted");
    if (ec == beast::error::timeout) {
      return Status::DeadlineExceeded(Describe(method, path) + ": timed out after " +
                                      std::to_string(opts.timeout.count()) + " ms");
    }
    return Status::Unavailable(Describe(method, path) + ": " + ec.message());
  }

  // One read of body bytes into [data, data + size), waiting at most `idle_timeout` for them
  // (0: no bound): how many arrived — 0 when the read only consumed framing (chunk headers).
  // A silent peer is DeadlineExceeded; the connection is dropped on any error.
  Result<size_t> ReadSomeBody(http::response_parser<http::buffer_body>& parser, char* data,
                              size_t size, std::chrono::milliseconds idle_timeout,
                              std::string_view method, std::string_view path) {
    parser.get().body().data = data;
    parser.get().body().size = size;
    if (idle_timeout.count() > 0) {
      stream->expires_after(idle_timeout);
    } else {
      stream->expires_never();
    }
    error_code ec =
        Run([&](auto handler) { http::async_read_some(*stream, buffer, parser, std::move(handler)); });
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      if (ec == beast::error::timeout && !abort->aborted.load()) {
        Disconnect();
        return Status::DeadlineExceeded(Describe(method, path) + ": no data for " +
                                        std::to_string(idle_timeout.count()) + " ms");
      }
      return TransportError(method, path, ec);
    }
    return size - parser.get().body().size;
  }

  void Disconnect() {
    body_parser.reset();
    close_after_body = false;
    if (!stream) return;
    error_code ignored;
    stream->socket().shutdown(Protocol::socket::shutdown_both, ignored);
    stream->socket().close(ignored);
    stream.reset();
    buffer.clear();
  }

  Status Connect(Clock::time_point deadline) {
    std::vector<Protocol::endpoint> endpoints;
    error_code ec;
    if (!unix_path.empty()) {
      endpoints.emplace_back(asio::local::stream_protocol::endpoint(unix_path));
    } else {
      tcp::resolver resolver(ioc);
      tcp::resolver::results_type resolved = resolver.resolve(host, port, ec);
      if (ec) return Status::Unavailable("resolve " + host + ": " + ec.message());
      for (const auto& r : resolved) endpoints.emplace_back(r.endpoint());
    }
    std::string where = unix_path.empty() ? authority : "unix:" + unix_path;
    stream.emplace(ioc);
    stream->expires_at(deadline);
    ec = Run([&](auto handler) { stream->async_connect(endpoints, std::move(handler)); });
    if (ec) {
      stream.reset();
      if (abort->aborted.load()) return Status::Cancelled("connect " + where + ": aborted");
      if (ec == beast::error::timeout) {
        return Status::DeadlineExceeded("connect " + where + ": timed out after " +
                                        std::to_string(opts.timeout.count()) + " ms");
      }
      return Status::Unavailable("connect " + where + ": " + ec.message());
    }
    if (unix_path.empty()) stream->socket().set_option(tcp::no_delay(true), ec);
    buffer.clear();
    return Status::Ok();
  }

  template <typename Body>
  void SetHeaders(http::request<Body>& req, std::string_view method, std::string_view path,
                  const RequestOptions& options, bool has_body) const {
    req.method_string(method);
    req.target(path);
    req.version(11);
    req.set(http::field::host, authority);
    req.set(http::field::user_agent, "hangar/" HANGAR_VERSION);
    for (const auto& [k, v] : opts.headers) req.set(k, v);
    for (const auto& [k, v] : options.headers) req.set(k, v);
    // A streaming call's request type describes its (possibly empty) body framing too.
    if (!options.content_type.empty() && (has_body || method == "POST")) {
      req.set(http::field::content_type, options.content_type);
    }
  }

  http::request<http::string_body> BuildRequest(std::string_view method, std::string_view path,
                                                std::string body, const RequestOptions& options) {
    // A response left half-read by Open() occupies the connection: drop it.
    if (body_parser) Disconnect();
    http::request<http::string_body> req;
    SetHeaders(req, method, path, options, !body.empty());
    req.body() = std::move(body);
    req.prepare_payload();
    req.keep_alive(true);
    return req;
  }

  // Sends `req` and reads the response header into a new `parser`, reconnecting once when a
  // reused connection turns out to have been closed by the server.
  template <typename Parser>
  Status SendAndReadHeader(std::string_view method, std::string_view path,
                           const http::request<http::string_body>& req,
                           std::optional<Parser>& parser, Clock::time_point deadline) {
    for (int attempt = 0;; ++attempt) {
      parser.emplace();
      // A HEAD response announces a body it does not send; the parser must know up front.
      if (method == "HEAD") parser->skip(true);
      bool reused = stream.has_value();
      if (!reused) HANGAR_TRY(Connect(deadline));
      stream->expires_at(deadline);
      error_code ec =
          Run([&](auto handler) { http::async_write(*stream, req, std::move(handler)); });
      if (!ec) {
        ec = Run([&](auto handler) {
          http::async_read_header(*stream, buffer, *parser, std::move(handler));
        });
      }
      if (!ec) return Status::Ok();
      bool stale = reused && attempt == 0 && !parser->got_some() &&
                   (ec == http::error::end_of_stream || ec == asio::error::eof ||
                    ec == asio::error::connection_reset || ec == asio::error::broken_pipe);
      if (!stale) return TransportError(method, path, ec);
      Disconnect();
    }
  }

  // Hands the response whose header `hp` holds to ReadBody().
  ClientResponse BeginBody(std::string_view method, std::string_view path,
                           http::response_parser<http::empty_body>& hp) {
    ClientResponse res;
    res.status = static_cast<int>(hp.get().result_int());
    for (const auto& field : hp.get()) res.headers.emplace_back(field.name_string(), field.value());
    body_parser.emplace(std::move(hp));
    body_parser->body_limit(boost::none);
    open_method = std::string(method);
    open_path = std::string(path);
    return res;
  }

  // Posted by an abort: runs on the client's thread, inside Run(), so the socket is not in use
  // by anything but the operation it fails.
  void CloseForAbort() {
    if (!stream) return;
    error_code ignored;
    stream->socket().cancel(ignored);
    stream->socket().close(ignored);
  }
};

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;
HttpClient::~HttpClient() {
  if (impl_) impl_->Disconnect();
}

Result<HttpClient> HttpClient::Create(std::string_view base_url, ClientOptions options) {
  std::string_view rest = base_url;
  if (rest.substr(0, 8) == "https://") {
    return Status::InvalidArgument("https is not supported: " + std::string(base_url));
  }
  if (rest.substr(0, 5) == "unix:") {
    std::string path(rest.substr(5));
    if (path.empty() || path[0] != '/') {
      return Status::InvalidArgument("bad base URL \"" + std::string(base_url) +
                                     "\"; expected unix:/absolute/path");
    }
    auto impl = std::make_unique<Impl>();
    impl->unix_path = std::move(path);
    impl->authority = "localhost";
    impl->display = std::string(base_url);
    impl->opts = std::move(options);
    return HttpClient(std::move(impl));
  }
  if (rest.substr(0, 7) == "http://") rest.remove_prefix(7);
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find('/') != std::string_view::npos) {
    return Status::InvalidArgument("bad base URL \"" + std::string(base_url) +
                                   "\"; expected http://host:port");
  }
  auto impl = std::make_unique<Impl>();
  size_t colon = rest.rfind(':');
  bool bracketed = !rest.empty() && rest.front() == '[';
  if (colon != std::string_view::npos && (!bracketed || colon > rest.find(']'))) {
    impl->host = std::string(rest.substr(0, colon));
    impl->port = std::string(rest.substr(colon + 1));
  } else {
    impl->host = std::string(rest);
    impl->port = "80";
  }
  if (bracketed && impl->host.size() >= 2) impl->host = impl->host.substr(1, impl->host.size() - 2);
  if (impl->host.empty() || impl->port.empty() ||
      impl->port.find_first_not_of("0123456789") != std::string::npos) {
    return Status::InvalidArgument("bad base URL \"" + std::string(base_url) +
                                   "\"; expected http://host:port");
  }
  impl->authority = std::string(rest);
  impl->display = "http://" + impl->authority;
  impl->opts = std::move(options);
  return HttpClient(std::move(impl));
}

Result<ClientResponse> HttpClient::Do(std::string_view method, std::string_view path,
                                      std::string body, std::string_view content_type) {
  RequestOptions options;
  options.content_type = std::string(content_type);
  if (body.empty()) options.content_type.clear();  // no body, no type (as before)
  return Send(method, path, std::move(body), options);
}

Result<ClientResponse> HttpClient::Send(std::string_view method, std::string_view path,
                                        std::string body, const RequestOptions& options) {
  Impl& d = *impl_;
  Clock::time_point deadline = Clock::now() + d.opts.timeout;
  http::request<http::string_body> req = d.BuildRequest(method, path, std::move(body), options);
  std::optional<http::response_parser<http::string_body>> p;
  HANGAR_TRY(d.SendAndReadHeader(method, path, req, p, deadline));
  http::response_parser<http::string_body>& parser = *p;
  parser.body_limit(d.opts.max_response_bytes);
  if (!parser.is_done()) {
    error_code ec = d.Run(
        [&](auto handler) { http::async_read(*d.stream, d.buffer, parser, std::move(handler)); });
    if (ec) return d.TransportError(method, path, ec);
  }
  http::response<http::string_body> msg = parser.release();
  ClientResponse res;
  res.status = static_cast<int>(msg.result_int());
  for (const auto& field : msg) res.headers.emplace_back(field.name_string(), field.value());
  res.body = std::move(msg.body());
  if (!msg.keep_alive()) d.Disconnect();
  return res;
}

Result<ClientResponse> HttpClient::Get(std::string_view path) { return Do("GET", path, {}, {}); }

Result<ClientResponse> HttpClient::Post(std::string_view path, const nlohmann::json& body) {
  return Do("POST", path, DumpJson(body));
}

Result<ClientResponse> HttpClient::Delete(std::string_view path) {
  return Do("DELETE", path, {}, {});
}

Result<nlohmann::json> HttpClient::CallJson(std::string_view method, std::string_view path,
                                            const nlohmann::json& body) {
  HANGAR_ASSIGN_OR_RETURN(ClientResponse res,
                          Do(method, path, body.is_null() ? std::string() : DumpJson(body)));
  if (!res.ok()) return res.ToStatus();
  return res.Json();
}

Status HttpClient::Stream(std::string_view method, std::string_view path, std::string body,
                          const DataCallback& on_data, std::chrono::milliseconds idle_timeout) {
  RequestOptions options;
  if (body.empty()) options.content_type.clear();
  return Stream(method, path, std::move(body), options, on_data, idle_timeout);
}

Status HttpClient::Stream(std::string_view method, std::string_view path, std::string body,
                          const RequestOptions& options, const DataCallback& on_data,
                          std::chrono::milliseconds idle_timeout) {
  Impl& d = *impl_;
  Clock::time_point deadline = Clock::now() + d.opts.timeout;
  http::request<http::string_body> req = d.BuildRequest(method, path, std::move(body), options);
  std::optional<http::response_parser<http::empty_body>> hp;
  HANGAR_TRY(d.SendAndReadHeader(method, path, req, hp, deadline));
  http::response_parser<http::empty_body>& header_parser = *hp;

  unsigned status = header_parser.get().result_int();
  if (status < 200 || status >= 300) {
    // An error answer is small and whole: read it and return what it says.
    http::response_parser<http::string_body> parser(std::move(header_parser));
    parser.body_limit(d.opts.max_response_bytes);
    error_code ec = d.Run(
        [&](auto handler) { http::async_read(*d.stream, d.buffer, parser, std::move(handler)); });
    if (ec) return d.TransportError(method, path, ec);
    bool keep = parser.get().keep_alive();
    Status s = StatusFromHttp(static_cast<int>(status), parser.get().body());
    if (!keep) d.Disconnect();
    return s;
  }

  http::response_parser<http::buffer_body> parser(std::move(header_parser));
  parser.body_limit(boost::none);
  char piece[16 * 1024];
  while (!parser.is_done()) {
    HANGAR_ASSIGN_OR_RETURN(size_t n,
                            d.ReadSomeBody(parser, piece, sizeof(piece), idle_timeout, method, path));
    if (n == 0) continue;
    Status s = on_data(std::string_view(piece, n));
    if (!s.ok()) {
      d.Disconnect();
      return s;
    }
  }
  if (!parser.get().keep_alive()) d.Disconnect();
  return Status::Ok();
}

Result<ClientResponse> HttpClient::Open(std::string_view method, std::string_view path,
                                        std::string body, const RequestOptions& options) {
  Impl& d = *impl_;
  Clock::time_point deadline = Clock::now() + d.opts.timeout;
  http::request<http::string_body> req = d.BuildRequest(method, path, std::move(body), options);
  std::optional<http::response_parser<http::empty_body>> hp;
  HANGAR_TRY(d.SendAndReadHeader(method, path, req, hp, deadline));
  return d.BeginBody(method, path, *hp);
}

Result<ClientResponse> HttpClient::Open(std::string_view method, std::string_view path,
                                        const BodyReader& body, std::optional<uint64_t> body_length,
                                        const RequestOptions& options) {
  Impl& d = *impl_;
  d.Disconnect();  // a body read from `body` cannot be sent again: never risk a stale connection
  HANGAR_TRY(d.Connect(Clock::now() + d.opts.timeout));
  http::request<http::empty_body> req;
  d.SetHeaders(req, method, path, options, true);
  if (body_length) {
    req.content_length(*body_length);
  } else {
    req.chunked(true);
  }
  req.keep_alive(true);
  http::request_serializer<http::empty_body> sr(req);
  d.stream->expires_after(d.opts.timeout);
  error_code write_ec =
      d.Run([&](auto handler) { http::async_write_header(*d.stream, sr, std::move(handler)); });
  std::string piece(64 * 1024, '\0');
  uint64_t sent = 0;
  bool chunked = !body_length.has_value();
  while (!write_ec) {
    Result<size_t> n = body(piece.data(), piece.size());
    if (!n.ok()) {
      d.Disconnect();
      return n.status();
    }
    if (*n == 0) break;
    if (body_length && sent + *n > *body_length) {
      d.Disconnect();
      return Status::InvalidArgument(d.Describe(method, path) + ": the body is longer than its " +
                                     std::to_string(*body_length) + " bytes");
    }
    sent += *n;
    char size_line[24];
    int size_len = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", *n);
    std::vector<asio::const_buffer> buffers;
    if (chunked) buffers.emplace_back(size_line, static_cast<size_t>(size_len));
    buffers.emplace_back(piece.data(), *n);
    if (chunked) buffers.emplace_back(asio::buffer("\r\n", 2));
    d.stream->expires_after(d.opts.timeout);
    write_ec =
        d.Run([&](auto handler) { asio::async_write(*d.stream, buffers, std::move(handler)); });
  }
  if (!write_ec) {
    if (body_length && sent != *body_length) {
      d.Disconnect();
      return Status::InvalidArgument(d.Describe(method, path) + ": the body ended after " +
                                     std::to_string(sent) + " of its " +
                                     std::to_string(*body_length) + " bytes");
    }
    if (chunked) {
      d.stream->expires_after(d.opts.timeout);
      write_ec = d.Run([&](auto handler) {
        asio::async_write(*d.stream, asio::buffer("0\r\n\r\n", 5), std::move(handler));
      });
    }
  }
  if (write_ec && d.abort->aborted.load()) return d.TransportError(method, path, write_ec);
  // Even when the send failed, the server may have answered first (413, 401) and closed: read
  // what it said.
  std::optional<http::response_parser<http::empty_body>> hp;
  hp.emplace();
  if (method == "HEAD") hp->skip(true);
  d.stream->expires_after(d.opts.timeout);
  error_code ec = d.Run(
      [&](auto handler) { http::async_read_header(*d.stream, d.buffer, *hp, std::move(handler)); });
  if (ec) return d.TransportError(method, path, write_ec ? write_ec : ec);
  ClientResponse res = d.BeginBody(method, path, *hp);
  d.close_after_body = static_cast<bool>(write_ec);
  return res;
}

Result<size_t> HttpClient::ReadBody(char* buffer, size_t size,
                                    std::chrono::milliseconds idle_timeout) {
  Impl& d = *impl_;
  if (!d.body_parser) return Status::FailedPrecondition("ReadBody: no response is open");
  if (size == 0) return Status::InvalidArgument("ReadBody: empty buffer");
  std::string method = d.open_method;
  std::string path = d.open_path;
  while (!d.body_parser->is_done()) {
    HANGAR_ASSIGN_OR_RETURN(size_t n,
                            d.ReadSomeBody(*d.body_parser, buffer, size, idle_timeout, method, path));
    if (n > 0) return n;
  }
  bool keep = d.body_parser->get().keep_alive() && !d.close_after_body;
  d.body_parser.reset();
  if (!keep) d.Disconnect();
  return size_t{0};
}

std::function<void()> HttpClient::AbortHandle() {
  std::shared_ptr<Impl::AbortState> state = impl_->abort;
  return [state] {
    std::lock_guard lock(state->mu);
    if (state->aborted.exchange(true)) return;
    if (state->impl == nullptr) return;
    Impl* impl = state->impl;
    asio::post(impl->ioc, [impl] { impl->CloseForAbort(); });
  };
}

void HttpClient::Disconnect() { impl_->Disconnect(); }

}  // namespace hangar::api
