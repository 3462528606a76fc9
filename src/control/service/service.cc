#include "hangar/control/service.h"

#include <openssl/sha.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "hangar/control/policy.h"
#include "hangar/control/scheduler.h"

namespace hangar::control {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  std::string out;
  for (unsigned char c : digest) out += fmt::format("{:02x}", c);
  return out;
}

TaskFacts FactsOf(const Task& t, const Team& team) {
  TaskFacts f;
  f.team = team.name;
  f.repo = t.repo;
  f.template_name = t.template_name;
  f.labels = t.labels;
  for (const auto& [k, v] : t.metadata.items()) {
    if (v.is_string()) f.metadata[k] = v.get<std::string>();
  }
  f.paths = t.paths;
  f.secrets = t.secrets;
  f.egress = t.egress;
  f.requested_tier = t.requested_tier;
  return f;
}

// The node API create body for a placed task.
nlohmann::json NodeSpecOf(const Task& t, const Pool& pool) {
  int64_t iops = t.resources.iops > 0 ? t.resources.iops : pool.default_iops;
  int64_t bps = t.resources.io_bps > 0 ? t.resources.io_bps : pool.default_io_bps;
  nlohmann::json resources = {{"cpu_millis", t.resources.cpu_millis},
                              {"memory_mb", t.resources.memory_mb},
                              {"disk_mb", t.resources.disk_mb}};
  // The request's IOPS and bytes/s budget holds for reads and writes each.
  if (iops > 0) {
    resources["read_iops"] = iops;
    resources["write_iops"] = iops;
  }
  if (bps > 0) {
    resources["read_bps"] = bps;
    resources["write_bps"] = bps;
  }
  // The node enforces the timeout too, a minute late: a backstop for when the control plane is
  // down when it falls due.
  return {{"id", t.id},
          {"template", t.template_name},
          {"driver", pool.driver},
          {"resources", resources},
          {"env", t.env},
          {"labels", t.labels},
          {"timeout_s", t.timeout_s + 60}};
}

}  // namespace

struct ControlService::Impl {
  ControlOptions opt;
  std::unique_ptr<PolicyStore> policy_store;
  PolicyStore& policy() { return *policy_store; }

  std::mutex mu;  // guards everything below, and serialises task state transitions
  std::condition_variable changed;  // any task changed state
  Scheduler scheduler;
  std::map<std::string, Node> nodes;  // by id; last heartbeat's view
  std::map<std::string, std::set<std::string>> templates_by_pool;
  std::map<std::string, std::set<std::string>> bash_templates_by_pool;  // have /bin/bash
  std::map<std::string, Pool> pools;
  std::set<std::string> inflight;    // tasks whose node create (or command) is in progress here
  std::set<std::string> recovering;  // tasks found `starting` at start: resolved at heartbeat
  // Starts that failed with a transient error, by task: requeued up to kMaxStartAttempts.
  static constexpr int kMaxStartAttempts = 3;
  std::map<std::string, int> start_attempts;
  // Reconcile: consecutive reports of a node without a task's sandbox (a report may predate the
  // create that just finished, so one miss is not enough).
  std::map<std::string, int> missing_reports;
  // Sandboxes to destroy on nodes, queued by request handlers and done by the loop thread, so a
  // heartbeat never waits on a node call (it runs on the node's own HTTP server in embedded mode).
  std::vector<std::pair<Node, std::string>> pending_destroys;
  // Creates waiting for their sandbox to start; beyond kMaxWaitingCreates a create answers at
  // once with the task as it is (starting), so waiting requests never hold every handler thread.
  static constexpr int kMaxWaitingCreates = 4;
  int waiting_creates = 0;
  std::deque<std::string> start_queue;
  std::condition_variable start_cv;
  std::condition_variable loop_cv;
  bool stopping = false;
  std::vector<std::thread> workers;
  std::thread loop;
  std::map<std::string, std::thread> commands;  // task id → runner
  std::vector<std::thread> finished_commands;
  std::filesystem::file_time_type policy_mtime{};

  int64_t NowMs() const {
    return duration_cast<milliseconds>(opt.clock->WallNow().time_since_epoch()).count();
  }

  // --- transitions (mu held) ----------------------------------------------------------------

  // Writes `t` with a new state; retries on a version conflict by re-reading (the only writers
  // are this process's threads, all under mu, so a conflict means another replica — surfaced).
  Result<Task> Transition(Task t, TaskState state, std::string reason) {
    t.state = state;
    t.reason = std::move(reason);
    t.updated_ms = NowMs();
    if (state == TaskState::kRunning && t.started_ms == 0) {
      t.started_ms = t.updated_ms;
      t.deadline_ms = t.started_ms + t.timeout_s * 1000;
    }
    if (IsTerminal(state) && t.ended_ms == 0) t.ended_ms = t.updated_ms;
    auto r = opt.store->UpdateTask(t);
    if (r.ok()) changed.notify_all();
    return r;
  }

  void ReleaseLocked(const std::string& task_id) {
    if (scheduler.Placed(task_id)) (void)scheduler.Release(task_id);
  }

