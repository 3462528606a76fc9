// hangar::envd::Client: the node's client for envd, speaking the same protocol as the e2b SDK
// (Connect RPC + /files), so every call exercises the code paths the SDK uses.
//
//   HANGAR_ASSIGN_OR_RETURN(auto c, envd::Client::Create({.unix_socket = sb->Envd().unix_socket}));
//   envd::Command cmd{.cmd = "/bin/sh", .args = {"-c", "id -u"}, .user = "user"};
//   HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo done,
//       c.Run(cmd, {.on_stdout = [&](std::string_view s) { out += s; }}));
//   HANGAR_TRY(c.WriteFile("/home/user/data.bin", bytes).status());
//
// Contract:
//  - Errors are Status values with envd's code: a missing file is not_found, a bad access token
//    unauthenticated, a full disk resource_exhausted; transport failures are unavailable or
//    deadline_exceeded naming the endpoint. A command that exits non-zero is not an error: Run
//    returns its ExitInfo. A command killed by its Command::timeout is deadline_exceeded.
//  - Output callbacks run on the calling thread, in order, as output arrives (bytes, not lines).
//  - Relative paths are relative to the user's home inside the sandbox; `user` "" means the
//    Client's default (ClientOptions::user), and "" there means envd's default user.
//
// Thread safety: none. A Client keeps one connection for unary calls; use one Client per
// thread (they are cheap). Streams open their own connection for their duration.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/clock.h"
#include "hangar/base/status.h"

namespace hangar::api {
class HttpClient;
}

namespace hangar::envd {

// How to reach one envd (mirrors hangar::node::EnvdEndpoint, which drivers report).
struct Endpoint {
  std::string unix_socket;   // host path of envd's socket; "" if TCP
  std::string tcp;           // "host:port" otherwise
  std::string access_token;  // sent as X-Access-Token; "" when envd has none
};

struct ClientOptions {
  std::chrono::milliseconds timeout{30'000};  // unary calls; for streams, up to the first byte
  std::string user;                           // default Linux user of calls
};

struct Command {
  std::string cmd;  // executed as given (PATH is searched when it has no '/')
  std::vector<std::string> args;
  std::map<std::string, std::string> env;  // on top of the sandbox's environment
  std::string cwd;                         // "" = the user's home
  std::string user;                        // "" = the client's default
  std::string tag;                         // optional name to find it by
  // envd kills the process group after this long (Connect-Timeout-Ms); 0 = never.
  std::chrono::milliseconds timeout{0};
  // Run(): written to the process's stdin, which is then closed. nullopt: stdin is /dev/null.
  std::optional<std::string> stdin_data;
  bool pty = false;  // run in a pseudo-terminal (output arrives as on_pty)
  uint16_t cols = 80, rows = 24;
};

struct OutputHandler {
  std::function<void(std::string_view)> on_stdout;
  std::function<void(std::string_view)> on_stderr;
  std::function<void(std::string_view)> on_pty;
};

struct ExitInfo {
  uint32_t pid = 0;
  int exit_code = -1;   // -1 when killed by a signal
  bool exited = false;  // false when killed by a signal
  std::string status;   // "exit status 1", "signal: killed"
  std::string error;    // envd's error text for a non-zero exit, else ""
};

struct ProcessInfo {
  uint32_t pid = 0;
  std::string tag;
  std::string cmd;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  std::string cwd;
};

enum class FileType { kUnknown, kFile, kDirectory };

struct EntryInfo {
  std::string name;
  FileType type = FileType::kUnknown;
  std::string path;
  int64_t size = 0;
  uint32_t mode = 0;        // permission bits
  std::string permissions;  // "-rw-r--r--"
  std::string owner, group;
  Clock::WallTime modified;
  std::optional<std::string> symlink_target;
  std::map<std::string, std::string> metadata;
};

struct WriteInfo {
  std::string path;
  std::string name;
};

class Client {
 public:
  static Result<Client> Create(Endpoint endpoint, ClientOptions options = {});
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // GET /health (204).
  Status Health();

  // Starts `command` and waits for its end, passing output to `output`.
  Result<ExitInfo> Run(const Command& command, const OutputHandler& output = {});
  // Starts `command` and returns its pid once it runs; it keeps running without a client
  // (stdin_data, if any, is sent before returning and stdin is then closed).
  Result<uint32_t> StartBackground(const Command& command);
  // Attaches to a running process (envd's Connect) and waits for its end; a process that ended
  // within envd's retention window answers at once. `timeout` 0: wait as long as it runs.
  Result<ExitInfo> Attach(uint32_t pid, const OutputHandler& output = {},
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  Result<std::vector<ProcessInfo>> List();
  Status SendStdin(uint32_t pid, std::string_view data);
  Status CloseStdin(uint32_t pid);
  // SIGTERM or SIGKILL (what the protocol offers), to the process group.
  Status Signal(uint32_t pid, int signal);
  Status Kill(uint32_t pid);

  Result<std::string> ReadFile(const std::string& path, const std::string& user = "");
  // Atomic on the envd side (temporary file + rename); parents are created.
  Result<WriteInfo> WriteFile(const std::string& path, std::string_view data,
                              const std::string& user = "");
  Result<std::vector<EntryInfo>> ListDir(const std::string& path, int depth = 1,
                                         const std::string& user = "");
  Result<EntryInfo> Stat(const std::string& path, const std::string& user = "");
  // mkdir -p; already_exists if the directory is there.
  Result<EntryInfo> MakeDir(const std::string& path, const std::string& user = "");
  Result<EntryInfo> Move(const std::string& from, const std::string& to,
                         const std::string& user = "");
  Status Remove(const std::string& path, const std::string& user = "");

  // A unary Connect call, e.g. CallUnary("filesystem.Filesystem/Stat", {{"path", "/"}}).
  Result<nlohmann::json> CallUnary(std::string_view procedure, const nlohmann::json& request,
                                   const std::string& user = "");

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// EntryInfo from its proto3 JSON (what Stat/ListDir return), for tests and tools.
Result<EntryInfo> ParseEntryInfo(const nlohmann::json& entry);

}  // namespace hangar::envd
