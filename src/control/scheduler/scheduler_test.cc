#include "hangar/control/scheduler.h"

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace hangar::control {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Pool MakePool(std::string name, double oc_cpu = 1.0, double oc_memory = 1.0,
              int64_t default_iops = 0) {
  Pool p;
  p.name = std::move(name);
  p.overcommit_cpu = oc_cpu;
  p.overcommit_memory = oc_memory;
  p.default_iops = default_iops;
  return p;
}

NodeSpec MakeNode(std::string id, std::string pool, int64_t cpu = 4000, int64_t memory = 8192,
                  int64_t disk = 100000, int64_t iops = 5000, bool schedulable = true) {
  return {std::move(id), std::move(pool), NodeCapacity{cpu, memory, disk, iops}, schedulable};
}

ResourceRequest Req(int64_t cpu, int64_t memory, int64_t disk = 0, int64_t iops = 0) {
  ResourceRequest r;
  r.cpu_millis = cpu;
  r.memory_mb = memory;
  r.disk_mb = disk;
  r.iops = iops;
  return r;
}

PlacementRequest PReq(std::string task, std::string pool, ResourceRequest r, int priority = 0) {
  return {std::move(task), std::move(pool), r, priority};
}

// The sum of the reservations on each node, computed independently of the scheduler's counters.
std::map<std::string, Resources> SumByNode(const Scheduler& s) {
  std::map<std::string, Resources> sum;
  for (const Assignment& a : s.Allocations()) {
    Resources& r = sum[a.node_id];
    r.cpu_millis += a.resources.cpu_millis;
    r.memory_mb += a.resources.memory_mb;
    r.disk_mb += a.resources.disk_mb;
    r.iops += a.resources.iops;
  }
  return sum;
}

void ExpectConsistent(const Scheduler& s) {
  const auto sums = SumByNode(s);
  std::map<std::string, int64_t> counts;
  for (const Assignment& a : s.Allocations()) ++counts[a.node_id];
  for (const NodeView& n : s.Nodes()) {
    auto it = sums.find(n.id);
    const Resources expected = it == sums.end() ? Resources{} : it->second;
    EXPECT_EQ(n.allocated, expected) << n.id;
    EXPECT_EQ(n.tasks, counts[n.id]) << n.id;
    for (ResourceKind k :
         {ResourceKind::kCpu, ResourceKind::kMemory, ResourceKind::kDisk, ResourceKind::kIops}) {
      EXPECT_EQ(n.free.Get(k), n.limit.Get(k) - n.allocated.Get(k)) << n.id;
    }
  }
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(s_.SetPool(MakePool("shared")).ok());
    ASSERT_TRUE(s_.SetPool(MakePool("isolated")).ok());
  }
  Scheduler s_;
};

