#include "control_role.h"

#include <random>

#include <fmt/format.h>

#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "hangar/control/api.h"
#include "hangar/control/service.h"
#include "hangar/control/store.h"
#include "hangar/e2b/lifecycle.h"
#include "hangar/e2b/proxy.h"

namespace hangar::daemon {

void AddControlOptions(ConfigSchema& s) {
  s.Add({.key = "control.database",
         .default_value = "",
         .help = "SQLite file of the control plane's store; default: <data_dir>/hangar.db"});
  s.Add({.key = "control.policy",
         .default_value = "",
         .help = "routing policy (YAML, docs/routing.md); default: <data_dir>/policy.yaml, "
                 "written from the shipped example on first start; reloaded when it changes"});
  s.Add({.key = "control.admin_token",
         .default_value = "",
         .help = "bearer token of /v1/admin; default: random, kept in <data_dir>/admin.token"});
  s.Add({.key = "control.join_token",
         .default_value = "",
         .help = "bearer token node agents present; default: random, kept in "
                 "<data_dir>/join.token"});
  s.Add({.key = "control.node_lost_after_ms",
         .type = OptionType::kInt,
         .default_value = "15000",
         .help = "a node silent this long is marked lost and its tasks failed or requeued",
         .min = 100,
         .max = 3'600'000});
  s.Add({.key = "control.requeue_on_node_lost",
         .type = OptionType::kBool,
         .default_value = "false",
         .help = "requeue a lost node's tasks (else they fail, saying why)"});
  s.Add({.key = "control.start_workers",
         .type = OptionType::kInt,
         .default_value = "4",
         .help = "sandboxes started on nodes in parallel",
         .min = 1,
         .max = 256});
  s.Add({.key = "control.team_max_concurrent",
         .type = OptionType::kInt,
         .default_value = "100",
         .help = "active sandboxes the bootstrap team may hold at once",
         .min = 1,
         .max = 100000});
  s.Add({.key = "e2b.default_template",
         .default_value = "base",
         .help = "the template an e2b SDK create gets for templateID 'base' (the SDK's default)"});
  s.Add({.key = "e2b.token_secret",
         .default_value = "",
         .help = "key of the sandboxes' envd access tokens (HMAC); default: random, kept in "
                 "<data_dir>/e2b.secret"});
  s.Add({.key = "control.overcommit_cpu_percent",
         .type = OptionType::kInt,
         .default_value = "100",
         .help = "CPU over-commit of the shared pool in percent (100 = none, at most 400)",
         .min = 100,
         .max = 400});
}

namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

Result<std::string> LoadOrCreateSecret(const std::string& path, const std::string& configured) {
  if (!configured.empty()) return configured;
  if (auto t = ReadFile(path); t.ok() && Trim(*t).size() >= 32) return Trim(*t);
  std::string tok = RandomHex(24);
  HANGAR_TRY(WriteFileAtomic(path, tok + "\n", 0600));
  return tok;
}

}  // namespace

struct ControlRole::State {
  std::string admin_token, join_token, e2b_secret, e2b_default_template;
  Clock* clock = nullptr;
  std::unique_ptr<control::Store> store;
  std::unique_ptr<control::NodeClient> nodes;
  std::unique_ptr<control::ControlService> service;
};

ControlRole::ControlRole(std::unique_ptr<State> s) : s_(std::move(s)) {}
ControlRole::~ControlRole() {
  if (s_) s_->service.reset();  // before the store it uses
}
const std::string& ControlRole::join_token() const { return s_->join_token; }

Result<std::unique_ptr<ControlRole>> ControlRole::Start(const Config& config,
                                                        const std::string& data_dir, Clock& clock) {
  auto s = std::make_unique<State>();
  std::string db = config.GetString("control.database");
  if (db.empty()) db = data_dir + "/hangar.db";
  std::string policy = config.GetString("control.policy");
  if (policy.empty()) {
    policy = data_dir + "/policy.yaml";
    if (!ReadFile(policy).ok()) HANGAR_TRY(WriteFileAtomic(policy, kExamplePolicy, 0644));
  }
  HANGAR_ASSIGN_OR_RETURN(
      s->admin_token,
      LoadOrCreateSecret(data_dir + "/admin.token", config.GetString("control.admin_token")));
  HANGAR_ASSIGN_OR_RETURN(
      s->join_token,
      LoadOrCreateSecret(data_dir + "/join.token", config.GetString("control.join_token")));
  HANGAR_ASSIGN_OR_RETURN(
      s->e2b_secret,
      LoadOrCreateSecret(data_dir + "/e2b.secret", config.GetString("e2b.token_secret")));
  if (s->e2b_secret.size() < 32) {
    return Status::InvalidArgument("e2b.token_secret: want at least 32 characters");
  }
  s->e2b_default_template = config.GetString("e2b.default_template");
  s->clock = &clock;
  HANGAR_ASSIGN_OR_RETURN(s->store, control::OpenSqliteStore(db));
  s->nodes = control::NewHttpNodeClient();

  control::ControlOptions o;
  o.store = s->store.get();
  o.nodes = s->nodes.get();
  o.clock = &clock;
  o.policy_path = policy;
  o.log_dir = data_dir + "/logs";
  o.start_workers = static_cast<int>(config.GetInt("control.start_workers"));
  o.node_lost_after = std::chrono::milliseconds(config.GetInt("control.node_lost_after_ms"));
  o.requeue_on_node_lost = config.GetBool("control.requeue_on_node_lost");
  o.pools = {
      {.name = "shared",
       .tier = control::Tier::kShared,
       .driver = "ns",
       .overcommit_cpu =
           static_cast<double>(config.GetInt("control.overcommit_cpu_percent")) / 100.0},
      {.name = "hardened", .tier = control::Tier::kHardened, .driver = "gvisor"},
      {.name = "isolated", .tier = control::Tier::kIsolated, .driver = "microvm"},
  };
  HANGAR_ASSIGN_OR_RETURN(s->service, control::ControlService::Start(o));

  // A fresh store gets one team and key, so the README's demo works without an admin step.
  HANGAR_ASSIGN_OR_RETURN(auto teams, s->store->ListTeams());
  if (teams.empty()) {
    HANGAR_ASSIGN_OR_RETURN(
        auto team, s->service->CreateTeam("default", config.GetInt("control.team_max_concurrent")));
    HANGAR_ASSIGN_OR_RETURN(auto key, s->service->CreateApiKey(team.id, "bootstrap"));
    HANGAR_TRY(WriteFileAtomic(data_dir + "/api.key", key.first + "\n", 0600));
    log::Info("bootstrap team created",
              {{"team", team.name}, {"api_key_file", data_dir + "/api.key"}});
  }
  return std::unique_ptr<ControlRole>(new ControlRole(std::move(s)));
}

Status ControlRole::AddRoutes(api::Router& router) {
  HANGAR_TRY(control::AddControlRoutes(
      router,
      {.service = s_->service.get(), .admin_token = s_->admin_token, .join_token = s_->join_token}));
  // The e2b SDK's two URLs (E2B_API_URL, E2B_SANDBOX_URL) are both this server.
  HANGAR_TRY(e2b::AddLifecycleRoutes(router, {.service = s_->service.get(),
                                              .clock = s_->clock,
                                              .token_secret = s_->e2b_secret,
                                              .default_template = s_->e2b_default_template}));
  return e2b::AddSandboxTrafficRoutes(
      router, {.resolve = e2b::TrafficResolver(s_->service.get(), s_->e2b_secret)});
}

}  // namespace hangar::daemon
