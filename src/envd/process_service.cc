// process.Process: Connect handlers over ProcessManager.
#include <fcntl.h>
#include <signal.h>

#include <charconv>

#include "protocol.h"
#include "service.h"

namespace hangar::envd::internal {

namespace {

// ProcessManager's events wrapped as StartResponse / ConnectResponse: {"event": <ProcessEvent>}.
class ProcessEventSink final : public EventSink {
 public:
  explicit ProcessEventSink(std::shared_ptr<ConnectStream> stream) : stream_(std::move(stream)) {}
  bool Send(const nlohmann::json& event) override { return stream_->Send({{"event", event}}); }
  void End(const Status& status) override { stream_->End(status); }

 private:
  std::shared_ptr<ConnectStream> stream_;
};

// Keepalive-Ping-Interval (seconds) and Connect-Timeout-Ms, as E2B's envd reads them.
Result<SinkOptions> StreamSettings(const api::Request& req) {
  SinkOptions o;
  auto number = [](std::string_view s, int64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && out >= 0;
  };
  int64_t v = 0;
  std::string_view keepalive = req.header("Keepalive-Ping-Interval");
  if (!keepalive.empty() && number(keepalive, v) && v > 0) {
    o.keepalive = std::chrono::seconds(v);
  }
  std::string_view timeout = req.header("Connect-Timeout-Ms");
  if (!timeout.empty()) {
    if (!number(timeout, v)) {
      return Status::InvalidArgument("Connect-Timeout-Ms must be a number of milliseconds");
    }
    o.deadline = std::chrono::milliseconds(v);
  }
  return o;
}

Result<Selector> ParseSelector(const nlohmann::json& msg) {
  const nlohmann::json* sel = Field(msg, "process");
  if (sel == nullptr || !sel->is_object()) {
    return Status::InvalidArgument("a process selector {pid} or {tag} is required");
  }
  Selector s;
  if (Field(*sel, "pid")) {
    HANGAR_ASSIGN_OR_RETURN(int64_t pid, GetInt(*sel, "pid"));
    if (pid <= 0 || pid > UINT32_MAX) return Status::InvalidArgument("pid out of range");
    s.pid = static_cast<uint32_t>(pid);
  } else if (Field(*sel, "tag")) {
    HANGAR_ASSIGN_OR_RETURN(std::string tag, GetString(*sel, "tag"));
    s.tag = std::move(tag);
  } else {
    return Status::InvalidArgument("a process selector {pid} or {tag} is required");
  }
  return s;
}

Result<std::pair<uint16_t, uint16_t>> ParsePtySize(const nlohmann::json& pty) {
  const nlohmann::json* size = Field(pty, "size");
  if (size == nullptr) return std::make_pair<uint16_t, uint16_t>(80, 24);
  HANGAR_ASSIGN_OR_RETURN(int64_t cols, GetInt(*size, "cols", {}, 80));
  HANGAR_ASSIGN_OR_RETURN(int64_t rows, GetInt(*size, "rows", {}, 24));
  if (cols <= 0 || rows <= 0 || cols > 65535 || rows > 65535) {
    return Status::InvalidArgument("pty size must be 1..65535 columns and rows");
  }
  return std::make_pair(static_cast<uint16_t>(cols), static_cast<uint16_t>(rows));
}

Result<ProcessConfig> ParseConfig(const nlohmann::json& msg) {
  const nlohmann::json* p = Field(msg, "process");
  if (p == nullptr || !p->is_object()) return Status::InvalidArgument("process is required");
  ProcessConfig c;
  HANGAR_ASSIGN_OR_RETURN(c.cmd, GetString(*p, "cmd"));
  if (c.cmd.empty()) return Status::InvalidArgument("process.cmd is required");
  if (const nlohmann::json* args = Field(*p, "args")) {
    if (!args->is_array()) return Status::InvalidArgument("process.args must be a list");
    for (const auto& a : *args) {
      if (!a.is_string()) return Status::InvalidArgument("process.args must be strings");
      c.args.push_back(a.get<std::string>());
    }
  }
  if (const nlohmann::json* envs = Field(*p, "envs")) {
    if (!envs->is_object()) return Status::InvalidArgument("process.envs must be a map");
    for (const auto& [k, v] : envs->items()) {
      if (!v.is_string()) return Status::InvalidArgument("process.envs values must be strings");
      if (k.empty() || k.find('=') != std::string::npos) {
        return Status::InvalidArgument("invalid environment variable name '" + k + "'");
      }
      c.envs[k] = v.get<std::string>();
    }
  }
  if (Field(*p, "cwd")) {
    HANGAR_ASSIGN_OR_RETURN(std::string cwd, GetString(*p, "cwd"));
    c.cwd = std::move(cwd);
  }
  for (const auto& s : c.args) {
    if (s.find('\0') != std::string::npos) return Status::InvalidArgument("NUL in process.args");
  }
  return c;
}

nlohmann::json ConfigJson(const ProcessConfig& c) {
  nlohmann::json j = {{"cmd", c.cmd}, {"args", c.args}, {"envs", nlohmann::json::object()}};
  for (const auto& [k, v] : c.envs) j["envs"][k] = v;
  if (c.cwd) j["cwd"] = *c.cwd;
  return j;
}

}  // namespace

std::vector<std::string> Service::CommandEnv(
    const User& user, const std::map<std::string, std::string>& extra) const {
  std::map<std::string, std::string> env = o_.env;
  if (!env.count("PATH"))
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  env["HOME"] = user.home;
  env["USER"] = user.name;
  env["LOGNAME"] = user.name;
  for (const auto& [k, v] : extra) env[k] = v;  // the request's own values win
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

void Service::Start(const api::Request& req, const nlohmann::json& msg,
                    const std::shared_ptr<ConnectStream>& stream) {
  auto fail = [&](const Status& s) { stream->End(s); };
  auto user = CallUser(req);
  if (!user.ok()) return fail(user.status());
  auto settings = StreamSettings(req);
  if (!settings.ok()) return fail(settings.status());
  auto config = ParseConfig(msg);
  if (!config.ok()) return fail(config.status());

  SpawnRequest spawn;
  spawn.config = *config;
  spawn.user = *user;
  if (Field(msg, "tag")) {
    auto tag = GetString(msg, "tag");
    if (!tag.ok()) return fail(tag.status());
    spawn.tag = *tag;
  }
  // Absent means true, for SDKs that predate the field (the current SDK sends false).
  auto want_stdin = GetBool(msg, "stdin", {}, true);
  if (!want_stdin.ok()) return fail(want_stdin.status());
  spawn.stdin_pipe = *want_stdin;
  if (const nlohmann::json* pty = Field(msg, "pty")) {
    auto size = ParsePtySize(*pty);
    if (!size.ok()) return fail(size.status());
    spawn.pty = true;
    spawn.cols = size->first;
    spawn.rows = size->second;
  }
  auto cwd = Root::Resolve(config->cwd.value_or(""), user->home);
  if (!cwd.ok()) return fail(cwd.status());
  auto cwd_fd = root_.OpenAt(*cwd, O_PATH | O_DIRECTORY);
  if (!cwd_fd.ok()) {
    return fail(Status::InvalidArgument("cwd '" + *cwd + "' does not exist or is not a directory"));
  }
  spawn.cwd = std::move(*cwd_fd);
  spawn.env = CommandEnv(*user, config->envs);
  // Connect-Timeout-Ms bounds the process's life (E2B's semantics), not just this stream.
  spawn.timeout = settings->deadline;
  SinkOptions sink_options = *settings;
  sink_options.deadline = std::chrono::milliseconds(0);
  auto sink = std::make_shared<ProcessEventSink>(stream);
  auto pid = processes_->Spawn(std::move(spawn), sink, sink_options);
  if (!pid.ok()) return fail(pid.status());
}

void Service::Connect(const api::Request& req, const nlohmann::json& msg,
                      const std::shared_ptr<ConnectStream>& stream) {
  auto settings = StreamSettings(req);
  if (!settings.ok()) return stream->End(settings.status());
  auto sel = ParseSelector(msg);
  if (!sel.ok()) return stream->End(sel.status());
  Status st = processes_->Attach(*sel, std::make_shared<ProcessEventSink>(stream), *settings);
  if (!st.ok()) stream->End(st);
}

Result<nlohmann::json> Service::List(const api::Request&, const nlohmann::json&) {
  nlohmann::json list = nlohmann::json::array();
  for (const ProcessInfo& p : processes_->List()) {
    nlohmann::json j = {{"config", ConfigJson(p.config)}, {"pid", p.pid}};
    if (p.tag) j["tag"] = *p.tag;
    list.push_back(std::move(j));
  }
  return nlohmann::json{{"processes", list}};
}

namespace {
// ProcessInput {stdin | pty} (base64) → (bytes, to_pty).
Result<std::pair<std::string, bool>> ParseInput(const nlohmann::json& input) {
  if (Field(input, "stdin")) {
    HANGAR_ASSIGN_OR_RETURN(std::string b64, GetString(input, "stdin"));
    HANGAR_ASSIGN_OR_RETURN(std::string data, Base64Decode(b64));
    return std::make_pair(std::move(data), false);
  }
  if (Field(input, "pty")) {
    HANGAR_ASSIGN_OR_RETURN(std::string b64, GetString(input, "pty"));
    HANGAR_ASSIGN_OR_RETURN(std::string data, Base64Decode(b64));
    return std::make_pair(std::move(data), true);
  }
  return Status::Unimplemented("input must be stdin or pty");
}
}  // namespace

Result<nlohmann::json> Service::SendInput(const api::Request&, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(Selector sel, ParseSelector(msg));
  const nlohmann::json* input = Field(msg, "input");
  if (input == nullptr) return Status::InvalidArgument("input is required");
  HANGAR_ASSIGN_OR_RETURN(auto in, ParseInput(*input));
  HANGAR_TRY(processes_->SendInput(sel, in.first, in.second));
  return nlohmann::json::object();
}

Result<nlohmann::json> Service::StreamInput(const api::Request& req, const nlohmann::json&) {
  EnvelopeReader reader;
  HANGAR_TRY(reader.Feed(req.body()));
  std::optional<Selector> sel;
  while (auto frame = reader.Next()) {
    if (frame->end_stream()) break;
    if (frame->flags & kFlagCompressed) {
      return Status::InvalidArgument("compressed envelopes are not supported");
    }
    auto msg = nlohmann::json::parse(frame->payload, nullptr, false);
    if (msg.is_discarded() || !msg.is_object()) {
      return Status::InvalidArgument("StreamInput message is not a JSON object");
    }
    if (const nlohmann::json* start = Field(msg, "start")) {
      HANGAR_ASSIGN_OR_RETURN(Selector s, ParseSelector(*start));
      sel = s;
    } else if (const nlohmann::json* data = Field(msg, "data")) {
      if (!sel) return Status::InvalidArgument("StreamInput data before start");
      const nlohmann::json* input = Field(*data, "input");
      if (input == nullptr) return Status::InvalidArgument("data.input is required");
      HANGAR_ASSIGN_OR_RETURN(auto in, ParseInput(*input));
      HANGAR_TRY(processes_->SendInput(*sel, in.first, in.second));
    } else if (!Field(msg, "keepalive")) {
      return Status::Unimplemented("unknown StreamInput event");
    }
  }
  if (reader.pending() > 0) return Status::InvalidArgument("truncated Connect envelope");
  return nlohmann::json::object();
}

Result<nlohmann::json> Service::SendSignal(const api::Request&, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(Selector sel, ParseSelector(msg));
  const nlohmann::json* signal = Field(msg, "signal");
  int sig = 0;
  if (signal != nullptr && signal->is_string()) {
    const std::string& name = signal->get_ref<const std::string&>();
    if (name == "SIGNAL_SIGKILL") sig = SIGKILL;
    if (name == "SIGNAL_SIGTERM") sig = SIGTERM;
  } else if (signal != nullptr && signal->is_number_integer()) {
    int v = signal->get<int>();
    if (v == SIGKILL || v == SIGTERM) sig = v;
  }
  if (sig == 0) {
    return Status::Unimplemented("invalid signal " +
                                 (signal ? signal->dump() : std::string("(none)")) +
                                 "; SIGNAL_SIGTERM and SIGNAL_SIGKILL are supported");
  }
  HANGAR_TRY(processes_->Signal(sel, sig));
  return nlohmann::json::object();
}

Result<nlohmann::json> Service::CloseStdin(const api::Request&, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(Selector sel, ParseSelector(msg));
  HANGAR_TRY(processes_->CloseStdin(sel));
  return nlohmann::json::object();
}

Result<nlohmann::json> Service::Update(const api::Request&, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(Selector sel, ParseSelector(msg));
  if (const nlohmann::json* pty = Field(msg, "pty")) {
    HANGAR_ASSIGN_OR_RETURN(auto size, ParsePtySize(*pty));
    HANGAR_TRY(processes_->Resize(sel, size.first, size.second));
  }
  return nlohmann::json::object();
}

}  // namespace hangar::envd::internal
