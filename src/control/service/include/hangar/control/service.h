// ControlService: the fleet's brain. Takes tasks in, routes each to an isolation tier (router),
// places it on a node of a pool serving that tier (scheduler), starts it through the node's API
// and follows it to a terminal state. Everything durable goes through the Store, so a restart
// loses nothing: pending tasks stay queued, running ones are reconciled with what the nodes
// report.
//
// Promises (docs/ARCHITECTURE.md invariants):
//  - a task never runs on a weaker tier than its routing decision (the scheduler is only ever
//    asked for pools of exactly that tier; a shortage leaves the task pending, saying why);
//  - every accepted task runs or reaches a terminal state with a reason;
//  - a task is placed on at most one node at a time (version-checked store updates, one
//    scheduling pass at a time, sandbox id = task id on the node);
//  - a team sees only its own tasks (NotFound, never PermissionDenied, for another team's).
//
// Threads: one background loop (scheduling passes, timeouts, lost nodes, policy file reload),
// a small pool of start workers (node calls), one thread per running command task. Every public
// method is thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/control/model.h"
#include "hangar/control/node_client.h"
#include "hangar/control/store.h"

namespace hangar::control {

struct ControlOptions {
  Store* store = nullptr;
  NodeClient* nodes = nullptr;
  Clock* clock = nullptr;
  std::string policy_path;  // YAML routing policy (docs/routing.md); reloaded when it changes
  std::string log_dir;      // command output of tasks, one file per task
  std::vector<Pool> pools;  // upserted at start
  int start_workers = 4;
  std::chrono::milliseconds tick{250};  // background loop period (real time)
  bool run_loop = true;                 // false: only Tick() does periodic work (tests)
  std::chrono::milliseconds node_lost_after{15'000};
  bool requeue_on_node_lost = false;  // else: tasks of a lost node fail with the reason
  // Create waits this long for a placed task to be running before answering with its current
  // state.
  std::chrono::milliseconds create_wait{60'000};
  int64_t default_team_max_concurrent = 100;
};

// A validated create request (see TaskFromCreateJson in api.h for the bounds).
struct CreateRequest {
  Task task;                      // request fields filled; state fields ignored
  bool wait_for_capacity = true;  // false: 503 + Retry-After instead of queueing
  // Refuse (InvalidArgument) a template its pool's nodes report without /bin/bash: the e2b SDK
  // runs every command through it.
  bool require_bash = false;
};

// A node's heartbeat: who it is, what it can run, and what it runs now.
struct NodeReport {
  Node node;  // id, pool, url, token, drivers, capacity, usage
  std::vector<std::string> templates;
  std::vector<std::string> bash_templates;  // those whose rootfs has /bin/bash (the e2b SDK's shell)
  std::vector<NodeSandbox> sandboxes;
};

struct CreateOutcome {
  Task task;
  bool created = true;  // false: an earlier create with the same idempotency key
};

class ControlService {
 public:
  static Result<std::unique_ptr<ControlService>> Start(ControlOptions options);
  ~ControlService();  // stops the loop and workers; running sandboxes keep running on nodes
  ControlService(const ControlService&) = delete;
  ControlService& operator=(const ControlService&) = delete;

  // Teams and keys. A key is "hgk_" + 48 hex digits; only its SHA-256 is stored.
  Result<Team> CreateTeam(const std::string& name, int64_t max_concurrent);
  // Returns the key itself (shown once) and its record.
  Result<std::pair<std::string, ApiKey>> CreateApiKey(const std::string& team_id,
                                                      const std::string& name);
  Result<Team> Authenticate(std::string_view key);  // Unauthenticated on anything wrong

  // Tasks, each scoped to `team` (another team's id is NotFound).
  Result<CreateOutcome> Create(const Team& team, CreateRequest request);
  Result<Task> Get(const Team& team, const std::string& id);
  Result<TaskPage> List(const Team& team, TaskFilter filter);
  Result<Task> Kill(const Team& team, const std::string& id);
  Result<Task> SetTimeout(const Team& team, const std::string& id, int64_t timeout_s);
  Result<RoutingDecision> Explain(const Team& team, const std::string& id);
  Result<std::vector<StateChange>> History(const Team& team, const std::string& id);
  // Where a running task's sandbox is, for exec and files (FailedPrecondition unless running).
  Result<std::pair<Node, Task>> Locate(const Team& team, const std::string& id);
  // Locate for callers that authenticate by other means than a team key (the e2b traffic proxy
  // checks the sandbox's access token): any team's task; NotFound once it has ended,
  // FailedPrecondition while it is not running (pending, starting, paused).
  Result<std::pair<Node, Task>> LocateAny(const std::string& id);
  // Freezes every process of a running sandbox (the node's cgroup freezer or VM pause); its
  // resources stay reserved and its timeout keeps running. Resume thaws it. FailedPrecondition
  // from a state that cannot pause/resume; the node's error (e.g. unimplemented) otherwise.
  Result<Task> Pause(const Team& team, const std::string& id);
  Result<Task> Resume(const Team& team, const std::string& id);
  // The task's command output as NDJSON events ({"stream","data"(base64)} and a final
  // {"event":"exit"...}); "" if none yet.
  std::string LogPath(const std::string& task_id) const;

  // Fleet.
  Status Heartbeat(const NodeReport& report);
  Result<std::vector<Node>> Nodes();
  Result<std::vector<Pool>> Pools();
  // Per pool: nodes ready, capacity and allocation sums, tasks pending.
  Result<nlohmann::json> PoolStatus();
  Status ReloadPolicy();  // keeps the old policy and returns the error on a bad file
  std::string PolicyVersion() const;

  // Runs one scheduling pass now (the loop runs them too); for tests with a FakeClock.
  void Tick();

  struct Impl;

 private:
  explicit ControlService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hangar::control
