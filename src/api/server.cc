#include "hangar/api/server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "hangar/api/error.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "internal.h"

namespace hangar::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
// TCP or Unix: one server, whatever the listening socket is.
using Protocol = asio::generic::stream_protocol;
using Stream = beast::basic_stream<Protocol>;
using boost::system::error_code;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr size_t kReadSize = 8192;
// After an error response the client may still be sending (a body we refused); reading it for
// a moment before closing keeps the kernel from answering with a reset that would destroy the
// response in flight.
constexpr std::chrono::milliseconds kLingerTime{500};
constexpr size_t kLingerBytes = 1 << 20;
// After the grace period, how long forced connections get to unwind before the loops stop.
constexpr std::chrono::seconds kForceWait{2};

std::string FormatEndpoint(const tcp::endpoint& ep) {
  const asio::ip::address& a = ep.address();
  std::string host = a.to_string();
  if (a.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

bool IsTcp(const Protocol::endpoint& ep) {
  return ep.protocol().family() == AF_INET || ep.protocol().family() == AF_INET6;
}

// "127.0.0.1:8080", "[::1]:8080", "unix:/run/x.sock" ("unix" for an unnamed Unix socket).
std::string FormatEndpoint(const Protocol::endpoint& ep) {
  if (IsTcp(ep)) {
    tcp::endpoint t;
    std::memcpy(t.data(), ep.data(), std::min<size_t>(ep.size(), t.capacity()));
    return FormatEndpoint(t);
  }
  if (ep.protocol().family() == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(ep.data());
    size_t len = ep.size() > offsetof(sockaddr_un, sun_path)
                     ? ep.size() - offsetof(sockaddr_un, sun_path)
                     : 0;
    std::string path(un->sun_path, strnlen(un->sun_path, len));
    return path.empty() ? "unix" : "unix:" + path;
  }
  return "family " + std::to_string(ep.protocol().family());
}

uint16_t PortOf(const Protocol::endpoint& ep) {
  if (!IsTcp(ep)) return 0;
  tcp::endpoint t;
  std::memcpy(t.data(), ep.data(), std::min<size_t>(ep.size(), t.capacity()));
  return t.port();
}

// The Date header, formatted once per second per thread.
std::string_view HttpDate() {
  thread_local std::time_t cached_second = 0;
  thread_local char buf[64];
  thread_local size_t len = 0;
  std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    len = std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cached_second = now;
  }
  return {buf, len};
}

Status ListenError(const std::string& where, const error_code& ec) {
  std::string message = "listen " + where + ": " + ec.message();
  switch (ec.value()) {
    case EADDRINUSE:
      return Status(Code::kUnavailable, std::move(message), ec.value());
    case EACCES:
    case EPERM:
      return Status(Code::kPermissionDenied, std::move(message), ec.value());
    case EADDRNOTAVAIL:
      return Status(Code::kInvalidArgument, std::move(message), ec.value());
    default:
      return Status(Code::kInternal, std::move(message), ec.value());
  }
}

// Errors after which the peer is simply gone or too slow: close without answering.
bool IsDisconnect(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == beast::error::timeout || ec == asio::error::operation_aborted ||
         ec.category() != http::make_error_code(http::error::end_of_stream).category();
}

}  // namespace

class Connection;

// The server's state, shared by its connections (Server::Impl is this plus nothing: a named
// class at namespace scope, so Connection can refer to it).
class ServerCore {
 public:
  ServerCore(ServerOptions options, Router routes)
      : opts(std::move(options)), router(std::move(routes)) {}

  Status Start();
  Status Listen();
  Status AdoptListener(int fd);
  Status Shutdown(std::chrono::milliseconds grace);
  asio::awaitable<void> AcceptLoop();
  void Register(Connection* c);
  void Unregister(Connection* c);
  template <typename F>
  void ForEachConnection(F f);

  const ServerOptions opts;
  const Router router;
  std::atomic<bool> stopping{false};
  std::atomic<uint16_t> bound_port{0};
  std::string bound_endpoint;

  // Declared before the event loops: connections unregister themselves while the loops'
  // destructors destroy unfinished coroutines.
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_set<Connection*> connections;
  std::atomic<size_t> active{0};

  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  // The pool for RouteOptions::blocking handlers: an asio::thread_pool without threads of its
  // own, joined by threads started on demand (Enter) up to `max_threads`, kept once started.
  struct BlockingPool {
    explicit BlockingPool(int max) : pool(0), max_threads(static_cast<size_t>(std::max(max, 1))) {}
    ~BlockingPool() { Join(); }

