// Helpers for the server tests: a server on 127.0.0.1:0 and a raw socket for the cases a
// well-behaved client cannot produce (slow, oversized, pipelined, half-sent requests).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "hangar/api/server.h"

namespace hangar::api::testing {

using namespace std::chrono_literals;

inline ServerOptions TestOptions() {
  ServerOptions o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.threads = 2;
  o.blocking_threads = 4;
  o.access_log = false;
  return o;
}

inline std::unique_ptr<Server> StartServer(Router router, ServerOptions o = TestOptions()) {
  auto s = std::make_unique<Server>(o, std::move(router));
  Status st = s->Start();
  EXPECT_TRUE(st.ok()) << st.ToString();
  return st.ok() ? std::move(s) : nullptr;
}

inline std::string BaseUrl(const Server& s) { return "http://" + s.endpoint(); }

// A blocking TCP socket with bounded reads.
class RawConn {
 public:
  explicit RawConn(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads whatever arrives within `timeout`; stops early at EOF. Returns false on EOF/reset.
  bool ReadSome(std::string& out, std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return true;
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    out.append(buf, static_cast<size_t>(n));
    return true;
  }

  // Reads one response (header plus Content-Length body) or what came before EOF/timeout.
  std::string ReadResponse(std::chrono::milliseconds timeout = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      size_t end = pending_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t body = 0;
        size_t cl = pending_.find("Content-Length: ");
        if (cl != std::string::npos && cl < end) body = std::stoul(pending_.substr(cl + 16));
        if (pending_.size() >= end + 4 + body) {
          std::string r = pending_.substr(0, end + 4 + body);
          pending_.erase(0, end + 4 + body);
          return r;
        }
      }
      if (!ReadSome(pending_, 50ms)) break;
    }
    std::string r = std::move(pending_);
    pending_.clear();
    return r;
  }

  // True if the peer closes (EOF or reset) within `timeout`, discarding anything it sends.
  bool WaitClosed(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string sink;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!ReadSome(sink, 20ms)) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string pending_;
};

}  // namespace hangar::api::testing
