// The control plane's records: what the Store keeps and the service reads and writes. Plain
// values, no behaviour beyond naming and parsing; times are wall-clock milliseconds since the
// Unix epoch (stored and shown to people), ids are opaque strings made by the service.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"

namespace hangar::control {

// Isolation tiers, ordered by strength: a task may move up this list, never down.
enum class Tier { kShared = 0, kHardened = 1, kIsolated = 2 };
std::string_view TierName(Tier tier);  // "shared" | "hardened" | "isolated"
Result<Tier> ParseTier(std::string_view name);

// What a task asks for. 0 in iops / io_bps means "the pool's default".
struct ResourceRequest {
  int64_t cpu_millis = 1000;  // 1000 = one core
  int64_t memory_mb = 512;
  int64_t disk_mb = 1024;
  int64_t iops = 0;    // read + write operations per second
  int64_t io_bps = 0;  // read + write bytes per second
  friend bool operator==(const ResourceRequest&, const ResourceRequest&) = default;
};

// pending → starting → running ⇄ paused → (exited | failed | killed | timed_out)
enum class TaskState {
  kPending,
  kStarting,
  kRunning,
  kPaused,
  kExited,
  kFailed,
  kKilled,
  kTimedOut
};
std::string_view TaskStateName(TaskState state);
Result<TaskState> ParseTaskState(std::string_view name);
bool IsTerminal(TaskState state);

struct Team {
  std::string id;                // "team-..."
  std::string name;              // unique, shown to people
  int64_t max_concurrent = 100;  // non-terminal tasks at once; 429 beyond
  int64_t created_ms = 0;
};

// Only the SHA-256 of a key is stored; the key itself is shown once, at creation.
struct ApiKey {
  std::string id;  // "key-..."; safe to show
  std::string team_id;
  std::string name;
  std::string hash_hex;  // lower-case hex SHA-256 of the whole key
  int64_t created_ms = 0;
  bool revoked = false;
};

struct Pool {
  std::string name;  // "shared", "isolated", ...
  Tier tier = Tier::kShared;
  std::string driver;           // node driver that serves this pool: "ns", "gvisor", "microvm"
  double overcommit_cpu = 1.0;  // ≥ 1.0; allocations may reach capacity × this; bounded ≤ 4
  double overcommit_memory = 1.0;
  int64_t default_iops = 0;  // applied when a task asks for 0
  int64_t default_io_bps = 0;
  friend bool operator==(const Pool&, const Pool&) = default;
};

struct NodeCapacity {
  int64_t cpu_millis = 0;
  int64_t memory_mb = 0;
  int64_t disk_mb = 0;
  int64_t iops = 0;
  friend bool operator==(const NodeCapacity&, const NodeCapacity&) = default;
};

enum class NodeStatus { kReady, kLost, kDraining };
std::string_view NodeStatusName(NodeStatus status);
Result<NodeStatus> ParseNodeStatus(std::string_view name);

struct Node {
  std::string id;     // stable, chosen by the node agent ("node-<hostname>" by default)
  std::string pool;   // the pool it serves
  std::string url;    // its node API, e.g. http://127.0.0.1:7071
  std::string token;  // bearer token the control plane presents to the node API
  std::vector<std::string> drivers;  // drivers the node can run
  NodeCapacity capacity;
  NodeStatus status = NodeStatus::kReady;
  int64_t last_heartbeat_ms = 0;
  int64_t registered_ms = 0;
  nlohmann::json usage = nlohmann::json::object();  // last reported usage, shown as is
};

// A sandbox as the fleet sees it: the request, where it runs, and its state.
struct Task {
  std::string id;  // "sb-..."; also the sandbox id on its node
  std::string team_id;
  std::string idempotency_key;  // "" = none; unique per team when set
  // The request.
  std::string template_name;
  std::vector<std::string> command;  // empty = an idle sandbox driven by exec
  ResourceRequest resources;
  std::map<std::string, std::string> labels;
  std::vector<std::string> paths;    // repository paths the task touches (router input)
  std::vector<std::string> secrets;  // secret names requested (router input)
  std::vector<std::string> egress;   // egress destinations requested (router input)
  std::string repo;
  std::map<std::string, std::string> env;
  nlohmann::json metadata = nlohmann::json::object();  // free-form string map, stored as is
  std::optional<Tier> requested_tier;
  int64_t timeout_s = 300;
  int priority = 0;  // higher runs first; FIFO within a priority
  // Placement.
  Tier tier = Tier::kShared;  // what the router decided (never below requested_tier)
  std::string pool;
  std::string node_id;  // "" until placed
  // State.
  TaskState state = TaskState::kPending;
  std::string reason;  // why it is in this state (pending: what it waits for)
  std::optional<int> exit_code;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t started_ms = 0;   // 0 = not yet
  int64_t ended_ms = 0;     // 0 = not yet
  int64_t deadline_ms = 0;  // 0 = none; the task is timed out at this time
  int64_t version = 0;      // bumped on every update; UpdateTask compares it
};

// One row of a task's state history.
struct StateChange {
  std::string task_id;
  TaskState state = TaskState::kPending;
  std::string reason;
  std::string node_id;
  int64_t at_ms = 0;
};

// Why a task got its tier: the rule that decided and the value it matched on.
struct RoutingDecision {
  std::string task_id;
  Tier tier = Tier::kShared;
  std::string rule;         // name of the deciding rule ("default" when none matched)
  std::string explanation;  // human-readable, e.g. "paths[0]='services/payments/x.go' matched ..."
  std::string policy_version;                      // hash of the policy text that decided
  nlohmann::json trace = nlohmann::json::array();  // every rule evaluated, in order, with outcome
  int64_t at_ms = 0;
};

// Something that happened in the fleet, for the event log (nodes lost, tasks requeued, ...).
struct Event {
  int64_t seq = 0;  // assigned by the store, increasing
  int64_t at_ms = 0;
  std::string kind;     // "task.created", "node.lost", "policy.reloaded", ...
  std::string subject;  // the id it is about
  std::string team_id;  // "" for fleet-wide events
  nlohmann::json data = nlohmann::json::object();
};

}  // namespace hangar::control
