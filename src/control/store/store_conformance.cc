#include "store_conformance.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace hangar::control::testing {
namespace {

#define STORE_ASSERT_OK(expr)                                       \
  do {                                                              \
    const auto& store_assert_ok_ = (expr);                          \
    ASSERT_TRUE(store_assert_ok_.ok()) << ToText(store_assert_ok_); \
  } while (0)

std::string ToText(const Status& s) { return s.ToString(); }
template <typename T>
std::string ToText(const Result<T>& r) {
  return r.status().ToString();
}

Team MakeTeam(const std::string& id, const std::string& name) {
  Team t;
  t.id = id;
  t.name = name;
  t.max_concurrent = 7;
  t.created_ms = 1'700'000'000'000;
  return t;
}

std::string Hash(char c) { return std::string(64, c); }

std::vector<std::string> Ids(const std::vector<Task>& tasks) {
  std::vector<std::string> ids;
  for (const auto& t : tasks) ids.push_back(t.id);
  return ids;
}

}  // namespace

void PrintTo(const StoreBackendFactory& factory, std::ostream* os) { *os << factory.name; }

std::string StoreBackendName(const ::testing::TestParamInfo<StoreBackendFactory>& info) {
  return info.param.name;
}

Task FullTask(const std::string& id, const std::string& team_id, int64_t created_ms) {
  Task t;
  t.id = id;
  t.team_id = team_id;
  t.idempotency_key = "idem-" + id;
  t.template_name = "python-3.12";
  t.command = {"python", "-c", "print('héllo \"quoted\"')"};
  t.resources = {1500, 2048, 4096, 300, 50'000'000};
  t.labels = {{"app", "billing"}, {"env", "prod"}, {"odd key.with\"chars", "v"}};
  t.paths = {"services/payments/x.go", "README.md"};
  t.secrets = {"STRIPE_KEY"};
  t.egress = {"api.stripe.com:443"};
  t.repo = "git@example.com:org/repo.git";
  t.env = {{"A", "1"}, {"B", ""}};
  t.metadata = {{"owner", "alice"}, {"ticket", "T-42"}, {"n", 3}};
  t.requested_tier = Tier::kHardened;
  t.timeout_s = 900;
  t.priority = 5;
  t.tier = Tier::kIsolated;
  t.pool = "isolated";
  t.node_id = "";
  t.state = TaskState::kPending;
  t.reason = "waiting for capacity in pool isolated";
  t.created_ms = created_ms;
  t.updated_ms = created_ms;
  t.deadline_ms = created_ms + 900'000;
  return t;
}

Task SimpleTask(const std::string& id, const std::string& team_id, int64_t created_ms,
                int priority) {
  Task t;
  t.id = id;
  t.team_id = team_id;
  t.template_name = "base";
  t.priority = priority;
  t.created_ms = created_ms;
  t.updated_ms = created_ms;
  return t;
}

RoutingDecision DecisionFor(const Task& task) {
  RoutingDecision d;
  d.task_id = task.id;
  d.tier = task.tier;
  d.rule = "payments-paths";
  d.explanation = "paths[0]='services/payments/x.go' matched services/payments/**";
  d.policy_version = "sha256:abc";
  d.trace = nlohmann::json::array({{{"rule", "payments-paths"}, {"matched", true}}});
  d.at_ms = task.created_ms;
  return d;
}

void ExpectSameTask(const Task& want, const Task& got) {
  SCOPED_TRACE("task " + want.id);
  EXPECT_EQ(want.id, got.id);
  EXPECT_EQ(want.team_id, got.team_id);
  EXPECT_EQ(want.idempotency_key, got.idempotency_key);
  EXPECT_EQ(want.template_name, got.template_name);
  EXPECT_EQ(want.command, got.command);
  EXPECT_EQ(want.resources, got.resources);
  EXPECT_EQ(want.labels, got.labels);
  EXPECT_EQ(want.paths, got.paths);
  EXPECT_EQ(want.secrets, got.secrets);
  EXPECT_EQ(want.egress, got.egress);
  EXPECT_EQ(want.repo, got.repo);
  EXPECT_EQ(want.env, got.env);
  EXPECT_EQ(want.metadata, got.metadata);
  EXPECT_EQ(want.requested_tier, got.requested_tier);
  EXPECT_EQ(want.timeout_s, got.timeout_s);
  EXPECT_EQ(want.priority, got.priority);
  EXPECT_EQ(want.tier, got.tier);
  EXPECT_EQ(want.pool, got.pool);
  EXPECT_EQ(want.node_id, got.node_id);
  EXPECT_EQ(want.state, got.state);
  EXPECT_EQ(want.reason, got.reason);
  EXPECT_EQ(want.exit_code, got.exit_code);
  EXPECT_EQ(want.created_ms, got.created_ms);
  EXPECT_EQ(want.updated_ms, got.updated_ms);
  EXPECT_EQ(want.started_ms, got.started_ms);
  EXPECT_EQ(want.ended_ms, got.ended_ms);
  EXPECT_EQ(want.deadline_ms, got.deadline_ms);
  EXPECT_EQ(want.version, got.version);
}