TEST_F(SchedulerTest, BadInputIsRejectedAndChangesNothing) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "shared")).ok());
  const auto nodes_before = s_.Nodes();
  const auto pools_before = s_.Pools();

  for (double oc : {0.5, 0.999, 4.01, std::nan(""), HUGE_VAL}) {
    Status st = s_.SetPool(MakePool("shared", oc));
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << oc;
    EXPECT_THAT(st.message(), HasSubstr("overcommit_cpu must be within [1.0, 4.0]"));
    EXPECT_EQ(s_.SetPool(MakePool("shared", 1.0, oc)).code(), Code::kInvalidArgument) << oc;
  }
  EXPECT_EQ(s_.SetPool(MakePool("")).code(), Code::kInvalidArgument);
  EXPECT_EQ(s_.SetPool(MakePool("x", 1, 1, -1)).code(), Code::kInvalidArgument);

  Status st = s_.AddOrUpdateNode(MakeNode("node-2", "nope"));
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr("unknown pool 'nope'"));
  st = s_.AddOrUpdateNode(MakeNode("node-1", "shared", -1));
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("cpu_millis must be >= 0"));
  EXPECT_EQ(s_.AddOrUpdateNode(MakeNode("", "shared")).code(), Code::kInvalidArgument);
  EXPECT_EQ(s_.AddOrUpdateNode(MakeNode("node-1", "shared", kMaxAmount + 1)).code(),
            Code::kInvalidArgument);

  struct Bad {
    PlacementRequest req;
    Code code;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {PReq("", "shared", Req(100, 100)), Code::kInvalidArgument, "task_id is empty"},
      {PReq("t", "shared", Req(0, 100)), Code::kInvalidArgument, "cpu_millis must be > 0, got 0"},
      {PReq("t", "shared", Req(100, 0)), Code::kInvalidArgument, "memory_mb must be > 0, got 0"},
      {PReq("t", "shared", Req(-5, 100)), Code::kInvalidArgument, "cpu_millis must be > 0"},
      {PReq("t", "shared", Req(100, 100, -1)), Code::kInvalidArgument, "disk_mb must be >= 0"},
      {PReq("t", "shared", Req(100, 100, 0, -1)), Code::kInvalidArgument, "iops must be >= 0"},
      {PReq("t", "shared", Req(100, kMaxAmount + 1)), Code::kInvalidArgument, "beyond"},
      {PReq("t", "nope", Req(100, 100)), Code::kNotFound, "unknown pool 'nope'"},
      {PReq("t", "shared", Req(64000, 100)), Code::kInvalidArgument,
       "request exceeds the capacity of every node in pool 'shared' (1 node(s)): cpu 64000m > "
       "largest 4000m (node-1)"},
  };
  for (const Bad& b : bad) {
    Result<Placement> p = s_.Place(b.req);
    ASSERT_FALSE(p.ok()) << b.says;
    EXPECT_EQ(p.status().code(), b.code) << p.status().ToString();
    EXPECT_THAT(p.status().message(), HasSubstr(b.says));
  }
  EXPECT_EQ(s_.Release("never-placed").code(), Code::kNotFound);
  EXPECT_EQ(s_.Allocate("t", "node-9", Req(1, 1)).status().code(), Code::kNotFound);
  EXPECT_EQ(s_.RemoveNode("node-9").status().code(), Code::kNotFound);
  EXPECT_EQ(s_.SetSchedulable("node-9", false).code(), Code::kNotFound);
  EXPECT_EQ(s_.Free("node-9").status().code(), Code::kNotFound);

  EXPECT_EQ(s_.Nodes(), nodes_before);
  EXPECT_EQ(s_.Pools(), pools_before);
  EXPECT_TRUE(s_.Allocations().empty());
}

TEST_F(SchedulerTest, ExceedsEveryNodeEvenWhenEachResourceAloneFitsSomeNode) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("cpu-big", "shared", 16000, 1000)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("mem-big", "shared", 1000, 64000)).ok());
  Result<Placement> p = s_.Place(PReq("t", "shared", Req(8000, 32000)));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(p.status().message(),
              HasSubstr("no single node has every resource it asks for at once"));
}

TEST_F(SchedulerTest, BestFitPrefersTheFullerNodeAndExplainsWhy) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-a", "shared")).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-b", "shared")).ok());
  ASSERT_TRUE(s_.Allocate("warm", "node-b", Req(2000, 4096, 1000, 100)).ok());

  Result<Placement> p = s_.Place(PReq("t1", "shared", Req(1000, 1024, 1000, 100)));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->node_id, "node-b");
  EXPECT_EQ(p->nodes_fit, 2);
  EXPECT_EQ(p->reserved, (Resources{1000, 1024, 1000, 100}));
  EXPECT_THAT(p->explanation, StartsWith("best fit (l2-remaining-share) in pool 'shared': 2 of "
                                         "2 ready node(s) fit; after placement node-b has cpu "
                                         "1000m/4000m free, memory 3072MiB/8192MiB free, disk "
                                         "98000MiB/100000MiB free, iops 4800iops/5000iops free; "
                                         "score "));
  // b: .25^2 + .375^2 + .98^2 + .96^2; a: .75^2 + .875^2 + .99^2 + .98^2.
  EXPECT_THAT(p->explanation, HasSubstr("score 2.0851 (lower is better); runner-up node-a 3.2686"));
  EXPECT_NEAR(p->score, 2.085125, 1e-9);
  EXPECT_EQ(*s_.Allocated("node-b"), (Resources{3000, 5120, 2000, 200}));
  EXPECT_EQ(*s_.Free("node-b"), (Resources{1000, 3072, 98000, 4800}));
  EXPECT_EQ(*s_.Allocated("node-a"), Resources{});
}

