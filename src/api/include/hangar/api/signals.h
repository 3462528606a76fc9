// Waiting for the signals that ask the daemon to stop (SIGINT, SIGTERM).
//
//   SignalWaiter signals;            // before Start: from here on the signals are caught
//   HANGAR_TRY(server.Start());
//   int sig = signals.Wait();        // blocks
//   log::Info("stopping", {{"signal", sig}});
//   Status s = server.Shutdown(std::chrono::seconds(10));
//   return 0;
//
// Install it before anything slow, so a signal during start-up is queued rather than killing
// the process the default way. Thread safety: Wait from one thread; Cancel from any thread.
#pragma once

#include <chrono>
#include <initializer_list>
#include <memory>

namespace hangar::api {

class SignalWaiter {
 public:
  // Catches the given signals from now until destruction (asio::signal_set: the handlers are
  // process-wide, and at most one waiter per signal should exist).
  explicit SignalWaiter(std::initializer_list<int> signals = {2 /*SIGINT*/, 15 /*SIGTERM*/});
  ~SignalWaiter();
  SignalWaiter(const SignalWaiter&) = delete;
  SignalWaiter& operator=(const SignalWaiter&) = delete;

  // Blocks until a caught signal arrives (or arrived since construction) and returns its
  // number; 0 after Cancel() or when `timeout` (if positive) passes first.
  int Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // Wakes Wait with 0, e.g. for a stop requested over the API.
  void Cancel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hangar::api