  // Ends a task: releases its reservation and destroys its sandbox (outside the lock, by the
  // caller via the returned node) — returns the node to clean up, if any.
  std::optional<Node> FinishLocked(const Task& t, TaskState state, std::string reason,
                                   std::optional<int> exit_code = std::nullopt) {
    Task copy = t;
    if (exit_code) copy.exit_code = exit_code;
    auto r = Transition(copy, state, std::move(reason));
    if (!r.ok()) {
      log::Error("task transition failed", {{"task", t.id}, {"error", r.status().ToString()}});
      return std::nullopt;
    }
    ReleaseLocked(t.id);
    (void)opt.store->AppendEvent({.at_ms = NowMs(),
                                  .kind = "task." + std::string(TaskStateName(state)),
                                  .subject = t.id,
                                  .team_id = t.team_id,
                                  .data = {{"reason", r->reason}}});
    if (t.node_id.empty()) return std::nullopt;
    auto it = nodes.find(t.node_id);
    if (it == nodes.end()) return std::nullopt;
    return it->second;
  }

  void DestroyOnNode(const std::optional<Node>& node, const std::string& id) {
    if (!node) return;
    Status st = opt.nodes->DestroySandbox(*node, id);
    if (!st.ok()) {
      log::Warn("destroy on node failed; the node's reconcile will remove it",
                {{"task", id}, {"node", node->id}, {"error", st.ToString()}});
    }
  }

  // Pause (freeze) or resume a running sandbox: the node first, then the record, so a failed
  // node call changes nothing. A sandbox already in the wanted state is answered as it is.
  Result<Task> PauseOrResume(const Team& team, const std::string& id, bool pause,
                             ControlService* svc) {
    HANGAR_ASSIGN_OR_RETURN(Task t, svc->Get(team, id));
    TaskState from = pause ? TaskState::kRunning : TaskState::kPaused;
    TaskState to = pause ? TaskState::kPaused : TaskState::kRunning;
    if (t.state == to) return t;
    if (t.state != from) {
      return Status::FailedPrecondition(fmt::format("sandbox '{}' is {}; only a {} sandbox can be {}",
                                                    id, TaskStateName(t.state),
                                                    TaskStateName(from),
                                                    pause ? "paused" : "resumed"));
    }
    std::optional<Node> node;
    {
      std::lock_guard lk(mu);
      if (auto it = nodes.find(t.node_id); it != nodes.end()) node = it->second;
    }
    if (!node) {
      return Status::Unavailable(fmt::format("node '{}' of sandbox '{}' is unknown", t.node_id, id));
    }
    HANGAR_TRY(pause ? opt.nodes->Pause(*node, id) : opt.nodes->Resume(*node, id));
    std::lock_guard lk(mu);
    HANGAR_ASSIGN_OR_RETURN(auto cur, opt.store->GetTask(id));
    if (!cur) return Status::NotFound(fmt::format("sandbox '{}' not found", id));
    if (cur->state != from) return *cur;  // ended meanwhile (killed, timed out)
    return Transition(*cur, to, pause ? "paused by the API" : "running on " + cur->node_id);
  }

  // --- scheduling ----------------------------------------------------------------------------

  const Pool* PoolForTier(Tier tier) const {
    for (const auto& [name, p] : pools) {
      if (p.tier == tier) return &p;
    }
    return nullptr;
  }

  // One pass over the durable queue, FIFO within priority. A task that does not fit stays
  // pending with the scheduler's reason; tasks behind it may still be placed (no head-of-line
  // blocking across different sizes).
  void SchedulePassLocked() {
    auto pending = opt.store->ListPendingTasks();
    if (!pending.ok()) {
      log::Error("list pending tasks", {{"error", pending.status().ToString()}});
      return;
    }
    for (Task& t : *pending) {
      if (t.state != TaskState::kPending) continue;
      const Pool* pool = PoolForTier(t.tier);
      std::string reason;
      if (pool == nullptr) {
        reason = fmt::format("waiting: no pool serves tier '{}'", TierName(t.tier));
      } else {
        auto placed = scheduler.Place({.task_id = t.id,
                                       .pool = pool->name,
                                       .resources = t.resources,
                                       .priority = t.priority});
        if (placed.ok()) {
          t.pool = pool->name;
          t.node_id = placed->node_id;
          auto r = Transition(t, TaskState::kStarting, "placed: " + placed->explanation);
          if (!r.ok()) {
            ReleaseLocked(t.id);
            continue;
          }
          inflight.insert(t.id);
          start_queue.push_back(t.id);
          start_cv.notify_one();
          continue;
        }
        reason = "waiting: " + placed.status().message();
      }
      if (reason != t.reason) {
        t.pool = pool ? pool->name : "";
        (void)Transition(t, TaskState::kPending, reason);
      }
    }
  }

  // --- start workers -------------------------------------------------------------------------

  void StartWorker() {
    for (;;) {
      std::string id;
      {
        std::unique_lock lk(mu);
        start_cv.wait(lk, [&] { return stopping || !start_queue.empty(); });
        if (stopping) return;
        id = start_queue.front();
        start_queue.pop_front();
      }
      StartOne(id);
    }
  }