TEST_F(SchedulerTest, TiesGoToTheSmallestNodeIdWhateverTheInsertionOrder) {
  for (const char* id : {"node-c", "node-a", "node-b"}) {
    ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode(id, "shared")).ok());
  }
  Result<Placement> p = s_.Place(PReq("t1", "shared", Req(100, 100)));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->node_id, "node-a");
}

TEST_F(SchedulerTest, FirstFitTakesTheFirstNodeByIdThatFits) {
  Scheduler ff(SchedulerOptions{Score::kFirstFit, true});
  ASSERT_TRUE(ff.SetPool(MakePool("shared")).ok());
  ASSERT_TRUE(ff.AddOrUpdateNode(MakeNode("node-a", "shared", 1000)).ok());
  ASSERT_TRUE(ff.AddOrUpdateNode(MakeNode("node-b", "shared")).ok());
  ASSERT_TRUE(ff.AddOrUpdateNode(MakeNode("node-c", "shared")).ok());
  ASSERT_TRUE(ff.Allocate("warm", "node-c", Req(3000, 100)).ok());
  Result<Placement> p = ff.Place(PReq("t1", "shared", Req(1000, 100)));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->node_id, "node-a");
  EXPECT_THAT(p->explanation, HasSubstr("node-a is the first node by id of 3 fitting"));
  // node-a is now full on cpu: the next goes to node-b although node-c is fuller.
  p = ff.Place(PReq("t2", "shared", Req(1000, 100)));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->node_id, "node-b");
}

TEST_F(SchedulerTest, ScoresDifferAsDocumented) {
  // node-x: little cpu left, much memory; node-y: both half used. Request dominated by cpu.
  auto run = [](Score score) {
    Scheduler s(SchedulerOptions{score, false});
    EXPECT_TRUE(s.SetPool(MakePool("p")).ok());
    EXPECT_TRUE(s.AddOrUpdateNode(MakeNode("node-x", "p", 4000, 8000, 0, 0)).ok());
    EXPECT_TRUE(s.AddOrUpdateNode(MakeNode("node-y", "p", 4000, 8000, 0, 0)).ok());
    EXPECT_TRUE(s.Allocate("wx", "node-x", Req(2900, 100)).ok());
    EXPECT_TRUE(s.Allocate("wy", "node-y", Req(2000, 4000)).ok());
    Result<Placement> p = s.Place(PReq("t", "p", Req(1000, 100)));
    EXPECT_TRUE(p.ok());
    return p.ok() ? p->node_id : std::string();
  };
  // Dominant (cpu) remaining: x 100/4000 < y 1000/4000.
  EXPECT_EQ(run(Score::kDominantBestFit), "node-x");
  // Max remaining share: x = memory 7800/8000, y = 4000/8000 -> y.
  EXPECT_EQ(run(Score::kMaxRemaining), "node-y");
  // L2: x = .025^2 + .975^2 = .951, y = .25^2 + .4875^2 = .30 -> y.
  EXPECT_EQ(run(Score::kL2Remaining), "node-y");
  EXPECT_EQ(run(Score::kFirstFit), "node-x");
}

TEST_F(SchedulerTest, NoFitSaysWhyPerResource) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-6", "shared")).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-7", "shared")).ok());
  ASSERT_TRUE(s_.Allocate("a", "node-6", Req(3000, 1000)).ok());
  ASSERT_TRUE(s_.Allocate("b", "node-7", Req(2500, 1000)).ok());
  const auto before = s_.Nodes();
  Result<Placement> p = s_.Place(PReq("t", "shared", Req(2000, 1024)));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kResourceExhausted);
  EXPECT_EQ(p.status().message(),
            "no node fits in pool 'shared' (2 ready node(s)): cpu needs 2000m (largest free "
            "1500m on node-7); memory ok (2 of 2 nodes); disk ok (2 of 2 nodes); iops ok (2 of 2 "
            "nodes)");
  EXPECT_EQ(s_.Nodes(), before);
  EXPECT_FALSE(s_.Placed("t"));

  // Each resource fits somewhere, but never together.
  ASSERT_TRUE(s_.Allocate("c", "node-7", Req(100, 7000)).ok());
  p = s_.Place(PReq("t", "shared", Req(1200, 2000)));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kResourceExhausted);
  EXPECT_THAT(p.status().message(), HasSubstr("cpu ok (1 of 2 nodes); memory ok (1 of 2 nodes)"));
  EXPECT_THAT(p.status().message(), HasSubstr("no single node has enough of every resource"));
}

