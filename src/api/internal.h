// Private to the api module: what Request wraps and the state a streamed response shares
// between its producer (any thread) and its connection (one I/O thread).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "hangar/base/status.h"

namespace hangar::api::internal {

using BeastRequest = boost::beast::http::request<boost::beast::http::string_body>;

struct RequestData {
  const BeastRequest* msg = nullptr;
  std::string_view path;
  std::string_view query;
  std::string_view remote;
  // stream_body routes: reads the next piece from the connection (on the handler's thread).
  std::function<Result<size_t>(char*, size_t)> read_body;
  mutable size_t body_read = 0;  // otherwise: how much of msg->body() ReadBody has handed out
};

// Where StreamWriter::Write must not block: on a server I/O thread, and inside a handler
// (which may run on the blocking pool), since the body is sent only after the handler returns.
void MarkIoThread();
class HandlerScope {
 public:
  HandlerScope();
  ~HandlerScope();
  HandlerScope(const HandlerScope&) = delete;
  HandlerScope& operator=(const HandlerScope&) = delete;
};
bool MayBlock();

// The queue between a StreamWriter and the connection sending its chunks. Bytes count against
// the buffer from Write until the connection has written them to the socket (Release), so the
// bound covers the socket's backlog too.
class StreamState {
 public:
  explicit StreamState(size_t buffer_bytes) : limit_(buffer_bytes) {}

  // Producer side (any thread).
  Status Write(std::string data);
  void Close(Status status);
  bool cancelled() const;
  void OnCancel(std::function<void()> cb);

  // Connection side (its I/O thread).
  // `wake` is called (under the lock, so it must only post) whenever data or a close arrives
  // while the connection waits.
  void Attach(std::function<void()> wake);
  void Detach();
  enum class Next { kData, kClosed, kWait };
  // Moves queued chunks into `out` (kData), or reports the close (kClosed, with its status), or
  // arms the wake-up (kWait).
  Next Take(std::vector<std::string>& out, Status* close_status);
  void Release(size_t bytes);
  // Producers see cancelled from now on; OnCancel's callback runs here (unless already closed).
  // drop_queued: the client is gone, nothing queued will ever be sent.
  void Cancel(const Status& why, bool drop_queued);

 private:
  void WakeLocked();

  const size_t limit_;
  mutable std::mutex mu_;
  std::condition_variable space_cv_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;  // queued plus taken but not yet released
  bool closed_ = false;
  Status close_status_;
  bool cancelled_ = false;
  Status cancel_reason_;
  std::function<void()> on_cancel_;
  std::function<void()> wake_;
  bool waiting_ = false;
};

// What a Response carries for its stream. The connection takes it; if nobody does, the last
// Response copy cancels the stream.
struct StreamTicket {
  explicit StreamTicket(std::shared_ptr<StreamState> s) : state(std::move(s)) {}
  ~StreamTicket() {
    if (!taken) state->Cancel(Status::Cancelled("the streamed response was not sent"), true);
  }
  StreamTicket(const StreamTicket&) = delete;
  StreamTicket& operator=(const StreamTicket&) = delete;

  std::shared_ptr<StreamState> state;
  bool taken = false;
};

}  // namespace hangar::api::internal
