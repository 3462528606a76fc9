#include "hangar/api/http.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "hangar/base/log.h"
#include "internal.h"

namespace hangar::api {

// --- Request ---------------------------------------------------------------------------------

std::string_view Request::method() const { return data_->msg->method_string(); }
std::string_view Request::target() const { return data_->msg->target(); }
std::string_view Request::path() const { return data_->path; }
std::string_view Request::query_string() const { return data_->query; }
const std::string& Request::body() const { return data_->msg->body(); }

Result<size_t> Request::ReadBody(char* buffer, size_t size) const {
  if (data_->read_body) return data_->read_body(buffer, size);
  const std::string& body = data_->msg->body();
  size_t n = std::min(size, body.size() - data_->body_read);
  std::memcpy(buffer, body.data() + data_->body_read, n);
  data_->body_read += n;
  return n;
}
std::string_view Request::remote() const { return data_->remote; }

std::string_view Request::header(std::string_view name) const {
  auto it = data_->msg->find(name);
  if (it == data_->msg->end()) return {};
  return it->value();
}

bool Request::has_header(std::string_view name) const {
  return data_->msg->find(name) != data_->msg->end();
}

std::vector<std::pair<std::string_view, std::string_view>> Request::headers() const {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  for (const auto& field : *data_->msg) out.emplace_back(field.name_string(), field.value());
  return out;
}

std::string_view Request::param(std::string_view name) const {
  if (params_ == nullptr) return {};
  for (const auto& [k, v] : *params_) {
    if (k == name) return v;
  }
  return {};
}

Result<QueryParams> Request::query() const {
  Result<QueryParams> params = QueryParams::Parse(data_->query);
  if (!params.ok()) return params.status().With("query string");
  return params;
}

// --- Response --------------------------------------------------------------------------------

Response Response::Text(std::string body, int status, std::string content_type) {
  Response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

Response Response::NoContent() {
  Response r;
  r.status = 204;
  r.content_type.clear();
  return r;
}

std::pair<Response, std::shared_ptr<StreamWriter>> Response::Stream(int status,
                                                                    std::string content_type,
                                                                    StreamOptions options) {
  Response r;
  r.status = status;
  r.content_type = std::move(content_type);
  auto state = std::make_shared<internal::StreamState>(options.buffer_bytes);
  r.stream = std::make_shared<internal::StreamTicket>(state);
  auto writer = std::make_shared<StreamWriter>(std::move(state));
  return {std::move(r), std::move(writer)};
}

// --- StreamWriter ----------------------------------------------------------------------------

StreamWriter::StreamWriter(std::shared_ptr<internal::StreamState> state)
    : state_(std::move(state)) {}

StreamWriter::~StreamWriter() {
  state_->Close(Status::Internal("stream writer dropped without Close()"));
}

Status StreamWriter::Write(std::string data) { return state_->Write(std::move(data)); }
void StreamWriter::Close(Status status) { state_->Close(std::move(status)); }
bool StreamWriter::cancelled() const { return state_->cancelled(); }
void StreamWriter::OnCancel(std::function<void()> cb) { state_->OnCancel(std::move(cb)); }

// --- StreamState -----------------------------------------------------------------------------

namespace internal {
namespace {
thread_local bool tls_io_thread = false;
thread_local int tls_handler_depth = 0;
}  // namespace

void MarkIoThread() { tls_io_thread = true; }
HandlerScope::HandlerScope() { ++tls_handler_depth; }
HandlerScope::~HandlerScope() { --tls_handler_depth; }
bool MayBlock() { return !tls_io_thread && tls_handler_depth == 0; }

Status StreamState::Write(std::string data) {
  if (data.empty()) return Status::Ok();
  std::unique_lock lock(mu_);
  for (;;) {
    if (closed_) return Status::FailedPrecondition("stream already closed");
    if (cancelled_) return cancel_reason_;
    // One piece larger than the whole buffer still goes through, alone.
    if (queued_bytes_ == 0 || queued_bytes_ + data.size() <= limit_) break;
    if (!MayBlock()) {
      return Status::ResourceExhausted(
          "stream buffer full; Write inside a handler or on a server thread cannot wait");
    }
    space_cv_.wait(lock);
  }
  queued_bytes_ += data.size();
  queue_.push_back(std::move(data));
  WakeLocked();
  return Status::Ok();
}

void StreamState::Close(Status status) {
  std::function<void()> dropped;  // destroyed unlocked: it may own what owns this state
  std::lock_guard lock(mu_);
  if (closed_) return;
  closed_ = true;
  close_status_ = std::move(status);
  dropped = std::move(on_cancel_);  // the producer is done; nothing left to stop
  on_cancel_ = nullptr;
  space_cv_.notify_all();
  WakeLocked();
}

bool StreamState::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

void StreamState::OnCancel(std::function<void()> cb) {
  {
    std::lock_guard lock(mu_);
    if (!cancelled_) {
      std::swap(on_cancel_, cb);  // a replaced callback is destroyed after the lock is released
      return;
    }
  }
  if (cb) cb();
}

void StreamState::Attach(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  wake_ = std::move(wake);
}

void StreamState::Detach() {
  std::lock_guard lock(mu_);
  wake_ = nullptr;
  waiting_ = false;
}

StreamState::Next StreamState::Take(std::vector<std::string>& out, Status* close_status) {
  std::lock_guard lock(mu_);
  if (!queue_.empty()) {
    for (auto& chunk : queue_) out.push_back(std::move(chunk));
    queue_.clear();
    return Next::kData;
  }
  if (closed_) {
    *close_status = close_status_;
    return Next::kClosed;
  }
  waiting_ = true;
  return Next::kWait;
}

void StreamState::Release(size_t bytes) {
  std::lock_guard lock(mu_);
  queued_bytes_ -= std::min(bytes, queued_bytes_);
  space_cv_.notify_all();
}

void StreamState::Cancel(const Status& why, bool drop_queued) {
  std::function<void()> cb;
  {
    std::lock_guard lock(mu_);
    if (drop_queued) {
      queue_.clear();
      queued_bytes_ = 0;
    }
    if (cancelled_) return;
    cancelled_ = true;
    cancel_reason_ = why;
    cb = std::move(on_cancel_);
    on_cancel_ = nullptr;
    space_cv_.notify_all();
  }
  if (!cb) return;
  try {
    cb();
  } catch (const std::exception& e) {
    log::Error("stream OnCancel callback threw", {{"error", e.what()}});
  } catch (...) {
    log::Error("stream OnCancel callback threw", {});
  }
}

void StreamState::WakeLocked() {
  if (waiting_ && wake_) {
    waiting_ = false;
    wake_();
  }
}

}  // namespace internal
}  // namespace hangar::api