TEST_F(SchedulerTest, EmptyOrUnreadyPoolIsExhaustedNotInvalid) {
  Result<Placement> p = s_.Place(PReq("t", "isolated", Req(100, 100)));
  EXPECT_EQ(p.status().code(), Code::kResourceExhausted);
  EXPECT_EQ(p.status().message(), "no node in pool 'isolated'");

  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("iso-1", "isolated", 4000, 8192, 1000, 100, false)).ok());
  p = s_.Place(PReq("t", "isolated", Req(100, 100)));
  EXPECT_EQ(p.status().code(), Code::kResourceExhausted);
  EXPECT_THAT(p.status().message(), HasSubstr("no ready node in pool 'isolated'"));
}

TEST_F(SchedulerTest, DrainingAndLostNodesReceiveNothing) {
  Node lost;
  lost.id = "node-lost";
  lost.pool = "shared";
  lost.capacity = {64000, 262144, 1000000, 100000};
  lost.status = NodeStatus::kLost;
  Node draining = lost;
  draining.id = "node-draining";
  draining.status = NodeStatus::kDraining;
  Node ready = lost;
  ready.id = "node-ready";
  ready.capacity = {4000, 8192, 100000, 5000};
  ready.status = NodeStatus::kReady;
  for (const Node& n : {lost, draining, ready}) {
    ASSERT_TRUE(s_.AddOrUpdateNode(NodeSpec::Of(n)).ok());
  }
  int placed = 0;
  for (int i = 0; i < 100; ++i) {
    Result<Placement> p = s_.Place(PReq("t" + std::to_string(i), "shared", Req(250, 256)));
    if (!p.ok()) continue;
    ++placed;
    EXPECT_EQ(p->node_id, "node-ready");
  }
  EXPECT_EQ(placed, 16);
  EXPECT_EQ(s_.GetNode("node-lost")->tasks, 0);
  EXPECT_EQ(s_.GetNode("node-draining")->tasks, 0);
  Result<Resources> a = s_.Allocate("x", "node-draining", Req(100, 100));
  EXPECT_EQ(a.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(a.status().message(), HasSubstr("not schedulable"));

  // Drain the ready node too: nothing at all is placed; undrain: placement resumes.
  ASSERT_TRUE(s_.Release("t0").ok());
  ASSERT_TRUE(s_.SetSchedulable("node-ready", false).ok());
  EXPECT_THAT(s_.Place(PReq("y", "shared", Req(100, 100))).status().message(),
              HasSubstr("no ready node in pool 'shared'"));
  ASSERT_TRUE(s_.SetSchedulable("node-ready", true).ok());
  EXPECT_EQ(s_.Place(PReq("y", "shared", Req(100, 100)))->node_id, "node-ready");
}

TEST_F(SchedulerTest, TasksNeverLeaveTheirPool) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("shared-1", "shared", 1000, 1024)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("iso-1", "isolated", 64000, 262144)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("iso-2", "isolated", 64000, 262144)).ok());
  std::set<std::string> shared_nodes;
  int shared_placed = 0;
  for (int i = 0; i < 50; ++i) {
    Result<Placement> p = s_.Place(PReq("s" + std::to_string(i), "shared", Req(100, 100)));
    if (p.ok()) {
      ++shared_placed;
      shared_nodes.insert(p->node_id);
    } else {
      EXPECT_EQ(p.status().code(), Code::kResourceExhausted);
      EXPECT_THAT(p.status().message(), HasSubstr("pool 'shared'"));
    }
    Result<Placement> q = s_.Place(PReq("i" + std::to_string(i), "isolated", Req(100, 100)));
    ASSERT_TRUE(q.ok());
    EXPECT_NE(q->node_id, "shared-1");
  }
  EXPECT_EQ(shared_placed, 10);  // the isolated pool's free room is never borrowed
  EXPECT_EQ(shared_nodes, std::set<std::string>{"shared-1"});
}

