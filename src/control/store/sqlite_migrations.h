// The SQLite backend's schema history (internal to the store module).
//
// Contract: Migrations() lists every schema migration in order; element i has version i + 1.
// A migration is never edited once released: a change to the schema is a new, appended
// migration. Each one's `sql` is run in one transaction together with its schema_migrations
// row, so a database is always at a whole version.
// Thread safety: immutable data.
#pragma once

#include <span>
#include <string_view>

namespace hangar::control::sqlite_internal {

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;  // one or more statements
};

std::span<const Migration> Migrations();

}  // namespace hangar::control::sqlite_internal
