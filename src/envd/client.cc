#include "hangar/envd/client.h"

#include <signal.h>

#include <thread>

#include "hangar/api/client.h"
#include "hangar/api/json.h"
#include "hangar/api/query.h"
#include "protocol.h"

namespace hangar::envd {

using internal::Base64Decode;
using internal::Base64Encode;
using internal::EnvelopeReader;

namespace {

constexpr int kKeepaliveSeconds = 30;
// A stream that shows nothing — no output, no keepalive — for this long is dead.
constexpr std::chrono::milliseconds kStreamIdle{3 * kKeepaliveSeconds * 1000 + 5000};
constexpr size_t kStdinChunk = 1 << 20;

std::string BaseUrl(const Endpoint& e) {
  if (!e.unix_socket.empty()) return "unix:" + e.unix_socket;
  return "http://" + e.tcp;
}

std::string StrField(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Result<EntryInfo> ParseEntryInfo(const nlohmann::json& e) {
  if (!e.is_object()) return Status::Internal("envd returned an EntryInfo that is not an object");
  EntryInfo info;
  info.name = StrField(e, "name");
  info.path = StrField(e, "path");
  std::string type = StrField(e, "type");
  info.type = type == "FILE_TYPE_FILE"        ? FileType::kFile
              : type == "FILE_TYPE_DIRECTORY" ? FileType::kDirectory
                                              : FileType::kUnknown;
  HANGAR_ASSIGN_OR_RETURN(info.size, internal::GetInt(e, "size"));
  HANGAR_ASSIGN_OR_RETURN(int64_t mode, internal::GetInt(e, "mode"));
  info.mode = static_cast<uint32_t>(mode);
  info.permissions = StrField(e, "permissions");
  info.owner = StrField(e, "owner");
  info.group = StrField(e, "group");
  if (std::string t = StrField(e, "modifiedTime"); !t.empty()) {
    HANGAR_ASSIGN_OR_RETURN(info.modified, internal::ParseTimestamp(t));
  }
  if (auto it = e.find("symlinkTarget"); it != e.end() && it->is_string()) {
    info.symlink_target = it->get<std::string>();
  }
  if (auto it = e.find("metadata"); it != e.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      if (v.is_string()) info.metadata[k] = v.get<std::string>();
    }
  }
  return info;
}

struct Client::Impl {
  Endpoint endpoint;
  ClientOptions options;
  std::string base_url;
  std::unique_ptr<api::HttpClient> unary;  // kept alive between calls

  Result<api::HttpClient> NewHttp() const {
    api::ClientOptions o;
    o.timeout = options.timeout;
    if (!endpoint.access_token.empty())
      o.headers.emplace_back("X-Access-Token", endpoint.access_token);
    return api::HttpClient::Create(base_url, o);
  }

  std::vector<std::pair<std::string, std::string>> UserHeader(const std::string& user) const {
    const std::string& u = user.empty() ? options.user : user;
    if (u.empty()) return {};
    return {{"Authorization", "Basic " + Base64Encode(u + ":")}};
  }

  Result<nlohmann::json> Unary(std::string_view procedure, const nlohmann::json& request,
                               const std::string& user) {
    api::RequestOptions ro;
    ro.content_type = internal::kUnaryContentType;
    ro.headers = UserHeader(user);
    ro.headers.emplace_back("Connect-Protocol-Version", "1");
    HANGAR_ASSIGN_OR_RETURN(
        api::ClientResponse res,
        unary->Send("POST", "/" + std::string(procedure), api::DumpJson(request), ro));
    nlohmann::json body = nlohmann::json::parse(res.body, nullptr, false);
    if (res.status != 200) {
      Status s =
          internal::StatusFromErrorJson(body.is_discarded() ? nlohmann::json() : body, res.status);
      return s.ok() ? Status::Internal("HTTP " + std::to_string(res.status)) : s;
    }
    if (body.is_discarded() || !body.is_object()) {
      return Status::Internal("envd answered " + std::string(procedure) + " with invalid JSON");
    }
    return body;
  }