TEST_F(SchedulerTest, ATaskIsNeverPlacedTwice) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "shared")).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-2", "shared")).ok());
  ASSERT_TRUE(s_.Place(PReq("t", "shared", Req(1000, 1000))).ok());
  const auto before = s_.Nodes();
  Result<Placement> again = s_.Place(PReq("t", "shared", Req(1000, 1000)));
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("task 't' is already placed on node 'node-1'"));
  EXPECT_EQ(s_.Choose(PReq("t", "shared", Req(1, 1))).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(s_.Allocate("t", "node-2", Req(1000, 1000)).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(s_.Nodes(), before);
  // After release it may be placed again (a requeued task).
  ASSERT_TRUE(s_.Release("t").ok());
  EXPECT_EQ(s_.Release("t").code(), Code::kNotFound);
  EXPECT_TRUE(s_.Place(PReq("t", "shared", Req(1000, 1000))).ok());
}

TEST_F(SchedulerTest, ChooseChangesNothing) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "shared")).ok());
  const auto before = s_.Nodes();
  Result<Placement> c = s_.Choose(PReq("t", "shared", Req(1000, 1000)));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->node_id, "node-1");
  EXPECT_EQ(s_.Nodes(), before);
  EXPECT_FALSE(s_.Placed("t"));
}

TEST_F(SchedulerTest, OvercommitOnlyWhereConfiguredAndBounded) {
  ASSERT_TRUE(s_.SetPool(MakePool("shared", 2.0, 1.5)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("s-1", "shared", 4000, 8000, 1000, 100)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("i-1", "isolated", 4000, 8000, 1000, 100)).ok());
  EXPECT_EQ(s_.GetNode("s-1")->limit, (Resources{8000, 12000, 1000, 100}));
  EXPECT_EQ(s_.GetNode("i-1")->limit, (Resources{4000, 8000, 1000, 100}));

  auto fill = [&](const std::string& pool, ResourceRequest r) {
    int n = 0;
    while (s_.Place(PReq(pool + "-" + std::to_string(n), pool, r)).ok()) ++n;
    return n;
  };
  EXPECT_EQ(fill("shared", Req(1000, 100, 0, 0)), 8);    // cpu x2
  EXPECT_EQ(fill("isolated", Req(1000, 100, 0, 0)), 4);  // none
  Result<Placement> p = s_.Place(PReq("more", "shared", Req(1000, 100)));
  EXPECT_THAT(p.status().message(), HasSubstr("cpu needs 1000m (largest free 0m on s-1)"));
  EXPECT_LE(s_.GetNode("s-1")->allocated.cpu_millis, 8000);

  // Overcommit covers the sum on a node, never one task larger than the node.
  p = s_.Place(PReq("huge", "shared", Req(6000, 100)));
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument);

  // Disk and iops are never over-committed, whatever the pool says about cpu/memory.
  Scheduler s;
  ASSERT_TRUE(s.SetPool(MakePool("p", 4.0, 4.0)).ok());
  ASSERT_TRUE(s.AddOrUpdateNode(MakeNode("n", "p", 4000, 8000, 1000, 100)).ok());
  int n = 0;
  while (s.Place(PReq("d" + std::to_string(n), "p", Req(10, 10, 300, 10))).ok()) ++n;
  EXPECT_EQ(n, 3);
  EXPECT_TRUE(s.Place(PReq("io", "p", Req(10, 10, 0, 70))).ok());
  EXPECT_THAT(s.Place(PReq("io2", "p", Req(10, 10, 0, 1))).status().message(),
              HasSubstr("iops needs 1iops (largest free 0iops on n)"));

  // Lowering overcommit leaves s-1 above its new limit: accounted exactly, receives nothing.
  ASSERT_TRUE(s_.SetPool(MakePool("shared", 1.0, 1.0)).ok());
  EXPECT_EQ(s_.GetNode("s-1")->free.cpu_millis, -4000);
  EXPECT_EQ(s_.Place(PReq("later", "shared", Req(1, 1))).status().code(), Code::kResourceExhausted);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s_.Release("shared-" + std::to_string(i)).ok());
  EXPECT_EQ(s_.GetNode("s-1")->free.cpu_millis, 1000);
  EXPECT_EQ(s_.Place(PReq("later", "shared", Req(1000, 100)))->node_id, "s-1");
}

TEST_F(SchedulerTest, IopsZeroMeansThePoolDefault) {
  ASSERT_TRUE(s_.SetPool(MakePool("shared", 1, 1, 250)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("n", "shared", 4000, 8192, 10000, 1000)).ok());
  Result<Placement> p = s_.Place(PReq("t", "shared", Req(100, 100, 0, 0)));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->reserved.iops, 250);
  EXPECT_EQ(s_.Allocations().at(0).resources.iops, 250);
  EXPECT_EQ(s_.Allocate("u", "n", Req(100, 100, 0, 0))->iops, 250);
  EXPECT_EQ(s_.Allocated("n")->iops, 500);
}

