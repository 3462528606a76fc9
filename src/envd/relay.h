// HostSocketRelay: accepts on a Unix socket path of its own and relays every connection, byte
// for byte in both directions, to a fresh connection to envd's own Unix endpoint.
//
// Why (the gVisor tier, docs/adr/0009-gvisor.md): with no network, the node reaches envd in a
// runsc sandbox through a socket envd binds on a host-backed mount (runsc --host-uds=create).
// In runsc 20221219 such a socket reports no readiness to an epoll registration made before its
// bind (envd's event-loop server opens, registers, then binds) and reports SO_ACCEPTCONN = 0
// (so the server refuses to adopt it as a listener). Blocking accept, poll, read and write on
// it work — the relay uses only those. envd serves on a sandbox-internal socket; the relay
// bridges the host-backed one to it.
//
// Contract: Start binds and listens at `from` (a stale socket file there is replaced; anything
// else is already_exists) and returns once it accepts. One thread accepts; one thread per
// connection pumps both directions until both sides closed (a half-close is passed on). A
// connection whose `to` cannot be reached is closed at once. Stop() closes the listener and
// removes the socket file; connections in flight finish on their own.
// Thread safety: Start/Stop from one thread.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::envd::internal {

class HostSocketRelay {
 public:
  static Result<std::unique_ptr<HostSocketRelay>> Start(const std::string& from,
                                                        const std::string& to);
  ~HostSocketRelay() { Stop(); }
  HostSocketRelay(const HostSocketRelay&) = delete;
  HostSocketRelay& operator=(const HostSocketRelay&) = delete;

  void Stop();

 private:
  HostSocketRelay(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void AcceptLoop();

  const std::string from_, to_;
  UniqueFd listener_;
  std::thread acceptor_;
};

}  // namespace hangar::envd::internal