    // Before a task is handed to `pool`: one more thread if every thread is busy. False (and
    // the task not counted) when there is no thread at all and none can be started — e.g.
    // envd in a sandbox whose processes used up its pids limit: the caller answers 503
    // instead of queueing a task nothing would ever run. A task queued behind busy threads
    // while no new one can start simply waits for one.
    bool Enter() {
      std::lock_guard lock(mu);
      if (!joined && busy >= threads.size() && threads.size() < max_threads) {
        try {
          threads.emplace_back([this] { pool.attach(); });
        } catch (const std::system_error& e) {
          log::Warn("http server: cannot start a thread for blocking calls",
                    {{"threads", threads.size()}, {"error", e.what()}});
          if (threads.empty()) return false;
        }
      }
      ++busy;
      return true;
    }
    void Leave() {
      std::lock_guard lock(mu);
      --busy;
    }
    // Runs what was handed over to the end, then the threads return (asio: once the pool's
    // work count reaches zero its scheduler stops, and attach() returns).
    void Join() {
      std::vector<std::thread> started;
      {
        std::lock_guard lock(mu);
        if (joined) return;
        joined = true;
        started.swap(threads);
      }
      if (started.empty()) {
        pool.stop();  // nothing ever ran; nothing can be queued without a thread to run it
      } else {
        pool.wait();
      }
      for (auto& t : started) t.join();
    }

    asio::thread_pool pool;
    const size_t max_threads;
    std::mutex mu;
    std::vector<std::thread> threads;
    size_t busy = 0;
    bool joined = false;
  };
  std::optional<BlockingPool> blocking_pool;
  std::optional<asio::basic_socket_acceptor<Protocol>> acceptor;  // on contexts[0]
  std::string unix_path_created;  // the socket file Listen made, removed at Shutdown
  bool is_tcp = true;             // TCP (set TCP_NODELAY on connections) or Unix
  std::vector<std::thread> threads;
  bool started = false;
  bool shut_down = false;
};

class Server::Impl : public ServerCore {
 public:
  using ServerCore::ServerCore;
};

// One client connection, served by one coroutine on one I/O thread. Every member is touched
// only on that thread; other threads reach it through asio::post.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(ServerCore& server, Protocol::socket socket)
      : server_(server),
        opts_(server.opts),
        stream_(std::move(socket)),
        wake_timer_(stream_.get_executor()) {
    error_code ec;
    Protocol::endpoint ep = stream_.socket().remote_endpoint(ec);
    remote_ = ec ? "unknown" : FormatEndpoint(ep);
  }
  ~Connection() { server_.Unregister(this); }

  static asio::awaitable<void> Run(std::shared_ptr<Connection> self) {
    try {
      co_await self->Serve();
    } catch (const std::exception& e) {
      log::Error("http connection failed", {{"remote", self->remote_}, {"error", e.what()}});
    }
    self->Close();
  }

  asio::any_io_executor executor() { return stream_.get_executor(); }

  // Graceful shutdown: an idle connection closes now; one reading or handling a request
  // answers it with "Connection: close"; a stream is asked to end.
  void BeginShutdown() {
    stopping_ = true;
    if (phase_ == Phase::kIdle) {
      stream_.cancel();
    } else if (phase_ == Phase::kStreaming && stream_state_) {
      stream_state_->Cancel(Status::Cancelled("server is shutting down"), false);
    }
  }

  void ForceClose() {
    stopping_ = true;
    force_closed_ = true;
    if (stream_state_) stream_state_->Cancel(Status::Cancelled("server is shutting down"), true);
    wake_timer_.cancel();
    error_code ec;
    stream_.socket().close(ec);
  }

 private:
  enum class Phase { kIdle, kReading, kHandling, kStreaming };

  asio::awaitable<void> Serve();
  asio::awaitable<Response> Dispatch(const RouteMatch& match, const Request& request);
  Response Invoke(const Route& route, const Request& request);
  template <typename Body>
  void SetCommonHeaders(http::response<Body>& h, const Response& res, bool keep_alive,
                        unsigned version);
  asio::awaitable<bool> SendResponse(Response& res, bool keep_alive, bool head, size_t* bytes);
  asio::awaitable<bool> SendStream(Response& res, bool keep_alive, bool head, size_t* bytes);
  asio::awaitable<void> SendErrorAndLinger(int http_status, const Status& status);
  asio::awaitable<void> Linger();
  Result<size_t> ReadBodyPiece(char* out, size_t size);
  void WatchForHangup();
  void AccessLog(std::string_view method, std::string_view target, int status, size_t bytes,
                 std::chrono::steady_clock::time_point start);
  void Close();

  ServerCore& server_;
  const ServerOptions& opts_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::string remote_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Phase phase_ = Phase::kIdle;
  bool stopping_ = false;
  bool force_closed_ = false;
  bool client_gone_ = false;
  bool closed_ = false;
  asio::steady_timer wake_timer_;
  asio::cancellation_signal watch_cancel_;
  uint64_t watch_generation_ = 0;
  std::shared_ptr<internal::StreamState> stream_state_;
  // stream_body routes: what the last read produced and how much of it was handed out.
  std::string body_piece_;
  size_t body_piece_offset_ = 0;
  size_t body_limit_ = 0;
};