void StoreConformanceTest::SetUp() {
  auto backend = GetParam().make();
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  backend_ = std::move(*backend);
  auto store = backend_->Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  store_ = std::move(*store);
}

void StoreConformanceTest::Reopen() {
  store_.reset();
  auto store = backend_->Open();
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  store_ = std::move(*store);
}

Task StoreConformanceTest::MustCreate(const Task& task) {
  auto r = store_->CreateTask(task, DecisionFor(task));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return task;
  EXPECT_TRUE(r->created) << task.id;
  return r->task;
}

// ---- Teams and API keys --------------------------------------------------------------------

TEST_P(StoreConformanceTest, TeamsCreateGetListAndRefuseDuplicates) {
  STORE_ASSERT_OK(store_->CreateTeam(MakeTeam("team-b", "beta")));
  STORE_ASSERT_OK(store_->CreateTeam(MakeTeam("team-a", "alpha")));

  auto by_id = store_->GetTeam("team-b");
  STORE_ASSERT_OK(by_id);
  ASSERT_TRUE(by_id->has_value());
  EXPECT_EQ((*by_id)->name, "beta");
  EXPECT_EQ((*by_id)->max_concurrent, 7);
  EXPECT_EQ((*by_id)->created_ms, 1'700'000'000'000);
  auto by_name = store_->GetTeamByName("alpha");
  STORE_ASSERT_OK(by_name);
  ASSERT_TRUE(by_name->has_value());
  EXPECT_EQ((*by_name)->id, "team-a");
  auto missing = store_->GetTeam("team-zzz");
  STORE_ASSERT_OK(missing);
  EXPECT_FALSE(missing->has_value());

  EXPECT_EQ(store_->CreateTeam(MakeTeam("team-a", "gamma")).code(), Code::kAlreadyExists);
  EXPECT_EQ(store_->CreateTeam(MakeTeam("team-c", "alpha")).code(), Code::kAlreadyExists);
  EXPECT_EQ(store_->CreateTeam(MakeTeam("", "delta")).code(), Code::kInvalidArgument);
  Team negative = MakeTeam("team-n", "negative");
  negative.max_concurrent = -1;
  EXPECT_EQ(store_->CreateTeam(negative).code(), Code::kInvalidArgument);

  auto teams = store_->ListTeams();
  STORE_ASSERT_OK(teams);
  ASSERT_EQ(teams->size(), 2u);  // nothing from the refused calls
  EXPECT_EQ((*teams)[0].name, "alpha");
  EXPECT_EQ((*teams)[1].name, "beta");
}

TEST_P(StoreConformanceTest, ApiKeysAreFoundByHashAndRevoked) {
  STORE_ASSERT_OK(store_->CreateTeam(MakeTeam("team-a", "alpha")));
  ApiKey key{"key-1", "team-a", "ci", Hash('a'), 123, false};
  STORE_ASSERT_OK(store_->CreateApiKey(key));

  ApiKey orphan{"key-2", "team-nope", "ci", Hash('b'), 123, false};
  EXPECT_EQ(store_->CreateApiKey(orphan).code(), Code::kNotFound);
  ApiKey same_hash{"key-3", "team-a", "other", Hash('a'), 124, false};
  EXPECT_EQ(store_->CreateApiKey(same_hash).code(), Code::kAlreadyExists);
  ApiKey same_id{"key-1", "team-a", "other", Hash('c'), 124, false};
  EXPECT_EQ(store_->CreateApiKey(same_id).code(), Code::kAlreadyExists);
  ApiKey not_a_hash{"key-4", "team-a", "plain", "hk_live_secret", 124, false};
  EXPECT_EQ(store_->CreateApiKey(not_a_hash).code(), Code::kInvalidArgument);

  auto found = store_->FindApiKey(Hash('a'));
  STORE_ASSERT_OK(found);
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, "key-1");
  EXPECT_EQ((*found)->team_id, "team-a");
  EXPECT_EQ((*found)->name, "ci");
  EXPECT_EQ((*found)->created_ms, 123);
  EXPECT_FALSE((*found)->revoked);
  for (char c : {'b', 'c'}) {
    auto none = store_->FindApiKey(Hash(c));
    STORE_ASSERT_OK(none);
    EXPECT_FALSE(none->has_value()) << c;
  }

  STORE_ASSERT_OK(store_->RevokeApiKey("key-1"));
  found = store_->FindApiKey(Hash('a'));
  STORE_ASSERT_OK(found);
  ASSERT_TRUE(found->has_value());
  EXPECT_TRUE((*found)->revoked);
  STORE_ASSERT_OK(store_->RevokeApiKey("key-1"));  // idempotent
  EXPECT_EQ(store_->RevokeApiKey("key-nope").code(), Code::kNotFound);
}

// ---- Pools and nodes -----------------------------------------------------------------------