  void StartOne(const std::string& id) {
    Task t;
    Node node;
    Pool pool;
    {
      std::lock_guard lk(mu);
      auto got = opt.store->GetTask(id);
      if (!got.ok() || !*got || (*got)->state != TaskState::kStarting) {
        inflight.erase(id);
        return;
      }
      t = **got;
      auto n = nodes.find(t.node_id);
      auto p = pools.find(t.pool);
      if (n == nodes.end() || p == pools.end()) {
        inflight.erase(id);
        FinishLocked(t, TaskState::kFailed, "node or pool vanished before start");
        return;
      }
      node = n->second;
      pool = p->second;
    }
    auto created = opt.nodes->CreateSandbox(node, NodeSpecOf(t, pool));
    std::optional<Node> cleanup;
    {
      std::lock_guard lk(mu);
      auto got = opt.store->GetTask(id);
      if (!got.ok() || !*got) {
        inflight.erase(id);
        return;
      }
      t = **got;
      if (t.state != TaskState::kStarting) {
        // Killed while starting: the sandbox (if made) goes.
        inflight.erase(id);
        if (created.ok()) cleanup = node;
      } else if (created.ok()) {
        start_attempts.erase(id);
        auto r = Transition(t, TaskState::kRunning, "running on " + node.id);
        if (r.ok() && !t.command.empty()) {
          commands[id] = std::thread([this, task = *r, node] { RunCommand(task, node); });
        } else {
          inflight.erase(id);
        }
      } else {
        inflight.erase(id);
        Code c = created.status().code();
        int attempt = ++start_attempts[id];
        if ((c == Code::kUnavailable || c == Code::kDeadlineExceeded) &&
            attempt < kMaxStartAttempts) {
          // The node may or may not have made it: remove it there, then queue the task again.
          cleanup = node;
          ReleaseLocked(id);
          t.node_id.clear();
          (void)Transition(t, TaskState::kPending,
                           "waiting: node " + node.id + " failed: " + created.status().message());
        } else {
          start_attempts.erase(id);
          FinishLocked(t, TaskState::kFailed,
                       fmt::format("node refused{}: {}",
                                   attempt > 1 ? fmt::format(" ({} attempts)", attempt) : "",
                                   created.status().message()));
        }
      }
    }
    if (cleanup) DestroyOnNode(cleanup, id);
    std::lock_guard lk(mu);
    changed.notify_all();
  }

  // --- command tasks -------------------------------------------------------------------------

  void RunCommand(Task t, Node node) {
    std::ofstream log(LogPathOf(t.id), std::ios::app);
    auto write = [&](const nlohmann::json& ev) {
      log << ev.dump() << '\n';
      log.flush();
    };
    nlohmann::json cmd = {
        {"cmd", t.command.front()},
        {"args", std::vector<std::string>(t.command.begin() + 1, t.command.end())},
        {"env", t.env}};
    std::optional<int> exit_code;
    std::string error;
    Status st = opt.nodes->Exec(node, t.id, cmd, [&](const nlohmann::json& ev) -> Status {
      std::string kind = ev.value("event", "");
      if (kind == "stdout" || kind == "stderr") {
        write({{"stream", kind}, {"data", ev.value("data", "")}});
      } else if (kind == "exit") {
        exit_code = ev.value("exit_code", -1);
      } else if (kind == "error") {
        error = ev.value("message", "error");
      }
      return Status::Ok();
    });
    if (!st.ok() && error.empty()) error = st.ToString();
    std::optional<Node> cleanup;
    {
      std::lock_guard lk(mu);
      auto got = opt.store->GetTask(t.id);
      if (got.ok() && *got && !IsTerminal((*got)->state)) {
        if (exit_code) {
          write({{"event", "exit"}, {"exit_code", *exit_code}});
          cleanup = FinishLocked(**got, TaskState::kExited,
                                 fmt::format("command exited with code {}", *exit_code), exit_code);
        } else {
          write({{"event", "error"}, {"message", error}});
          cleanup = FinishLocked(**got, TaskState::kFailed, "command failed: " + error);
        }
      } else if (got.ok() && *got) {
        // Killed or timed out while running: record how the log ends.
        write({{"event", "end"},
               {"state", TaskStateName((*got)->state)},
               {"reason", (*got)->reason}});
      }
      inflight.erase(t.id);
      if (auto it = commands.find(t.id); it != commands.end()) {
        finished_commands.push_back(std::move(it->second));
        commands.erase(it);
      }
    }
    DestroyOnNode(cleanup, t.id);
  }

  std::string LogPathOf(const std::string& id) const { return opt.log_dir + "/" + id + ".ndjson"; }

  // --- background loop -------------------------------------------------------------------------

  // Periodic work in real time (timeouts and heartbeats are judged by opt.clock, so a FakeClock
  // still decides what is due).
  void Loop() {
    std::unique_lock lk(mu);
    while (!stopping) {
      lk.unlock();
      TickOnce();
      lk.lock();
      loop_cv.wait_for(lk, opt.tick, [&] { return stopping; });
    }
  }

