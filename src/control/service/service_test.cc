// The control service over a real SQLite store, a FakeClock and in-memory node agents: routing,
// placement, the durable queue, quotas, team scoping, timeouts, lost nodes, restarts.
#include "hangar/control/service.h"

#include <fstream>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "testing/fake_node_client.h"

namespace hangar::control {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kPolicy[] = R"(version: 1
default: shared
rules:
  - name: payments-isolated
    when: 'paths.exists(p, p.matches("services/payments/**"))'
    tier: isolated
  - name: prod-secrets-never-shared
    when: 'secrets.exists(s, s.matches("prod/*"))'
    forbid: [shared]
)";

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Make("hangar-svc-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
    ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/policy.yaml", kPolicy).ok());
    OpenStore();
    StartService();
    auto team = svc_->CreateTeam("alpha", 10);
    ASSERT_TRUE(team.ok()) << team.status().ToString();
    team_ = *team;
  }
  void TearDown() override {
    svc_.reset();
    store_.reset();
  }
  void OpenStore() {
    auto s = OpenSqliteStore(dir_.path() + "/hangar.db");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  void StartService(bool requeue = false) {
    ControlOptions o;
    o.store = store_.get();
    o.nodes = &nodes_;
    o.clock = &clock_;
    o.policy_path = dir_.path() + "/policy.yaml";
    o.log_dir = dir_.path() + "/logs";
    o.run_loop = false;
    o.start_workers = 2;
    o.node_lost_after = seconds(10);
    o.requeue_on_node_lost = requeue;
    o.create_wait = seconds(10);
    o.pools = {{.name = "shared", .tier = Tier::kShared, .driver = "ns"},
               {.name = "hardened", .tier = Tier::kHardened, .driver = "gvisor"},
               {.name = "isolated", .tier = Tier::kIsolated, .driver = "microvm"}};
    auto s = ControlService::Start(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    svc_ = std::move(*s);
  }
  NodeReport Report(const std::string& id, const std::string& pool = "shared", int64_t cpu = 4000) {
    NodeReport r;
    r.node = {.id = id,
              .pool = pool,
              .url = "http://fake",
              .token = "t",
              .drivers = {"ns"},
              .capacity = {.cpu_millis = cpu, .memory_mb = 8192, .disk_mb = 100000, .iops = 10000}};
    r.templates = {"base"};
    r.sandboxes = nodes_.Report(id);
    return r;
  }
  void Beat(const std::string& id, const std::string& pool = "shared", int64_t cpu = 4000) {
    ASSERT_TRUE(svc_->Heartbeat(Report(id, pool, cpu)).ok());
  }
  Result<CreateOutcome> Create(std::function<void(Task&)> edit = nullptr, bool wait = true) {
    CreateRequest r;
    r.task.template_name = "base";
    r.task.resources = {.cpu_millis = 1000, .memory_mb = 512, .disk_mb = 1024};
    r.wait_for_capacity = wait;
    if (edit) edit(r.task);
    return svc_->Create(team_, std::move(r));
  }
  Task Get(const std::string& id) {
    auto t = svc_->Get(team_, id);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? *t : Task{};
  }
  // Waits (real time, bounded) until the start workers moved the task out of `starting`.
  Task Settled(const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      Task t = Get(id);
      if (t.state != TaskState::kStarting) return t;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return Get(id);
  }

  TempDir dir_;
  FakeClock clock_;
  testing::FakeNodeClient nodes_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ControlService> svc_;
  Team team_;
};

TEST_F(ServiceTest, RoutineTaskRunsOnTheSharedNode) {
  Beat("n1");
  auto out = Create();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  Task t = Settled(out->task.id);
  EXPECT_EQ(t.state, TaskState::kRunning) << t.reason;
  EXPECT_EQ(t.tier, Tier::kShared);
  EXPECT_EQ(t.node_id, "n1");
  EXPECT_EQ(nodes_.On("n1").count(t.id), 1u);
  auto spec = nodes_.specs().back();
  EXPECT_EQ(spec["driver"], "ns");
  EXPECT_EQ(spec["resources"]["cpu_millis"], 1000);
  auto h = svc_->History(team_, t.id);
  ASSERT_TRUE(h.ok());
  std::vector<TaskState> states;
  for (const auto& c : *h) states.push_back(c.state);
  EXPECT_EQ(states, (std::vector<TaskState>{TaskState::kPending, TaskState::kStarting,
                                            TaskState::kRunning}));
  auto d = svc_->Explain(team_, t.id);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->rule, "default");
}