TEST_P(StoreConformanceTest, PoolsUpsertAndRefuseBadOvercommit) {
  Pool shared{"shared", Tier::kShared, "ns", 2.0, 1.5, 1000, 10'000'000};
  Pool isolated{"isolated", Tier::kIsolated, "microvm", 1.0, 1.0, 0, 0};
  STORE_ASSERT_OK(store_->UpsertPool(shared));
  STORE_ASSERT_OK(store_->UpsertPool(isolated));
  shared.overcommit_cpu = 3.0;
  shared.driver = "gvisor";
  STORE_ASSERT_OK(store_->UpsertPool(shared));

  Pool bad = shared;
  bad.overcommit_cpu = 4.5;
  EXPECT_EQ(store_->UpsertPool(bad).code(), Code::kInvalidArgument);
  bad.overcommit_cpu = 0.5;
  EXPECT_EQ(store_->UpsertPool(bad).code(), Code::kInvalidArgument);
  bad = shared;
  bad.name = "";
  EXPECT_EQ(store_->UpsertPool(bad).code(), Code::kInvalidArgument);

  auto pools = store_->ListPools();
  STORE_ASSERT_OK(pools);
  ASSERT_EQ(pools->size(), 2u);
  EXPECT_EQ((*pools)[0], isolated);
  EXPECT_EQ((*pools)[1], shared);  // the update, not the refused values
}

TEST_P(StoreConformanceTest, NodesUpsertRoundTrip) {
  Node n;
  n.id = "node-b";
  n.pool = "shared";
  n.url = "http://127.0.0.1:7071";
  n.token = "tok";
  n.drivers = {"ns", "gvisor"};
  n.capacity = {8000, 16384, 100'000, 5000};
  n.status = NodeStatus::kReady;
  n.last_heartbeat_ms = 10;
  n.registered_ms = 5;
  n.usage = {{"cpu_millis", 1200}, {"tasks", nlohmann::json::array({"sb-1"})}};
  STORE_ASSERT_OK(store_->UpsertNode(n));
  Node a = n;
  a.id = "node-a";
  a.drivers = {};
  a.usage = nlohmann::json::object();
  STORE_ASSERT_OK(store_->UpsertNode(a));
  n.status = NodeStatus::kLost;
  n.last_heartbeat_ms = 99;
  STORE_ASSERT_OK(store_->UpsertNode(n));
  Node nameless = n;
  nameless.id = "";
  EXPECT_EQ(store_->UpsertNode(nameless).code(), Code::kInvalidArgument);

  auto got = store_->GetNode("node-b");
  STORE_ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  const Node& g = **got;
  EXPECT_EQ(g.pool, n.pool);
  EXPECT_EQ(g.url, n.url);
  EXPECT_EQ(g.token, n.token);
  EXPECT_EQ(g.drivers, n.drivers);
  EXPECT_EQ(g.capacity, n.capacity);
  EXPECT_EQ(g.status, NodeStatus::kLost);
  EXPECT_EQ(g.last_heartbeat_ms, 99);
  EXPECT_EQ(g.registered_ms, 5);
  EXPECT_EQ(g.usage, n.usage);
  auto none = store_->GetNode("node-z");
  STORE_ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());

  auto nodes = store_->ListNodes();
  STORE_ASSERT_OK(nodes);
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].id, "node-a");
  EXPECT_TRUE((*nodes)[0].drivers.empty());
  EXPECT_EQ((*nodes)[1].id, "node-b");
}

// ---- Tasks: create ---------------------------------------------------------------------------

TEST_P(StoreConformanceTest, TaskRoundTripsEveryField) {
  Task full = FullTask("sb-full", "team-a", 1000);
  Task created = MustCreate(full);
  ExpectSameTask(full, created);
  auto got = store_->GetTask("sb-full");
  STORE_ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  ExpectSameTask(full, **got);

  // The other side of each optional and empty collection.
  Task bare = SimpleTask("sb-bare", "team-a", 1001);
  bare.exit_code = 0;
  MustCreate(bare);
  got = store_->GetTask("sb-bare");
  STORE_ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  ExpectSameTask(bare, **got);
  EXPECT_FALSE((*got)->requested_tier.has_value());
  EXPECT_TRUE((*got)->metadata.is_object());

  auto missing = store_->GetTask("sb-nope");
  STORE_ASSERT_OK(missing);
  EXPECT_FALSE(missing->has_value());
}

TEST_P(StoreConformanceTest, CreateTaskWritesDecisionHistoryAndEventTogether) {
  Task t = FullTask("sb-1", "team-a", 5000);
  t.reason = "queued";
  MustCreate(t);

  auto d = store_->GetDecision("sb-1");
  STORE_ASSERT_OK(d);
  ASSERT_TRUE(d->has_value());
  RoutingDecision want = DecisionFor(t);
  EXPECT_EQ((*d)->task_id, "sb-1");
  EXPECT_EQ((*d)->tier, want.tier);
  EXPECT_EQ((*d)->rule, want.rule);
  EXPECT_EQ((*d)->explanation, want.explanation);
  EXPECT_EQ((*d)->policy_version, want.policy_version);
  EXPECT_EQ((*d)->trace, want.trace);
  EXPECT_EQ((*d)->at_ms, 5000);
  auto no_decision = store_->GetDecision("sb-nope");
  STORE_ASSERT_OK(no_decision);
  EXPECT_FALSE(no_decision->has_value());

  auto history = store_->TaskHistory("sb-1");
  STORE_ASSERT_OK(history);
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ((*history)[0].task_id, "sb-1");
  EXPECT_EQ((*history)[0].state, TaskState::kPending);
  EXPECT_EQ((*history)[0].reason, "queued");
  EXPECT_EQ((*history)[0].at_ms, 5000);

  auto events = store_->ListEvents(0, 100);
  STORE_ASSERT_OK(events);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].kind, "task.created");
  EXPECT_EQ((*events)[0].subject, "sb-1");
  EXPECT_EQ((*events)[0].team_id, "team-a");
  EXPECT_EQ((*events)[0].at_ms, 5000);
  EXPECT_GT((*events)[0].seq, 0);
}

