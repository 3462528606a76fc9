#include "daemon.h"

#include <charconv>

#include <fmt/format.h>

#include "control_role.h"
#include "data_dir.h"
#include "hangar/api/json.h"
#include "hangar/api/router.h"
#include "hangar/api/server.h"
#include "hangar/base/log.h"
#include "node_role.h"

namespace hangar::daemon {

struct Daemon::State {
  Clock* clock = nullptr;
  std::string role;
  Clock::MonoTime started_mono;
  Clock::WallTime started_wall;
  std::optional<DataDir> data_dir;
  std::unique_ptr<ControlRole> control;  // embedded and control roles
  std::unique_ptr<NodeRole> node;        // embedded and node roles
  std::unique_ptr<api::Server> server;
};

Result<std::pair<std::string, uint16_t>> ParseListenAddress(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return Status::InvalidArgument(
        fmt::format("listen address '{}' must be host:port, e.g. 127.0.0.1:7070", text));
  }
  std::string host(text.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535) {
    return Status::InvalidArgument(
        fmt::format("listen address '{}': port must be a number from 0 to 65535", text));
  }
  return std::make_pair(host, static_cast<uint16_t>(port));
}

namespace {

// Routes every role serves: liveness and identity.
Status AddSystemRoutes(api::Router& router, const Daemon::State* s);

}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::Start(const Config& config, Clock& clock) {
  HANGAR_ASSIGN_OR_RETURN(auto listen, ParseListenAddress(config.GetString("listen")));
  auto s = std::make_unique<State>();
  s->clock = &clock;
  s->role = config.GetString("role");
  s->started_mono = clock.Now();
  s->started_wall = clock.WallNow();

  HANGAR_ASSIGN_OR_RETURN(DataDir dir, DataDir::Open(config.GetString("data_dir")));
  s->data_dir.emplace(std::move(dir));
  auto fail = [&](Status st) {
    s->data_dir->Abandon();
    return st;
  };

  api::Router router;
  if (Status st = AddSystemRoutes(router, s.get()); !st.ok()) return fail(st);
  if (s->role == "embedded" || s->role == "control") {
    auto control = ControlRole::Start(config, s->data_dir->path(), clock);
    if (!control.ok()) return fail(control.status().With("control role"));
    s->control = std::move(*control);
    if (Status st = s->control->AddRoutes(router); !st.ok()) return fail(st);
  }
  if (s->role == "embedded" || s->role == "node") {
    auto node = NodeRole::Start(config, s->data_dir->path(), clock);
    if (!node.ok()) return fail(node.status().With("node role"));
    s->node = std::move(*node);
    if (Status st = s->node->AddRoutes(router); !st.ok()) return fail(st);
  }

  api::ServerOptions opt;
  opt.address = listen.first;
  opt.port = listen.second;
  opt.threads = static_cast<int>(config.GetInt("http.threads"));
  opt.blocking_threads = static_cast<int>(config.GetInt("http.blocking_threads"));
  opt.max_body_bytes = static_cast<size_t>(config.GetInt("http.max_body_bytes"));
  opt.max_header_bytes = static_cast<size_t>(config.GetInt("http.max_header_bytes"));
  opt.read_timeout = std::chrono::milliseconds(config.GetInt("http.read_timeout_ms"));
  opt.idle_timeout = std::chrono::milliseconds(config.GetInt("http.idle_timeout_ms"));
  opt.access_log = config.GetBool("http.access_log");
  s->server = std::make_unique<api::Server>(opt, std::move(router));
  if (Status st = s->server->Start(); !st.ok()) return fail(st);
  if (s->node) {
    // The node reports to its control plane: this process when embedded.
    std::string self = "http://" + s->server->endpoint();
    std::string control_url = config.GetString("node.control_url");
    std::string join = config.GetString("node.join_token");
    if (control_url.empty() && s->control) control_url = self;
    if (join.empty() && s->control) join = s->control->join_token();
    std::string advertise = config.GetString("node.advertise_url");
    if (advertise.empty()) advertise = self;
    if (!control_url.empty()) {
      s->node->StartHeartbeats(control_url, join, advertise);
    } else {
      log::Warn("node.control_url is empty: this node reports to no control plane",
                {{"hint", "drive it with `hangar node ...`"}});
    }
  }

  log::Info("hangard started", {{"role", s->role},
                                {"listen", s->server->endpoint()},
                                {"data_dir", s->data_dir->path()},
                                {"version", HANGAR_VERSION}});
  return std::unique_ptr<Daemon>(new Daemon(std::move(s)));
}

Daemon::Daemon(std::unique_ptr<State> s) : s_(std::move(s)) {}

Daemon::~Daemon() {
  if (s_ && s_->server) (void)s_->server->Shutdown(std::chrono::milliseconds(0));
}

std::string Daemon::endpoint() const { return s_->server->endpoint(); }

Status Daemon::Stop(std::chrono::milliseconds grace) {
  log::Info("hangard stopping", {{"grace_ms", grace.count()}});
  Status st = s_->server->Shutdown(grace);
  log::Info("hangard stopped", {{"result", st.ToString()}});
  return st;
}

namespace {

Status AddSystemRoutes(api::Router& router, const Daemon::State* s) {
  HANGAR_TRY(router.Get("/healthz", [](const api::Request&) -> Result<api::Response> {
    return api::JsonResponse({{"status", "ok"}});
  }));
  HANGAR_TRY(router.Get("/v1/version", [s](const api::Request&) -> Result<api::Response> {
    auto uptime =
        std::chrono::duration_cast<std::chrono::milliseconds>(s->clock->Now() - s->started_mono);
    return api::JsonResponse({{"version", HANGAR_VERSION},
                              {"api", "v1"},
                              {"role", s->role},
                              {"started_at", FormatRfc3339(s->started_wall)},
                              {"uptime_s", static_cast<double>(uptime.count()) / 1000.0}});
  }));
  return Status::Ok();
}

}  // namespace
}  // namespace hangar::daemon