TEST_F(SchedulerTest, RemoveNodeHandsBackItsTasks) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "shared")).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-2", "shared")).ok());
  ASSERT_TRUE(s_.Allocate("b", "node-1", Req(100, 100)).ok());
  ASSERT_TRUE(s_.Allocate("a", "node-1", Req(100, 100)).ok());
  ASSERT_TRUE(s_.Allocate("c", "node-2", Req(100, 100)).ok());
  Result<std::vector<std::string>> gone = s_.RemoveNode("node-1");
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(s_.Placed("a"));
  EXPECT_TRUE(s_.Placed("c"));
  EXPECT_EQ(s_.Release("a").code(), Code::kNotFound);
  EXPECT_EQ(s_.Place(PReq("a", "shared", Req(100, 100)))->node_id, "node-2");
  ExpectConsistent(s_);
}

TEST_F(SchedulerTest, NodeUpdatesKeepAllocationsAndPoolMovesNeedADrainedNode) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "shared")).ok());
  ASSERT_TRUE(s_.Allocate("t", "node-1", Req(1000, 1000)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "shared", 8000)).ok());
  EXPECT_EQ(s_.GetNode("node-1")->allocated.cpu_millis, 1000);
  EXPECT_EQ(s_.GetNode("node-1")->free.cpu_millis, 7000);
  Status st = s_.AddOrUpdateNode(MakeNode("node-1", "isolated"));
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("drain it before moving it to pool 'isolated'"));
  EXPECT_EQ(s_.GetNode("node-1")->pool, "shared");
  ASSERT_TRUE(s_.Release("t").ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("node-1", "isolated")).ok());
  EXPECT_EQ(s_.Place(PReq("u", "isolated", Req(100, 100)))->node_id, "node-1");
  EXPECT_EQ(s_.Place(PReq("v", "shared", Req(100, 100))).status().message(),
            "no node in pool 'shared'");
}

// Property-style: random operations with a fixed seed; after each, the counters equal the sum
// of the reservations, and no successful Place/Allocate takes a node above its limit, a
// non-schedulable node or a node of another pool.
TEST_F(SchedulerTest, RandomOperationsKeepExactAccountingAndLimits) {
  std::mt19937_64 rng(20261129);
  ASSERT_TRUE(s_.SetPool(MakePool("shared", 1.5, 1.25, 100)).ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) {
    ids.push_back("node-" + std::to_string(i));
    ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode(ids.back(), i % 3 == 0 ? "isolated" : "shared",
                                            2000 + 1000 * (i % 4), 4096 * (1 + i % 3), 20000, 2000))
                    .ok());
  }
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  std::vector<std::string> placed;
  int next = 0, placements = 0, rejections = 0;
  auto check_node = [&](const std::string& node_id, const std::string& pool, const Resources& req) {
    Result<NodeView> n = s_.GetNode(node_id);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n->pool, pool);
    EXPECT_TRUE(n->schedulable);
    for (ResourceKind k :
         {ResourceKind::kCpu, ResourceKind::kMemory, ResourceKind::kDisk, ResourceKind::kIops}) {
      EXPECT_LE(n->allocated.Get(k), n->limit.Get(k)) << node_id;
      EXPECT_LE(req.Get(k), n->capacity.Get(k)) << node_id;
    }
  };
  for (int step = 0; step < 4000; ++step) {
    const int64_t op = pick(0, 99);
    if (op < 45) {
      const std::string pool = pick(0, 2) == 0 ? "isolated" : "shared";
      const std::string task = "t" + std::to_string(next++);
      Result<Placement> p = s_.Place(
          PReq(task, pool, Req(pick(1, 3000), pick(1, 6000), pick(0, 5000), pick(0, 600))));
      if (p.ok()) {
        ++placements;
        placed.push_back(task);
        check_node(p->node_id, pool, p->reserved);
      } else {
        ++rejections;
        EXPECT_TRUE(p.status().code() == Code::kResourceExhausted ||
                    p.status().code() == Code::kInvalidArgument)
            << p.status().ToString();
      }
    } else if (op < 60) {
      const std::string& node = ids[pick(0, ids.size() - 1)];
      const std::string task = "t" + std::to_string(next++);
      const auto before = s_.GetNode(node);
      Result<Resources> a =
          s_.Allocate(task, node, Req(pick(1, 2000), pick(1, 3000), pick(0, 3000), pick(1, 400)));
      if (a.ok()) {
        placed.push_back(task);
        check_node(node, before->pool, *a);
      } else {
        EXPECT_EQ(s_.GetNode(node)->allocated, before->allocated);
      }
    } else if (op < 90 && !placed.empty()) {
      const size_t i = pick(0, placed.size() - 1);
      ASSERT_TRUE(s_.Release(placed[i]).ok());
      placed.erase(placed.begin() + i);
    } else if (op < 95) {
      ASSERT_TRUE(s_.SetSchedulable(ids[pick(0, ids.size() - 1)], pick(0, 3) != 0).ok());
    } else if (op < 98) {
      // Capacity reports change (also shrinking below what is allocated).
      const int i = pick(0, ids.size() - 1);
      ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode(ids[i], i % 3 == 0 ? "isolated" : "shared",
                                              pick(1000, 6000), pick(2048, 16384), 20000, 2000))
                      .ok());
    } else {
      ASSERT_TRUE(s_.SetPool(MakePool("shared", 1.0 + pick(0, 3000) / 1000.0, 1.25, 100)).ok());
    }
    ExpectConsistent(s_);
    if (HasFailure()) FAIL() << "at step " << step;
  }
  EXPECT_GT(placements, 500);
  EXPECT_GT(rejections, 50);
  for (const std::string& t : placed) ASSERT_TRUE(s_.Release(t).ok());
  for (const NodeView& n : s_.Nodes()) {
    EXPECT_EQ(n.allocated, Resources{}) << n.id;
    EXPECT_EQ(n.tasks, 0);
    EXPECT_EQ(n.free, n.limit);
  }
  EXPECT_TRUE(s_.Allocations().empty());
}