TEST_P(StoreConformanceTest, CreateTaskRefusesBadInputAndWritesNothing) {
  MustCreate(SimpleTask("sb-1", "team-a", 1));
  auto dup = store_->CreateTask(SimpleTask("sb-1", "team-a", 2),
                                DecisionFor(SimpleTask("sb-1", "team-a", 2)));
  EXPECT_EQ(dup.status().code(), Code::kAlreadyExists) << dup.status().ToString();
  EXPECT_NE(dup.status().message().find("sb-1"), std::string::npos) << dup.status().message();

  Task no_team = SimpleTask("sb-2", "", 2);
  EXPECT_EQ(store_->CreateTask(no_team, DecisionFor(no_team)).status().code(),
            Code::kInvalidArgument);
  Task bad_meta = SimpleTask("sb-3", "team-a", 3);
  bad_meta.metadata = nlohmann::json::array({1, 2});
  EXPECT_EQ(store_->CreateTask(bad_meta, DecisionFor(bad_meta)).status().code(),
            Code::kInvalidArgument);
  Task bad_utf8 = SimpleTask("sb-4", "team-a", 4);
  bad_utf8.command = {"echo", "\xff\xfe"};
  EXPECT_EQ(store_->CreateTask(bad_utf8, DecisionFor(bad_utf8)).status().code(),
            Code::kInvalidArgument);
  Task other = SimpleTask("sb-5", "team-a", 5);
  RoutingDecision wrong = DecisionFor(other);
  wrong.task_id = "sb-1";
  EXPECT_EQ(store_->CreateTask(other, wrong).status().code(), Code::kInvalidArgument);

  TaskFilter all;
  all.limit = 1000;
  auto page = store_->ListTasks(all);
  STORE_ASSERT_OK(page);
  EXPECT_EQ(Ids(page->tasks), std::vector<std::string>{"sb-1"});
  auto history = store_->TaskHistory("sb-1");
  STORE_ASSERT_OK(history);
  EXPECT_EQ(history->size(), 1u);
  auto events = store_->ListEvents(0, 100);
  STORE_ASSERT_OK(events);
  EXPECT_EQ(events->size(), 1u);
  auto decision = store_->GetDecision("sb-1");
  STORE_ASSERT_OK(decision);
  ASSERT_TRUE(decision->has_value());
  EXPECT_EQ((*decision)->at_ms, 1);  // the first create's, not the duplicate's
}

TEST_P(StoreConformanceTest, IdempotencyKeyReturnsTheExistingTask) {
  Task first = SimpleTask("sb-1", "team-a", 100);
  first.idempotency_key = "req-1";
  MustCreate(first);

  Task retry = SimpleTask("sb-2", "team-a", 200);  // a retried request gets a fresh id
  retry.idempotency_key = "req-1";
  auto again = store_->CreateTask(retry, DecisionFor(retry));
  STORE_ASSERT_OK(again);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->task.id, "sb-1");
  EXPECT_EQ(again->task.created_ms, 100);

  // Another team may use the same key; no key means no deduplication.
  Task other_team = SimpleTask("sb-3", "team-b", 300);
  other_team.idempotency_key = "req-1";
  EXPECT_TRUE(MustCreate(other_team).id == "sb-3");
  MustCreate(SimpleTask("sb-4", "team-a", 400));
  MustCreate(SimpleTask("sb-5", "team-a", 500));

  auto missing = store_->GetTask("sb-2");
  STORE_ASSERT_OK(missing);
  EXPECT_FALSE(missing->has_value());
  auto events = store_->ListEvents(0, 100);
  STORE_ASSERT_OK(events);
  EXPECT_EQ(events->size(), 4u);  // sb-1, sb-3, sb-4, sb-5: nothing for the retry
  auto decision = store_->GetDecision("sb-2");
  STORE_ASSERT_OK(decision);
  EXPECT_FALSE(decision->has_value());

  auto found = store_->FindTaskByIdempotencyKey("team-a", "req-1");
  STORE_ASSERT_OK(found);
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, "sb-1");
  auto other = store_->FindTaskByIdempotencyKey("team-b", "req-1");
  STORE_ASSERT_OK(other);
  ASSERT_TRUE(other->has_value());
  EXPECT_EQ((*other)->id, "sb-3");
  auto none = store_->FindTaskByIdempotencyKey("team-a", "req-9");
  STORE_ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  auto empty = store_->FindTaskByIdempotencyKey("team-a", "");
  STORE_ASSERT_OK(empty);
  EXPECT_FALSE(empty->has_value());
}

