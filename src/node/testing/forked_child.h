// ForkedChild: runs a function in a forked child for tests that must observe a process from
// outside (cgroups, namespaces, seccomp, capabilities). The child blocks until Go() so the
// parent can first place it (cgroup, uid map); a message pipe carries results back. The
// destructor SIGKILLs and reaps a child still running, so a failing assertion leaks nothing.
// Test-only; the test process must be single-threaded when it forks.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

namespace hangar::node::testing {

class ForkedChild {
 public:
  // `fn` returns the child's exit code. If wait_for_go, the child runs fn only after Go().
  // `before_go` (optional) runs in the child before it waits, e.g. to unshare a namespace the
  // parent then configures; if it returns false the child exits with 121.
  explicit ForkedChild(const std::function<int(ForkedChild&)>& fn, bool wait_for_go = true,
                       const std::function<bool()>& before_go = nullptr) {
    int go[2], msg[2];
    if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(msg, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(go[1]);
      ::close(msg[0]);
      msg_fd_ = msg[1];
      if (before_go && !before_go()) ::_exit(121);
      char c;
      if (wait_for_go && ::read(go[0], &c, 1) != 1) ::_exit(120);
      ::_exit(fn(*this));
    }
    ::close(go[0]);
    ::close(msg[1]);
    go_fd_ = go[1];
    msg_fd_ = msg[0];
  }
  ForkedChild(const ForkedChild&) = delete;
  ForkedChild& operator=(const ForkedChild&) = delete;
  ~ForkedChild() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    if (go_fd_ >= 0) ::close(go_fd_);
    if (msg_fd_ >= 0) ::close(msg_fd_);
  }

  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  void Go() {
    char c = 'g';
    (void)!::write(go_fd_, &c, 1);
  }

  // In the child: the write end of the message pipe (e.g. to dup2 onto stdout before exec).
  int msg_fd() const { return msg_fd_; }
  // In the child: send a message to the parent.
  void Send(const std::string& s) { (void)!::write(msg_fd_, s.data(), s.size()); }
  // In the parent: read everything the child sends until it closes the pipe (exits).
  std::string ReadAll() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(msg_fd_, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0) out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // In the parent: read until `n` bytes arrived or EOF.
  std::string ReadN(size_t n) {
    std::string out;
    char c;
    while (out.size() < n && ::read(msg_fd_, &c, 1) == 1) out.push_back(c);
    return out;
  }

  // In the parent: read up to and excluding the next '\n' (or EOF).
  std::string ReadLine() {
    std::string out;
    char c;
    while (::read(msg_fd_, &c, 1) == 1 && c != '\n') out.push_back(c);
    return out;
  }

  // Raw wait status (use WIFEXITED etc.).
  int Wait() {
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return st;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int go_fd_ = -1;
  int msg_fd_ = -1;
};

// A human-readable wait status for assertion messages.
inline std::string DescribeWaitStatus(int st) {
  if (WIFEXITED(st)) return "exited " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("killed by ") + ::strsignal(WTERMSIG(st));
  return "status " + std::to_string(st);
}

}  // namespace hangar::node::testing
