// Scheduler: places tasks on nodes of a pool, packing over four resources (cpu, memory, disk,
// iops), with exact integer capacity accounting and an explanation of every decision.
//
// Contract:
//  - Pure and deterministic: no clocks, no I/O, no globals, no randomness. The same sequence of
//    calls gives the same placements, scores and messages on every run, so the control service,
//    the autoscaler's what-if and the discrete-event simulator share this one implementation.
//  - Pool isolation: a request names one pool and lands only on a node of that pool. Tiers are
//    the caller's business (the service only ever asks for pools of the task's tier).
//  - Only schedulable nodes (ready and not draining) receive tasks. A task is placed at most
//    once: Place/Allocate of a task id that holds an allocation fails with AlreadyExists.
//  - Accounting is exact (int64): a node's allocated amounts are the sum of the requests of the
//    tasks on it, and Release returns exactly what was reserved.
//  - Capacity: on every successful Place/Allocate, for every resource r of the chosen node,
//    request_r <= capacity_r and allocated_r <= limit_r, where limit = capacity for disk and
//    iops and floor(capacity x overcommit) for cpu and memory, with the pool's overcommit in
//    [1.0, 4.0] (default 1.0, i.e. none). Overcommit bounds the sum on a node, never one task.
//    A node may end up above its limit only by what the caller reports (a smaller capacity in
//    AddOrUpdateNode, a lower overcommit in SetPool, or Restore of what is really running); it
//    then receives nothing until it is back under its limit.
//  - iops 0 in a request means the pool's default_iops (model.h); every entry point (Place,
//    Allocate, Restore) resolves it the same way and reports the resolved amounts, which the
//    caller should store so a restart reproduces the accounting exactly. io_bps is not packed.
//  - Errors: InvalidArgument for a malformed request or node (negative or absurd amounts, zero
//    cpu or memory, empty ids) and for a request no node of the pool could hold even when empty
//    (the API rejects it instead of queueing it forever); NotFound for an unknown pool, node or
//    task; AlreadyExists for a task already placed; ResourceExhausted when nothing fits now
//    (the message says why, per resource); FailedPrecondition when state forbids the call.
//    A failed call changes nothing.
// Thread safety: none inside. One owner mutates (the service's scheduling loop); const methods
// may run concurrently with each other only.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hangar/base/status.h"
#include "hangar/control/model.h"

namespace hangar::control {

enum class ResourceKind { kCpu = 0, kMemory = 1, kDisk = 2, kIops = 3 };
inline constexpr int kResourceKinds = 4;
std::string_view ResourceName(ResourceKind kind);  // "cpu" | "memory" | "disk" | "iops"
// An amount with its unit, as messages show it: "2000m", "512MiB", "20000iops".
std::string FormatAmount(ResourceKind kind, int64_t amount);

// The largest amount accepted anywhere (capacity, request): 2^50. Beyond it is a caller's bug,
// and keeping amounts this small keeps every sum of them far from int64 overflow.
inline constexpr int64_t kMaxAmount = int64_t{1} << 50;

// The four packed resources as one value; indexable by ResourceKind.
struct Resources {
  int64_t cpu_millis = 0;
  int64_t memory_mb = 0;
  int64_t disk_mb = 0;
  int64_t iops = 0;

  int64_t Get(ResourceKind kind) const;
  static Resources Of(const NodeCapacity& capacity);
  static Resources Of(const ResourceRequest& request);  // drops io_bps
  friend bool operator==(const Resources&, const Resources&) = default;
};

// A node as the scheduler sees it.
struct NodeSpec {
  std::string id;
  std::string pool;
  NodeCapacity capacity;
  bool schedulable = true;  // ready and not draining
  // From the store's record: schedulable iff status is kReady.
  static NodeSpec Of(const Node& node);
};

// What the scheduler knows about a node now.
struct NodeView {
  std::string id;
  std::string pool;
  bool schedulable = true;
  Resources capacity;
  Resources limit;      // capacity with the pool's overcommit applied (cpu, memory)
  Resources allocated;  // exact sum of the requests placed on it
  Resources free;       // limit - allocated; negative when the node is above its limit
  int64_t tasks = 0;
  friend bool operator==(const NodeView&, const NodeView&) = default;
};

// One task's reservation: what Allocations() lists and Restore() takes.
struct Assignment {
  std::string task_id;
  std::string node_id;
  ResourceRequest resources;  // as reserved (iops resolved); io_bps kept as given
  friend bool operator==(const Assignment&, const Assignment&) = default;
};

struct PlacementRequest {
  std::string task_id;
  std::string pool;
  ResourceRequest resources;
  int priority = 0;  // only BatchOrder::kPriority reads it; higher first
};

struct Placement {
  std::string task_id;
  std::string node_id;
  Resources reserved;       // iops resolved; what Release will return
  double score = 0;         // lower is better (see Score)
  int nodes_fit = 0;        // schedulable nodes of the pool where it fitted
  std::string explanation;  // why this node, for people and the event log
};

// How a node that fits is scored; the lowest score wins, ties go to the smallest node id.
// Shares are of the node's limit, taken after placement: s_r = (free_r - request_r) / limit_r.
enum class Score {
  kFirstFit,         // 0 for every node: the first node (by id) that fits
  kDominantBestFit,  // s_d, d = the request's dominant resource on that node
  kMaxRemaining,     // max_r s_r
  kL2Remaining,      // sum_r s_r^2 (default: packs best on the bench workload, ADR 0006)
};
std::string_view ScoreName(Score score);

enum class BatchOrder {
  kGiven,       // exactly as given: the service passes its FIFO-within-priority queue
  kPriority,    // stable by priority desc, FIFO within a priority
  kDecreasing,  // by dominant share of the pool's largest node, desc (FFD/BFD); what-if only
};

struct BatchOptions {
  BatchOrder order = BatchOrder::kGiven;
  // After a request of pool P finds no room, later requests of P are not tried (strict order,
  // no backfill) and fail with ResourceExhausted naming the task they wait behind.
  bool hold_pool_on_no_fit = false;
};

struct SchedulerOptions {
  Score score = Score::kL2Remaining;
  bool explain = true;  // build Placement::explanation (the service wants it; sims may not)
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {});