TEST_P(StoreConformanceTest, IdempotencyRaceCreatesExactlyOne) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> created{0};
    std::atomic<int> failed{0};
    std::vector<std::string> returned(kThreads);
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        Task t = SimpleTask(fmt::format("sb-r{}-t{}", round, i), "team-a", 1000 + round);
        t.idempotency_key = fmt::format("race-{}", round);
        while (!go.load()) std::this_thread::yield();
        auto r = store_->CreateTask(t, DecisionFor(t));
        if (!r.ok()) {
          ++failed;
          return;
        }
        if (r->created) ++created;
        returned[static_cast<size_t>(i)] = r->task.id;
      });
    }
    go = true;
    for (auto& th : threads) th.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(created.load(), 1) << "round " << round;
    for (const auto& id : returned) EXPECT_EQ(id, returned[0]) << "round " << round;
  }
  TaskFilter all;
  all.limit = 1000;
  auto page = store_->ListTasks(all);
  STORE_ASSERT_OK(page);
  EXPECT_EQ(page->tasks.size(), static_cast<size_t>(kRounds));
}

TEST_P(StoreConformanceTest, ConcurrentWritersLoseNothing) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < kPerThread; ++j) {
        Task t = SimpleTask(fmt::format("sb-{}-{}", i, j), fmt::format("team-{}", i % 2), j);
        auto r = store_->CreateTask(t, DecisionFor(t));
        if (!r.ok()) {
          ++errors;
          continue;
        }
        // Interleave updates and event appends with the other writers' creates.
        Task next = r->task;
        next.state = TaskState::kStarting;
        next.node_id = "node-1";
        if (!store_->UpdateTask(next).ok()) ++errors;
        Event e;
        e.kind = "test.tick";
        e.subject = t.id;
        if (!store_->AppendEvent(e).ok()) ++errors;
        if (!store_->GetTask(t.id).ok()) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);

  TaskFilter all;
  all.limit = 1000;
  auto page = store_->ListTasks(all);
  STORE_ASSERT_OK(page);
  std::set<std::string> ids;
  for (const auto& t : page->tasks) {
    ids.insert(t.id);
    EXPECT_EQ(t.version, 1) << t.id;
    EXPECT_EQ(t.state, TaskState::kStarting) << t.id;
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kThreads * kPerThread));
  auto events = store_->ListEvents(0, 1000);
  STORE_ASSERT_OK(events);
  ASSERT_EQ(events->size(), static_cast<size_t>(2 * kThreads * kPerThread));
  for (size_t i = 1; i < events->size(); ++i) {
    EXPECT_GT((*events)[i].seq, (*events)[i - 1].seq);
  }
}

// ---- Tasks: update -------------------------------------------------------------------------

TEST_P(StoreConformanceTest, UpdateTaskComparesAndSwapsTheVersion) {
  Task t = MustCreate(FullTask("sb-1", "team-a", 100));
  ASSERT_EQ(t.version, 0);

  Task starting = t;
  starting.state = TaskState::kStarting;
  starting.node_id = "node-1";
  starting.reason = "placed on node-1";
  starting.updated_ms = 200;
  starting.labels["phase"] = "2";
  auto updated = store_->UpdateTask(starting);
  STORE_ASSERT_OK(updated);
  EXPECT_EQ(updated->version, 1);
  auto got = store_->GetTask("sb-1");
  STORE_ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  ExpectSameTask(*updated, **got);

  // A writer that read version 0 lost the race: refused, nothing changed.
  Task stale = t;
  stale.state = TaskState::kKilled;
  auto refused = store_->UpdateTask(stale);
  EXPECT_EQ(refused.status().code(), Code::kAborted) << refused.status().ToString();
  got = store_->GetTask("sb-1");
  STORE_ASSERT_OK(got);
  ExpectSameTask(*updated, **got);

  Task ghost = SimpleTask("sb-ghost", "team-a", 1);
  EXPECT_EQ(store_->UpdateTask(ghost).status().code(), Code::kNotFound);

  Task moved = *updated;
  moved.team_id = "team-b";
  EXPECT_EQ(store_->UpdateTask(moved).status().code(), Code::kInvalidArgument);
  Task bad_meta = *updated;
  bad_meta.metadata = "a string";
  EXPECT_EQ(store_->UpdateTask(bad_meta).status().code(), Code::kInvalidArgument);
  got = store_->GetTask("sb-1");
  STORE_ASSERT_OK(got);
  EXPECT_EQ((*got)->version, 1);

  auto history = store_->TaskHistory("sb-1");
  STORE_ASSERT_OK(history);
  EXPECT_EQ(history->size(), 2u);  // created + starting; the refused updates wrote nothing
}

TEST_P(StoreConformanceTest, ConcurrentUpdatesOfOneVersionHaveOneWinner) {
  Task t = MustCreate(SimpleTask("sb-1", "team-a", 1));
  constexpr int kThreads = 8;
  std::atomic<int> ok{0};
  std::atomic<int> aborted{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Task mine = t;
      mine.state = TaskState::kStarting;
      mine.node_id = fmt::format("node-{}", i);
      while (!go.load()) std::this_thread::yield();
      auto r = store_->UpdateTask(mine);
      if (r.ok()) {
        ++ok;
      } else if (r.status().code() == Code::kAborted) {
        ++aborted;
      }
    });
  }
  go = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(aborted.load(), kThreads - 1);
  auto history = store_->TaskHistory("sb-1");
  STORE_ASSERT_OK(history);
  EXPECT_EQ(history->size(), 2u);
}

