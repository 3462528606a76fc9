// Service: envd's HTTP surface — E2B's envd protocol on a hangar::api::Router.
//
//   GET  /health                              204, no authentication
//   GET  /files   POST /files                 file download / upload (see files.cc)
//   POST /process.Process/<Method>            Connect RPC: Start, Connect (server streams),
//                                             List, SendInput, StreamInput, SendSignal,
//                                             CloseStdin, Update
//   POST /filesystem.Filesystem/<Method>      Stat, MakeDir, Move, ListDir, Remove, WatchDir
//                                             (server stream), CreateWatcher, GetWatcherEvents,
//                                             RemoveWatcher
// Nothing else exists: E2B's internal routes (/init, /freeze, /upgrade, ...) are deliberately
// absent — the node configures envd through its command line and environment instead.
//
// Authentication: with an access token configured, every route but /health needs
// `X-Access-Token: <token>` (401 otherwise); /files accepts a signed URL instead. The Linux user
// of a call comes from `Authorization: Basic base64("<user>:")`, else the default user (or root
// when the sandbox has no such account).
//
// Thread safety: built once, then its handlers run concurrently on the server's threads.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "entry.h"
#include "hangar/api/http.h"
#include "hangar/api/router.h"
#include "hangar/base/status.h"
#include "process.h"
#include "reaper.h"
#include "root.h"
#include "upload.h"
#include "users.h"
#include "watch.h"

namespace hangar::envd::internal {

struct ServiceOptions {
  std::string root = "/";
  std::string default_user = "user";
  std::string access_token;                // "" = no token required
  std::map<std::string, std::string> env;  // the sandbox environment, given to every command
  size_t max_upload_bytes = size_t{1} << 30;
  ProcessManager::Options processes;
};

class ConnectStream;

class Service {
 public:
  // Opens the root and starts the reaper. SIGCHLD must be blocked process-wide (see reaper.h).
  static Result<std::unique_ptr<Service>> Create(ServiceOptions options);
  ~Service();

  Status Register(api::Router& router);

  ProcessManager& processes() { return *processes_; }
  const Root& root() const { return root_; }

  // Replaces the access token (envd re-reads --access-token-file on SIGHUP): requests already
  // admitted run on; every later one needs the new token. Thread-safe.
  void SetAccessToken(std::string token) {
    std::lock_guard lock(token_mu_);
    o_.access_token = std::move(token);
  }

 private:
  explicit Service(ServiceOptions options);

  // --- plumbing (rpc.cc) ---
  using UnaryFn = Result<nlohmann::json> (Service::*)(const api::Request&, const nlohmann::json&);
  using StreamFn = void (Service::*)(const api::Request&, const nlohmann::json&,
                                     const std::shared_ptr<ConnectStream>&);
  api::Response Unary(const api::Request& req, UnaryFn fn);
  api::Response ServerStream(const api::Request& req, StreamFn fn);
  api::Response Dispatch(const api::Request& req);
  Status CheckAccessToken(const api::Request& req) const;
  std::string AccessToken() const {
    std::lock_guard lock(token_mu_);
    return o_.access_token;
  }
  // The user of a call: Authorization: Basic, else the default user.
  Result<User> CallUser(const api::Request& req);
  Result<User> DefaultUser();

  // --- process.Process (process_service.cc) ---
  void Start(const api::Request&, const nlohmann::json&, const std::shared_ptr<ConnectStream>&);
  void Connect(const api::Request&, const nlohmann::json&, const std::shared_ptr<ConnectStream>&);
  Result<nlohmann::json> List(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> SendInput(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> StreamInput(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> SendSignal(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> CloseStdin(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> Update(const api::Request&, const nlohmann::json&);
  std::vector<std::string> CommandEnv(const User& user,
                                      const std::map<std::string, std::string>& extra) const;

  // --- filesystem.Filesystem (filesystem_service.cc) ---
  Result<nlohmann::json> Stat(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> MakeDir(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> Move(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> ListDir(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> Remove(const api::Request&, const nlohmann::json&);
  void WatchDir(const api::Request&, const nlohmann::json&, const std::shared_ptr<ConnectStream>&);
  Result<nlohmann::json> CreateWatcher(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> GetWatcherEvents(const api::Request&, const nlohmann::json&);
  Result<nlohmann::json> RemoveWatcher(const api::Request&, const nlohmann::json&);
  // A client path resolved for `user` (relative to the home, "~" expanded, cleaned).
  Result<std::string> UserPath(const User& user, const nlohmann::json& msg, std::string_view field);

  // --- /files (files.cc) ---
  Result<api::Response> GetFiles(const api::Request& req);
  Result<api::Response> PostFiles(const api::Request& req);
  Status CheckFilesAuth(const api::Request& req, std::string_view operation) const;
  Result<nlohmann::json> WriteOneFile(const std::string& path, const User& user, BodySource& data,
                                      const Metadata& metadata);

  ServiceOptions o_;
  mutable std::mutex token_mu_;  // guards o_.access_token (SetAccessToken)
  Root root_;
  UserDb users_{&root_};
  Reaper reaper_;
  std::unique_ptr<ProcessManager> processes_;

  // Polled watchers (CreateWatcher): each has a thread filling its event buffer.
  struct PolledWatcher {
    std::unique_ptr<Watcher> watcher;
    std::mutex mu;
    std::vector<nlohmann::json> events;
    Status error;
    std::atomic<bool> stop{false};
    std::thread thread;
  };
  std::mutex watchers_mu_;
  std::map<std::string, std::shared_ptr<PolledWatcher>> watchers_;
  std::atomic<int> stream_threads_{0};  // WatchDir streams and downloads still running
};

// One Connect server stream: messages as envelopes, then the end-of-stream envelope.
class ConnectStream {
 public:
  explicit ConnectStream(std::shared_ptr<api::StreamWriter> writer) : writer_(std::move(writer)) {}
  ~ConnectStream();  // ends with an internal error if nobody called End
  bool Send(const nlohmann::json& message);
  void End(const Status& status);
  bool cancelled() const { return writer_->cancelled(); }
  void OnCancel(std::function<void()> cb) { writer_->OnCancel(std::move(cb)); }

 private:
  std::shared_ptr<api::StreamWriter> writer_;
  std::mutex mu_;
  bool ended_ = false;
};

}  // namespace hangar::envd::internal
