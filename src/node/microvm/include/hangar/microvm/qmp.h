// QmpClient: a blocking client of QEMU's machine protocol (QMP) on a Unix socket.
//
// Connect() reads the greeting and negotiates capabilities; Execute() sends one command and
// returns its "return" value, skipping asynchronous events. A QMP "error" answer is
// failed_precondition carrying QEMU's class and description; a socket that does not answer
// within the timeout is deadline_exceeded; a closed socket is unavailable.
// Thread safety: none; one QmpClient per thread (QEMU serves several monitors in turn).
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::microvm {

class QmpClient {
 public:
  static Result<QmpClient> Connect(const std::string& socket_path,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Result<nlohmann::json> Execute(const std::string& command,
                                 const nlohmann::json& arguments = nullptr);
  // HMP through QMP (human-monitor-command), for what QMP lacks (e.g. `info usernet`).
  Result<std::string> Human(const std::string& command_line);

 private:
  QmpClient(UniqueFd fd, std::chrono::milliseconds timeout)
      : fd_(std::move(fd)), timeout_(timeout) {}
  Result<nlohmann::json> ReadMessage();
  UniqueFd fd_;
  std::chrono::milliseconds timeout_;
  std::string buffer_;
};

// The host port of the first TCP host forward in `info usernet` output, 0 if none.
uint16_t ParseHostForwardPort(const std::string& info_usernet);

}  // namespace hangar::microvm