TEST_P(StoreConformanceTest, HistoryRecordsStateChangesOnly) {
  Task t = MustCreate(SimpleTask("sb-1", "team-a", 10));
  auto step = [&](TaskState state, const std::string& node, const std::string& reason, int64_t at) {
    t.state = state;
    t.node_id = node;
    t.reason = reason;
    t.updated_ms = at;
    auto r = store_->UpdateTask(t);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) t = *r;
  };
  step(TaskState::kStarting, "node-1", "placed", 20);
  step(TaskState::kStarting, "node-1", "pulling template", 25);  // same state: no row
  step(TaskState::kRunning, "node-1", "", 30);
  step(TaskState::kPending, "", "node-1 lost; requeued", 40);
  step(TaskState::kStarting, "node-2", "placed", 50);
  t.exit_code = 3;
  step(TaskState::kFailed, "node-2", "exit code 3", 60);
  EXPECT_EQ(t.version, 6);

  auto history = store_->TaskHistory("sb-1");
  STORE_ASSERT_OK(history);
  struct Want {
    TaskState state;
    std::string node, reason;
    int64_t at;
  };
  std::vector<Want> want = {{TaskState::kPending, "", "", 10},
                            {TaskState::kStarting, "node-1", "placed", 20},
                            {TaskState::kRunning, "node-1", "", 30},
                            {TaskState::kPending, "", "node-1 lost; requeued", 40},
                            {TaskState::kStarting, "node-2", "placed", 50},
                            {TaskState::kFailed, "node-2", "exit code 3", 60}};
  ASSERT_EQ(history->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ((*history)[i].state, want[i].state);
    EXPECT_EQ((*history)[i].node_id, want[i].node);
    EXPECT_EQ((*history)[i].reason, want[i].reason);
    EXPECT_EQ((*history)[i].at_ms, want[i].at);
  }
  auto empty = store_->TaskHistory("sb-nope");
  STORE_ASSERT_OK(empty);
  EXPECT_TRUE(empty->empty());
}

// ---- Tasks: lists --------------------------------------------------------------------------

TEST_P(StoreConformanceTest, PaginationWalksEveryMatchOnceNewestFirst) {
  // 250 tasks in two teams; created_ms repeats (ties broken by id), labels/metadata/state vary.
  const std::vector<TaskState> states = {TaskState::kPending, TaskState::kRunning,
                                         TaskState::kExited};
  std::vector<Task> all;
  for (int i = 0; i < 250; ++i) {
    Task t = SimpleTask(fmt::format("sb-{:03}", (i * 37) % 250), i % 3 == 0 ? "team-b" : "team-a",
                        1000 + i / 4);
    t.labels = {{"app", i % 2 == 0 ? "web" : "batch"}, {"shard", std::to_string(i % 5)}};
    t.metadata = {{"owner", i % 4 == 0 ? "alice" : "bob"}, {"n", i}};
    t.state = states[static_cast<size_t>(i % 3)];
    t.node_id = i % 3 == 1 ? "node-1" : "";
    all.push_back(MustCreate(t));
  }
  auto newest_first = [](const Task& a, const Task& b) {
    return a.created_ms != b.created_ms ? a.created_ms > b.created_ms : a.id > b.id;
  };
  auto walk = [&](TaskFilter filter, auto&& pred) {
    std::vector<Task> want;
    for (const auto& t : all) {
      if (pred(t)) want.push_back(t);
    }
    std::sort(want.begin(), want.end(), newest_first);
    std::vector<std::string> got;
    int pages = 0;
    for (;;) {
      auto page = store_->ListTasks(filter);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) return;
      EXPECT_LE(page->tasks.size(), static_cast<size_t>(filter.limit));
      for (const auto& t : page->tasks) got.push_back(t.id);
      ++pages;
      if (page->next_page_token.empty()) break;
      EXPECT_EQ(page->tasks.size(), static_cast<size_t>(filter.limit));
      filter.page_token = page->next_page_token;
      if (pages > 300) {
        ADD_FAILURE() << "pagination does not end";
        return;
      }
    }
    EXPECT_EQ(got, Ids(want));
    EXPECT_EQ(pages,
              want.empty() ? 1 : (static_cast<int>(want.size()) + filter.limit - 1) / filter.limit);
  };

  {
    SCOPED_TRACE("everything, pages of 7");
    TaskFilter f;
    f.limit = 7;
    walk(f, [](const Task&) { return true; });
  }
  {
    SCOPED_TRACE("team-a, pages of 10");
    TaskFilter f;
    f.team_id = "team-a";
    f.limit = 10;
    walk(f, [](const Task& t) { return t.team_id == "team-a"; });
  }
  {
    SCOPED_TRACE("team-a, pending or exited, app=web, pages of 4");
    TaskFilter f;
    f.team_id = "team-a";
    f.states = {TaskState::kPending, TaskState::kExited};
    f.labels = {{"app", "web"}};
    f.limit = 4;
    walk(f, [](const Task& t) {
      return t.team_id == "team-a" &&
             (t.state == TaskState::kPending || t.state == TaskState::kExited) &&
             t.labels.at("app") == "web";
    });
  }
  {
    SCOPED_TRACE("two labels and metadata owner=alice, pages of 3");
    TaskFilter f;
    f.labels = {{"app", "web"}, {"shard", "2"}};
    f.metadata = {{"owner", "alice"}};
    f.limit = 3;
    walk(f, [](const Task& t) {
      return t.labels.at("app") == "web" && t.labels.at("shard") == "2" &&
             t.metadata["owner"] == "alice";
    });
  }
  {
    SCOPED_TRACE("node-1, one page of 1000");
    TaskFilter f;
    f.node_id = "node-1";
    f.limit = 1000;
    walk(f, [](const Task& t) { return t.node_id == "node-1"; });
  }
  {
    SCOPED_TRACE("no match");
    TaskFilter f;
    f.labels = {{"app", "nope"}};
    walk(f, [](const Task&) { return false; });
  }
  {
    SCOPED_TRACE("a metadata value that is a number never equals a string");
    TaskFilter f;
    f.metadata = {{"n", "4"}};
    walk(f, [](const Task&) { return false; });
  }
}

