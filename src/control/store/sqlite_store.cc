// SQLite backend of the Store (see store.h for the contract, docs/adr/0007-store.md for why).
//
// One connection, guarded by one mutex: every call holds it for its whole duration, so a call
// is atomic with respect to the others in this process, and each multi-row write is one
// BEGIN IMMEDIATE transaction, which also serialises against other processes on the same file
// (they wait up to kBusyTimeoutMs for the write lock). Statements are prepared once and cached.
#include <sqlite3.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <mutex>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "hangar/base/log.h"
#include "hangar/control/store.h"
#include "sqlite_migrations.h"

namespace hangar::control {
namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kMaxListLimit = 1000;
// Statements whose text depends on a filter's shape are cached too, up to this many in all;
// beyond it a statement is prepared for one use (odd shapes must not grow memory unbounded).
constexpr size_t kMaxCachedStatements = 256;

// ---- Errors --------------------------------------------------------------------------------

// A failed SQLite call, as the caller can act on it. `what` says what was being done.
Status SqlError(sqlite3* db, int rc, std::string_view what) {
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string text = fmt::format("{}: {} (sqlite {})", what, msg, rc);
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return Status::AlreadyExists(std::move(text));
      }
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return Status::NotFound(std::move(text));
      return Status::Internal(std::move(text));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(std::move(text));
    case SQLITE_FULL:
      return Status::ResourceExhausted(std::move(text));
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return Status::FailedPrecondition(std::move(text));
    default:
      return Status::Internal(std::move(text));
  }
}

// ---- Statements ----------------------------------------------------------------------------

// A prepared statement borrowed for one use: bound in order with Bind*(), stepped, read by
// column. On destruction it is reset for the next user (cached) or finalized (one-off).
class Stmt {
 public:
  Stmt(sqlite3_stmt* stmt, bool owned) : stmt_(stmt), owned_(owned) {}
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Stmt(Stmt&& o) noexcept
      : stmt_(std::exchange(o.stmt_, nullptr)), owned_(o.owned_), next_(o.next_) {}
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Text(std::string_view v) {
    // A null data pointer would bind SQL NULL; an empty string must stay ''.
    sqlite3_bind_text(stmt_, ++next_, v.data() != nullptr ? v.data() : "",
                      static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Int(int64_t v) {
    sqlite3_bind_int64(stmt_, ++next_, v);
    return *this;
  }
  Stmt& Real(double v) {
    sqlite3_bind_double(stmt_, ++next_, v);
    return *this;
  }
  Stmt& Null() {
    sqlite3_bind_null(stmt_, ++next_);
    return *this;
  }

  // SQLITE_ROW or SQLITE_DONE; anything else is an error (message from the connection).
  int Step() { return sqlite3_step(stmt_); }
  // Steps a statement that returns no rows.
  Status Run(std::string_view what) {
    int rc = Step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return Status::Ok();
    return SqlError(sqlite3_db_handle(stmt_), rc, what);
  }
  Status Error(int rc, std::string_view what) const {
    return SqlError(sqlite3_db_handle(stmt_), rc, what);
  }

  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t ColInt(int col) const { return sqlite3_column_int64(stmt_, col); }
  double ColReal(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string ColText(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    if (p == nullptr) return {};
    return std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  sqlite3_stmt* stmt_;
  bool owned_;
  int next_ = 0;
};

// ---- JSON columns --------------------------------------------------------------------------

Result<std::string> DumpJson(const nlohmann::json& j, std::string_view what) {
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in a string
    return Status::InvalidArgument(fmt::format("{}: {}", what, e.what()));
  }
}

Result<std::string> ListJson(const std::vector<std::string>& v, std::string_view what) {
  if (v.empty()) return std::string("[]");
  return DumpJson(nlohmann::json(v), what);
}

Result<std::string> MapJson(const std::map<std::string, std::string>& m, std::string_view what) {
  if (m.empty()) return std::string("{}");
  return DumpJson(nlohmann::json(m), what);
}

Result<nlohmann::json> ParseJson(const std::string& text, std::string_view what) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Status::Internal(fmt::format("{}: stored value is not valid JSON", what));
  }
  return j;
}

Result<std::vector<std::string>> ParseList(const std::string& text, std::string_view what) {
  std::vector<std::string> out;
  if (text == "[]") return out;
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(text, what));
  if (!j.is_array()) {
    return Status::Internal(fmt::format("{}: stored value is not a JSON array", what));
  }
  out.reserve(j.size());
  for (auto& e : j) {
    if (!e.is_string()) {
      return Status::Internal(fmt::format("{}: stored array holds a non-string", what));
    }
    out.push_back(std::move(e.get_ref<std::string&>()));
  }
  return out;
}

Result<std::map<std::string, std::string>> ParseMap(const std::string& text,
                                                    std::string_view what) {
  std::map<std::string, std::string> out;
  if (text == "{}") return out;
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(text, what));
  if (!j.is_object()) {
    return Status::Internal(fmt::format("{}: stored value is not a JSON object", what));
  }
  for (auto& [k, v] : j.items()) {
    if (!v.is_string()) {
      return Status::Internal(fmt::format("{}: stored object holds a non-string", what));
    }
    out.emplace(k, std::move(v.get_ref<std::string&>()));
  }
  return out;
}

// ---- Enums by name -------------------------------------------------------------------------

template <typename E>
Result<E> StoredEnum(Result<E> parsed, std::string_view what) {
  if (!parsed.ok()) {
    return Status::Internal(fmt::format("{}: {}", what, parsed.status().message()));
  }
  return parsed;
}

// ---- Page tokens ---------------------------------------------------------------------------
// Opaque to callers: hex of "<created_ms>:<id>", the last row of the previous page.

