#include "relay.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hangar::envd::internal {

namespace {

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("unix socket path '" + path + "' is empty or too long");
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Both directions until both are closed; a side's EOF is passed on as a half-close.
void Pump(UniqueFd a, UniqueFd b) {
  int fd[2] = {a.get(), b.get()};
  bool open[2] = {true, true};
  char buf[64 * 1024];
  while (open[0] || open[1]) {
    pollfd p[2];
    for (int i = 0; i < 2; ++i) p[i] = {open[i] ? fd[i] : -1, POLLIN, 0};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || p[i].revents == 0) continue;
      ssize_t n = ::read(fd[i], buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        open[i] = false;
        ::shutdown(fd[1 - i], SHUT_WR);
        continue;
      }
      if (!WriteAll(fd[1 - i], std::string_view(buf, static_cast<size_t>(n))).ok()) return;
    }
  }
}

}  // namespace

Result<std::unique_ptr<HostSocketRelay>> HostSocketRelay::Start(const std::string& from,
                                                                const std::string& to) {
  HANGAR_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(from));
  HANGAR_TRY(UnixAddress(to).status());
  struct stat st {};
  if (::lstat(from.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists("relay " + from + ": exists and is not a socket");
    }
    ::unlink(from.c_str());
  }
  std::unique_ptr<HostSocketRelay> r(new HostSocketRelay(from, to));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket(AF_UNIX)");
  r->listener_.Reset(fd);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, "bind(" + from + ")");
  }
  if (::listen(fd, SOMAXCONN) != 0) return Status::FromErrno(errno, "listen(" + from + ")");
  r->acceptor_ = std::thread([p = r.get()] { p->AcceptLoop(); });
  return r;
}

void HostSocketRelay::AcceptLoop() {
  auto to = UnixAddress(to_);
  for (;;) {
    int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // the listener was shut down (Stop)
    }
    UniqueFd client(c);
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) continue;
    UniqueFd server(s);
    if (::connect(s, reinterpret_cast<const sockaddr*>(&*to), sizeof *to) != 0) continue;
    std::thread(Pump, std::move(client), std::move(server)).detach();
  }
}

void HostSocketRelay::Stop() {
  if (!listener_.valid()) return;
  ::shutdown(listener_.get(), SHUT_RDWR);
  ::unlink(from_.c_str());
  // accept(2) may not wake on every kernel (gVisor's host-backed sockets): never block on it.
  if (acceptor_.joinable()) acceptor_.detach();
  (void)listener_.Release();  // the accept thread may still be inside accept on it
}

}  // namespace hangar::envd::internal
