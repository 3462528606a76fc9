#include "hangar/api/forward.h"

#include <atomic>
#include <cctype>
#include <charconv>
#include <memory>
#include <optional>
#include <thread>

#include "hangar/api/client.h"
#include "hangar/api/error.h"
#include "hangar/base/log.h"

namespace hangar::api {

namespace {

std::atomic<size_t> g_streams{0};

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Framing and hop-by-hop headers belong to one connection, never to the forwarded message.
bool NotCopied(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "Host",   "Content-Length", "Transfer-Encoding", "Connection",          "Keep-Alive",
      "TE",     "Trailer",        "Upgrade",           "Proxy-Authorization", "Proxy-Connection",
      "Expect", "Content-Type"};
  for (std::string_view n : kNames) {
    if (IEquals(name, n)) return true;
  }
  return false;
}

// Status and error body for a call that never got an answer from the upstream.
Response UpstreamFailure(const Status& status) {
  if (status.code() == Code::kDeadlineExceeded) return ErrorResponse(status, 504);
  return ErrorResponse(Status::Unavailable(status.message()), 502);
}

}  // namespace

bool HeaderMatches(std::string_view name, const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    if (!p.empty() && p.back() == '*') {
      std::string_view prefix(p.data(), p.size() - 1);
      if (name.size() >= prefix.size() && IEquals(name.substr(0, prefix.size()), prefix)) {
        return true;
      }
    } else if (IEquals(name, p)) {
      return true;
    }
  }
  return false;
}

size_t ForwardStreamsInFlight() { return g_streams.load(); }

Result<Response> Forward(const Request& request, const Upstream& upstream,
                         const ForwardOptions& options) {
  if (upstream.target.empty() || upstream.target[0] != '/') {
    return Status::Internal("forward: the upstream target must start with '/': \"" +
                            upstream.target + "\"");
  }
  Result<HttpClient> created = HttpClient::Create(upstream.base_url, {.timeout = options.timeout});
  if (!created.ok()) return Status::Internal("forward: " + created.status().message());
  auto client = std::make_unique<HttpClient>(std::move(created).value());

  RequestOptions ro;
  ro.content_type = std::string(request.header("Content-Type"));
  auto replaced = [&](std::string_view name) {
    for (const auto& [k, v] : upstream.set_headers) {
      if (IEquals(k, name)) return true;
    }
    return false;
  };
  for (const auto& [name, value] : request.headers()) {
    if (NotCopied(name) || replaced(name)) continue;
    if (HeaderMatches(name, options.request_headers)) ro.headers.emplace_back(name, value);
  }
  for (const auto& [name, value] : upstream.set_headers) {
    if (IEquals(name, "Content-Type")) {
      ro.content_type = value;
    } else {
      ro.headers.emplace_back(name, value);
    }
  }

  // The body: whole when the server read it already, else read from the client as it is sent.
  Result<ClientResponse> opened = Status::Internal("unreachable");
  std::string_view length_header = request.header("Content-Length");
  bool chunked_in = request.has_header("Transfer-Encoding");
  if (!request.body().empty() || (!chunked_in && (length_header.empty() || length_header == "0"))) {
    opened = client->Open(request.method(), upstream.target, request.body(), ro);
  } else {
    std::optional<uint64_t> length;
    if (!chunked_in) {
      uint64_t n = 0;
      auto [end, ec] =
          std::from_chars(length_header.data(), length_header.data() + length_header.size(), n);
      if (ec != std::errc() || end != length_header.data() + length_header.size()) {
        return Status::InvalidArgument("bad Content-Length \"" + std::string(length_header) + "\"");
      }
      length = n;
    }
    Status read_failure;
    BodyReader reader = [&](char* buffer, size_t size) -> Result<size_t> {
      Result<size_t> n = request.ReadBody(buffer, size);
      if (!n.ok()) read_failure = n.status();
      return n;
    };
    opened = client->Open(request.method(), upstream.target, reader, length, ro);
    if (!read_failure.ok()) {
      if (read_failure.code() == Code::kResourceExhausted) return ErrorResponse(read_failure, 413);
      return read_failure;
    }
  }
  if (!opened.ok()) {
    log::Warn("forward failed", {{"upstream", upstream.base_url},
                                 {"target", upstream.target},
                                 {"error", opened.status().ToString()}});
    return UpstreamFailure(opened.status());
  }
  ClientResponse& head = *opened;

  std::vector<std::pair<std::string, std::string>> headers;
  for (auto& [name, value] : head.headers) {
    if (NotCopied(name)) continue;
    if (HeaderMatches(name, options.response_headers)) headers.emplace_back(name, value);
  }
  std::string content_type(head.header("Content-Type"));

  std::string_view length = head.header("Content-Length");
  size_t declared = 0;
  bool has_length =
      !length.empty() &&
      std::from_chars(length.data(), length.data() + length.size(), declared).ec == std::errc();
  bool bodiless =
      head.status < 200 || head.status == 204 || head.status == 304 || request.method() == "HEAD";
  if (bodiless || (has_length && declared <= options.inline_bytes)) {
    Response r;
    r.status = head.status;
    r.content_type = content_type;
    r.headers = std::move(headers);
    char piece[16 * 1024];
    for (;;) {
      Result<size_t> n = client->ReadBody(piece, sizeof piece, options.timeout);
      if (!n.ok()) return UpstreamFailure(n.status());
      if (*n == 0) break;
      r.body.append(piece, *n);
    }
    return r;
  }

  auto [response, writer] = Response::Stream(head.status, content_type, options.stream);
  response.headers = std::move(headers);
  // Runs on a server thread when the client goes away: closing the upstream socket (posted to
  // the producer's client) wakes the producer at once, whatever it waits for.
  writer->OnCancel(client->AbortHandle());
  g_streams.fetch_add(1);
  std::thread([client = std::move(client), writer = writer, idle = options.idle_timeout,
               base = upstream.base_url, target = upstream.target]() mutable {
    std::string piece(64 * 1024, '\0');
    Status end;
    for (;;) {
      Result<size_t> n = client->ReadBody(piece.data(), piece.size(), idle);
      if (!n.ok()) {
        end = n.status();
        break;
      }
      if (*n == 0) break;
      Status w = writer->Write(std::string(piece.data(), *n));
      if (!w.ok()) {
        end = w;
        break;
      }
    }
    if (!end.ok() && !writer->cancelled()) {
      log::Warn("forwarded stream failed",
                {{"upstream", base}, {"target", target}, {"error", end.ToString()}});
    }
    writer->Close(end);
    client.reset();  // the upstream connection is closed before the stream counts as gone
    g_streams.fetch_sub(1);
  }).detach();
  return std::move(response);
}

}  // namespace hangar::api
