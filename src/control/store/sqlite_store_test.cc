// The SQLite backend: the conformance suite on real database files, plus what only SQLite has
// (WAL, migrations, several connections to one file, surviving a SIGKILL of a writer).
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/control/store.h"
#include "store_conformance.h"

namespace hangar::control {
namespace {

using testing::DecisionFor;
using testing::SimpleTask;
using testing::StoreBackend;
using testing::StoreBackendFactory;
using testing::StoreConformanceTest;

std::string StatusText(const Status& s) { return s.ToString(); }
template <typename T>
std::string StatusText(const Result<T>& r) {
  return r.status().ToString();
}

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const auto& assert_ok_ = (expr);                        \
    ASSERT_TRUE(assert_ok_.ok()) << StatusText(assert_ok_); \
  } while (0)

// ---- The conformance suite on SQLite files ---------------------------------------------------

class SqliteFileBackend final : public StoreBackend {
 public:
  explicit SqliteFileBackend(TempDir dir) : dir_(std::move(dir)) {}
  Result<std::unique_ptr<Store>> Open() override {
    return OpenSqliteStore(dir_.path() + "/hangar.db");
  }

 private:
  TempDir dir_;
};

StoreBackendFactory SqliteFactory() {
  return {"SqliteFile", []() -> Result<std::unique_ptr<StoreBackend>> {
            HANGAR_ASSIGN_OR_RETURN(TempDir dir, TempDir::Make("hangar-store-test-"));
            return std::unique_ptr<StoreBackend>(new SqliteFileBackend(std::move(dir)));
          }};
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformanceTest, ::testing::Values(SqliteFactory()),
                         testing::StoreBackendName);

// ---- SQLite-specific -------------------------------------------------------------------------

// A raw connection, to look at the file the way an operator with sqlite3(1) would.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK)
        << path;
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // Every row of a query, columns joined by '|'.
  std::vector<std::string> Query(const std::string& sql) {
    std::vector<std::string> rows;
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr);
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << sqlite3_errmsg(db_);
    if (rc != SQLITE_OK) return rows;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
        row += (i == 0 ? "" : "|") + std::string(text != nullptr ? text : "NULL");
      }
      rows.push_back(row);
    }
    EXPECT_EQ(rc, SQLITE_DONE) << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(stmt);
    return rows;
  }
  std::string One(const std::string& sql) {
    auto rows = Query(sql);
    return rows.empty() ? "<no row>" : rows[0];
  }

 private:
  sqlite3* db_ = nullptr;
};

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Make("hangar-store-test-");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::move(*dir);
    path_ = dir_.path() + "/hangar.db";
  }
  std::unique_ptr<Store> MustOpen() {
    auto store = OpenSqliteStore(path_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }

  TempDir dir_;
  std::string path_;
};

TEST_F(SqliteStoreTest, FileIsInWalModeWithForeignKeys) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  Task t = SimpleTask("sb-1", "team-a", 1);
  ASSERT_OK(store->CreateTask(t, DecisionFor(t)));
  RawDb raw(path_);
  EXPECT_EQ(raw.One("PRAGMA journal_mode"), "wal");  // persistent in the file header
  EXPECT_TRUE(std::filesystem::exists(path_ + "-wal"));
  // The store's connection enforces foreign keys: history of an unknown task is refused
  // there, while this raw connection (foreign keys off by default) would accept it.
  ApiKey orphan{"key-1", "team-x", "n", std::string(64, 'a'), 1, false};
  EXPECT_EQ(store->CreateApiKey(orphan).code(), Code::kNotFound);
}

TEST_F(SqliteStoreTest, MigrationsAreRecordedOnceAndReopenIsANoOp) {
  ASSERT_GE(SqliteSchemaVersion(), 1);
  { ASSERT_NE(MustOpen(), nullptr); }
  std::vector<std::string> first;
  {
    RawDb raw(path_);
    first = raw.Query("SELECT version, applied_at FROM schema_migrations ORDER BY version");
    ASSERT_EQ(first.size(), static_cast<size_t>(SqliteSchemaVersion()));
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(first[i].substr(0, first[i].find('|')), std::to_string(i + 1));
    }
    for (const char* table : {"teams", "api_keys", "pools", "nodes", "tasks", "task_state_history",
                              "routing_decisions", "events"}) {
      EXPECT_EQ(
          raw.One(fmt::format(
              "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{}'", table)),
          "1")
          << table;
    }
    EXPECT_EQ(raw.One("SELECT COUNT(*) FROM sqlite_master WHERE name = 'tasks_idempotency'"), "1");
  }
  {
    auto again = MustOpen();
    ASSERT_NE(again, nullptr);
    auto also = MustOpen();  // two at once, both past migration
    ASSERT_NE(also, nullptr);
  }
  RawDb raw(path_);
  EXPECT_EQ(raw.Query("SELECT version, applied_at FROM schema_migrations ORDER BY version"), first);
}

