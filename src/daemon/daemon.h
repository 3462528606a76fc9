// Daemon: the composition root of hangard. It owns the state directory and the HTTP server and
// wires the modules of the configured role into routes. It holds no logic of its own.
//
//   HANGAR_ASSIGN_OR_RETURN(auto d, Daemon::Start(config));   // binds, or fails leaving nothing
//   ... wait for SIGTERM ...
//   d->Stop(grace);
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "hangar/base/clock.h"
#include "hangar/base/config.h"
#include "hangar/base/status.h"

namespace hangar::daemon {

class Daemon {
 public:
  // Validates the configuration, opens the data directory and starts serving. On any error
  // nothing is left behind (no directory it created, no pid file, no listening socket).
  static Result<std::unique_ptr<Daemon>> Start(const Config& config,
                                               Clock& clock = SystemClock::Instance());
  ~Daemon();

  // "127.0.0.1:7070" — the bound address (the real port when configured with port 0).
  std::string endpoint() const;
  // Graceful stop: no new connections, in-flight requests finish within `grace`.
  Status Stop(std::chrono::milliseconds grace);

  struct State;  // opaque; public only so the route builders in daemon.cc can name it

 private:
  explicit Daemon(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

// "host:port" → (host, port). Errors name the text.
Result<std::pair<std::string, uint16_t>> ParseListenAddress(std::string_view text);

}  // namespace hangar::daemon