  void TickOnce() {
    MaybeReloadPolicy();
    std::vector<std::pair<std::optional<Node>, std::string>> cleanup;
    std::vector<std::thread> joinable;
    {
      std::lock_guard lk(mu);
      int64_t now = NowMs();
      // Lost nodes.
      for (auto& [id, n] : nodes) {
        if (n.status != NodeStatus::kReady) continue;
        if (now - n.last_heartbeat_ms <= opt.node_lost_after.count()) continue;
        n.status = NodeStatus::kLost;
        (void)opt.store->UpsertNode(n);
        (void)scheduler.SetSchedulable(id, false);
        (void)opt.store->AppendEvent({.at_ms = now,
                                      .kind = "node.lost",
                                      .subject = id,
                                      .data = {{"last_heartbeat_ms", n.last_heartbeat_ms}}});
        log::Warn("node lost", {{"node", id}});
        auto active = opt.store->ListActiveTasks();
        if (!active.ok()) continue;
        for (const Task& t : *active) {
          if (t.node_id != id) continue;
          inflight.erase(t.id);
          recovering.erase(t.id);
          if (opt.requeue_on_node_lost && t.state != TaskState::kPending) {
            ReleaseLocked(t.id);
            Task q = t;
            q.node_id.clear();
            q.started_ms = 0;
            q.deadline_ms = 0;
            (void)Transition(q, TaskState::kPending, "requeued: node " + id + " lost");
          } else {
            FinishLocked(t, TaskState::kFailed, "node " + id + " lost (no heartbeat)");
          }
        }
      }
      // Timeouts.
      auto active = opt.store->ListActiveTasks();
      if (active.ok()) {
        for (const Task& t : *active) {
          if ((t.state == TaskState::kRunning || t.state == TaskState::kPaused) &&
              t.deadline_ms > 0 && now >= t.deadline_ms) {
            cleanup.emplace_back(FinishLocked(t, TaskState::kTimedOut,
                                              fmt::format("timeout of {} s reached", t.timeout_s)),
                                 t.id);
          }
        }
      }
      SchedulePassLocked();
      joinable.swap(finished_commands);
      for (auto& [node, id] : pending_destroys) cleanup.emplace_back(node, id);
      pending_destroys.clear();
    }
    for (auto& [node, id] : cleanup) DestroyOnNode(node, id);
    for (auto& th : joinable) th.join();
  }

  void MaybeReloadPolicy() {
    std::error_code ec;
    auto mtime = std::filesystem::last_write_time(opt.policy_path, ec);
    if (ec || mtime == policy_mtime) return;
    policy_mtime = mtime;
    Status st = policy().ReloadFromFile(opt.policy_path);
    if (st.ok()) {
      log::Info("policy loaded",
                {{"path", opt.policy_path}, {"version", policy().Current()->version()}});
      (void)opt.store->AppendEvent({.at_ms = NowMs(),
                                    .kind = "policy.reloaded",
                                    .subject = opt.policy_path,
                                    .data = {{"version", policy().Current()->version()}}});
    } else {
      log::Error("policy rejected; the previous one stays",
                 {{"path", opt.policy_path}, {"error", st.ToString()}});
    }
  }

  // --- reconcile with a node's report -------------------------------------------------------

  void Reconcile(const NodeReport& report, std::vector<std::string>& orphans,
                 std::vector<std::pair<std::optional<Node>, std::string>>& cleanup) {
    std::map<std::string, const NodeSandbox*> on_node;
    for (const auto& s : report.sandboxes) {
      on_node[s.id] = &s;
      missing_reports.erase(s.id);
    }
    for (const auto& [sid, s] : on_node) {
      if (inflight.count(sid) && !recovering.count(sid)) continue;
      auto got = opt.store->GetTask(sid);
      if (!got.ok()) continue;
      if (!*got || IsTerminal((*got)->state) || (*got)->node_id != report.node.id) {
        orphans.push_back(sid);
        continue;
      }
      const Task& t = **got;
      if (t.state == TaskState::kStarting && recovering.count(sid)) {
        recovering.erase(sid);
        inflight.erase(sid);
        if (t.command.empty()) {
          (void)Transition(t, TaskState::kRunning, "running on " + report.node.id + " (recovered)");
        } else {
          cleanup.emplace_back(
              FinishLocked(t, TaskState::kFailed,
                           "control plane restarted while the command was starting"),
              sid);
        }
        continue;
      }
      if (s->state == "stopped" || s->state == "failed") {
        std::string why = s->info.value("reason", "");
        bool timed_out = t.deadline_ms > 0 && NowMs() >= t.deadline_ms;
        cleanup.emplace_back(
            FinishLocked(t, timed_out ? TaskState::kTimedOut : TaskState::kFailed,
                         "sandbox stopped on node" + (why.empty() ? "" : ": " + why)),
            sid);
      }
    }
    // Tasks this node should run but does not report.
    auto active = opt.store->ListActiveTasks();
    if (!active.ok()) return;
    for (const Task& t : *active) {
      if (t.node_id != report.node.id || on_node.count(t.id)) continue;
      if (t.state == TaskState::kPending) continue;
      if (inflight.count(t.id) && !recovering.count(t.id)) continue;
      if (t.state == TaskState::kStarting) {
        // Never made it to the node (the control plane died between placing and creating).
        recovering.erase(t.id);
        inflight.erase(t.id);
        ReleaseLocked(t.id);
        Task q = t;
        q.node_id.clear();
        (void)Transition(q, TaskState::kPending, "requeued: start interrupted by a restart");
        continue;
      }
      if (++missing_reports[t.id] < 2) continue;
      missing_reports.erase(t.id);
      cleanup.emplace_back(
          FinishLocked(t, TaskState::kFailed, "sandbox disappeared from node " + report.node.id),
          t.id);
    }
  }
};