TEST_F(SqliteStoreTest, RefusesADatabaseFromANewerBuild) {
  { ASSERT_NE(MustOpen(), nullptr); }
  const int newer = SqliteSchemaVersion() + 1;
  {
    RawDb raw(path_);
    raw.Query(fmt::format("INSERT INTO schema_migrations VALUES ({}, 0)", newer));
  }
  auto store = OpenSqliteStore(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(store.status().message().find(fmt::format("schema version {}", newer)),
            std::string::npos)
      << store.status().message();
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status().message();
  RawDb raw(path_);
  EXPECT_EQ(raw.One("SELECT MAX(version) FROM schema_migrations"), std::to_string(newer));
}

TEST_F(SqliteStoreTest, OpenFailsClearlyOnAnUnusablePath) {
  const std::string bad = dir_.path() + "/no/such/dir/hangar.db";
  auto store = OpenSqliteStore(bad);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(bad), std::string::npos) << store.status().message();
  EXPECT_EQ(OpenSqliteStore("").status().code(), Code::kInvalidArgument);

  // Not a database at all.
  ASSERT_OK(WriteFile(path_, std::string(8192, 'x')));
  store = OpenSqliteStore(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status().message();
}

TEST_F(SqliteStoreTest, InMemoryStoreWorks) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_OK(store);
  Task t = SimpleTask("sb-1", "team-a", 1);
  ASSERT_OK((*store)->CreateTask(t, DecisionFor(t)));
  auto got = (*store)->GetTask("sb-1");
  ASSERT_OK(got);
  EXPECT_TRUE(got->has_value());
}

TEST_F(SqliteStoreTest, CorruptJsonColumnIsAnInternalErrorNamingTheTask) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  Task t = SimpleTask("sb-1", "team-a", 1);
  ASSERT_OK(store->CreateTask(t, DecisionFor(t)));
  {
    RawDb raw(path_);
    raw.Query("UPDATE tasks SET labels = 'not json' WHERE id = 'sb-1'");
  }
  auto got = store->GetTask("sb-1");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kInternal);
  EXPECT_NE(got.status().message().find("sb-1"), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find("labels"), std::string::npos) << got.status().message();
}

TEST_F(SqliteStoreTest, TwoConnectionsToOneFileSeeEachOtherAndWriteConcurrently) {
  auto a = MustOpen();
  auto b = MustOpen();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kPer = 100;
  std::atomic<int> errors{0};
  auto writer = [&](Store* store, const char* prefix) {
    for (int i = 0; i < kPer; ++i) {
      Task t = SimpleTask(fmt::format("{}-{}", prefix, i), "team-a", i);
      t.idempotency_key = fmt::format("shared-{}", i);  // both try every key
      auto r = store->CreateTask(t, DecisionFor(t));
      if (!r.ok()) {
        ADD_FAILURE() << r.status().ToString();
        ++errors;
      }
    }
  };
  std::thread ta(writer, a.get(), "sb-a");
  std::thread tb(writer, b.get(), "sb-b");
  ta.join();
  tb.join();
  EXPECT_EQ(errors.load(), 0);
  for (Store* store : {a.get(), b.get()}) {
    TaskFilter all;
    all.limit = 1000;
    auto page = store->ListTasks(all);
    ASSERT_OK(page);
    EXPECT_EQ(page->tasks.size(), static_cast<size_t>(kPer));  // one per key, across both
  }
}