TEST_F(ServiceTest, PaymentsTaskWaitsForTheIsolatedTierAndNeverRunsShared) {
  Beat("n1");
  auto out = Create([](Task& t) { t.paths = {"README.md", "services/payments/api.go"}; });
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->task.state, TaskState::kPending);
  EXPECT_EQ(out->task.tier, Tier::kIsolated);
  EXPECT_NE(out->task.reason.find("isolated"), std::string::npos) << out->task.reason;
  // Plenty of shared capacity, many passes: it stays pending.
  for (int i = 0; i < 3; ++i) svc_->Tick();
  EXPECT_EQ(Get(out->task.id).state, TaskState::kPending);
  EXPECT_TRUE(nodes_.On("n1").empty());
  auto d = svc_->Explain(team_, out->task.id);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->rule, "payments-isolated");
  EXPECT_NE(d->explanation.find("services/payments/api.go"), std::string::npos) << d->explanation;
  // An isolated node arrives: the task runs there.
  Beat("vm1", "isolated");
  Task t = Settled(out->task.id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.node_id, "vm1");
  EXPECT_EQ(nodes_.specs().back()["driver"], "microvm");
}

TEST_F(ServiceTest, RequestedTierOnlyRaisesAndForbidsWin) {
  Beat("n1");
  auto weak = Create([](Task& t) {
    t.paths = {"services/payments/x"};
    t.requested_tier = Tier::kShared;
  });
  ASSERT_TRUE(weak.ok());
  EXPECT_EQ(weak->task.tier, Tier::kIsolated);
  auto strong = Create([](Task& t) { t.requested_tier = Tier::kHardened; });
  ASSERT_TRUE(strong.ok());
  EXPECT_EQ(strong->task.tier, Tier::kHardened);
  auto secret = Create([](Task& t) { t.secrets = {"prod/db"}; });
  ASSERT_TRUE(secret.ok());
  EXPECT_EQ(secret->task.tier, Tier::kHardened);
  EXPECT_EQ(secret->task.state, TaskState::kPending);
}

TEST_F(ServiceTest, AnotherTeamsSandboxIsNotFound) {
  Beat("n1");
  auto out = Create();
  ASSERT_TRUE(out.ok());
  auto other = svc_->CreateTeam("beta", 10);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(svc_->Get(*other, out->task.id).status().code(), Code::kNotFound);
  EXPECT_EQ(svc_->Kill(*other, out->task.id).status().code(), Code::kNotFound);
  EXPECT_EQ(svc_->Explain(*other, out->task.id).status().code(), Code::kNotFound);
  auto list = svc_->List(*other, {});
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->tasks.empty());
  EXPECT_EQ(Get(out->task.id).state, TaskState::kRunning);
}

TEST_F(ServiceTest, ApiKeysAuthenticateTheirTeamOnly) {
  auto key = svc_->CreateApiKey(team_.id, "k");
  ASSERT_TRUE(key.ok());
  auto team = svc_->Authenticate(key->first);
  ASSERT_TRUE(team.ok());
  EXPECT_EQ(team->id, team_.id);
  EXPECT_EQ(svc_->Authenticate(key->first + "x").status().code(), Code::kUnauthenticated);
  EXPECT_EQ(svc_->Authenticate("").status().code(), Code::kUnauthenticated);
  // Only the hash is stored.
  auto stored = store_->FindApiKey(key->second.hash_hex);
  ASSERT_TRUE(stored.ok() && *stored);
  EXPECT_EQ((*stored)->hash_hex.find(key->first), std::string::npos);
}

TEST_F(ServiceTest, QueuesWhenFullAndPlacesWhenCapacityReturns) {
  Beat("n1", "shared", 2000);
  auto a = Create(), b = Create(), c = Create();
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(Settled(a->task.id).state, TaskState::kRunning);
  EXPECT_EQ(Settled(b->task.id).state, TaskState::kRunning);
  EXPECT_EQ(c->task.state, TaskState::kPending);
  EXPECT_NE(c->task.reason.find("cpu"), std::string::npos) << c->task.reason;
  // Not waiting: 503-style unavailable, nothing stored.
  auto before = store_->CountActiveTasks(team_.id);
  auto d = Create(nullptr, /*wait=*/false);
  EXPECT_EQ(d.status().code(), Code::kUnavailable);
  EXPECT_EQ(*store_->CountActiveTasks(team_.id), *before);
  // A request no node could ever hold is refused, not queued.
  auto huge = Create([](Task& t) { t.resources.cpu_millis = 64000; });
  EXPECT_EQ(huge.status().code(), Code::kInvalidArgument) << huge.status().ToString();
  // Kill one: the queued task takes its place on the next pass.
  ASSERT_TRUE(svc_->Kill(team_, a->task.id).ok());
  EXPECT_EQ(Get(a->task.id).state, TaskState::kKilled);
  svc_->Tick();
  EXPECT_EQ(Settled(c->task.id).state, TaskState::kRunning);
  EXPECT_FALSE(nodes_.On("n1").count(a->task.id));
}

