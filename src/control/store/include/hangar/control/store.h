// Store: the control plane's durable state. One interface, two backends: SQLite (embedded
// default, this module) and PostgreSQL (fleet mode, later). Callers assume nothing
// SQLite-specific: every multi-row change is one call here and is atomic; concurrent writers
// are serialised by the backend; optimistic concurrency on tasks via Task::version.
//
// Errors: NotFound for a missing id where one is required, AlreadyExists for a duplicate key,
// Aborted when an UpdateTask version check fails, Internal/Unavailable for backend failures.
// Thread safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hangar/base/status.h"
#include "hangar/control/model.h"

namespace hangar::control {

struct TaskFilter {
  std::string team_id;                          // "" = every team (fleet-internal callers only)
  std::vector<TaskState> states;                // empty = any
  std::map<std::string, std::string> labels;    // all must match exactly
  std::map<std::string, std::string> metadata;  // all must match exactly (string values)
  std::string node_id;                          // "" = any
  int limit = 100;                              // 1..1000
  std::string page_token;  // "" = from the start; else what the previous page returned
};

struct TaskPage {
  std::vector<Task> tasks;      // newest first (created_ms desc, id desc)
  std::string next_page_token;  // "" = no more
};

struct CreateTaskResult {
  Task task;
  bool created = true;  // false: an existing task with the same (team, idempotency key)
};

class Store {
 public:
  virtual ~Store() = default;

  // Teams and API keys.
  virtual Status CreateTeam(const Team& team) = 0;  // AlreadyExists on id or name
  virtual Result<std::optional<Team>> GetTeam(const std::string& id) = 0;
  virtual Result<std::optional<Team>> GetTeamByName(const std::string& name) = 0;
  virtual Result<std::vector<Team>> ListTeams() = 0;
  virtual Status CreateApiKey(const ApiKey& key) = 0;  // NotFound if the team does not exist
  virtual Result<std::optional<ApiKey>> FindApiKey(const std::string& hash_hex) = 0;
  virtual Status RevokeApiKey(const std::string& key_id) = 0;

  // Pools and nodes.
  virtual Status UpsertPool(const Pool& pool) = 0;
  virtual Result<std::vector<Pool>> ListPools() = 0;
  virtual Status UpsertNode(const Node& node) = 0;
  virtual Result<std::optional<Node>> GetNode(const std::string& id) = 0;
  virtual Result<std::vector<Node>> ListNodes() = 0;

  // Tasks. CreateTask stores the task, its routing decision, its first state-history row and a
  // "task.created" event in one transaction. With a non-empty idempotency key that the team
  // already used, nothing is written and the existing task is returned (created = false).
  virtual Result<CreateTaskResult> CreateTask(const Task& task,
                                              const RoutingDecision& decision) = 0;
  virtual Result<std::optional<Task>> GetTask(const std::string& id) = 0;
  // The task a team created with this idempotency key, if any.
  virtual Result<std::optional<Task>> FindTaskByIdempotencyKey(const std::string& team_id,
                                                               const std::string& key) = 0;
  virtual Result<TaskPage> ListTasks(const TaskFilter& filter) = 0;
  // Writes `task` if the stored version equals task.version (else Aborted), storing
  // version + 1 and returning the stored task. A state change appends a history row.
  virtual Result<Task> UpdateTask(const Task& task) = 0;
  // Pending tasks (the durable queue) in scheduling order: priority desc, then created_ms asc,
  // then id asc.
  virtual Result<std::vector<Task>> ListPendingTasks() = 0;
  // Every non-terminal task (pending included), for reconciliation and accounting.
  virtual Result<std::vector<Task>> ListActiveTasks() = 0;
  virtual Result<int64_t> CountActiveTasks(const std::string& team_id) = 0;
  virtual Result<std::vector<StateChange>> TaskHistory(const std::string& task_id) = 0;
  virtual Result<std::optional<RoutingDecision>> GetDecision(const std::string& task_id) = 0;

  // Event log.
  virtual Result<int64_t> AppendEvent(const Event& event) = 0;  // returns its seq
  virtual Result<std::vector<Event>> ListEvents(int64_t after_seq, int limit,
                                                const std::string& team_id = "") = 0;
};

// SQLite backend: WAL mode, versioned migrations applied at open (each in a transaction; the
// schema version is recorded in the database). `path` ":memory:" gives a private in-memory db.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// The schema version this build migrates databases to.
int SqliteSchemaVersion();

}  // namespace hangar::control