ControlService::ControlService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ControlService::~ControlService() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    impl_->start_cv.notify_all();
    impl_->loop_cv.notify_all();
  }
  if (impl_->loop.joinable()) impl_->loop.join();
  for (auto& w : impl_->workers) w.join();
  std::map<std::string, std::thread> commands;
  std::vector<std::thread> finished;
  {
    std::lock_guard lk(impl_->mu);
    commands.swap(impl_->commands);
    finished.swap(impl_->finished_commands);
  }
  // Command runners end when their exec stream ends; the sandboxes keep running on the nodes and
  // the next start reconciles them. Detach rather than wait for commands of unbounded length.
  for (auto& [id, th] : commands) th.detach();
  for (auto& th : finished) th.join();
}

Result<std::unique_ptr<ControlService>> ControlService::Start(ControlOptions options) {
  if (!options.store || !options.nodes || !options.clock) {
    return Status::InvalidArgument("ControlService needs a store, a node client and a clock");
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  auto& s = *impl;
  std::error_code ec;
  std::filesystem::create_directories(s.opt.log_dir, ec);
  if (ec) return Status::Internal(fmt::format("create {}: {}", s.opt.log_dir, ec.message()));
  {
    auto initial = Policy::LoadFile(s.opt.policy_path);
    if (!initial.ok()) return initial.status().With("routing policy");
    s.policy_store = std::make_unique<PolicyStore>(std::move(*initial));
  }
  s.policy_mtime = std::filesystem::last_write_time(s.opt.policy_path, ec);

  for (const Pool& p : s.opt.pools) {
    HANGAR_TRY(s.scheduler.SetPool(p));
    HANGAR_TRY(s.opt.store->UpsertPool(p));
  }
  HANGAR_ASSIGN_OR_RETURN(auto pools, s.opt.store->ListPools());
  for (const Pool& p : pools) {
    s.pools[p.name] = p;
    HANGAR_TRY(s.scheduler.SetPool(p));
  }
  // Nodes get a full lost-after period from now to report in.
  int64_t now = s.NowMs();
  HANGAR_ASSIGN_OR_RETURN(auto nodes, s.opt.store->ListNodes());
  for (Node n : nodes) {
    if (!s.pools.count(n.pool)) continue;
    if (n.status == NodeStatus::kReady) n.last_heartbeat_ms = now;
    HANGAR_TRY(s.scheduler.AddOrUpdateNode(NodeSpec::Of(n)));
    s.nodes[n.id] = n;
  }
  // Reservations of everything placed, exactly as before the restart.
  HANGAR_ASSIGN_OR_RETURN(auto active, s.opt.store->ListActiveTasks());
  std::vector<Assignment> assignments;
  for (const Task& t : active) {
    if (t.state == TaskState::kPending || t.node_id.empty() || !s.nodes.count(t.node_id)) continue;
    assignments.push_back({.task_id = t.id, .node_id = t.node_id, .resources = t.resources});
    if (t.state == TaskState::kStarting) {
      s.recovering.insert(t.id);
      s.inflight.insert(t.id);
    }
  }
  HANGAR_TRY(s.scheduler.Restore(assignments).With("restoring reservations"));
  // Command tasks whose runner died with the previous process cannot be followed again.
  for (const Task& t : active) {
    if (t.state == TaskState::kRunning && !t.command.empty()) {
      auto node =
          s.FinishLocked(t, TaskState::kFailed, "control plane restarted while the command ran");
      s.DestroyOnNode(node, t.id);
    }
  }
  for (int i = 0; i < std::max(1, s.opt.start_workers); ++i) {
    s.workers.emplace_back([&s] { s.StartWorker(); });
  }
  if (s.opt.run_loop) s.loop = std::thread([&s] { s.Loop(); });
  log::Info("control service started", {{"pools", s.pools.size()},
                                        {"nodes", s.nodes.size()},
                                        {"active_tasks", active.size()},
                                        {"policy", s.policy().Current()->version()}});
  return std::unique_ptr<ControlService>(new ControlService(std::move(impl)));
}

// --- teams and keys -----------------------------------------------------------------------------

Result<Team> ControlService::CreateTeam(const std::string& name, int64_t max_concurrent) {
  if (name.empty() || name.size() > 64) {
    return Status::InvalidArgument("team name must be 1 to 64 characters");
  }
  if (max_concurrent < 1 || max_concurrent > 100000) {
    return Status::InvalidArgument("max_concurrent must be between 1 and 100000");
  }
  Team t{.id = "team-" + RandomHex(8),
         .name = name,
         .max_concurrent = max_concurrent,
         .created_ms = impl_->NowMs()};
  HANGAR_TRY(impl_->opt.store->CreateTeam(t));
  return t;
}

Result<std::pair<std::string, ApiKey>> ControlService::CreateApiKey(const std::string& team_id,
                                                                    const std::string& name) {
  std::string key = "hgk_" + RandomHex(24);
  ApiKey k{.id = "key-" + RandomHex(6),
           .team_id = team_id,
           .name = name,
           .hash_hex = Sha256Hex(key),
           .created_ms = impl_->NowMs()};
  HANGAR_TRY(impl_->opt.store->CreateApiKey(k));
  return std::make_pair(key, k);
}

Result<Team> ControlService::Authenticate(std::string_view key) {
  if (key.empty()) return Status::Unauthenticated("missing API key");
  HANGAR_ASSIGN_OR_RETURN(auto k, impl_->opt.store->FindApiKey(Sha256Hex(key)));
  if (!k || k->revoked) return Status::Unauthenticated("invalid API key");
  HANGAR_ASSIGN_OR_RETURN(auto team, impl_->opt.store->GetTeam(k->team_id));
  if (!team) return Status::Unauthenticated("invalid API key");
  return *team;
}

// --- tasks ------------------------------------------------------------------------------------

Result<CreateOutcome> ControlService::Create(const Team& team, CreateRequest request) {
  auto& s = *impl_;
  Task t = std::move(request.task);
  t.team_id = team.id;
  t.id = "sb" + RandomHex(9);
  t.state = TaskState::kPending;
  t.created_ms = t.updated_ms = s.NowMs();
  t.version = 0;

  auto policy = s.policy().Current();
  Decision d = policy->Decide(FactsOf(t, team));
  t.tier = d.tier;
  RoutingDecision rd{.task_id = t.id,
                     .tier = d.tier,
                     .rule = d.rule,
                     .explanation = d.explanation,
                     .policy_version = policy->version(),
                     .trace = d.trace,
                     .at_ms = t.created_ms};
  {
    std::unique_lock lk(s.mu);
    // A retry of an earlier create is answered with what that one made, before any check that
    // could turn it away (quota, capacity).
    if (!t.idempotency_key.empty()) {
      HANGAR_ASSIGN_OR_RETURN(auto earlier,
                              s.opt.store->FindTaskByIdempotencyKey(team.id, t.idempotency_key));
      if (earlier) return CreateOutcome{*earlier, false};
    }
    const Pool* pool = s.PoolForTier(t.tier);
    if (pool != nullptr) {
      t.pool = pool->name;
      // A request no node of the pool could ever hold is refused instead of waiting forever.
      auto what_if = s.scheduler.Choose(
          {.task_id = t.id, .pool = pool->name, .resources = t.resources, .priority = t.priority});
      if (!what_if.ok() && what_if.status().code() == Code::kInvalidArgument) {
        return what_if.status();
      }
      if (!what_if.ok() && !request.wait_for_capacity) {
        return Status::Unavailable(fmt::format("no capacity for tier '{}' now: {}",
                                               TierName(t.tier), what_if.status().message()));
      }
      // The template must exist on the pool's nodes (once any has reported).
      if (auto known = s.templates_by_pool.find(pool->name);
          known != s.templates_by_pool.end() && !known->second.count(t.template_name)) {
        std::string list;
        for (const auto& k : known->second) list += (list.empty() ? "" : ", ") + k;
        return Status::NotFound(fmt::format("unknown template '{}' in pool '{}' (known: {})",
                                            t.template_name, pool->name,
                                            list.empty() ? "none yet" : list));
      }
      if (request.require_bash && s.templates_by_pool.count(pool->name) &&
          !s.bash_templates_by_pool[pool->name].count(t.template_name)) {
        return Status::InvalidArgument(fmt::format(
            "template '{}' has no /bin/bash, which the e2b SDK runs every command with "
            "(/bin/bash -l -c); choose a template that has bash",
            t.template_name));
      }
    } else if (!request.wait_for_capacity) {
      return Status::Unavailable(fmt::format("no pool serves tier '{}'", TierName(t.tier)));
    }
    t.reason = "waiting for the scheduler";
    HANGAR_ASSIGN_OR_RETURN(int64_t active, s.opt.store->CountActiveTasks(team.id));
    if (active >= team.max_concurrent) {
      return Status::ResourceExhausted(
          fmt::format("team '{}' has {} active sandboxes, its limit is {}", team.name, active,
                      team.max_concurrent));
    }
    HANGAR_ASSIGN_OR_RETURN(CreateTaskResult created, s.opt.store->CreateTask(t, rd));
    if (!created.created) return CreateOutcome{created.task, false};
    t = created.task;
    s.SchedulePassLocked();
    // Wait while it starts; a task left pending (no capacity, no node) is answered at once, and
    // so is one beyond the cap of waiting creates (the caller polls).
    auto deadline = std::chrono::steady_clock::now() + s.opt.create_wait;
    if (s.waiting_creates >= Impl::kMaxWaitingCreates) deadline = std::chrono::steady_clock::now();
    ++s.waiting_creates;
    struct Unwait {
      int& n;
      ~Unwait() { --n; }
    } unwait{s.waiting_creates};
    for (;;) {
      auto cur = s.opt.store->GetTask(t.id);
      if (!cur.ok() || !*cur) break;
      t = **cur;
      if (t.state != TaskState::kStarting) break;
      if (s.changed.wait_until(lk, deadline) == std::cv_status::timeout) {
        auto last = s.opt.store->GetTask(t.id);
        if (last.ok() && *last) t = **last;
        break;
      }
    }
  }
  return CreateOutcome{t, true};
}

Result<Task> ControlService::Get(const Team& team, const std::string& id) {
  HANGAR_ASSIGN_OR_RETURN(auto t, impl_->opt.store->GetTask(id));
  if (!t || t->team_id != team.id) {
    return Status::NotFound(fmt::format("sandbox '{}' not found", id));
  }
  return *t;
}

Result<TaskPage> ControlService::List(const Team& team, TaskFilter filter) {
  filter.team_id = team.id;
  return impl_->opt.store->ListTasks(filter);
}

Result<Task> ControlService::Kill(const Team& team, const std::string& id) {
  HANGAR_ASSIGN_OR_RETURN(Task t, Get(team, id));
  if (IsTerminal(t.state)) return t;
  std::optional<Node> node;
  {
    std::lock_guard lk(impl_->mu);
    HANGAR_ASSIGN_OR_RETURN(auto cur, impl_->opt.store->GetTask(id));
    if (!cur) return Status::NotFound(fmt::format("sandbox '{}' not found", id));
    if (IsTerminal(cur->state)) return *cur;
    node = impl_->FinishLocked(*cur, TaskState::kKilled, "killed by the API");
  }
  impl_->DestroyOnNode(node, id);
  return Get(team, id);
}

Result<Task> ControlService::SetTimeout(const Team& team, const std::string& id,
                                        int64_t timeout_s) {
  if (timeout_s < 1 || timeout_s > 30 * 86400) {
    return Status::InvalidArgument("'timeout_s' must be between 1 and 2592000");
  }
  HANGAR_ASSIGN_OR_RETURN(Task t, Get(team, id));
  if (IsTerminal(t.state)) {
    return Status::FailedPrecondition(
        fmt::format("sandbox '{}' is {}", id, TaskStateName(t.state)));
  }
  std::optional<Node> node;
  Task updated;
  {
    std::lock_guard lk(impl_->mu);
    HANGAR_ASSIGN_OR_RETURN(auto cur, impl_->opt.store->GetTask(id));
    if (!cur) return Status::NotFound(fmt::format("sandbox '{}' not found", id));
    Task c = *cur;
    c.timeout_s = timeout_s;
    if (c.started_ms > 0) c.deadline_ms = impl_->NowMs() + timeout_s * 1000;
    c.updated_ms = impl_->NowMs();
    HANGAR_ASSIGN_OR_RETURN(updated, impl_->opt.store->UpdateTask(c));
    if (c.state == TaskState::kRunning || c.state == TaskState::kPaused) {
      if (auto it = impl_->nodes.find(c.node_id); it != impl_->nodes.end()) node = it->second;
    }
  }
  if (node) {
    // The node's backstop follows, a minute behind.
    Status st = impl_->opt.nodes->SetTimeout(*node, id, timeout_s + 60);
    if (!st.ok()) log::Warn("node timeout backstop not updated", {{"error", st.ToString()}});
  }
  return updated;
}

Result<Task> ControlService::Pause(const Team& team, const std::string& id) {
  return impl_->PauseOrResume(team, id, true, this);
}

Result<Task> ControlService::Resume(const Team& team, const std::string& id) {
  return impl_->PauseOrResume(team, id, false, this);
}

Result<RoutingDecision> ControlService::Explain(const Team& team, const std::string& id) {
  HANGAR_TRY(Get(team, id).status());
  HANGAR_ASSIGN_OR_RETURN(auto d, impl_->opt.store->GetDecision(id));
  if (!d) return Status::NotFound(fmt::format("no routing decision for '{}'", id));
  return *d;
}

Result<std::vector<StateChange>> ControlService::History(const Team& team, const std::string& id) {
  HANGAR_TRY(Get(team, id).status());
  return impl_->opt.store->TaskHistory(id);
}

Result<std::pair<Node, Task>> ControlService::Locate(const Team& team, const std::string& id) {
  HANGAR_TRY(Get(team, id).status());
  auto where = LocateAny(id);
  if (where.status().code() == Code::kNotFound) {  // it exists: it has ended
    return Status::FailedPrecondition(where.status().message());
  }
  return where;
}

Result<std::pair<Node, Task>> ControlService::LocateAny(const std::string& id) {
  HANGAR_ASSIGN_OR_RETURN(auto found, impl_->opt.store->GetTask(id));
  if (!found) return Status::NotFound(fmt::format("sandbox '{}' not found", id));
  const Task& t = *found;
  if (IsTerminal(t.state)) {
    return Status::NotFound(fmt::format("sandbox '{}' is {}{}", id, TaskStateName(t.state),
                                        t.reason.empty() ? "" : " (" + t.reason + ")"));
  }
  if (t.state != TaskState::kRunning) {
    return Status::FailedPrecondition(fmt::format("sandbox '{}' is {}{}", id,
                                                  TaskStateName(t.state),
                                                  t.reason.empty() ? "" : " (" + t.reason + ")"));
  }
  std::lock_guard lk(impl_->mu);
  auto it = impl_->nodes.find(t.node_id);
  if (it == impl_->nodes.end()) {
    return Status::Unavailable(fmt::format("node '{}' of sandbox '{}' is unknown", t.node_id, id));
  }
  return std::make_pair(it->second, t);
}

std::string ControlService::LogPath(const std::string& task_id) const {
  return impl_->LogPathOf(task_id);
}

// --- fleet ------------------------------------------------------------------------------------

Status ControlService::Heartbeat(const NodeReport& report) {
  auto& s = *impl_;
  Node n = report.node;
  if (n.id.empty() || n.url.empty()) {
    return Status::InvalidArgument("heartbeat: node 'id' and 'url' are required");
  }
  std::vector<std::string> orphans;
  std::vector<std::pair<std::optional<Node>, std::string>> cleanup;
  {
    std::lock_guard lk(s.mu);
    auto pool = s.pools.find(n.pool);
    if (pool == s.pools.end()) {
      return Status::InvalidArgument(fmt::format("heartbeat: unknown pool '{}'", n.pool));
    }
    bool is_new = !s.nodes.count(n.id);
    auto prev = s.nodes.find(n.id);
    n.registered_ms = is_new ? s.NowMs() : prev->second.registered_ms;
    bool was_lost = !is_new && prev->second.status == NodeStatus::kLost;
    n.status = NodeStatus::kReady;
    if (!is_new && prev->second.status == NodeStatus::kDraining) n.status = NodeStatus::kDraining;
    n.last_heartbeat_ms = s.NowMs();
    HANGAR_TRY(s.scheduler.AddOrUpdateNode(NodeSpec::Of(n)));
    HANGAR_TRY(s.opt.store->UpsertNode(n));
    s.nodes[n.id] = n;
    auto& known = s.templates_by_pool[n.pool];
    for (const auto& t : report.templates) known.insert(t);
    auto& with_bash = s.bash_templates_by_pool[n.pool];
    for (const auto& t : report.bash_templates) with_bash.insert(t);
    if (is_new || was_lost) {
      (void)s.opt.store->AppendEvent({.at_ms = s.NowMs(),
                                      .kind = is_new ? "node.registered" : "node.returned",
                                      .subject = n.id,
                                      .data = {{"pool", n.pool}, {"url", n.url}}});
      log::Info(is_new ? "node registered" : "node returned", {{"node", n.id}, {"pool", n.pool}});
    }
    s.Reconcile(report, orphans, cleanup);
    s.SchedulePassLocked();
  }
  std::lock_guard lk(s.mu);
  for (const auto& id : orphans) {
    log::Info("removing orphan sandbox", {{"node", n.id}, {"sandbox", id}});
    s.pending_destroys.emplace_back(n, id);
  }
  for (auto& [node, id] : cleanup) {
    if (node) s.pending_destroys.emplace_back(*node, id);
  }
  if (!s.pending_destroys.empty()) s.loop_cv.notify_all();
  return Status::Ok();
}

Result<std::vector<Node>> ControlService::Nodes() {
  std::lock_guard lk(impl_->mu);
  std::vector<Node> out;
  for (const auto& [id, n] : impl_->nodes) out.push_back(n);
  return out;
}

Result<std::vector<Pool>> ControlService::Pools() {
  std::lock_guard lk(impl_->mu);
  std::vector<Pool> out;
  for (const auto& [id, p] : impl_->pools) out.push_back(p);
  return out;
}

Result<nlohmann::json> ControlService::PoolStatus() {
  auto& s = *impl_;
  std::lock_guard lk(s.mu);
  HANGAR_ASSIGN_OR_RETURN(auto pending, s.opt.store->ListPendingTasks());
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, p] : s.pools) {
    Resources cap, alloc;
    int ready = 0, total = 0;
    for (const auto& v : s.scheduler.Nodes()) {
      if (v.pool != name) continue;
      ++total;
      if (v.schedulable) ++ready;
      cap.cpu_millis += v.capacity.cpu_millis;
      cap.memory_mb += v.capacity.memory_mb;
      cap.disk_mb += v.capacity.disk_mb;
      cap.iops += v.capacity.iops;
      alloc.cpu_millis += v.allocated.cpu_millis;
      alloc.memory_mb += v.allocated.memory_mb;
      alloc.disk_mb += v.allocated.disk_mb;
      alloc.iops += v.allocated.iops;
    }
    int waiting = 0;
    for (const auto& t : pending) {
      if (t.state == TaskState::kPending && t.tier == p.tier) ++waiting;
    }
    auto res = [](const Resources& r) {
      return nlohmann::json{{"cpu_millis", r.cpu_millis},
                            {"memory_mb", r.memory_mb},
                            {"disk_mb", r.disk_mb},
                            {"iops", r.iops}};
    };
    out.push_back({{"name", name},
                   {"tier", TierName(p.tier)},
                   {"driver", p.driver},
                   {"nodes", total},
                   {"nodes_ready", ready},
                   {"capacity", res(cap)},
                   {"allocated", res(alloc)},
                   {"pending", waiting},
                   {"overcommit_cpu", p.overcommit_cpu},
                   {"overcommit_memory", p.overcommit_memory}});
  }
  return out;
}

Status ControlService::ReloadPolicy() {
  HANGAR_TRY(impl_->policy().ReloadFromFile(impl_->opt.policy_path));
  (void)impl_->opt.store->AppendEvent({.at_ms = impl_->NowMs(),
                                       .kind = "policy.reloaded",
                                       .subject = impl_->opt.policy_path,
                                       .data = {{"version", PolicyVersion()}}});
  return Status::Ok();
}

std::string ControlService::PolicyVersion() const { return impl_->policy().Current()->version(); }

void ControlService::Tick() { impl_->TickOnce(); }

}  // namespace hangar::control
