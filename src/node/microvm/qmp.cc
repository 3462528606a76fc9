#include "hangar/microvm/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include <fmt/format.h>

namespace hangar::microvm {

Result<QmpClient> QmpClient::Connect(const std::string& socket_path,
                                     std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument(fmt::format("QMP socket path too long: {}", socket_path));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket(AF_UNIX)");
  UniqueFd sock(fd);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, fmt::format("connect({})", socket_path)).With("QMP");
  }
  QmpClient c(std::move(sock), timeout);
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json greeting, c.ReadMessage());
  if (!greeting.contains("QMP")) {
    return Status::Internal(fmt::format("{} is not a QMP socket", socket_path));
  }
  HANGAR_TRY(c.Execute("qmp_capabilities").status());
  return c;
}

Result<nlohmann::json> QmpClient::ReadMessage() {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) return Status::Internal("QMP: unparsable message: " + line);
      return j;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::DeadlineExceeded("QMP: no answer in time");
    pollfd pfd{fd_.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) return Status::FromErrno(errno, "poll(QMP)");
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) return Status::Unavailable("QMP: QEMU closed the monitor");
    if (n < 0) return Status::FromErrno(errno, "read(QMP)");
    if (n == 0) return Status::Unavailable("QMP: QEMU closed the monitor");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<nlohmann::json> QmpClient::Execute(const std::string& command,
                                          const nlohmann::json& arguments) {
  nlohmann::json msg = {{"execute", command}};
  if (!arguments.is_null()) msg["arguments"] = arguments;
  // send(MSG_NOSIGNAL): a QEMU that went away is an error here, not a SIGPIPE.
  const std::string line = msg.dump() + "\n";
  for (size_t off = 0; off < line.size();) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return Status::Unavailable("QMP: QEMU closed the monitor");
    }
    if (n < 0) return Status::FromErrno(errno, "send(QMP)");
    off += static_cast<size_t>(n);
  }
  for (;;) {
    HANGAR_ASSIGN_OR_RETURN(nlohmann::json reply, ReadMessage());
    if (reply.contains("event")) continue;
    if (reply.contains("error")) {
      const auto& e = reply["error"];
      return Status::FailedPrecondition(
          fmt::format("QMP {}: {}: {}", command, e.value("class", "?"), e.value("desc", "?")));
    }
    if (reply.contains("return")) return reply["return"];
  }
}

Result<std::string> QmpClient::Human(const std::string& command_line) {
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json r,
                          Execute("human-monitor-command", {{"command-line", command_line}}));
  if (!r.is_string()) return Status::Internal("QMP: human-monitor-command returned no text");
  return r.get<std::string>();
}

uint16_t ParseHostForwardPort(const std::string& info) {
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string proto, fd, src_addr, src_port;
    if (!(f >> proto >> fd >> src_addr >> src_port)) continue;
    if (proto != "TCP[HOST_FORWARD]") continue;
    int port = std::atoi(src_port.c_str());
    if (port > 0 && port < 65536) return static_cast<uint16_t>(port);
  }
  return 0;
}

}  // namespace hangar::microvm