asio::awaitable<void> Connection::Serve() {
  // The first request must be complete within read_timeout of the accept, so a connection that
  // never sends anything costs no more than one that sends slowly.
  stream_.expires_after(opts_.read_timeout);
  bool first = true;
  for (;;) {
    if (buffer_.size() == 0) {
      phase_ = Phase::kIdle;
      if (stopping_ || server_.stopping.load(std::memory_order_relaxed)) co_return;
      if (!first) stream_.expires_after(opts_.idle_timeout);
      auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(kReadSize), kAwait);
      if (ec) co_return;
      buffer_.commit(n);
    }
    phase_ = Phase::kReading;
    if (!first) stream_.expires_after(opts_.read_timeout);
    first = false;
    auto start = std::chrono::steady_clock::now();

    parser_.emplace();
    parser_->header_limit(
        static_cast<uint32_t>(std::min<size_t>(opts_.max_header_bytes, UINT32_MAX)));
    // The route decides the body limit; Beast would otherwise judge Content-Length against a
    // limit already while reading the header.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    {
      auto [ec, n] = co_await http::async_read_header(stream_, buffer_, *parser_, kAwait);
      if (ec == http::error::header_limit) {
        co_await SendErrorAndLinger(
            431, Status::ResourceExhausted("request header exceeds " +
                                           std::to_string(opts_.max_header_bytes) + " bytes"));
        co_return;
      }
      if (ec) {
        if (!IsDisconnect(ec)) {
          co_await SendErrorAndLinger(
              400, Status::InvalidArgument("malformed request: " + ec.message()));
        }
        co_return;
      }
    }
    internal::BeastRequest& req = parser_->get();
    std::string_view target = req.target();
    size_t qmark = target.find('?');
    internal::RequestData data{
        &req, target.substr(0, qmark),
        qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1), remote_};
    RouteMatch match = server_.router.Match(req.method_string(), data.path);

    size_t body_limit = opts_.max_body_bytes;
    if (match.route != nullptr && match.route->options.max_body_bytes) {
      body_limit = *match.route->options.max_body_bytes;
    }
    bool stream_body = match.route != nullptr && match.route->options.stream_body;
    if (!parser_->is_done()) {
      auto too_large = [&] {
        return Status::ResourceExhausted("request body exceeds " + std::to_string(body_limit) +
                                         " bytes");
      };
      // Refuse by Content-Length before reading anything, so a client that waits for
      // "100 Continue" never uploads the body at all.
      if (parser_->content_length() && *parser_->content_length() > body_limit) {
        co_await SendErrorAndLinger(413, too_large());
        co_return;
      }
      if (beast::iequals(req[http::field::expect], "100-continue")) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(kContinue), kAwait);
        if (ec) co_return;
      }
      parser_->body_limit(body_limit);
      if (!stream_body) {
        auto [ec, n] = co_await http::async_read(stream_, buffer_, *parser_, kAwait);
        if (ec == http::error::body_limit) {
          co_await SendErrorAndLinger(413, too_large());
          co_return;
        }
        if (ec) {
          if (!IsDisconnect(ec)) {
            co_await SendErrorAndLinger(
                400, Status::InvalidArgument("malformed request: " + ec.message()));
          }
          co_return;
        }
      }
    }
    if (stream_body) {
      body_limit_ = body_limit;
      body_piece_.clear();
      body_piece_offset_ = 0;
      data.read_body = [this](char* out, size_t size) { return ReadBodyPiece(out, size); };
    }

    phase_ = Phase::kHandling;
    Request request(&data, &match.params);
    Response res = co_await Dispatch(match, request);
    if (force_closed_) co_return;
    if (res.status < 100 || res.status > 999) {
      log::Error("http handler returned an invalid status",
                 {{"route", match.route ? match.route->pattern : ""}, {"status", res.status}});
      res = ErrorResponse(
          Status::Internal("handler returned invalid HTTP status " + std::to_string(res.status)));
    }

    // A body the handler left unread cannot be skipped reliably: answer, then close.
    bool body_left = !parser_->is_done();
    bool keep_alive = req.keep_alive() && !body_left && !stopping_ && !server_.stopping.load();
    bool head = req.method() == http::verb::head;
    size_t bytes = 0;
    bool sent = res.is_stream() ? co_await SendStream(res, keep_alive, head, &bytes)
                                : co_await SendResponse(res, keep_alive, head, &bytes);
    AccessLog(req.method_string(), target, res.status, bytes, start);
    if (sent && body_left) co_await Linger();
    if (!sent || !keep_alive) co_return;
  }
}