TEST_F(SchedulerTest, RestoreFromTheListGivesIdenticalState) {
  auto setup = [](Scheduler& s) {
    ASSERT_TRUE(s.SetPool(MakePool("shared", 2.0, 1.0, 50)).ok());
    ASSERT_TRUE(s.SetPool(MakePool("isolated")).ok());
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(s.AddOrUpdateNode(
                       MakeNode("n" + std::to_string(i), i < 4 ? "shared" : "isolated", 4000, 8192))
                      .ok());
    }
  };
  setup(s_);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 60; ++i) {
    const int64_t cpu = 100 + static_cast<int64_t>(rng() % 1500);
    (void)s_.Place(PReq("t" + std::to_string(i), i % 4 == 0 ? "isolated" : "shared",
                        Req(cpu, 100 + static_cast<int64_t>(rng() % 2000), 10,
                            static_cast<int64_t>(rng() % 2) * 30)));
  }
  for (int i = 0; i < 60; i += 3) (void)s_.Release("t" + std::to_string(i));
  const auto list = s_.Allocations();
  ASSERT_GT(list.size(), 20u);

  Scheduler restarted;
  setup(restarted);
  ASSERT_TRUE(restarted.Place(PReq("stale", "shared", Req(100, 100))).ok());
  ASSERT_TRUE(restarted.Restore(list).ok());
  EXPECT_EQ(restarted.Nodes(), s_.Nodes());
  EXPECT_EQ(restarted.Allocations(), list);
  EXPECT_FALSE(restarted.Placed("stale"));
  // And both decide the same from here on.
  for (int i = 100; i < 130; ++i) {
    PlacementRequest r = PReq("t" + std::to_string(i), "shared", Req(300, 500));
    Result<Placement> a = s_.Place(r);
    Result<Placement> b = restarted.Place(r);
    ASSERT_EQ(a.ok(), b.ok());
    if (a.ok()) {
      EXPECT_EQ(a->node_id, b->node_id);
      EXPECT_EQ(a->explanation, b->explanation);
    } else {
      EXPECT_EQ(a.status(), b.status());
    }
  }

  // Bad lists are refused whole.
  const auto nodes_before = restarted.Nodes();
  auto bad = list;
  bad.push_back({"ghost", "n99", Req(1, 1)});
  Status st = restarted.Restore(bad);
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr("unknown node 'n99'"));
  bad = list;
  bad.push_back(list.front());
  st = restarted.Restore(bad);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("appears more than once"));
  EXPECT_EQ(restarted.Nodes(), nodes_before);
}