std::string EncodePageToken(int64_t created_ms, const std::string& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw = fmt::format("{}:{}", created_ms, id);
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

Status DecodePageToken(std::string_view token, int64_t* created_ms, std::string* id) {
  auto bad = [&] {
    return Status::InvalidArgument(
        fmt::format("invalid page token '{}': pass back the next_page_token of a previous page",
                    token.substr(0, 64)));
  };
  if (token.size() % 2 != 0) return bad();
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string raw;
  raw.reserve(token.size() / 2);
  for (size_t i = 0; i < token.size(); i += 2) {
    int hi = nibble(token[i]);
    int lo = nibble(token[i + 1]);
    if (hi < 0 || lo < 0) return bad();
    raw.push_back(static_cast<char>(hi << 4 | lo));
  }
  size_t colon = raw.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == raw.size()) return bad();
  auto [end, ec] = std::from_chars(raw.data(), raw.data() + colon, *created_ms);
  if (ec != std::errc() || end != raw.data() + colon) return bad();
  *id = raw.substr(colon + 1);
  return Status::Ok();
}

// ---- Rows ----------------------------------------------------------------------------------

constexpr std::string_view kTaskColumns =
    "id, team_id, idempotency_key, template_name, command, cpu_millis, memory_mb, disk_mb, "
    "iops, io_bps, labels, paths, secrets, egress, repo, env, metadata, requested_tier, "
    "timeout_s, priority, tier, pool, node_id, state, reason, exit_code, created_ms, "
    "updated_ms, started_ms, ended_ms, deadline_ms, version";

// Column order matches BindTaskBody: id, team_id, idempotency_key, the body, created_ms, version.
constexpr std::string_view kInsertTask =
    "INSERT INTO tasks (id, team_id, idempotency_key, template_name, command, cpu_millis, "
    "memory_mb, disk_mb, iops, io_bps, labels, paths, secrets, egress, repo, env, metadata, "
    "requested_tier, timeout_s, priority, tier, pool, node_id, state, reason, exit_code, "
    "updated_ms, started_ms, ended_ms, deadline_ms, created_ms, version) VALUES (?, ?, ?, ?, ?, "
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

constexpr std::string_view kNonTerminalStates = "('pending', 'starting', 'running', 'paused')";

Result<Task> ReadTask(const Stmt& s) {
  Task t;
  t.id = s.ColText(0);
  const std::string what = fmt::format("reading task {}", t.id);
  t.team_id = s.ColText(1);
  t.idempotency_key = s.ColText(2);
  t.template_name = s.ColText(3);
  HANGAR_ASSIGN_OR_RETURN(t.command, ParseList(s.ColText(4), what + " command"));
  t.resources.cpu_millis = s.ColInt(5);
  t.resources.memory_mb = s.ColInt(6);
  t.resources.disk_mb = s.ColInt(7);
  t.resources.iops = s.ColInt(8);
  t.resources.io_bps = s.ColInt(9);
  HANGAR_ASSIGN_OR_RETURN(t.labels, ParseMap(s.ColText(10), what + " labels"));
  HANGAR_ASSIGN_OR_RETURN(t.paths, ParseList(s.ColText(11), what + " paths"));
  HANGAR_ASSIGN_OR_RETURN(t.secrets, ParseList(s.ColText(12), what + " secrets"));
  HANGAR_ASSIGN_OR_RETURN(t.egress, ParseList(s.ColText(13), what + " egress"));
  t.repo = s.ColText(14);
  HANGAR_ASSIGN_OR_RETURN(t.env, ParseMap(s.ColText(15), what + " env"));
  std::string metadata = s.ColText(16);
  if (metadata == "{}") {
    t.metadata = nlohmann::json::object();
  } else {
    HANGAR_ASSIGN_OR_RETURN(t.metadata, ParseJson(metadata, what + " metadata"));
  }
  if (!s.IsNull(17)) {
    HANGAR_ASSIGN_OR_RETURN(t.requested_tier, StoredEnum(ParseTier(s.ColText(17)), what));
  }
  t.timeout_s = s.ColInt(18);
  t.priority = static_cast<int>(s.ColInt(19));
  HANGAR_ASSIGN_OR_RETURN(t.tier, StoredEnum(ParseTier(s.ColText(20)), what));
  t.pool = s.ColText(21);
  t.node_id = s.ColText(22);
  HANGAR_ASSIGN_OR_RETURN(t.state, StoredEnum(ParseTaskState(s.ColText(23)), what));
  t.reason = s.ColText(24);
  if (!s.IsNull(25)) t.exit_code = static_cast<int>(s.ColInt(25));
  t.created_ms = s.ColInt(26);
  t.updated_ms = s.ColInt(27);
  t.started_ms = s.ColInt(28);
  t.ended_ms = s.ColInt(29);
  t.deadline_ms = s.ColInt(30);
  t.version = s.ColInt(31);
  return t;
}

// A task's columns already encoded, so that bad input is refused before any write.
struct EncodedTask {
  std::string command, labels, paths, secrets, egress, env, metadata;
};

Result<EncodedTask> EncodeTask(const Task& t, std::string_view what) {
  if (!t.metadata.is_null() && !t.metadata.is_object()) {
    return Status::InvalidArgument(
        fmt::format("{}: metadata must be a JSON object, got {}", what, t.metadata.type_name()));
  }
  EncodedTask e;
  HANGAR_ASSIGN_OR_RETURN(e.command, ListJson(t.command, fmt::format("{}: command", what)));
  HANGAR_ASSIGN_OR_RETURN(e.labels, MapJson(t.labels, fmt::format("{}: labels", what)));
  HANGAR_ASSIGN_OR_RETURN(e.paths, ListJson(t.paths, fmt::format("{}: paths", what)));
  HANGAR_ASSIGN_OR_RETURN(e.secrets, ListJson(t.secrets, fmt::format("{}: secrets", what)));
  HANGAR_ASSIGN_OR_RETURN(e.egress, ListJson(t.egress, fmt::format("{}: egress", what)));
  HANGAR_ASSIGN_OR_RETURN(e.env, MapJson(t.env, fmt::format("{}: env", what)));
  if (t.metadata.is_null() || t.metadata.empty()) {
    e.metadata = "{}";
  } else {
    HANGAR_ASSIGN_OR_RETURN(e.metadata, DumpJson(t.metadata, fmt::format("{}: metadata", what)));
  }
  return e;
}