asio::awaitable<Response> Connection::Dispatch(const RouteMatch& match, const Request& request) {
  switch (match.kind) {
    case RouteMatch::Kind::kFound:
      break;
    case RouteMatch::Kind::kNotFound:
      co_return ErrorResponse(Status::NotFound("no route for " + std::string(request.method()) +
                                               " " + std::string(request.path())));
    case RouteMatch::Kind::kMethodNotAllowed: {
      Response r = ErrorResponse(
          Status::Unimplemented("method " + std::string(request.method()) + " is not allowed for " +
                                std::string(request.path()) + "; allowed: " + match.allow),
          405);
      r.SetHeader("Allow", match.allow);
      co_return r;
    }
    case RouteMatch::Kind::kBadPath:
      co_return ErrorResponse(match.error);
  }
  const Route& route = *match.route;
  if (!route.options.blocking && !route.options.stream_body) co_return Invoke(route, request);
  // The parent coroutine stays suspended until the pool is done, so the references are valid;
  // Shutdown joins the pool before it stops the I/O loops.
  ServerCore::BlockingPool& pool = *server_.blocking_pool;
  if (!pool.Enter()) {
    co_return ErrorResponse(Status::Unavailable(
        "no thread to run " + route.method + " " + route.pattern +
        ": the server cannot start one (process or memory limit reached); retry later"));
  }
  co_return co_await asio::co_spawn(
      pool.pool.get_executor(),
      [this, &route, &request, &pool]() -> asio::awaitable<Response> {
        struct Leave {
          ServerCore::BlockingPool& p;
          ~Leave() { p.Leave(); }
        } leave{pool};
        co_return Invoke(route, request);
      },
      asio::use_awaitable);
}

Response Connection::Invoke(const Route& route, const Request& request) {
  try {
    internal::HandlerScope scope;
    Result<Response> result = route.handler(request);
    if (result.ok()) return std::move(result).value();
    const Status& status = result.status();
    if (HttpStatusFor(status.code()) >= 500) {
      log::Warn("http handler failed",
                {{"method", route.method}, {"route", route.pattern}, {"error", status.ToString()}});
    }
    return ErrorResponse(status);
  } catch (const std::exception& e) {
    log::Error("http handler threw",
               {{"method", route.method}, {"route", route.pattern}, {"error", e.what()}});
  } catch (...) {
    log::Error("http handler threw", {{"method", route.method}, {"route", route.pattern}});
  }
  return ErrorResponse(Status::Internal("unexpected error in " + route.method + " " +
                                        route.pattern + "; the server log has details"));
}

template <typename Body>
void Connection::SetCommonHeaders(http::response<Body>& h, const Response& res, bool keep_alive,
                                  unsigned version) {
  h.version(version);
  h.result(static_cast<unsigned>(res.status));
  if (res.status == 499) h.reason("Client Closed Request");
  h.set(http::field::server, opts_.server_name);
  h.set(http::field::date, HttpDate());
  if (!res.content_type.empty()) h.set(http::field::content_type, res.content_type);
  for (const auto& [name, value] : res.headers) h.insert(name, value);
  h.keep_alive(keep_alive);
}