TEST_F(ServiceTest, QuotaIdempotencyAndTemplates) {
  Beat("n1", "shared", 64000);
  auto first = Create([](Task& t) { t.idempotency_key = "k1"; });
  auto again = Create([](Task& t) { t.idempotency_key = "k1"; });
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(first->task.id, again->task.id);
  EXPECT_EQ(nodes_.creates(), 1);
  auto unknown = Create([](Task& t) { t.template_name = "nope"; });
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  EXPECT_NE(unknown.status().message().find("base"), std::string::npos);
  for (int i = 1; i < 10; ++i) ASSERT_TRUE(Create().ok());
  auto over = Create();
  EXPECT_EQ(over.status().code(), Code::kResourceExhausted) << over.status().ToString();
  // At the quota, a retry of an earlier create still gets its task back.
  auto retry = Create([](Task& t) { t.idempotency_key = "k1"; });
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->task.id, first->task.id);
}

TEST_F(ServiceTest, TimeoutEndsTheTaskAndRemovesTheSandbox) {
  Beat("n1");
  auto out = Create([](Task& t) { t.timeout_s = 30; });
  ASSERT_TRUE(out.ok());
  Task t = Settled(out->task.id);
  ASSERT_EQ(t.state, TaskState::kRunning);
  clock_.Advance(seconds(29));
  Beat("n1");
  svc_->Tick();
  EXPECT_EQ(Get(t.id).state, TaskState::kRunning);
  ASSERT_TRUE(svc_->SetTimeout(team_, t.id, 60).ok());
  clock_.Advance(seconds(30));
  Beat("n1");
  svc_->Tick();
  EXPECT_EQ(Get(t.id).state, TaskState::kRunning);
  clock_.Advance(seconds(31));
  Beat("n1");
  svc_->Tick();
  EXPECT_EQ(Get(t.id).state, TaskState::kTimedOut);
  EXPECT_FALSE(nodes_.On("n1").count(t.id));
}

TEST_F(ServiceTest, LostNodeFailsItsTasks) {
  Beat("n1");
  auto out = Create();
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(Settled(out->task.id).state, TaskState::kRunning);
  clock_.Advance(seconds(11));
  svc_->Tick();
  Task t = Get(out->task.id);
  EXPECT_EQ(t.state, TaskState::kFailed);
  EXPECT_NE(t.reason.find("lost"), std::string::npos);
  auto nodes = svc_->Nodes();
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(nodes->at(0).status, NodeStatus::kLost);
  // It comes back: schedulable again, and the failed task's leftover sandbox is removed.
  Beat("n1");
  svc_->Tick();
  EXPECT_FALSE(nodes_.On("n1").count(t.id));
  auto next = Create();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(Settled(next->task.id).state, TaskState::kRunning);
}

TEST_F(ServiceTest, LostNodeRequeuesWhenConfigured) {
  svc_.reset();
  StartService(/*requeue=*/true);
  Beat("n1");
  auto out = Create();
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(Settled(out->task.id).state, TaskState::kRunning);
  clock_.Advance(seconds(11));
  Beat("n2");
  svc_->Tick();
  Task t = Settled(out->task.id);
  EXPECT_EQ(t.state, TaskState::kRunning);
  EXPECT_EQ(t.node_id, "n2");
}

TEST_F(ServiceTest, OrphansOnNodesAreRemovedAndVanishedSandboxesFail) {
  Beat("n1");
  auto out = Create();
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(Settled(out->task.id).state, TaskState::kRunning);
  nodes_.Inject("n1", "sbstranger", "running");
  nodes_.Remove("n1", out->task.id);
  Beat("n1");
  // One report without it may predate its create: not yet failed.
  EXPECT_EQ(Get(out->task.id).state, TaskState::kRunning);
  svc_->Tick();  // the loop thread removes orphans, never the heartbeat itself
  EXPECT_FALSE(nodes_.On("n1").count("sbstranger"));
  Beat("n1");
  Task t = Get(out->task.id);
  EXPECT_EQ(t.state, TaskState::kFailed);
  EXPECT_NE(t.reason.find("disappeared"), std::string::npos);
}

TEST_F(ServiceTest, NodeRefusalFailsTheTaskWithTheNodesReason) {
  Beat("n1");
  nodes_.FailCreates("n1", Status::NotFound("template 'base' not found on node"));
  auto out = Create();
  ASSERT_TRUE(out.ok());
  Task t = Settled(out->task.id);
  EXPECT_EQ(t.state, TaskState::kFailed);
  EXPECT_NE(t.reason.find("template 'base' not found"), std::string::npos) << t.reason;
  // Its reservation was returned: the node can take a full-size task.
  nodes_.FailCreates("n1", Status::Ok());
}