// Binds every column but id..idempotency_key and created_ms, in the order of kTaskUpdateSet.
void BindTaskBody(Stmt& s, const Task& t, const EncodedTask& e) {
  s.Text(t.template_name)
      .Text(e.command)
      .Int(t.resources.cpu_millis)
      .Int(t.resources.memory_mb)
      .Int(t.resources.disk_mb)
      .Int(t.resources.iops)
      .Int(t.resources.io_bps)
      .Text(e.labels)
      .Text(e.paths)
      .Text(e.secrets)
      .Text(e.egress)
      .Text(t.repo)
      .Text(e.env)
      .Text(e.metadata);
  if (t.requested_tier) {
    s.Text(TierName(*t.requested_tier));
  } else {
    s.Null();
  }
  s.Int(t.timeout_s)
      .Int(t.priority)
      .Text(TierName(t.tier))
      .Text(t.pool)
      .Text(t.node_id)
      .Text(TaskStateName(t.state))
      .Text(t.reason);
  if (t.exit_code) {
    s.Int(*t.exit_code);
  } else {
    s.Null();
  }
  s.Int(t.updated_ms).Int(t.started_ms).Int(t.ended_ms).Int(t.deadline_ms);
}

Result<Team> ReadTeam(const Stmt& s) {
  Team t;
  t.id = s.ColText(0);
  t.name = s.ColText(1);
  t.max_concurrent = s.ColInt(2);
  t.created_ms = s.ColInt(3);
  return t;
}
constexpr std::string_view kTeamColumns = "id, name, max_concurrent, created_ms";

Result<ApiKey> ReadApiKey(const Stmt& s) {
  ApiKey k;
  k.id = s.ColText(0);
  k.team_id = s.ColText(1);
  k.name = s.ColText(2);
  k.hash_hex = s.ColText(3);
  k.created_ms = s.ColInt(4);
  k.revoked = s.ColInt(5) != 0;
  return k;
}

Result<Pool> ReadPool(const Stmt& s) {
  Pool p;
  p.name = s.ColText(0);
  HANGAR_ASSIGN_OR_RETURN(p.tier, StoredEnum(ParseTier(s.ColText(1)), "reading pool " + p.name));
  p.driver = s.ColText(2);
  p.overcommit_cpu = s.ColReal(3);
  p.overcommit_memory = s.ColReal(4);
  p.default_iops = s.ColInt(5);
  p.default_io_bps = s.ColInt(6);
  return p;
}

constexpr std::string_view kNodeColumns =
    "id, pool, url, token, drivers, cpu_millis, memory_mb, disk_mb, iops, status, "
    "last_heartbeat_ms, registered_ms, usage";

Result<Node> ReadNode(const Stmt& s) {
  Node n;
  n.id = s.ColText(0);
  const std::string what = "reading node " + n.id;
  n.pool = s.ColText(1);
  n.url = s.ColText(2);
  n.token = s.ColText(3);
  HANGAR_ASSIGN_OR_RETURN(n.drivers, ParseList(s.ColText(4), what + " drivers"));
  n.capacity.cpu_millis = s.ColInt(5);
  n.capacity.memory_mb = s.ColInt(6);
  n.capacity.disk_mb = s.ColInt(7);
  n.capacity.iops = s.ColInt(8);
  HANGAR_ASSIGN_OR_RETURN(n.status, StoredEnum(ParseNodeStatus(s.ColText(9)), what));
  n.last_heartbeat_ms = s.ColInt(10);
  n.registered_ms = s.ColInt(11);
  HANGAR_ASSIGN_OR_RETURN(n.usage, ParseJson(s.ColText(12), what + " usage"));
  return n;
}

Result<StateChange> ReadStateChange(const Stmt& s) {
  StateChange c;
  c.task_id = s.ColText(0);
  HANGAR_ASSIGN_OR_RETURN(
      c.state, StoredEnum(ParseTaskState(s.ColText(1)), "reading history of task " + c.task_id));
  c.reason = s.ColText(2);
  c.node_id = s.ColText(3);
  c.at_ms = s.ColInt(4);
  return c;
}

Result<Event> ReadEvent(const Stmt& s) {
  Event e;
  e.seq = s.ColInt(0);
  e.at_ms = s.ColInt(1);
  e.kind = s.ColText(2);
  e.subject = s.ColText(3);
  e.team_id = s.ColText(4);
  HANGAR_ASSIGN_OR_RETURN(e.data, ParseJson(s.ColText(5), fmt::format("reading event {}", e.seq)));
  return e;
}

int64_t WallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- The store -----------------------------------------------------------------------------

class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteStore() override {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    // The last connection to close checkpoints the WAL into the database and removes it.
    sqlite3_close_v2(db_);
  }
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Status Configure();
  Status Migrate();

  Status CreateTeam(const Team& team) override;
  Result<std::optional<Team>> GetTeam(const std::string& id) override;
  Result<std::optional<Team>> GetTeamByName(const std::string& name) override;
  Result<std::vector<Team>> ListTeams() override;
  Status CreateApiKey(const ApiKey& key) override;
  Result<std::optional<ApiKey>> FindApiKey(const std::string& hash_hex) override;
  Status RevokeApiKey(const std::string& key_id) override;

  Status UpsertPool(const Pool& pool) override;
  Result<std::vector<Pool>> ListPools() override;
  Status UpsertNode(const Node& node) override;
  Result<std::optional<Node>> GetNode(const std::string& id) override;
  Result<std::vector<Node>> ListNodes() override;

  Result<CreateTaskResult> CreateTask(const Task& task, const RoutingDecision& decision) override;
  Result<std::optional<Task>> GetTask(const std::string& id) override;
  Result<std::optional<Task>> FindTaskByIdempotencyKey(const std::string& team_id,
                                                       const std::string& key) override;
  Result<TaskPage> ListTasks(const TaskFilter& filter) override;
  Result<Task> UpdateTask(const Task& task) override;
  Result<std::vector<Task>> ListPendingTasks() override;
  Result<std::vector<Task>> ListActiveTasks() override;
  Result<int64_t> CountActiveTasks(const std::string& team_id) override;
  Result<std::vector<StateChange>> TaskHistory(const std::string& task_id) override;
  Result<std::optional<RoutingDecision>> GetDecision(const std::string& task_id) override;

  Result<int64_t> AppendEvent(const Event& event) override;
  Result<std::vector<Event>> ListEvents(int64_t after_seq, int limit,
                                        const std::string& team_id) override;

 private:
  // Rolls back on destruction unless committed. Begin takes the write lock at once (IMMEDIATE)
  // so two writers never deadlock upgrading read locks; the loser waits busy_timeout.
  class Txn {
   public:
    explicit Txn(SqliteStore* store) : store_(store) {}
    ~Txn() {
      if (active_) (void)store_->Exec("ROLLBACK", "rollback");
    }
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    Status Begin(std::string_view what) {
      HANGAR_TRY(store_->Exec("BEGIN IMMEDIATE", what));
      active_ = true;
      return Status::Ok();
    }
    Status Commit(std::string_view what) {
      HANGAR_TRY(store_->Exec("COMMIT", what));
      active_ = false;
      return Status::Ok();
    }

   private:
    SqliteStore* store_;
    bool active_ = false;
  };

  // Caller holds mu_.
  Result<Stmt> Prepare(std::string_view sql, std::string_view what);
  Status Exec(std::string_view sql, std::string_view what);
  template <typename T, typename ReadFn>
  Result<std::vector<T>> ReadAll(Stmt& s, ReadFn read, std::string_view what);
  template <typename T, typename ReadFn>
  Result<std::optional<T>> ReadOne(Stmt& s, ReadFn read, std::string_view what);
  Result<std::optional<Task>> GetTaskLocked(const std::string& id);
  Result<int64_t> InsertEvent(const Event& event, std::string_view what);

  std::mutex mu_;
  sqlite3* db_;
  std::string path_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