asio::awaitable<bool> Connection::SendResponse(Response& res, bool keep_alive, bool head,
                                               size_t* bytes) {
  http::response<http::string_body> msg;
  SetCommonHeaders(msg, res, keep_alive, parser_->get().version());
  // These statuses have no body by definition (and Beast refuses to frame one).
  bool bodiless = res.status < 200 || res.status == 204 || res.status == 304;
  if (!bodiless) msg.body() = std::move(res.body);
  msg.prepare_payload();
  stream_.expires_after(opts_.write_timeout);
  if (head) {
    http::response_serializer<http::string_body> sr(msg);
    auto [ec, n] = co_await http::async_write_header(stream_, sr, kAwait);
    *bytes = n;
    co_return !ec;
  }
  auto [ec, n] = co_await http::async_write(stream_, msg, kAwait);
  *bytes = n;
  co_return !ec;
}

asio::awaitable<bool> Connection::SendStream(Response& res, bool keep_alive, bool head,
                                             size_t* bytes) {
  res.stream->taken = true;
  std::shared_ptr<internal::StreamState> state = res.stream->state;
  res.stream.reset();
  unsigned version = parser_->get().version();
  // HTTP/1.0 has no chunked encoding: send the body raw and mark its end by closing.
  bool chunked = version >= 11;
  if (!chunked) keep_alive = false;

  http::response<http::empty_body> msg;
  SetCommonHeaders(msg, res, keep_alive, version);
  if (chunked) msg.chunked(true);
  http::response_serializer<http::empty_body> sr(msg);
  stream_.expires_after(opts_.write_timeout);
  auto [hec, hn] = co_await http::async_write_header(stream_, sr, kAwait);
  *bytes = hn;
  if (hec || head) {
    state->Cancel(Status::Cancelled(hec ? "write failed: " + hec.message() : "HEAD request"), true);
    co_return !hec;
  }

  phase_ = Phase::kStreaming;
  stream_state_ = state;
  std::weak_ptr<Connection> weak = weak_from_this();
  auto ex = executor();
  state->Attach([weak, ex] {
    asio::post(ex, [weak] {
      if (auto self = weak.lock()) self->wake_timer_.cancel();
    });
  });
  if (stopping_) state->Cancel(Status::Cancelled("server is shutting down"), false);
  WatchForHangup();

  bool ok = false;
  std::vector<std::string> chunks;
  std::vector<asio::const_buffer> buffers;
  for (;;) {
    if (client_gone_ || force_closed_) break;
    chunks.clear();
    Status close_status;
    internal::StreamState::Next next = state->Take(chunks, &close_status);
    if (next == internal::StreamState::Next::kWait) {
      wake_timer_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_timer_.async_wait(kAwait);
      continue;
    }
    if (next == internal::StreamState::Next::kClosed) {
      if (!close_status.ok()) {
        log::Warn("http stream aborted", {{"remote", remote_}, {"error", close_status.ToString()}});
        break;
      }
      if (chunked) {
        static constexpr std::string_view kLast = "0\r\n\r\n";
        stream_.expires_after(opts_.write_timeout);
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(kLast), kAwait);
        *bytes += n;
        ok = !ec;
      } else {
        ok = true;
      }
      break;
    }
    // One chunk for everything queued: fewer syscalls and frames when the producer is fast.
    size_t payload = 0;
    for (const auto& c : chunks) payload += c.size();
    char size_line[24];
    int size_len = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", payload);
    buffers.clear();
    if (chunked) buffers.emplace_back(size_line, static_cast<size_t>(size_len));
    for (const auto& c : chunks) buffers.emplace_back(asio::buffer(c));
    if (chunked) buffers.emplace_back(asio::buffer("\r\n", 2));
    stream_.expires_after(opts_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream_, buffers, kAwait);
    *bytes += n;
    state->Release(payload);
    if (ec) {
      state->Cancel(Status::Cancelled("write to client failed: " + ec.message()), true);
      break;
    }
  }
  watch_cancel_.emit(asio::cancellation_type::all);
  ++watch_generation_;
  state->Detach();
  if (!ok) state->Cancel(Status::Cancelled("stream ended"), true);
  stream_state_.reset();
  phase_ = Phase::kHandling;
  co_return ok&& keep_alive;
}