  // A server-streaming call; `on_message` gets each message; the end-of-stream error, if any,
  // is returned. `stop` from on_message ends the call early (ok).
  Status ServerStream(std::string_view procedure, const nlohmann::json& request,
                      const std::string& user, std::chrono::milliseconds timeout,
                      const std::function<Status(const nlohmann::json&, bool* stop)>& on_message) {
    HANGAR_ASSIGN_OR_RETURN(api::HttpClient http, NewHttp());
    api::RequestOptions ro;
    ro.content_type = internal::kStreamContentType;
    ro.headers = UserHeader(user);
    ro.headers.emplace_back("Connect-Protocol-Version", "1");
    ro.headers.emplace_back("Keepalive-Ping-Interval", std::to_string(kKeepaliveSeconds));
    if (timeout.count() > 0)
      ro.headers.emplace_back("Connect-Timeout-Ms", std::to_string(timeout.count()));
    EnvelopeReader reader;
    Status end_status = Status::Internal("envd closed the stream without an end-of-stream message");
    bool ended = false;
    // A sentinel status stops the transfer early without being an error.
    const Status kStopped = Status::Aborted("stopped by the client");
    Status st = http.Stream(
        "POST", "/" + std::string(procedure), internal::Envelope(0, api::DumpJson(request)), ro,
        [&](std::string_view data) -> Status {
          HANGAR_TRY(reader.Feed(data));
          while (auto frame = reader.Next()) {
            if (ended) return Status::Internal("envd sent data after the end of the stream");
            nlohmann::json msg = nlohmann::json::parse(frame->payload, nullptr, false);
            if (msg.is_discarded()) return Status::Internal("envd sent a frame that is not JSON");
            if (frame->end_stream()) {
              ended = true;
              auto err = msg.find("error");
              end_status =
                  err == msg.end() ? Status::Ok() : internal::StatusFromErrorJson(*err, 200);
              continue;
            }
            bool stop = false;
            HANGAR_TRY(on_message(msg, &stop));
            if (stop) return kStopped;
          }
          return Status::Ok();
        },
        kStreamIdle);
    if (st == kStopped) return Status::Ok();
    if (!st.ok()) return st;
    return end_status;
  }