  // Pools. The scheduler uses the name, overcommit_cpu, overcommit_memory and default_iops.
  // Overcommit must be finite and in [1.0, 4.0] (it is kept to 1/1000); default_iops >= 0.
  Status SetPool(const Pool& pool);

  // Nodes. The pool must be known (NotFound). A node keeps its allocations across updates; it
  // cannot move to another pool while it holds tasks (FailedPrecondition: drain it first).
  Status AddOrUpdateNode(const NodeSpec& node);
  // Forgets the node and the allocations on it; returns their task ids (sorted), which the
  // caller requeues.
  Result<std::vector<std::string>> RemoveNode(std::string_view node_id);
  Status SetSchedulable(std::string_view node_id, bool schedulable);

  // Chooses a node without changing anything (what-if).
  Result<Placement> Choose(const PlacementRequest& request) const;
  // Chooses a node and reserves the request on it.
  Result<Placement> Place(const PlacementRequest& request);
  // Places each request in the order asked; results are aligned with `requests`.
  std::vector<Result<Placement>> PlaceBatch(const std::vector<PlacementRequest>& requests,
                                            BatchOptions options = {});

  // Reserves `request` for `task_id` on `node_id` (the node must be schedulable and it must
  // fit). Returns what was reserved.
  Result<Resources> Allocate(std::string_view task_id, std::string_view node_id,
                             const ResourceRequest& request);
  // Returns exactly what the task reserved; NotFound for a task that holds nothing.
  Status Release(std::string_view task_id);

  // Rebuilds every allocation from the store's list after a restart: replaces the current
  // allocations with `assignments` (iops 0 resolved as in Place). Limits are not enforced
  // (what runs, runs) but nodes must exist and task ids be unique. All or nothing.
  Status Restore(const std::vector<Assignment>& assignments);

  Result<Resources> Free(std::string_view node_id) const;
  Result<Resources> Allocated(std::string_view node_id) const;
  Result<NodeView> GetNode(std::string_view node_id) const;
  std::vector<NodeView> Nodes() const;          // sorted by id
  std::vector<Assignment> Allocations() const;  // sorted by task id
  std::vector<Pool> Pools() const;              // sorted by name; only the fields used
  bool Placed(std::string_view task_id) const;

  const SchedulerOptions& options() const { return options_; }

 private:
  using Amounts = std::array<int64_t, kResourceKinds>;
  struct NodeSlot {
    // Hot: read by every scan.
    Amounts free{};
    std::array<double, kResourceKinds> inv_limit{};  // 1 / limit_r, 0 when limit_r is 0
    Amounts capacity{};
    bool schedulable = true;
    // Cold.
    Amounts limit{};
    Amounts allocated{};
    int64_t tasks = 0;
    std::string id;
  };
  struct PoolState {
    Pool pool;
    int64_t overcommit_milli_cpu = 1000;
    int64_t overcommit_milli_memory = 1000;
    std::vector<NodeSlot> nodes;  // sorted by id
  };
  struct Reservation {
    std::string node_id;
    ResourceRequest request;  // as given, iops resolved
    Amounts amounts{};
  };
  struct Choice {
    int index = -1;  // into PoolState::nodes
    double score = 0;
    int fit = 0;
    int runner_up = -1;
    double runner_up_score = 0;
  };

  PoolState* FindPool(std::string_view name);
  const PoolState* FindPool(std::string_view name) const;
  NodeSlot* FindNode(std::string_view node_id, PoolState** pool = nullptr);
  const NodeSlot* FindNode(std::string_view node_id, const PoolState** pool = nullptr) const;
  static void Recompute(const PoolState& pool, NodeSlot& node);
  static NodeView View(const PoolState& pool, const NodeSlot& node);
  Result<ResourceRequest> Resolve(const PoolState& pool, const ResourceRequest& request) const;
  Choice Scan(const PoolState& pool, const Amounts& need) const;
  Status NoFit(const PoolState& pool, const Amounts& need) const;
  std::string Explain(const PoolState& pool, const Choice& choice, const Amounts& need) const;
  void Reserve(NodeSlot& node, std::string_view task_id, const ResourceRequest& request,
               const Amounts& need);
  Result<Placement> ChooseIn(const PoolState& pool, const PlacementRequest& request,
                             ResourceRequest* resolved) const;

  SchedulerOptions options_;
  std::map<std::string, PoolState, std::less<>> pools_;
  std::unordered_map<std::string, std::string> node_pool_;     // node id -> pool name
  std::unordered_map<std::string, Reservation> reservations_;  // task id -> reservation
};

}  // namespace hangar::control