Result<Stmt> SqliteStore::Prepare(std::string_view sql, std::string_view what) {
  // A lookup by the text itself: hashing a few hundred bytes is noise next to a step.
  std::string key(sql);
  if (auto it = cache_.find(key); it != cache_.end()) return Stmt(it->second, /*owned=*/false);
  sqlite3_stmt* stmt = nullptr;
  bool cache = cache_.size() < kMaxCachedStatements;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              cache ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqlError(db_, rc, what);
  if (!cache) return Stmt(stmt, /*owned=*/true);
  cache_.emplace(std::move(key), stmt);
  return Stmt(stmt, /*owned=*/false);
}

Status SqliteStore::Exec(std::string_view sql, std::string_view what) {
  HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare(sql, what));
  return s.Run(what);
}

template <typename T, typename ReadFn>
Result<std::vector<T>> SqliteStore::ReadAll(Stmt& s, ReadFn read, std::string_view what) {
  std::vector<T> out;
  for (;;) {
    int rc = s.Step();
    if (rc == SQLITE_DONE) return out;
    if (rc != SQLITE_ROW) return s.Error(rc, what);
    HANGAR_ASSIGN_OR_RETURN(T row, read(s));
    out.push_back(std::move(row));
  }
}

template <typename T, typename ReadFn>
Result<std::optional<T>> SqliteStore::ReadOne(Stmt& s, ReadFn read, std::string_view what) {
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<T>();
  if (rc != SQLITE_ROW) return s.Error(rc, what);
  HANGAR_ASSIGN_OR_RETURN(T row, read(s));
  return std::optional<T>(std::move(row));
}

// ---- Open ----------------------------------------------------------------------------------

Status SqliteStore::Configure() {
  const std::string what = "configuring sqlite store " + path_;
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  {
    HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare("PRAGMA journal_mode=WAL", what));
    int rc = s.Step();
    if (rc != SQLITE_ROW) return s.Error(rc, what + ": PRAGMA journal_mode=WAL");
    std::string mode = s.ColText(0);
    bool in_memory = path_ == ":memory:";
    if (mode != "wal" && !(in_memory && mode == "memory")) {
      return Status::FailedPrecondition(
          fmt::format("{}: journal_mode is '{}' after asking for WAL (is the file on a "
                      "filesystem without shared memory, or opened by an old SQLite?)",
                      what, mode));
    }
  }
  // NORMAL in WAL mode: a commit is durable once in the WAL file (in the page cache), which
  // survives any crash of this process; only an OS crash or power loss can drop the last
  // commits. See docs/adr/0007-store.md.
  HANGAR_TRY(Exec("PRAGMA synchronous=NORMAL", what + ": PRAGMA synchronous=NORMAL"));
  HANGAR_TRY(Exec("PRAGMA foreign_keys=ON", what + ": PRAGMA foreign_keys=ON"));
  {
    HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare("PRAGMA foreign_keys", what));
    int rc = s.Step();
    if (rc != SQLITE_ROW || s.ColInt(0) != 1) {
      return Status::FailedPrecondition(what + ": foreign keys cannot be enabled");
    }
  }
  {
    // The backend filters on labels and metadata with JSON functions (built in since 3.38).
    auto s = Prepare("SELECT json_valid('{}')", what);
    if (!s.ok()) {
      return Status::FailedPrecondition(
          fmt::format("{}: this SQLite ({}) lacks the JSON functions: {}", what,
                      sqlite3_libversion(), s.status().message()));
    }
  }
  return Status::Ok();
}