  // Start or Connect, turning the events into callbacks and an ExitInfo.
  Result<ExitInfo> ProcessStream(std::string_view procedure, const nlohmann::json& request,
                                 const std::string& user, std::chrono::milliseconds timeout,
                                 const OutputHandler& output,
                                 const std::function<void(uint32_t pid)>& on_start,
                                 bool stop_after_start) {
    ExitInfo exit;
    bool got_end = false;
    Status st = ServerStream(
        procedure, request, user, timeout, [&](const nlohmann::json& msg, bool* stop) -> Status {
          auto ev = msg.find("event");
          if (ev == msg.end() || !ev->is_object()) return Status::Ok();
          if (auto s = ev->find("start"); s != ev->end()) {
            HANGAR_ASSIGN_OR_RETURN(int64_t pid, internal::GetInt(*s, "pid"));
            exit.pid = static_cast<uint32_t>(pid);
            if (on_start) on_start(exit.pid);
            if (stop_after_start) *stop = true;
          } else if (auto d = ev->find("data"); d != ev->end()) {
            const std::pair<const char*, const std::function<void(std::string_view)>*> kinds[] = {
                {"stdout", &output.on_stdout},
                {"stderr", &output.on_stderr},
                {"pty", &output.on_pty}};
            for (const auto& [name, cb] : kinds) {
              auto it = d->find(name);
              if (it == d->end() || !it->is_string()) continue;
              HANGAR_ASSIGN_OR_RETURN(std::string bytes, Base64Decode(it->get<std::string>()));
              if (*cb) (*cb)(bytes);
            }
          } else if (auto e = ev->find("end"); e != ev->end()) {
            got_end = true;
            HANGAR_ASSIGN_OR_RETURN(int64_t code, internal::GetInt(*e, "exitCode"));
            exit.exit_code = static_cast<int>(code);
            HANGAR_ASSIGN_OR_RETURN(exit.exited, internal::GetBool(*e, "exited"));
            exit.status = StrField(*e, "status");
            exit.error = StrField(*e, "error");
          }
          return Status::Ok();
        });
    if (!st.ok()) return st;
    if (stop_after_start) {
      if (exit.pid == 0) return Status::Internal("envd ended the stream without a start event");
      return exit;
    }
    if (!got_end) return Status::Internal("envd ended the stream without an end event");
    return exit;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<Client> Client::Create(Endpoint endpoint, ClientOptions options) {
  if (endpoint.unix_socket.empty() == endpoint.tcp.empty()) {
    return Status::InvalidArgument("an envd endpoint needs exactly one of unix_socket and tcp");
  }
  auto impl = std::make_unique<Impl>();
  impl->endpoint = std::move(endpoint);
  impl->options = std::move(options);
  impl->base_url = BaseUrl(impl->endpoint);
  HANGAR_ASSIGN_OR_RETURN(api::HttpClient http, impl->NewHttp());
  impl->unary = std::make_unique<api::HttpClient>(std::move(http));
  return Client(std::move(impl));
}

Status Client::Health() {
  HANGAR_ASSIGN_OR_RETURN(api::ClientResponse res, impl_->unary->Get("/health"));
  if (res.status != 204 && res.status != 200) {
    return Status::Unavailable("envd health: HTTP " + std::to_string(res.status));
  }
  return Status::Ok();
}

Result<nlohmann::json> Client::CallUnary(std::string_view procedure, const nlohmann::json& request,
                                         const std::string& user) {
  return impl_->Unary(procedure, request, user);
}

namespace {
nlohmann::json StartRequest(const Command& c, bool want_stdin) {
  nlohmann::json process = {{"cmd", c.cmd}, {"args", c.args}, {"envs", nlohmann::json::object()}};
  for (const auto& [k, v] : c.env) process["envs"][k] = v;
  if (!c.cwd.empty()) process["cwd"] = c.cwd;
  nlohmann::json req = {{"process", process}, {"stdin", want_stdin}};
  if (!c.tag.empty()) req["tag"] = c.tag;
  if (c.pty) req["pty"] = {{"size", {{"cols", c.cols}, {"rows", c.rows}}}};
  return req;
}
}  // namespace

Result<ExitInfo> Client::Run(const Command& command, const OutputHandler& output) {
  // Stdin is fed from another thread on its own connection: a command that echoes its input
  // (cat) blocks on output nobody reads while this thread is busy writing.
  std::thread feeder;
  Status feed_status;
  auto on_start = [&](uint32_t pid) {
    if (!command.stdin_data) return;
    feeder = std::thread([this, pid, &command, &feed_status] {
      auto c = Client::Create(impl_->endpoint, impl_->options);
      if (!c.ok()) {
        feed_status = c.status();
        return;
      }
      std::string_view data = *command.stdin_data;
      for (size_t off = 0; off < data.size() && feed_status.ok(); off += kStdinChunk) {
        feed_status = c->SendStdin(pid, data.substr(off, kStdinChunk));
      }
      if (feed_status.ok()) feed_status = c->CloseStdin(pid);
    });
  };
  auto result = impl_->ProcessStream("process.Process/Start",
                                     StartRequest(command, command.stdin_data.has_value()),
                                     command.user, command.timeout, output, on_start, false);
  if (feeder.joinable()) feeder.join();
  // A command may end (not_found) or close its stdin (failed_precondition) before reading all
  // of it; that is the command's business, not a failure of the call.
  if (result.ok() && !feed_status.ok() && feed_status.code() != Code::kFailedPrecondition &&
      feed_status.code() != Code::kNotFound) {
    return feed_status.With("writing stdin");
  }
  return result;
}

Result<uint32_t> Client::StartBackground(const Command& command) {
  HANGAR_ASSIGN_OR_RETURN(
      ExitInfo started, impl_->ProcessStream("process.Process/Start",
                                             StartRequest(command, command.stdin_data.has_value()),
                                             command.user, command.timeout, {}, nullptr, true));
  if (command.stdin_data) {
    for (size_t off = 0; off < command.stdin_data->size(); off += kStdinChunk) {
      HANGAR_TRY(
          SendStdin(started.pid, std::string_view(*command.stdin_data).substr(off, kStdinChunk)));
    }
    HANGAR_TRY(CloseStdin(started.pid));
  }
  return started.pid;
}

Result<ExitInfo> Client::Attach(uint32_t pid, const OutputHandler& output,
                                std::chrono::milliseconds timeout) {
  return impl_->ProcessStream("process.Process/Connect", {{"process", {{"pid", pid}}}}, "", timeout,
                              output, nullptr, false);
}

Result<std::vector<ProcessInfo>> Client::List() {
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json res,
                          impl_->Unary("process.Process/List", nlohmann::json::object(), ""));
  std::vector<ProcessInfo> out;
  auto procs = res.find("processes");
  if (procs == res.end() || !procs->is_array()) return out;
  for (const auto& p : *procs) {
    ProcessInfo info;
    HANGAR_ASSIGN_OR_RETURN(int64_t pid, internal::GetInt(p, "pid"));
    info.pid = static_cast<uint32_t>(pid);
    info.tag = StrField(p, "tag");
    if (auto c = p.find("config"); c != p.end() && c->is_object()) {
      info.cmd = StrField(*c, "cmd");
      info.cwd = StrField(*c, "cwd");
      if (auto a = c->find("args"); a != c->end() && a->is_array()) {
        for (const auto& s : *a) {
          if (s.is_string()) info.args.push_back(s.get<std::string>());
        }
      }
      if (auto e = c->find("envs"); e != c->end() && e->is_object()) {
        for (const auto& [k, v] : e->items()) {
          if (v.is_string()) info.env[k] = v.get<std::string>();
        }
      }
    }
    out.push_back(std::move(info));
  }
  return out;
}

Status Client::SendStdin(uint32_t pid, std::string_view data) {
  return impl_
      ->Unary("process.Process/SendInput",
              {{"process", {{"pid", pid}}}, {"input", {{"stdin", Base64Encode(data)}}}}, "")
      .status();
}

Status Client::CloseStdin(uint32_t pid) {
  return impl_->Unary("process.Process/CloseStdin", {{"process", {{"pid", pid}}}}, "").status();
}

Status Client::Signal(uint32_t pid, int signal) {
  const char* name = signal == SIGKILL   ? "SIGNAL_SIGKILL"
                     : signal == SIGTERM ? "SIGNAL_SIGTERM"
                                         : nullptr;
  if (name == nullptr) {
    return Status::InvalidArgument("envd can send SIGTERM and SIGKILL, not signal " +
                                   std::to_string(signal));
  }
  return impl_
      ->Unary("process.Process/SendSignal", {{"process", {{"pid", pid}}}, {"signal", name}}, "")
      .status();
}

Status Client::Kill(uint32_t pid) { return Signal(pid, SIGKILL); }

namespace {
std::string FilesTarget(const std::string& path, const std::string& user) {
  std::string t = "/files?path=" + api::PercentEncode(path);
  if (!user.empty()) t += "&username=" + api::PercentEncode(user);
  return t;
}

Status FilesStatus(const api::ClientResponse& res) {
  nlohmann::json body = nlohmann::json::parse(res.body, nullptr, false);
  Status s =
      internal::StatusFromErrorJson(body.is_discarded() ? nlohmann::json() : body, res.status);
  if (res.status == 507) return Status(Code::kResourceExhausted, s.message(), ENOSPC);
  return s;
}
}  // namespace

Result<std::string> Client::ReadFile(const std::string& path, const std::string& user) {
  const std::string& u = user.empty() ? impl_->options.user : user;
  api::RequestOptions ro;
  ro.content_type = "";
  HANGAR_ASSIGN_OR_RETURN(api::ClientResponse res,
                          impl_->unary->Send("GET", FilesTarget(path, u), {}, ro));
  if (res.status != 200) return FilesStatus(res);
  return std::move(res.body);
}

Result<WriteInfo> Client::WriteFile(const std::string& path, std::string_view data,
                                    const std::string& user) {
  const std::string& u = user.empty() ? impl_->options.user : user;
  api::RequestOptions ro;
  ro.content_type = "application/octet-stream";
  HANGAR_ASSIGN_OR_RETURN(api::ClientResponse res,
                          impl_->unary->Send("POST", FilesTarget(path, u), std::string(data), ro));
  if (res.status != 200) return FilesStatus(res);
  nlohmann::json body = nlohmann::json::parse(res.body, nullptr, false);
  if (body.is_discarded() || !body.is_array() || body.empty()) {
    return Status::Internal("envd answered an upload without the written file");
  }
  return WriteInfo{StrField(body[0], "path"), StrField(body[0], "name")};
}

Result<std::vector<EntryInfo>> Client::ListDir(const std::string& path, int depth,
                                               const std::string& user) {
  HANGAR_ASSIGN_OR_RETURN(
      nlohmann::json res,
      impl_->Unary("filesystem.Filesystem/ListDir", {{"path", path}, {"depth", depth}}, user));
  std::vector<EntryInfo> out;
  auto entries = res.find("entries");
  if (entries == res.end() || !entries->is_array()) return out;
  for (const auto& e : *entries) {
    HANGAR_ASSIGN_OR_RETURN(EntryInfo info, ParseEntryInfo(e));
    out.push_back(std::move(info));
  }
  return out;
}

namespace {
Result<EntryInfo> EntryOf(const nlohmann::json& res) {
  auto e = res.find("entry");
  if (e == res.end()) return Status::Internal("envd answered without an entry");
  return ParseEntryInfo(*e);
}
}  // namespace

Result<EntryInfo> Client::Stat(const std::string& path, const std::string& user) {
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json res,
                          impl_->Unary("filesystem.Filesystem/Stat", {{"path", path}}, user));
  return EntryOf(res);
}

Result<EntryInfo> Client::MakeDir(const std::string& path, const std::string& user) {
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json res,
                          impl_->Unary("filesystem.Filesystem/MakeDir", {{"path", path}}, user));
  return EntryOf(res);
}

Result<EntryInfo> Client::Move(const std::string& from, const std::string& to,
                               const std::string& user) {
  HANGAR_ASSIGN_OR_RETURN(
      nlohmann::json res,
      impl_->Unary("filesystem.Filesystem/Move", {{"source", from}, {"destination", to}}, user));
  return EntryOf(res);
}

Status Client::Remove(const std::string& path, const std::string& user) {
  return impl_->Unary("filesystem.Filesystem/Remove", {{"path", path}}, user).status();
}

}  // namespace hangar::envd