TEST_F(ServiceTest, TransientNodeFailuresAreRetriedThenFail) {
  Beat("n1");
  nodes_.FailCreates("n1", Status::Unavailable("envd did not come up"));
  auto out = Create();
  ASSERT_TRUE(out.ok());
  Task t;
  for (int i = 0; i < 20 && !IsTerminal(t.state); ++i) {
    svc_->Tick();
    t = Settled(out->task.id);
  }
  EXPECT_EQ(t.state, TaskState::kFailed);
  EXPECT_NE(t.reason.find("3 attempts"), std::string::npos) << t.reason;
  EXPECT_EQ(nodes_.creates(), 3);
}

TEST_F(ServiceTest, CommandTaskRecordsOutputAndExitCode) {
  Beat("n1");
  nodes_.SetExecScript({.output = {{"stdout", "aGVsbG8K"}}, .exit_code = 3});
  auto out = Create([](Task& t) { t.command = {"/bin/sh", "-c", "echo hello; exit 3"}; });
  ASSERT_TRUE(out.ok());
  Task t;
  for (int i = 0; i < 500; ++i) {
    t = Get(out->task.id);
    if (IsTerminal(t.state)) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(t.state, TaskState::kExited);
  ASSERT_TRUE(t.exit_code.has_value());
  EXPECT_EQ(*t.exit_code, 3);
  auto log = ReadFile(svc_->LogPath(t.id));
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("aGVsbG8K"), std::string::npos);
  EXPECT_NE(log->find("\"exit_code\":3"), std::string::npos);
  svc_->Tick();  // joins the finished runner
  EXPECT_FALSE(nodes_.On("n1").count(t.id));
}

TEST_F(ServiceTest, RestartKeepsTheQueueAndTheReservations) {
  Beat("n1", "shared", 2000);
  auto a = Create(), b = Create(), c = Create();
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_EQ(Settled(b->task.id).state, TaskState::kRunning);
  ASSERT_EQ(c->task.state, TaskState::kPending);
  svc_.reset();
  store_.reset();
  OpenStore();
  StartService();
  // Still full after the restart: the reservations were restored exactly.
  Beat("n1", "shared", 2000);
  EXPECT_EQ(Get(c->task.id).state, TaskState::kPending);
  EXPECT_EQ(Get(a->task.id).state, TaskState::kRunning);
  ASSERT_TRUE(svc_->Kill(team_, a->task.id).ok());
  svc_->Tick();
  EXPECT_EQ(Settled(c->task.id).state, TaskState::kRunning);
  EXPECT_EQ(nodes_.creates(), 3);  // each task created once
}

TEST_F(ServiceTest, StartInterruptedByARestartIsResolvedAtTheNextHeartbeat) {
  Beat("n1");
  auto out = Create();
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(Settled(out->task.id).state, TaskState::kRunning);
  // Make it look as if the process died between placing and the node's answer.
  auto cur = store_->GetTask(out->task.id);
  ASSERT_TRUE(cur.ok() && *cur);
  Task t = **cur;
  t.state = TaskState::kStarting;
  ASSERT_TRUE(store_->UpdateTask(t).ok());
  // Another one placed but never created on the node.
  auto other = Create();
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(Settled(other->task.id).state, TaskState::kRunning);
  nodes_.Remove("n1", other->task.id);
  auto cur2 = store_->GetTask(other->task.id);
  Task t2 = **cur2;
  t2.state = TaskState::kStarting;
  ASSERT_TRUE(store_->UpdateTask(t2).ok());
  svc_.reset();
  StartService();
  Beat("n1");
  EXPECT_EQ(Get(out->task.id).state, TaskState::kRunning);        // the node has it
  EXPECT_EQ(Settled(other->task.id).state, TaskState::kRunning);  // requeued, then started
  EXPECT_EQ(nodes_.On("n1").size(), 2u);
}

TEST_F(ServiceTest, InvalidPolicyReloadKeepsTheOldOne) {
  std::string before = svc_->PolicyVersion();
  ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/policy.yaml", "version: 1\nrules: [\n").ok());
  Status st = svc_->ReloadPolicy();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(":"), std::string::npos);
  EXPECT_EQ(svc_->PolicyVersion(), before);
  ASSERT_TRUE(
      WriteFileAtomic(dir_.path() + "/policy.yaml", "version: 1\ndefault: hardened\n").ok());
  ASSERT_TRUE(svc_->ReloadPolicy().ok());
  EXPECT_NE(svc_->PolicyVersion(), before);
  auto out = Create();
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->task.tier, Tier::kHardened);
}

}  // namespace
}  // namespace hangar::control