Status SqliteStore::Migrate() {
  auto migrations = sqlite_internal::Migrations();
  const int latest = static_cast<int>(migrations.size());
  for (;;) {
    // Each step re-reads the version under the write lock: another process opening the same
    // file at the same time migrates at most once per version.
    const std::string what = "migrating sqlite store " + path_;
    Txn txn(this);
    HANGAR_TRY(txn.Begin(what));
    HANGAR_TRY(
        Exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
             "applied_at INTEGER NOT NULL)",
             what));
    int current = 0;
    {
      HANGAR_ASSIGN_OR_RETURN(
          Stmt s, Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", what));
      int rc = s.Step();
      if (rc != SQLITE_ROW) return s.Error(rc, what);
      current = static_cast<int>(s.ColInt(0));
    }
    if (current > latest) {
      return Status::FailedPrecondition(fmt::format(
          "sqlite store {} has schema version {}, newer than this build's {}: run a hangard at "
          "least as new as the one that wrote it",
          path_, current, latest));
    }
    if (current == latest) return txn.Commit(what);
    const auto& m = migrations[static_cast<size_t>(current)];
    const std::string step = fmt::format("{}: migration {} ({})", what, m.version, m.name);
    // sqlite3_exec runs the several statements of a migration; it needs a NUL-terminated copy.
    std::string sql(m.sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return Status::Internal(fmt::format("{}: {}", step, msg));
    }
    HANGAR_ASSIGN_OR_RETURN(
        Stmt ins,
        Prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", step));
    HANGAR_TRY(ins.Int(m.version).Int(WallNowMs()).Run(step));
    HANGAR_TRY(txn.Commit(step));
    log::Info("store migrated", {{"path", path_}, {"version", m.version}, {"name", m.name}});
  }
}

// ---- Teams and API keys --------------------------------------------------------------------

Status SqliteStore::CreateTeam(const Team& team) {
  const std::string what = fmt::format("create team {} ({})", team.id, team.name);
  if (team.id.empty() || team.name.empty()) {
    return Status::InvalidArgument(what + ": id and name must not be empty");
  }
  if (team.max_concurrent < 0) {
    return Status::InvalidArgument(
        fmt::format("{}: max_concurrent {} is negative", what, team.max_concurrent));
  }
  std::lock_guard lock(mu_);
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s,
      Prepare("INSERT INTO teams (id, name, max_concurrent, created_ms) VALUES (?, ?, ?, ?)",
              what));
  return s.Text(team.id).Text(team.name).Int(team.max_concurrent).Int(team.created_ms).Run(what);
}

Result<std::optional<Team>> SqliteStore::GetTeam(const std::string& id) {
  std::lock_guard lock(mu_);
  const std::string what = "get team " + id;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM teams WHERE id = ?", kTeamColumns), what));
  s.Text(id);
  return ReadOne<Team>(s, ReadTeam, what);
}

Result<std::optional<Team>> SqliteStore::GetTeamByName(const std::string& name) {
  std::lock_guard lock(mu_);
  const std::string what = "get team named " + name;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM teams WHERE name = ?", kTeamColumns), what));
  s.Text(name);
  return ReadOne<Team>(s, ReadTeam, what);
}

Result<std::vector<Team>> SqliteStore::ListTeams() {
  std::lock_guard lock(mu_);
  const std::string what = "list teams";
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM teams ORDER BY name", kTeamColumns), what));
  return ReadAll<Team>(s, ReadTeam, what);
}

Status SqliteStore::CreateApiKey(const ApiKey& key) {
  const std::string what = fmt::format("create api key {} for team {}", key.id, key.team_id);
  if (key.id.empty() || key.team_id.empty()) {
    return Status::InvalidArgument(what + ": id and team_id must not be empty");
  }
  if (key.hash_hex.size() != 64 ||
      !std::all_of(key.hash_hex.begin(), key.hash_hex.end(),
                   [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); })) {
    return Status::InvalidArgument(
        what + ": hash_hex must be the lower-case hex SHA-256 of the key (64 characters)");
  }
  std::lock_guard lock(mu_);
  Txn txn(this);
  HANGAR_TRY(txn.Begin(what));
  {
    HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT 1 FROM teams WHERE id = ?", what));
    int rc = s.Text(key.team_id).Step();
    if (rc == SQLITE_DONE) return Status::NotFound(what + ": no such team");
    if (rc != SQLITE_ROW) return s.Error(rc, what);
  }
  {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s, Prepare("INSERT INTO api_keys (id, team_id, name, hash_hex, created_ms, revoked) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        what));
    HANGAR_TRY(s.Text(key.id)
                   .Text(key.team_id)
                   .Text(key.name)
                   .Text(key.hash_hex)
                   .Int(key.created_ms)
                   .Int(key.revoked ? 1 : 0)
                   .Run(what));
  }
  return txn.Commit(what);
}

Result<std::optional<ApiKey>> SqliteStore::FindApiKey(const std::string& hash_hex) {
  std::lock_guard lock(mu_);
  const std::string what = "find api key";  // never the hash in a message
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare("SELECT id, team_id, name, hash_hex, created_ms, revoked FROM api_keys "
                      "WHERE hash_hex = ?",
                      what));
  s.Text(hash_hex);
  return ReadOne<ApiKey>(s, ReadApiKey, what);
}

Status SqliteStore::RevokeApiKey(const std::string& key_id) {
  std::lock_guard lock(mu_);
  const std::string what = "revoke api key " + key_id;
  HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare("UPDATE api_keys SET revoked = 1 WHERE id = ?", what));
  HANGAR_TRY(s.Text(key_id).Run(what));
  if (sqlite3_changes(db_) == 0) return Status::NotFound(what + ": no such key");
  return Status::Ok();
}

// ---- Pools and nodes -----------------------------------------------------------------------

Status SqliteStore::UpsertPool(const Pool& pool) {
  const std::string what = "upsert pool " + pool.name;
  if (pool.name.empty()) return Status::InvalidArgument(what + ": name must not be empty");
  auto bad_overcommit = [](double v) { return !(v >= 1.0 && v <= 4.0); };  // NaN is bad too
  if (bad_overcommit(pool.overcommit_cpu) || bad_overcommit(pool.overcommit_memory)) {
    return Status::InvalidArgument(
        fmt::format("{}: overcommit_cpu {} / overcommit_memory {} must be within 1.0..4.0", what,
                    pool.overcommit_cpu, pool.overcommit_memory));
  }
  if (pool.default_iops < 0 || pool.default_io_bps < 0) {
    return Status::InvalidArgument(what + ": default_iops and default_io_bps must be ≥ 0");
  }
  std::lock_guard lock(mu_);
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare("INSERT INTO pools (name, tier, driver, overcommit_cpu, overcommit_memory, "
                      "default_iops, default_io_bps) VALUES (?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET tier = excluded.tier, "
                      "driver = excluded.driver, overcommit_cpu = excluded.overcommit_cpu, "
                      "overcommit_memory = excluded.overcommit_memory, "
                      "default_iops = excluded.default_iops, "
                      "default_io_bps = excluded.default_io_bps",
                      what));
  return s.Text(pool.name)
      .Text(TierName(pool.tier))
      .Text(pool.driver)
      .Real(pool.overcommit_cpu)
      .Real(pool.overcommit_memory)
      .Int(pool.default_iops)
      .Int(pool.default_io_bps)
      .Run(what);
}

