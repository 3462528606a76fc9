#include "reaper.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "hangar/base/log.h"

namespace hangar::envd::internal {

Reaper::~Reaper() { Stop(); }

Status Reaper::Start() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  // Blocking here covers the reaper's own thread; main() blocked it process-wide already.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  int sfd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) return Status::FromErrno(errno, "signalfd(SIGCHLD)");
  signal_fd_.Reset(sfd);
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return Status::FromErrno(errno, "eventfd()");
  stop_fd_.Reset(efd);
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void Reaper::Stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  thread_.join();
}

Result<pid_t> Reaper::Spawn(const std::function<pid_t()>& fork_fn, ExitCallback on_exit) {
  std::lock_guard lock(mu_);
  pid_t pid = fork_fn();
  if (pid < 0) return Status::FromErrno(errno, "fork()");
  tracked_[pid] = std::move(on_exit);
  return pid;
}

size_t Reaper::tracked() const {
  std::lock_guard lock(mu_);
  return tracked_.size();
}

void Reaper::ReapAll() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG | __WALL);
    if (pid == 0) return;
    if (pid < 0) {
      if (errno == EINTR) continue;
      return;  // ECHILD: nothing left
    }
    ExitCallback cb;
    {
      std::lock_guard lock(mu_);
      auto it = tracked_.find(pid);
      if (it == tracked_.end()) continue;  // an orphan: reaped, nobody to tell
      cb = std::move(it->second);
      tracked_.erase(it);
    }
    if (cb) cb(status);
  }
}

void Reaper::Loop() {
  while (!stopping_) {
    pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, static_cast<int>(kPollInterval.count()));
    if (n < 0 && errno != EINTR) {
      log::Error("reaper poll failed", {{"errno", errno}});
      return;
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      while (::read(signal_fd_.get(), &info, sizeof info) == sizeof info) {
      }
    }
    ReapAll();
  }
}

}  // namespace hangar::envd::internal