// A child process creates tasks in a loop and reports each id once CreateTask has returned
// (committed); it is SIGKILLed mid-stream, three times. Every reported id must be there after
// reopening, nothing half-written (each task has its decision, history row and event), and
// retrying every key creates nothing new.
TEST_F(SqliteStoreTest, SigkillOfAWriterLosesNoCommittedTaskAndCorruptsNothing) {
  { ASSERT_NE(MustOpen(), nullptr); }
  constexpr int kRounds = 3;
  constexpr size_t kReportsBeforeKill = 150;
  std::vector<std::string> reported;
  for (int round = 0; round < kRounds; ++round) {
    auto pipe = MakePipe();
    ASSERT_OK(pipe);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      pipe->read.Reset();
      auto store = OpenSqliteStore(path_);
      if (!store.ok()) ::_exit(2);
      for (int i = 0; i < 1'000'000; ++i) {
        Task t = SimpleTask(fmt::format("sb-{}-{}", round, i), "team-a", i);
        t.idempotency_key = fmt::format("key-{}-{}", round, i);
        if (!(*store)->CreateTask(t, DecisionFor(t)).ok()) ::_exit(3);
        std::string line = t.idempotency_key + "\n";
        if (::write(pipe->write.get(), line.data(), line.size()) !=
            static_cast<ssize_t>(line.size())) {
          ::_exit(4);
        }
      }
      ::_exit(0);
    }
    pipe->write.Reset();
    std::string buffer;
    size_t lines = 0;
    bool killed = false;
    char chunk[4096];
    for (;;) {
      ssize_t n = ::read(pipe->read.get(), chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      lines = static_cast<size_t>(std::count(buffer.begin(), buffer.end(), '\n'));
      if (!killed && lines >= kReportsBeforeKill) {
        ::kill(pid, SIGKILL);  // keep reading: what it wrote before dying counts too
        killed = true;
      }
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child ended otherwise: status " << status << " after " << lines << " creates";
    size_t start = 0;
    for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      reported.push_back(buffer.substr(start, nl - start));
    }
  }
  ASSERT_GE(reported.size(), kRounds * kReportsBeforeKill);

  {
    RawDb raw(path_);
    EXPECT_EQ(raw.One("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(raw.One("SELECT COUNT(*) FROM tasks WHERE id NOT IN "
                      "(SELECT task_id FROM routing_decisions)"),
              "0");
    EXPECT_EQ(raw.One("SELECT COUNT(*) FROM tasks WHERE id NOT IN "
                      "(SELECT task_id FROM task_state_history)"),
              "0");
    EXPECT_EQ(raw.One("SELECT (SELECT COUNT(*) FROM tasks) - (SELECT COUNT(*) FROM events "
                      "WHERE kind = 'task.created')"),
              "0");
  }
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  TaskFilter all;
  all.limit = 1000;
  std::set<std::string> stored_keys;
  size_t stored = 0;
  for (;;) {
    auto page = store->ListTasks(all);
    ASSERT_OK(page);
    for (const auto& t : page->tasks) {
      stored_keys.insert(t.idempotency_key);
      ++stored;
    }
    if (page->next_page_token.empty()) break;
    all.page_token = page->next_page_token;
  }
  EXPECT_EQ(stored_keys.size(), stored);
  for (const auto& key : reported) EXPECT_TRUE(stored_keys.count(key)) << "lost " << key;
  // At most the one create per round that committed but was not yet reported.
  EXPECT_LE(stored, reported.size() + kRounds);

  // A client retrying every request it sent: nothing is created twice.
  for (const auto& key : stored_keys) {
    Task retry = SimpleTask("sb-retry-" + key, "team-a", 0);
    retry.idempotency_key = key;
    auto r = store->CreateTask(retry, DecisionFor(retry));
    ASSERT_OK(r);
    EXPECT_FALSE(r->created) << key;
  }
  auto count = store->CountActiveTasks("team-a");
  ASSERT_OK(count);
  EXPECT_EQ(static_cast<size_t>(*count), stored);
  std::printf("[ sigkill  ] %zu creates reported over %d kills, %zu stored\n", reported.size(),
              kRounds, stored);
}

// Not a benchmark (nothing asserted on time): prints the rates the API's needs are judged by.
TEST_F(SqliteStoreTest, ReportsGetAndCreateRates) {
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  using Clock = std::chrono::steady_clock;
  constexpr int kTasks = 2000;
  auto t0 = Clock::now();
  for (int i = 0; i < kTasks; ++i) {
    Task t = testing::FullTask(fmt::format("sb-{}", i), "team-a", i);
    ASSERT_OK(store->CreateTask(t, DecisionFor(t)));
  }
  double create_s = std::chrono::duration<double>(Clock::now() - t0).count();

  constexpr int kGets = 50'000;
  t0 = Clock::now();
  for (int i = 0; i < kGets; ++i) {
    auto got = store->GetTask(fmt::format("sb-{}", (i * 7919) % kTasks));
    ASSERT_TRUE(got.ok() && got->has_value());
  }
  double get_s = std::chrono::duration<double>(Clock::now() - t0).count();

  std::atomic<int> misses{0};
  t0 = Clock::now();
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      for (int i = 0; i < kGets / 2; ++i) {
        auto got = store->GetTask(fmt::format("sb-{}", (i * 7919 + r) % kTasks));
        if (!got.ok() || !got->has_value()) ++misses;
      }
    });
  }
  for (auto& th : readers) th.join();
  double get2_s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(misses.load(), 0);

  std::printf("[ rates    ] CreateTask/s %.0f  GetTask/s %.0f (1 thread)  %.0f (2 threads)\n",
              kTasks / create_s, kGets / get_s, kGets / get2_s);
  RecordProperty("create_task_per_s", static_cast<int>(kTasks / create_s));
  RecordProperty("get_task_per_s", static_cast<int>(kGets / get_s));
}

}  // namespace
}  // namespace hangar::control