// While a stream waits for its producer nothing reads the socket, so a client that hangs up
// would go unnoticed until the next write — possibly never. Watch for it, so the producer's
// OnCancel runs (and e.g. kills the process whose output nobody reads any more).
void Connection::WatchForHangup() {
  uint64_t generation = ++watch_generation_;
  stream_.socket().async_wait(
      Protocol::socket::wait_read,
      asio::bind_cancellation_slot(
          watch_cancel_.slot(), [self = shared_from_this(), generation](error_code ec) {
            // A completion queued before the stream ended belongs to no stream any more.
            if (ec == asio::error::operation_aborted || generation != self->watch_generation_ ||
                self->phase_ != Phase::kStreaming) {
              return;
            }
            error_code avail_ec;
            size_t avail = self->stream_.socket().available(avail_ec);
            if (!ec && !avail_ec && avail > 0) return;  // pipelined bytes: not a hang-up
            self->client_gone_ = true;
            if (self->stream_state_) {
              self->stream_state_->Cancel(Status::Cancelled("client closed the connection"), true);
            }
            self->wake_timer_.cancel();
          }));
}

asio::awaitable<void> Connection::SendErrorAndLinger(int http_status, const Status& status) {
  Response res = ErrorResponse(status, http_status);
  size_t bytes = 0;
  unsigned version = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
  http::response<http::string_body> msg;
  SetCommonHeaders(msg, res, false, version);
  msg.body() = std::move(res.body);
  msg.prepare_payload();
  stream_.expires_after(opts_.write_timeout);
  auto [ec, n] = co_await http::async_write(stream_, msg, kAwait);
  bytes = n;
  std::string_view method = parser_ && parser_->is_header_done()
                                ? std::string_view(parser_->get().method_string())
                                : std::string_view("-");
  std::string_view target = parser_ && parser_->is_header_done()
                                ? std::string_view(parser_->get().target())
                                : std::string_view("-");
  AccessLog(method, target, http_status, bytes, std::chrono::steady_clock::now());
  if (ec) co_return;
  co_await Linger();
}

asio::awaitable<void> Connection::Linger() {
  error_code ec;
  stream_.socket().shutdown(Protocol::socket::shutdown_send, ec);
  stream_.expires_after(kLingerTime);
  size_t drained = 0;
  while (drained < kLingerBytes) {
    auto [rec, rn] = co_await stream_.async_read_some(buffer_.prepare(kReadSize), kAwait);
    if (rec) break;
    drained += rn;
  }
}

// Runs on the handler's (pool) thread while Serve() is suspended awaiting that handler, so the
// stream, buffer and parser are not in use: the read itself is posted to the connection's I/O
// thread, where Beast's timeouts work, and this thread waits for it.
Result<size_t> Connection::ReadBodyPiece(char* out, size_t size) {
  for (;;) {
    if (body_piece_offset_ < body_piece_.size()) {
      size_t n = std::min(size, body_piece_.size() - body_piece_offset_);
      std::memcpy(out, body_piece_.data() + body_piece_offset_, n);
      body_piece_offset_ += n;
      return n;
    }
    if (parser_->is_done()) return size_t{0};
    std::promise<error_code> done;
    std::future<error_code> result = done.get_future();
    asio::post(executor(), [this, &done] {
      stream_.expires_after(opts_.read_timeout);
      http::async_read_some(stream_, buffer_, *parser_,
                            [&done](error_code ec, size_t) { done.set_value(ec); });
    });
    error_code ec = result.get();
    std::string& body = parser_->get().body();
    body_piece_.swap(body);
    body.clear();
    body_piece_offset_ = 0;
    if (ec == http::error::body_limit) {
      return Status::ResourceExhausted("request body exceeds " + std::to_string(body_limit_) +
                                       " bytes");
    }
    if (ec == beast::error::timeout) {
      return Status::DeadlineExceeded("request body: no data for " +
                                      std::to_string(opts_.read_timeout.count()) + " ms");
    }
    if (ec) return Status::Unavailable("reading the request body: " + ec.message());
  }
}

void Connection::AccessLog(std::string_view method, std::string_view target, int status,
                           size_t bytes, std::chrono::steady_clock::time_point start) {
  if (!opts_.access_log) return;
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  log::Info("http", {{"method", method},
                     {"path", target},
                     {"status", status},
                     {"bytes", bytes},
                     {"ms", static_cast<double>(static_cast<int64_t>(ms * 100)) / 100},
                     {"remote", remote_}});
}