TEST_P(StoreConformanceTest, ListTasksRefusesBadLimitAndToken) {
  MustCreate(SimpleTask("sb-1", "team-a", 1));
  MustCreate(SimpleTask("sb-2", "team-a", 2));
  for (int limit : {0, -1, 1001}) {
    TaskFilter f;
    f.limit = limit;
    auto r = store_->ListTasks(f);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << limit;
    EXPECT_NE(r.status().message().find("limit"), std::string::npos) << r.status().message();
  }
  for (std::string token : {"zz", "abc", "3a", "not a token at all", "3132"}) {
    TaskFilter f;
    f.page_token = token;
    auto r = store_->ListTasks(f);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << token;
  }
  TaskFilter f;
  f.limit = 1;
  auto first = store_->ListTasks(f);
  STORE_ASSERT_OK(first);
  ASSERT_EQ(first->tasks.size(), 1u);
  EXPECT_EQ(first->tasks[0].id, "sb-2");
  ASSERT_FALSE(first->next_page_token.empty());
  f.page_token = first->next_page_token;
  auto second = store_->ListTasks(f);
  STORE_ASSERT_OK(second);
  ASSERT_EQ(second->tasks.size(), 1u);
  EXPECT_EQ(second->tasks[0].id, "sb-1");
  EXPECT_TRUE(second->next_page_token.empty());
}

TEST_P(StoreConformanceTest, PendingQueueIsPriorityThenFifoAndSurvivesRestart) {
  MustCreate(SimpleTask("sb-c", "team-a", 300, 0));
  MustCreate(SimpleTask("sb-a", "team-b", 100, 0));
  MustCreate(SimpleTask("sb-hi", "team-a", 500, 10));
  MustCreate(SimpleTask("sb-b", "team-a", 100, 0));  // same ms as sb-a: id breaks the tie
  MustCreate(SimpleTask("sb-low", "team-a", 50, -1));
  Task running = SimpleTask("sb-run", "team-a", 10, 99);
  running.state = TaskState::kRunning;
  MustCreate(running);
  const std::vector<std::string> want = {"sb-hi", "sb-a", "sb-b", "sb-c", "sb-low"};

  auto pending = store_->ListPendingTasks();
  STORE_ASSERT_OK(pending);
  EXPECT_EQ(Ids(*pending), want);

  Reopen();
  pending = store_->ListPendingTasks();
  STORE_ASSERT_OK(pending);
  EXPECT_EQ(Ids(*pending), want);

  // Taking the head off the queue.
  Task head = (*pending)[0];
  head.state = TaskState::kStarting;
  STORE_ASSERT_OK(store_->UpdateTask(head));
  pending = store_->ListPendingTasks();
  STORE_ASSERT_OK(pending);
  EXPECT_EQ(Ids(*pending), std::vector<std::string>(want.begin() + 1, want.end()));
}

TEST_P(StoreConformanceTest, ActiveTasksAndPerTeamCount) {
  const std::vector<TaskState> states = {
      TaskState::kPending, TaskState::kStarting, TaskState::kRunning, TaskState::kPaused,
      TaskState::kExited,  TaskState::kFailed,   TaskState::kKilled,  TaskState::kTimedOut};
  for (size_t i = 0; i < states.size(); ++i) {
    for (const std::string team : {"team-a", "team-b"}) {
      Task t = SimpleTask(fmt::format("sb-{}-{}", team, i), team, static_cast<int64_t>(i));
      t.state = states[i];
      MustCreate(t);
    }
  }
  MustCreate(SimpleTask("sb-extra", "team-a", 100));

  auto active = store_->ListActiveTasks();
  STORE_ASSERT_OK(active);
  EXPECT_EQ(active->size(), 9u);
  for (const auto& t : *active) EXPECT_FALSE(IsTerminal(t.state)) << t.id;
  auto a = store_->CountActiveTasks("team-a");
  STORE_ASSERT_OK(a);
  EXPECT_EQ(*a, 5);
  auto b = store_->CountActiveTasks("team-b");
  STORE_ASSERT_OK(b);
  EXPECT_EQ(*b, 4);
  auto none = store_->CountActiveTasks("team-none");
  STORE_ASSERT_OK(none);
  EXPECT_EQ(*none, 0);

  // Finishing a task frees its slot.
  auto t = store_->GetTask("sb-extra");
  STORE_ASSERT_OK(t);
  Task done = **t;
  done.state = TaskState::kExited;
  done.exit_code = 0;
  STORE_ASSERT_OK(store_->UpdateTask(done));
  a = store_->CountActiveTasks("team-a");
  STORE_ASSERT_OK(a);
  EXPECT_EQ(*a, 4);
}