Result<std::vector<Pool>> SqliteStore::ListPools() {
  std::lock_guard lock(mu_);
  const std::string what = "list pools";
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare("SELECT name, tier, driver, overcommit_cpu, overcommit_memory, default_iops, "
                      "default_io_bps FROM pools ORDER BY name",
                      what));
  return ReadAll<Pool>(s, ReadPool, what);
}

Status SqliteStore::UpsertNode(const Node& node) {
  const std::string what = "upsert node " + node.id;
  if (node.id.empty()) return Status::InvalidArgument(what + ": id must not be empty");
  HANGAR_ASSIGN_OR_RETURN(std::string drivers, ListJson(node.drivers, what + ": drivers"));
  HANGAR_ASSIGN_OR_RETURN(std::string usage, DumpJson(node.usage, what + ": usage"));
  std::lock_guard lock(mu_);
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s,
      Prepare(
          fmt::format("INSERT INTO nodes ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (id) DO UPDATE SET pool = excluded.pool, url = excluded.url, "
                      "token = excluded.token, drivers = excluded.drivers, "
                      "cpu_millis = excluded.cpu_millis, memory_mb = excluded.memory_mb, "
                      "disk_mb = excluded.disk_mb, iops = excluded.iops, status = excluded.status, "
                      "last_heartbeat_ms = excluded.last_heartbeat_ms, "
                      "registered_ms = excluded.registered_ms, usage = excluded.usage",
                      kNodeColumns),
          what));
  return s.Text(node.id)
      .Text(node.pool)
      .Text(node.url)
      .Text(node.token)
      .Text(drivers)
      .Int(node.capacity.cpu_millis)
      .Int(node.capacity.memory_mb)
      .Int(node.capacity.disk_mb)
      .Int(node.capacity.iops)
      .Text(NodeStatusName(node.status))
      .Int(node.last_heartbeat_ms)
      .Int(node.registered_ms)
      .Text(usage)
      .Run(what);
}

Result<std::optional<Node>> SqliteStore::GetNode(const std::string& id) {
  std::lock_guard lock(mu_);
  const std::string what = "get node " + id;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM nodes WHERE id = ?", kNodeColumns), what));
  s.Text(id);
  return ReadOne<Node>(s, ReadNode, what);
}

Result<std::vector<Node>> SqliteStore::ListNodes() {
  std::lock_guard lock(mu_);
  const std::string what = "list nodes";
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM nodes ORDER BY id", kNodeColumns), what));
  return ReadAll<Node>(s, ReadNode, what);
}

// ---- Tasks ---------------------------------------------------------------------------------

Result<std::optional<Task>> SqliteStore::GetTaskLocked(const std::string& id) {
  const std::string what = "get task " + id;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM tasks WHERE id = ?", kTaskColumns), what));
  s.Text(id);
  return ReadOne<Task>(s, ReadTask, what);
}

Result<int64_t> SqliteStore::InsertEvent(const Event& event, std::string_view what) {
  std::string data = "{}";
  if (!event.data.is_null() && !(event.data.is_object() && event.data.empty())) {
    HANGAR_ASSIGN_OR_RETURN(data, DumpJson(event.data, fmt::format("{}: data", what)));
  }
  HANGAR_ASSIGN_OR_RETURN(Stmt s,
                          Prepare("INSERT INTO events (at_ms, kind, subject, team_id, data) "
                                  "VALUES (?, ?, ?, ?, ?)",
                                  what));
  HANGAR_TRY(s.Int(event.at_ms)
                 .Text(event.kind)
                 .Text(event.subject)
                 .Text(event.team_id)
                 .Text(data)
                 .Run(what));
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
}

Result<CreateTaskResult> SqliteStore::CreateTask(const Task& task,
                                                 const RoutingDecision& decision) {
  const std::string what = "create task " + task.id;
  if (task.id.empty() || task.team_id.empty()) {
    return Status::InvalidArgument(what + ": id and team_id must not be empty");
  }
  if (!decision.task_id.empty() && decision.task_id != task.id) {
    return Status::InvalidArgument(
        fmt::format("{}: routing decision is for task {}", what, decision.task_id));
  }
  HANGAR_ASSIGN_OR_RETURN(EncodedTask enc, EncodeTask(task, what));
  HANGAR_ASSIGN_OR_RETURN(std::string trace, DumpJson(decision.trace, what + ": decision trace"));
  Event created;
  created.at_ms = task.created_ms;
  created.kind = "task.created";
  created.subject = task.id;
  created.team_id = task.team_id;
  created.data = {{"tier", TierName(task.tier)},
                  {"pool", task.pool},
                  {"rule", decision.rule},
                  {"priority", task.priority}};
  HANGAR_ASSIGN_OR_RETURN(std::string created_data, DumpJson(created.data, what + ": event"));

  std::lock_guard lock(mu_);
  Txn txn(this);
  HANGAR_TRY(txn.Begin(what));
  if (!task.idempotency_key.empty()) {
    // Under the write lock: no other create with this key can slip in between.
    HANGAR_ASSIGN_OR_RETURN(Stmt s,
                            Prepare(fmt::format("SELECT {} FROM tasks WHERE team_id = ? AND "
                                                "idempotency_key = ?",
                                                kTaskColumns),
                                    what));
    s.Text(task.team_id).Text(task.idempotency_key);
    HANGAR_ASSIGN_OR_RETURN(std::optional<Task> existing, ReadOne<Task>(s, ReadTask, what));
    if (existing) return CreateTaskResult{std::move(*existing), /*created=*/false};
  }
  {
    HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare(kInsertTask, what));
    s.Text(task.id).Text(task.team_id).Text(task.idempotency_key);
    BindTaskBody(s, task, enc);
    s.Int(task.created_ms).Int(task.version);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return Status::AlreadyExists(what + ": a task with this id exists");
    }
    if (rc != SQLITE_DONE) return s.Error(rc, what);
  }
  {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s, Prepare("INSERT INTO routing_decisions (task_id, tier, rule, explanation, "
                        "policy_version, trace, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        what));
    HANGAR_TRY(s.Text(task.id)
                   .Text(TierName(decision.tier))
                   .Text(decision.rule)
                   .Text(decision.explanation)
                   .Text(decision.policy_version)
                   .Text(trace)
                   .Int(decision.at_ms)
                   .Run(what + ": routing decision"));
  }
  {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s, Prepare("INSERT INTO task_state_history (task_id, state, reason, node_id, at_ms) "
                        "VALUES (?, ?, ?, ?, ?)",
                        what));
    HANGAR_TRY(s.Text(task.id)
                   .Text(TaskStateName(task.state))
                   .Text(task.reason)
                   .Text(task.node_id)
                   .Int(task.created_ms)
                   .Run(what + ": state history"));
  }
  HANGAR_TRY(InsertEvent(created, what + ": event").status());
  HANGAR_TRY(txn.Commit(what));
  CreateTaskResult out{task, /*created=*/true};
  if (out.task.metadata.is_null()) out.task.metadata = nlohmann::json::object();
  return out;
}