void Connection::Close() {
  if (closed_) return;
  closed_ = true;
  error_code ec;
  stream_.socket().shutdown(Protocol::socket::shutdown_send, ec);
  stream_.socket().close(ec);
}

// --- Server::Impl ----------------------------------------------------------------------------

void ServerCore::Register(Connection* c) {
  std::lock_guard lock(mu);
  connections.insert(c);
  active.fetch_add(1, std::memory_order_relaxed);
}

void ServerCore::Unregister(Connection* c) {
  std::lock_guard lock(mu);
  if (connections.erase(c) == 0) return;
  active.fetch_sub(1, std::memory_order_relaxed);
  cv.notify_all();
}

template <typename F>
void ServerCore::ForEachConnection(F f) {
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard lock(mu);
    live.reserve(connections.size());
    for (Connection* c : connections) {
      // A connection whose last owner is gone is being destroyed and unregisters itself.
      if (auto conn = c->weak_from_this().lock()) live.push_back(std::move(conn));
    }
  }
  // Outside the lock: ours may be the last reference, and ~Connection takes the lock.
  for (auto& conn : live) {
    asio::post(conn->executor(), [conn, f] { f(*conn); });
  }
}

asio::awaitable<void> ServerCore::AcceptLoop() {
  size_t next = 0;
  asio::steady_timer backoff(acceptor->get_executor());
  bool warned_full = false;
  for (;;) {
    asio::io_context& ctx = *contexts[next++ % contexts.size()];
    auto [ec, socket] = co_await acceptor->async_accept(ctx, kAwait);
    if (stopping.load()) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      // Out of file descriptors, typically: pause instead of spinning on the same error.
      log::Warn("http accept failed", {{"error", ec.message()}});
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(kAwait);
      continue;
    }
    if (active.load(std::memory_order_relaxed) >= opts.max_connections) {
      if (!warned_full) {
        log::Warn("http connection limit reached; closing new connections",
                  {{"max_connections", opts.max_connections}});
        warned_full = true;
      }
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    warned_full = false;
    error_code ignored;
    if (is_tcp) socket.set_option(tcp::no_delay(true), ignored);
    auto conn = std::make_shared<Connection>(*this, std::move(socket));
    Register(conn.get());
    asio::co_spawn(conn->executor(), Connection::Run(conn), asio::detached);
  }
}

Status ServerCore::Start() {
  if (started || shut_down) return Status::FailedPrecondition("server already started");
  Status status = Listen();
  if (!status.ok()) {
    acceptor.reset();
    if (!unix_path_created.empty()) ::unlink(unix_path_created.c_str());
    guards.clear();
    contexts.clear();
    return status;
  }
  blocking_pool.emplace(opts.blocking_threads);
  asio::co_spawn(*contexts[0], AcceptLoop(), asio::detached);
  for (auto& ctx : contexts) {
    threads.emplace_back([io = ctx.get()] {
      internal::MarkIoThread();
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          log::Error("http I/O loop: unexpected exception", {{"error", e.what()}});
        }
      }
    });
  }
  started = true;
  log::Info("http server listening", {{"address", bound_endpoint}, {"threads", contexts.size()}});
  return Status::Ok();
}

Status ServerCore::Listen() {
  int n = opts.threads > 0 ? opts.threads : static_cast<int>(std::thread::hardware_concurrency());
  n = std::max(n, 1);
  for (int i = 0; i < n; ++i) {
    contexts.push_back(std::make_unique<asio::io_context>(1));
    guards.push_back(asio::make_work_guard(*contexts.back()));
  }
  acceptor.emplace(*contexts[0]);
  error_code ec;
  if (opts.listen_fd >= 0) {
    HANGAR_TRY(AdoptListener(opts.listen_fd));
  } else {
    Protocol::endpoint endpoint;
    std::string where;
    if (!opts.unix_path.empty()) {
      where = "unix:" + opts.unix_path;
      if (opts.unix_path.size() >= sizeof(sockaddr_un::sun_path)) {
        return Status::InvalidArgument("listen " + where + ": path too long for a Unix socket");
      }
      // A socket file left by a previous run is replaced; anything else at the path is not ours.
      struct stat st {};
      if (::lstat(opts.unix_path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
          return Status::AlreadyExists("listen " + where + ": exists and is not a socket");
        }
        ::unlink(opts.unix_path.c_str());
      }
      endpoint = Protocol::endpoint(asio::local::stream_protocol::endpoint(opts.unix_path));
    } else {
      where = opts.address + ":" + std::to_string(opts.port);
      asio::ip::address address = asio::ip::make_address(opts.address, ec);
      if (ec) return Status::InvalidArgument("listen " + where + ": invalid address");
      tcp::endpoint t(address, opts.port);
      where = FormatEndpoint(t);
      endpoint = Protocol::endpoint(t);
    }
    if (acceptor->open(endpoint.protocol(), ec); ec) return ListenError(where, ec);
    acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (acceptor->bind(endpoint, ec); ec) return ListenError(where, ec);
    if (!opts.unix_path.empty()) unix_path_created = opts.unix_path;
    if (acceptor->listen(asio::socket_base::max_listen_connections, ec); ec) {
      return ListenError(where, ec);
    }
  }
  Protocol::endpoint local = acceptor->local_endpoint(ec);
  if (ec) return ListenError("fd " + std::to_string(acceptor->native_handle()), ec);
  is_tcp = IsTcp(local);
  bound_port = PortOf(local);
  bound_endpoint = FormatEndpoint(local);
  return Status::Ok();
}