TEST_F(SchedulerTest, RestoreAcceptsWhatRunsEvenAboveTheLimit) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("n", "shared", 1000, 1000, 0, 0, false)).ok());
  ASSERT_TRUE(s_.Restore({{"a", "n", Req(800, 800)}, {"b", "n", Req(800, 800)}}).ok());
  EXPECT_EQ(s_.GetNode("n")->free, (Resources{-600, -600, 0, 0}));
  ASSERT_TRUE(s_.Release("a").ok());
  EXPECT_EQ(s_.GetNode("n")->free, (Resources{200, 200, 0, 0}));
}

TEST_F(SchedulerTest, BatchOrdersAndStrictHold) {
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("n1", "shared", 4000, 8192)).ok());
  ASSERT_TRUE(s_.AddOrUpdateNode(MakeNode("i1", "isolated", 4000, 8192)).ok());
  const std::vector<PlacementRequest> reqs = {
      PReq("small", "shared", Req(1000, 100), 0),
      PReq("big", "shared", Req(3500, 100), 0),
      PReq("urgent", "shared", Req(2500, 100), 5),
      PReq("iso", "isolated", Req(1000, 100), 0),
  };
  {
    Scheduler s = s_;
    auto out = s.PlaceBatch(reqs);  // given order: small, big fail?, ...
    ASSERT_EQ(out.size(), 4u);
    EXPECT_TRUE(out[0].ok());
    EXPECT_EQ(out[1].status().code(), Code::kResourceExhausted);  // 1000 + 3500 > 4000
    EXPECT_TRUE(out[2].ok());                                     // backfilled behind "big"
    EXPECT_TRUE(out[3].ok());
  }
  {
    Scheduler s = s_;
    auto out = s.PlaceBatch(reqs, {BatchOrder::kPriority, false});
    EXPECT_TRUE(out[2].ok());   // urgent first
    EXPECT_TRUE(out[0].ok());   // then small
    EXPECT_FALSE(out[1].ok());  // big does not fit any more
  }
  {
    Scheduler s = s_;
    auto out = s.PlaceBatch(reqs, {BatchOrder::kDecreasing, false});
    EXPECT_TRUE(out[1].ok());  // big first
    EXPECT_FALSE(out[2].ok());
    EXPECT_FALSE(out[0].ok());  // 3500 + 1000 > 4000
    EXPECT_TRUE(out[3].ok());
  }
  {
    Scheduler s = s_;
    auto out = s.PlaceBatch(reqs, {BatchOrder::kGiven, true});
    EXPECT_TRUE(out[0].ok());
    EXPECT_FALSE(out[1].ok());
    ASSERT_FALSE(out[2].ok());  // held behind big, although it would fit
    EXPECT_EQ(out[2].status().code(), Code::kResourceExhausted);
    EXPECT_EQ(out[2].status().message(),
              "task 'urgent' waits behind task 'big' in pool 'shared' (strict order)");
    EXPECT_FALSE(s.Placed("urgent"));
    EXPECT_TRUE(out[3].ok());  // other pools are not held
  }
}

TEST_F(SchedulerTest, SameCallsSameDecisions) {
  auto run = [](Score score) {
    Scheduler s(SchedulerOptions{score, true});
    EXPECT_TRUE(s.SetPool(MakePool("p", 1.5)).ok());
    for (int i = 0; i < 20; ++i) {
      EXPECT_TRUE(s.AddOrUpdateNode(MakeNode("n" + std::to_string(i), "p")).ok());
    }
    std::mt19937_64 rng(3);
    std::vector<std::string> out;
    for (int i = 0; i < 200; ++i) {
      Result<Placement> p = s.Place(PReq(
          "t" + std::to_string(i), "p",
          Req(1 + static_cast<int64_t>(rng() % 2000), 1 + static_cast<int64_t>(rng() % 3000))));
      out.push_back(p.ok() ? p->explanation : p.status().message());
    }
    return out;
  };
  for (Score score :
       {Score::kFirstFit, Score::kDominantBestFit, Score::kMaxRemaining, Score::kL2Remaining}) {
    EXPECT_EQ(run(score), run(score)) << ScoreName(score);
  }
}

}  // namespace
}  // namespace hangar::control