Result<std::optional<Task>> SqliteStore::GetTask(const std::string& id) {
  std::lock_guard lock(mu_);
  return GetTaskLocked(id);
}

Result<std::optional<Task>> SqliteStore::FindTaskByIdempotencyKey(const std::string& team_id,
                                                                  const std::string& key) {
  const std::string what = "find task by idempotency key";
  if (key.empty()) return std::optional<Task>();
  std::lock_guard lock(mu_);
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT {} FROM tasks WHERE team_id = ? AND idempotency_key = ?",
                                  kTaskColumns),
                      what));
  s.Text(team_id).Text(key);
  return ReadOne<Task>(s, ReadTask, what);
}

Result<TaskPage> SqliteStore::ListTasks(const TaskFilter& filter) {
  const std::string what = "list tasks";
  if (filter.limit < 1 || filter.limit > kMaxListLimit) {
    return Status::InvalidArgument(
        fmt::format("{}: limit {} is outside 1..{}", what, filter.limit, kMaxListLimit));
  }
  int64_t after_created = 0;
  std::string after_id;
  if (!filter.page_token.empty()) {
    HANGAR_TRY(DecodePageToken(filter.page_token, &after_created, &after_id));
  }
  // The text depends only on the filter's shape, so equal shapes share one cached statement.
  std::string sql = fmt::format("SELECT {} FROM tasks WHERE 1 = 1", kTaskColumns);
  if (!filter.team_id.empty()) sql += " AND team_id = ?";
  if (!filter.states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < filter.states.size(); ++i) sql += i == 0 ? "?" : ", ?";
    sql += ")";
  }
  if (!filter.node_id.empty()) sql += " AND node_id = ?";
  for (size_t i = 0; i < filter.labels.size(); ++i) {
    sql +=
        " AND EXISTS (SELECT 1 FROM json_each(tasks.labels) WHERE key = ? AND type = 'text' "
        "AND value = ?)";
  }
  for (size_t i = 0; i < filter.metadata.size(); ++i) {
    sql +=
        " AND EXISTS (SELECT 1 FROM json_each(tasks.metadata) WHERE key = ? AND type = 'text' "
        "AND value = ?)";
  }
  if (!filter.page_token.empty()) sql += " AND (created_ms < ? OR (created_ms = ? AND id < ?))";
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?";

  std::lock_guard lock(mu_);
  HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare(sql, what));
  if (!filter.team_id.empty()) s.Text(filter.team_id);
  for (TaskState state : filter.states) s.Text(TaskStateName(state));
  if (!filter.node_id.empty()) s.Text(filter.node_id);
  for (const auto& [k, v] : filter.labels) s.Text(k).Text(v);
  for (const auto& [k, v] : filter.metadata) s.Text(k).Text(v);
  if (!filter.page_token.empty()) s.Int(after_created).Int(after_created).Text(after_id);
  s.Int(filter.limit + 1);  // one more than asked tells whether there is a next page
  HANGAR_ASSIGN_OR_RETURN(std::vector<Task> tasks, ReadAll<Task>(s, ReadTask, what));
  TaskPage page;
  if (tasks.size() > static_cast<size_t>(filter.limit)) {
    tasks.resize(static_cast<size_t>(filter.limit));
    page.next_page_token = EncodePageToken(tasks.back().created_ms, tasks.back().id);
  }
  page.tasks = std::move(tasks);
  return page;
}

Result<Task> SqliteStore::UpdateTask(const Task& task) {
  const std::string what = "update task " + task.id;
  HANGAR_ASSIGN_OR_RETURN(EncodedTask enc, EncodeTask(task, what));
  std::lock_guard lock(mu_);
  Txn txn(this);
  HANGAR_TRY(txn.Begin(what));
  TaskState old_state;
  {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s, Prepare("SELECT team_id, idempotency_key, created_ms, state, version FROM tasks "
                        "WHERE id = ?",
                        what));
    int rc = s.Text(task.id).Step();
    if (rc == SQLITE_DONE) return Status::NotFound(what + ": no such task");
    if (rc != SQLITE_ROW) return s.Error(rc, what);
    int64_t stored_version = s.ColInt(4);
    if (stored_version != task.version) {
      return Status::Aborted(fmt::format(
          "{}: version {} is stale, the stored task is at version {} (re-read and retry)", what,
          task.version, stored_version));
    }
    if (s.ColText(0) != task.team_id || s.ColText(1) != task.idempotency_key ||
        s.ColInt(2) != task.created_ms) {
      return Status::InvalidArgument(
          what + ": team_id, idempotency_key and created_ms cannot change after creation");
    }
    HANGAR_ASSIGN_OR_RETURN(old_state, StoredEnum(ParseTaskState(s.ColText(3)), what));
  }
  {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s,
        Prepare("UPDATE tasks SET template_name = ?, command = ?, cpu_millis = ?, memory_mb = ?, "
                "disk_mb = ?, iops = ?, io_bps = ?, labels = ?, paths = ?, secrets = ?, "
                "egress = ?, repo = ?, env = ?, metadata = ?, requested_tier = ?, timeout_s = ?, "
                "priority = ?, tier = ?, pool = ?, node_id = ?, state = ?, reason = ?, "
                "exit_code = ?, updated_ms = ?, started_ms = ?, ended_ms = ?, deadline_ms = ?, "
                "version = ? WHERE id = ? AND version = ?",
                what));
    BindTaskBody(s, task, enc);
    s.Int(task.version + 1).Text(task.id).Int(task.version);
    HANGAR_TRY(s.Run(what));
    if (sqlite3_changes(db_) != 1) {
      return Status::Internal(what + ": compare-and-swap updated no row under the write lock");
    }
  }
  if (old_state != task.state) {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s, Prepare("INSERT INTO task_state_history (task_id, state, reason, node_id, at_ms) "
                        "VALUES (?, ?, ?, ?, ?)",
                        what));
    HANGAR_TRY(s.Text(task.id)
                   .Text(TaskStateName(task.state))
                   .Text(task.reason)
                   .Text(task.node_id)
                   .Int(task.updated_ms)
                   .Run(what + ": state history"));
  }
  HANGAR_TRY(txn.Commit(what));
  Task out = task;
  out.version = task.version + 1;
  if (out.metadata.is_null()) out.metadata = nlohmann::json::object();
  return out;
}