Status ServerCore::AdoptListener(int fd) {
  std::string where = "fd " + std::to_string(fd);
  // Ours from here on, whatever happens: closed with the acceptor, or now.
  UniqueFd owned(fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Status::FromErrno(errno, "getsockname(" + where + ")");
  }
  int type = 0, listening = 0;
  socklen_t optlen = sizeof type;
  ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen);
  optlen = sizeof listening;
  ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen);
  if (type != SOCK_STREAM || !listening) {
    return Status::InvalidArgument("listen " + where + ": not a listening stream socket");
  }
  if (ss.ss_family != AF_UNIX && ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
    return Status::InvalidArgument("listen " + where + ": unsupported address family " +
                                   std::to_string(ss.ss_family));
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  Protocol protocol(ss.ss_family, ss.ss_family == AF_UNIX ? 0 : IPPROTO_TCP);
  error_code ec;
  acceptor->assign(protocol, owned.Release(), ec);
  if (ec) return ListenError(where, ec);
  return Status::Ok();
}

Status ServerCore::Shutdown(std::chrono::milliseconds grace) {
  if (!started || shut_down) return Status::Ok();
  shut_down = true;
  auto deadline = std::chrono::steady_clock::now() + grace;
  stopping = true;

  // Close the listener before returning anything, so "refused after Shutdown" holds.
  std::promise<void> closed;
  asio::post(*contexts[0], [&] {
    error_code ignored;
    acceptor->close(ignored);
    closed.set_value();
  });
  closed.get_future().wait();

  ForEachConnection([](Connection& c) { c.BeginShutdown(); });
  size_t forced = 0;
  {
    std::unique_lock lock(mu);
    if (!cv.wait_until(lock, deadline, [&] { return connections.empty(); })) {
      forced = connections.size();
    }
  }
  if (forced > 0) ForEachConnection([](Connection& c) { c.ForceClose(); });
  // Handlers still running there finish first: a connection awaiting one must not lose its
  // event loop underneath it.
  blocking_pool->Join();
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, kForceWait, [&] { return connections.empty(); });
  }
  guards.clear();
  for (auto& ctx : contexts) ctx->stop();
  for (auto& t : threads) t.join();
  threads.clear();
  if (!unix_path_created.empty()) ::unlink(unix_path_created.c_str());
  log::Info("http server stopped", {{"address", bound_endpoint}, {"forced", forced}});
  if (forced > 0) {
    return Status::DeadlineExceeded(std::to_string(forced) +
                                    " connection(s) still open after the grace period were closed");
  }
  return Status::Ok();
}

// --- Server ----------------------------------------------------------------------------------

Server::Server(ServerOptions options, Router router)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(router))) {}

Server::~Server() {
  if (impl_->started) (void)impl_->Shutdown(std::chrono::milliseconds(0));
  // Unfinished coroutines are destroyed with their loops; the acceptor goes first.
  impl_->acceptor.reset();
  impl_->contexts.clear();
}

Status Server::Start() { return impl_->Start(); }
uint16_t Server::port() const { return impl_->bound_port.load(); }
std::string Server::endpoint() const { return impl_->bound_endpoint; }
size_t Server::active_connections() const { return impl_->active.load(); }
Status Server::Shutdown(std::chrono::milliseconds grace) { return impl_->Shutdown(grace); }

}  // namespace hangar::api
