#include "sqlite_migrations.h"

#include <array>

namespace hangar::control::sqlite_internal {
namespace {

// Version 1: the initial schema. Conventions (kept by every later migration, and mirrored by
// the PostgreSQL backend, see docs/adr/0007-store.md):
//  - times are INTEGER milliseconds since the Unix epoch;
//  - enums are stored by name (TEXT), never by ordinal, so reordering an enum in C++ cannot
//    change the meaning of stored rows;
//  - lists and maps are JSON text (JSONB in PostgreSQL); no CHECK on enum values, so adding a
//    state needs no table rebuild (SQLite cannot ALTER a CHECK).
constexpr std::string_view kInitialSchema = R"sql(
CREATE TABLE teams (
  id             TEXT PRIMARY KEY,
  name           TEXT NOT NULL UNIQUE,
  max_concurrent INTEGER NOT NULL,
  created_ms     INTEGER NOT NULL
);

CREATE TABLE api_keys (
  id         TEXT PRIMARY KEY,
  team_id    TEXT NOT NULL REFERENCES teams(id),
  name       TEXT NOT NULL,
  hash_hex   TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL,
  revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_team ON api_keys(team_id);

CREATE TABLE pools (
  name              TEXT PRIMARY KEY,
  tier              TEXT NOT NULL,
  driver            TEXT NOT NULL,
  overcommit_cpu    REAL NOT NULL,
  overcommit_memory REAL NOT NULL,
  default_iops      INTEGER NOT NULL,
  default_io_bps    INTEGER NOT NULL
);

CREATE TABLE nodes (
  id                TEXT PRIMARY KEY,
  pool              TEXT NOT NULL,
  url               TEXT NOT NULL,
  token             TEXT NOT NULL,
  drivers           TEXT NOT NULL,  -- JSON array of strings
  cpu_millis        INTEGER NOT NULL,
  memory_mb         INTEGER NOT NULL,
  disk_mb           INTEGER NOT NULL,
  iops              INTEGER NOT NULL,
  status            TEXT NOT NULL,
  last_heartbeat_ms INTEGER NOT NULL,
  registered_ms     INTEGER NOT NULL,
  usage             TEXT NOT NULL   -- JSON, as the node reported it
);

CREATE TABLE tasks (
  id              TEXT PRIMARY KEY,
  team_id         TEXT NOT NULL,
  idempotency_key TEXT NOT NULL DEFAULT '',
  template_name   TEXT NOT NULL,
  command         TEXT NOT NULL,  -- JSON array of strings
  cpu_millis      INTEGER NOT NULL,
  memory_mb       INTEGER NOT NULL,
  disk_mb         INTEGER NOT NULL,
  iops            INTEGER NOT NULL,
  io_bps          INTEGER NOT NULL,
  labels          TEXT NOT NULL,  -- JSON object of strings
  paths           TEXT NOT NULL,  -- JSON array of strings
  secrets         TEXT NOT NULL,  -- JSON array of strings
  egress          TEXT NOT NULL,  -- JSON array of strings
  repo            TEXT NOT NULL,
  env             TEXT NOT NULL,  -- JSON object of strings
  metadata        TEXT NOT NULL,  -- JSON object
  requested_tier  TEXT,           -- NULL = none requested
  timeout_s       INTEGER NOT NULL,
  priority        INTEGER NOT NULL,
  tier            TEXT NOT NULL,
  pool            TEXT NOT NULL,
  node_id         TEXT NOT NULL,
  state           TEXT NOT NULL,
  reason          TEXT NOT NULL,
  exit_code       INTEGER,        -- NULL = none yet
  created_ms      INTEGER NOT NULL,
  updated_ms      INTEGER NOT NULL,
  started_ms      INTEGER NOT NULL,
  ended_ms        INTEGER NOT NULL,
  deadline_ms     INTEGER NOT NULL,
  version         INTEGER NOT NULL
);
-- Listing a team's tasks newest first, keyset-paginated on (created_ms, id).
CREATE INDEX tasks_team_created ON tasks(team_id, created_ms, id);
-- The same across every team (fleet-internal callers).
CREATE INDEX tasks_created ON tasks(created_ms, id);
-- The durable queue: pending tasks in scheduling order; also serves every filter on state.
CREATE INDEX tasks_state ON tasks(state, priority DESC, created_ms, id);
-- Admission control: a team's non-terminal tasks.
CREATE INDEX tasks_team_state ON tasks(team_id, state);
CREATE INDEX tasks_node ON tasks(node_id) WHERE node_id != '';
CREATE UNIQUE INDEX tasks_idempotency ON tasks(team_id, idempotency_key)
  WHERE idempotency_key != '';

CREATE TABLE task_state_history (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  state   TEXT NOT NULL,
  reason  TEXT NOT NULL,
  node_id TEXT NOT NULL,
  at_ms   INTEGER NOT NULL
);
CREATE INDEX task_state_history_task ON task_state_history(task_id, seq);

CREATE TABLE routing_decisions (
  task_id        TEXT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
  tier           TEXT NOT NULL,
  rule           TEXT NOT NULL,
  explanation    TEXT NOT NULL,
  policy_version TEXT NOT NULL,
  trace          TEXT NOT NULL,  -- JSON, every rule evaluated in order
  at_ms          INTEGER NOT NULL
);

CREATE TABLE events (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms   INTEGER NOT NULL,
  kind    TEXT NOT NULL,
  subject TEXT NOT NULL,
  team_id TEXT NOT NULL,  -- '' = fleet-wide
  data    TEXT NOT NULL   -- JSON
);
CREATE INDEX events_team ON events(team_id, seq);
)sql";

constexpr std::array<Migration, 1> kMigrations{{
    {1, "initial schema", kInitialSchema},
}};

}  // namespace

std::span<const Migration> Migrations() { return kMigrations; }

}  // namespace hangar::control::sqlite_internal