Result<std::vector<Task>> SqliteStore::ListPendingTasks() {
  std::lock_guard lock(mu_);
  const std::string what = "list pending tasks";
  HANGAR_ASSIGN_OR_RETURN(Stmt s,
                          Prepare(fmt::format("SELECT {} FROM tasks WHERE state = 'pending' "
                                              "ORDER BY priority DESC, created_ms ASC, id ASC",
                                              kTaskColumns),
                                  what));
  return ReadAll<Task>(s, ReadTask, what);
}

Result<std::vector<Task>> SqliteStore::ListActiveTasks() {
  std::lock_guard lock(mu_);
  const std::string what = "list active tasks";
  HANGAR_ASSIGN_OR_RETURN(Stmt s, Prepare(fmt::format("SELECT {} FROM tasks WHERE state IN {} "
                                                      "ORDER BY created_ms ASC, id ASC",
                                                      kTaskColumns, kNonTerminalStates),
                                          what));
  return ReadAll<Task>(s, ReadTask, what);
}

Result<int64_t> SqliteStore::CountActiveTasks(const std::string& team_id) {
  std::lock_guard lock(mu_);
  const std::string what = "count active tasks of team " + team_id;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare(fmt::format("SELECT COUNT(*) FROM tasks WHERE team_id = ? AND state IN {}",
                                  kNonTerminalStates),
                      what));
  int rc = s.Text(team_id).Step();
  if (rc != SQLITE_ROW) return s.Error(rc, what);
  return s.ColInt(0);
}

Result<std::vector<StateChange>> SqliteStore::TaskHistory(const std::string& task_id) {
  std::lock_guard lock(mu_);
  const std::string what = "history of task " + task_id;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare("SELECT task_id, state, reason, node_id, at_ms FROM task_state_history "
                      "WHERE task_id = ? ORDER BY seq",
                      what));
  s.Text(task_id);
  return ReadAll<StateChange>(s, ReadStateChange, what);
}

Result<std::optional<RoutingDecision>> SqliteStore::GetDecision(const std::string& task_id) {
  std::lock_guard lock(mu_);
  const std::string what = "routing decision of task " + task_id;
  HANGAR_ASSIGN_OR_RETURN(
      Stmt s, Prepare("SELECT task_id, tier, rule, explanation, policy_version, trace, at_ms "
                      "FROM routing_decisions WHERE task_id = ?",
                      what));
  s.Text(task_id);
  auto read = [&what](const Stmt& row) -> Result<RoutingDecision> {
    RoutingDecision d;
    d.task_id = row.ColText(0);
    HANGAR_ASSIGN_OR_RETURN(d.tier, StoredEnum(ParseTier(row.ColText(1)), what));
    d.rule = row.ColText(2);
    d.explanation = row.ColText(3);
    d.policy_version = row.ColText(4);
    HANGAR_ASSIGN_OR_RETURN(d.trace, ParseJson(row.ColText(5), what + " trace"));
    d.at_ms = row.ColInt(6);
    return d;
  };
  return ReadOne<RoutingDecision>(s, read, what);
}

// ---- Events --------------------------------------------------------------------------------

Result<int64_t> SqliteStore::AppendEvent(const Event& event) {
  const std::string what = fmt::format("append event {} {}", event.kind, event.subject);
  if (event.kind.empty()) return Status::InvalidArgument(what + ": kind must not be empty");
  std::lock_guard lock(mu_);
  return InsertEvent(event, what);
}

Result<std::vector<Event>> SqliteStore::ListEvents(int64_t after_seq, int limit,
                                                   const std::string& team_id) {
  const std::string what = "list events";
  if (limit < 1 || limit > kMaxListLimit) {
    return Status::InvalidArgument(
        fmt::format("{}: limit {} is outside 1..{}", what, limit, kMaxListLimit));
  }
  std::lock_guard lock(mu_);
  constexpr std::string_view kColumns = "seq, at_ms, kind, subject, team_id, data";
  if (team_id.empty()) {
    HANGAR_ASSIGN_OR_RETURN(
        Stmt s,
        Prepare(fmt::format("SELECT {} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", kColumns),
                what));
    s.Int(after_seq).Int(limit);
    return ReadAll<Event>(s, ReadEvent, what);
  }
  HANGAR_ASSIGN_OR_RETURN(Stmt s,
                          Prepare(fmt::format("SELECT {} FROM events WHERE team_id = ? AND seq > ? "
                                              "ORDER BY seq LIMIT ?",
                                              kColumns),
                                  what));
  s.Text(team_id).Int(after_seq).Int(limit);
  return ReadAll<Event>(s, ReadEvent, what);
}

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("open sqlite store: path is empty");
  sqlite3* db = nullptr;
  // NOMUTEX: the store's own mutex serialises every use of the connection.
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status st = SqlError(db, rc, "open sqlite store " + path);
    sqlite3_close_v2(db);
    return st;
  }
  auto store = std::make_unique<SqliteStore>(db, path);
  HANGAR_TRY(store->Configure());
  HANGAR_TRY(store->Migrate());
  return std::unique_ptr<Store>(std::move(store));
}

int SqliteSchemaVersion() { return static_cast<int>(sqlite_internal::Migrations().size()); }

}  // namespace hangar::control