// ---- Events --------------------------------------------------------------------------------

TEST_P(StoreConformanceTest, EventsHaveIncreasingSeqAndFilterByTeam) {
  std::vector<int64_t> seqs;
  for (int i = 0; i < 10; ++i) {
    Event e;
    e.at_ms = 100 + i;
    e.kind = i % 2 == 0 ? "node.lost" : "task.requeued";
    e.subject = fmt::format("s-{}", i);
    e.team_id = i % 2 == 0 ? "" : "team-a";
    e.data = {{"i", i}};
    auto seq = store_->AppendEvent(e);
    STORE_ASSERT_OK(seq);
    if (!seqs.empty()) {
      EXPECT_GT(*seq, seqs.back());
    }
    seqs.push_back(*seq);
  }
  Event no_kind;
  EXPECT_EQ(store_->AppendEvent(no_kind).status().code(), Code::kInvalidArgument);

  auto all = store_->ListEvents(0, 1000);
  STORE_ASSERT_OK(all);
  ASSERT_EQ(all->size(), 10u);
  for (size_t i = 0; i < all->size(); ++i) {
    EXPECT_EQ((*all)[i].seq, seqs[i]);
    EXPECT_EQ((*all)[i].data["i"], static_cast<int>(i));
    EXPECT_EQ((*all)[i].at_ms, 100 + static_cast<int64_t>(i));
  }
  auto after = store_->ListEvents(seqs[3], 2);
  STORE_ASSERT_OK(after);
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].seq, seqs[4]);
  EXPECT_EQ((*after)[1].seq, seqs[5]);
  auto team = store_->ListEvents(0, 1000, "team-a");
  STORE_ASSERT_OK(team);
  ASSERT_EQ(team->size(), 5u);
  for (const auto& e : *team) EXPECT_EQ(e.team_id, "team-a");
  auto tail = store_->ListEvents(seqs.back(), 10);
  STORE_ASSERT_OK(tail);
  EXPECT_TRUE(tail->empty());
  EXPECT_EQ(store_->ListEvents(0, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->ListEvents(0, 1001).status().code(), Code::kInvalidArgument);
}

// ---- Persistence ---------------------------------------------------------------------------

TEST_P(StoreConformanceTest, EverythingPersistsAcrossReopen) {
  STORE_ASSERT_OK(store_->CreateTeam(MakeTeam("team-a", "alpha")));
  STORE_ASSERT_OK(store_->CreateApiKey({"key-1", "team-a", "ci", Hash('d'), 1, false}));
  STORE_ASSERT_OK(store_->UpsertPool({"shared", Tier::kShared, "ns", 1.0, 1.0, 0, 0}));
  Node n;
  n.id = "node-1";
  n.pool = "shared";
  STORE_ASSERT_OK(store_->UpsertNode(n));
  Task t = MustCreate(FullTask("sb-1", "team-a", 7));
  t.state = TaskState::kRunning;
  t.node_id = "node-1";
  auto updated = store_->UpdateTask(t);
  STORE_ASSERT_OK(updated);
  Event e;
  e.kind = "policy.reloaded";
  STORE_ASSERT_OK(store_->AppendEvent(e));

  Reopen();
  auto team = store_->GetTeam("team-a");
  STORE_ASSERT_OK(team);
  EXPECT_TRUE(team->has_value());
  auto key = store_->FindApiKey(Hash('d'));
  STORE_ASSERT_OK(key);
  EXPECT_TRUE(key->has_value());
  auto pools = store_->ListPools();
  STORE_ASSERT_OK(pools);
  EXPECT_EQ(pools->size(), 1u);
  auto node = store_->GetNode("node-1");
  STORE_ASSERT_OK(node);
  EXPECT_TRUE(node->has_value());
  auto got = store_->GetTask("sb-1");
  STORE_ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  ExpectSameTask(*updated, **got);
  auto history = store_->TaskHistory("sb-1");
  STORE_ASSERT_OK(history);
  EXPECT_EQ(history->size(), 2u);
  auto events = store_->ListEvents(0, 100);
  STORE_ASSERT_OK(events);
  ASSERT_EQ(events->size(), 2u);
  // Sequence numbers keep increasing after a restart.
  auto seq = store_->AppendEvent(e);
  STORE_ASSERT_OK(seq);
  EXPECT_GT(*seq, events->back().seq);
}

}  // namespace hangar::control::testing
