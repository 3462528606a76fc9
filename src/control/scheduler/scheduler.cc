#include "hangar/control/scheduler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <utility>

#include <fmt/format.h>

namespace hangar::control {
namespace {

constexpr std::array<ResourceKind, kResourceKinds> kKinds = {
    ResourceKind::kCpu, ResourceKind::kMemory, ResourceKind::kDisk, ResourceKind::kIops};

using Amounts = std::array<int64_t, kResourceKinds>;

Amounts ToAmounts(const Resources& r) { return {r.cpu_millis, r.memory_mb, r.disk_mb, r.iops}; }
Resources ToResources(const Amounts& a) { return {a[0], a[1], a[2], a[3]}; }
Amounts ToAmounts(const ResourceRequest& r) {
  return {r.cpu_millis, r.memory_mb, r.disk_mb, r.iops};
}

Status CheckAmount(std::string_view what, std::string_view field, int64_t value) {
  if (value < 0) {
    return Status::InvalidArgument(fmt::format("{}: {} must be >= 0, got {}", what, field, value));
  }
  if (value > kMaxAmount) {
    return Status::InvalidArgument(fmt::format(
        "{}: {} = {} is beyond the largest accepted amount {}", what, field, value, kMaxAmount));
  }
  return Status::Ok();
}

Status CheckCapacity(std::string_view node_id, const NodeCapacity& c) {
  const std::string what = fmt::format("node '{}' capacity", node_id);
  HANGAR_TRY(CheckAmount(what, "cpu_millis", c.cpu_millis));
  HANGAR_TRY(CheckAmount(what, "memory_mb", c.memory_mb));
  HANGAR_TRY(CheckAmount(what, "disk_mb", c.disk_mb));
  HANGAR_TRY(CheckAmount(what, "iops", c.iops));
  return Status::Ok();
}

// Validates a request as given (before iops is resolved).
Status CheckRequest(std::string_view task_id, const ResourceRequest& r) {
  if (task_id.empty()) return Status::InvalidArgument("request: task_id is empty");
  const std::string what = fmt::format("task '{}' request", task_id);
  if (r.cpu_millis <= 0) {
    return Status::InvalidArgument(
        fmt::format("{}: cpu_millis must be > 0, got {}", what, r.cpu_millis));
  }
  if (r.memory_mb <= 0) {
    return Status::InvalidArgument(
        fmt::format("{}: memory_mb must be > 0, got {}", what, r.memory_mb));
  }
  HANGAR_TRY(CheckAmount(what, "cpu_millis", r.cpu_millis));
  HANGAR_TRY(CheckAmount(what, "memory_mb", r.memory_mb));
  HANGAR_TRY(CheckAmount(what, "disk_mb", r.disk_mb));
  HANGAR_TRY(CheckAmount(what, "iops", r.iops));
  HANGAR_TRY(CheckAmount(what, "io_bps", r.io_bps));
  return Status::Ok();
}

// "cpu 500m/16000m free"
std::string FreeOf(ResourceKind kind, int64_t free, int64_t limit) {
  return fmt::format("{} {}/{} free", ResourceName(kind), FormatAmount(kind, free),
                     FormatAmount(kind, limit));
}

}  // namespace

std::string_view ResourceName(ResourceKind kind) {
  switch (kind) {
    case ResourceKind::kCpu:
      return "cpu";
    case ResourceKind::kMemory:
      return "memory";
    case ResourceKind::kDisk:
      return "disk";
    case ResourceKind::kIops:
      return "iops";
  }
  return "?";
}

std::string FormatAmount(ResourceKind kind, int64_t amount) {
  switch (kind) {
    case ResourceKind::kCpu:
      return fmt::format("{}m", amount);
    case ResourceKind::kMemory:
    case ResourceKind::kDisk:
      return fmt::format("{}MiB", amount);
    case ResourceKind::kIops:
      return fmt::format("{}iops", amount);
  }
  return std::to_string(amount);
}

std::string_view ScoreName(Score score) {
  switch (score) {
    case Score::kFirstFit:
      return "first-fit";
    case Score::kDominantBestFit:
      return "dominant-best-fit";
    case Score::kMaxRemaining:
      return "max-remaining-share";
    case Score::kL2Remaining:
      return "l2-remaining-share";
  }
  return "?";
}

int64_t Resources::Get(ResourceKind kind) const { return ToAmounts(*this)[static_cast<int>(kind)]; }

Resources Resources::Of(const NodeCapacity& c) {
  return {c.cpu_millis, c.memory_mb, c.disk_mb, c.iops};
}

Resources Resources::Of(const ResourceRequest& r) {
  return {r.cpu_millis, r.memory_mb, r.disk_mb, r.iops};
}

NodeSpec NodeSpec::Of(const Node& node) {
  return {node.id, node.pool, node.capacity, node.status == NodeStatus::kReady};
}

Scheduler::Scheduler(SchedulerOptions options) : options_(options) {}

// ---- lookup ---------------------------------------------------------------------------------

Scheduler::PoolState* Scheduler::FindPool(std::string_view name) {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : &it->second;
}

const Scheduler::PoolState* Scheduler::FindPool(std::string_view name) const {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : &it->second;
}

Scheduler::NodeSlot* Scheduler::FindNode(std::string_view node_id, PoolState** pool) {
  const PoolState* const_pool = nullptr;
  const NodeSlot* slot = std::as_const(*this).FindNode(node_id, &const_pool);
  if (pool != nullptr) *pool = const_cast<PoolState*>(const_pool);
  return const_cast<NodeSlot*>(slot);
}

const Scheduler::NodeSlot* Scheduler::FindNode(std::string_view node_id,
                                               const PoolState** pool) const {
  auto it = node_pool_.find(std::string(node_id));
  if (it == node_pool_.end()) return nullptr;
  const PoolState* p = FindPool(it->second);
  assert(p != nullptr);
  auto n = std::lower_bound(p->nodes.begin(), p->nodes.end(), node_id,
                            [](const NodeSlot& s, std::string_view id) { return s.id < id; });
  assert(n != p->nodes.end() && n->id == node_id);
  if (pool != nullptr) *pool = p;
  return &*n;
}

void Scheduler::Recompute(const PoolState& pool, NodeSlot& node) {
  node.limit = node.capacity;
  node.limit[0] = node.capacity[0] * pool.overcommit_milli_cpu / 1000;
  node.limit[1] = node.capacity[1] * pool.overcommit_milli_memory / 1000;
  for (int r = 0; r < kResourceKinds; ++r) {
    node.free[r] = node.limit[r] - node.allocated[r];
    node.inv_limit[r] = node.limit[r] > 0 ? 1.0 / static_cast<double>(node.limit[r]) : 0.0;
  }
}

NodeView Scheduler::View(const PoolState& pool, const NodeSlot& node) {
  return {node.id,
          pool.pool.name,
          node.schedulable,
          ToResources(node.capacity),
          ToResources(node.limit),
          ToResources(node.allocated),
          ToResources(node.free),
          node.tasks};
}

// ---- pools and nodes ------------------------------------------------------------------------

Status Scheduler::SetPool(const Pool& pool) {
  if (pool.name.empty()) return Status::InvalidArgument("pool: name is empty");
  auto milli = [&](std::string_view field, double value) -> Result<int64_t> {
    if (!std::isfinite(value) || value < 1.0 || value > 4.0) {
      return Status::InvalidArgument(
          fmt::format("pool '{}': {} must be within [1.0, 4.0], got {}", pool.name, field, value));
    }
    return static_cast<int64_t>(std::llround(value * 1000.0));
  };
  HANGAR_ASSIGN_OR_RETURN(int64_t cpu, milli("overcommit_cpu", pool.overcommit_cpu));
  HANGAR_ASSIGN_OR_RETURN(int64_t memory, milli("overcommit_memory", pool.overcommit_memory));
  HANGAR_TRY(CheckAmount(fmt::format("pool '{}'", pool.name), "default_iops", pool.default_iops));

  auto [it, inserted] = pools_.try_emplace(pool.name);
  PoolState& state = it->second;
  state.pool = Pool{};
  state.pool.name = pool.name;
  state.pool.tier = pool.tier;
  state.pool.driver = pool.driver;
  state.pool.overcommit_cpu = static_cast<double>(cpu) / 1000.0;
  state.pool.overcommit_memory = static_cast<double>(memory) / 1000.0;
  state.pool.default_iops = pool.default_iops;
  state.overcommit_milli_cpu = cpu;
  state.overcommit_milli_memory = memory;
  for (NodeSlot& node : state.nodes) Recompute(state, node);
  return Status::Ok();
}

Status Scheduler::AddOrUpdateNode(const NodeSpec& spec) {
  if (spec.id.empty()) return Status::InvalidArgument("node: id is empty");
  if (spec.pool.empty()) {
    return Status::InvalidArgument(fmt::format("node '{}': pool is empty", spec.id));
  }
  HANGAR_TRY(CheckCapacity(spec.id, spec.capacity));
  PoolState* target = FindPool(spec.pool);
  if (target == nullptr) {
    return Status::NotFound(fmt::format("node '{}': unknown pool '{}'", spec.id, spec.pool));
  }
  PoolState* current_pool = nullptr;
  NodeSlot* current = FindNode(spec.id, &current_pool);
  if (current != nullptr && current_pool == target) {
    current->capacity = ToAmounts(Resources::Of(spec.capacity));
    current->schedulable = spec.schedulable;
    Recompute(*target, *current);
    return Status::Ok();
  }
  if (current != nullptr) {
    if (current->tasks > 0) {
      return Status::FailedPrecondition(
          fmt::format("node '{}' holds {} task(s) in pool '{}'; drain it before moving it to "
                      "pool '{}'",
                      spec.id, current->tasks, current_pool->pool.name, spec.pool));
    }
    auto& old = current_pool->nodes;
    old.erase(old.begin() + (current - old.data()));
  }
  NodeSlot slot;
  slot.id = spec.id;
  slot.capacity = ToAmounts(Resources::Of(spec.capacity));
  slot.schedulable = spec.schedulable;
  Recompute(*target, slot);
  auto pos = std::lower_bound(target->nodes.begin(), target->nodes.end(), spec.id,
                              [](const NodeSlot& s, const std::string& id) { return s.id < id; });
  target->nodes.insert(pos, std::move(slot));
  node_pool_[spec.id] = spec.pool;
  return Status::Ok();
}

Result<std::vector<std::string>> Scheduler::RemoveNode(std::string_view node_id) {
  PoolState* pool = nullptr;
  NodeSlot* node = FindNode(node_id, &pool);
  if (node == nullptr) return Status::NotFound(fmt::format("unknown node '{}'", node_id));
  std::vector<std::string> tasks;
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    if (it->second.node_id == node_id) {
      tasks.push_back(it->first);
      it = reservations_.erase(it);
    } else {
      ++it;
    }
  }
  std::sort(tasks.begin(), tasks.end());
  pool->nodes.erase(pool->nodes.begin() + (node - pool->nodes.data()));
  node_pool_.erase(std::string(node_id));
  return tasks;
}

Status Scheduler::SetSchedulable(std::string_view node_id, bool schedulable) {
  NodeSlot* node = FindNode(node_id);
  if (node == nullptr) return Status::NotFound(fmt::format("unknown node '{}'", node_id));
  node->schedulable = schedulable;
  return Status::Ok();
}

// ---- placement ------------------------------------------------------------------------------

Result<ResourceRequest> Scheduler::Resolve(const PoolState& pool,
                                           const ResourceRequest& request) const {
  ResourceRequest resolved = request;
  if (resolved.iops == 0) resolved.iops = pool.pool.default_iops;
  return resolved;
}

// The hot loop: one pass over the pool's nodes, integer fit test, floating score on fits only.
Scheduler::Choice Scheduler::Scan(const PoolState& pool, const Amounts& need) const {
  Choice c;
  const Score score = options_.score;
  const int n = static_cast<int>(pool.nodes.size());
  const NodeSlot* nodes = pool.nodes.data();
  for (int i = 0; i < n; ++i) {
    const NodeSlot& s = nodes[i];
    if (!s.schedulable) continue;
    bool fits = true;
    for (int r = 0; r < kResourceKinds; ++r) {
      fits &= (need[r] <= s.free[r]) & (need[r] <= s.capacity[r]);
    }
    if (!fits) continue;
    ++c.fit;
    double v = 0;
    switch (score) {
      case Score::kFirstFit:
        break;
      case Score::kDominantBestFit: {
        double dominant = -1;
        for (int r = 0; r < kResourceKinds; ++r) {
          const double share = static_cast<double>(need[r]) * s.inv_limit[r];
          if (share > dominant) {
            dominant = share;
            v = static_cast<double>(s.free[r] - need[r]) * s.inv_limit[r];
          }
        }
        break;
      }
      case Score::kMaxRemaining:
        for (int r = 0; r < kResourceKinds; ++r) {
          v = std::max(v, static_cast<double>(s.free[r] - need[r]) * s.inv_limit[r]);
        }
        break;
      case Score::kL2Remaining:
        for (int r = 0; r < kResourceKinds; ++r) {
          const double rem = static_cast<double>(s.free[r] - need[r]) * s.inv_limit[r];
          v += rem * rem;
        }
        break;
    }
    // Strictly lower wins: nodes are sorted by id, so ties keep the smallest id.
    if (c.index < 0 || v < c.score) {
      c.runner_up = c.index;
      c.runner_up_score = c.score;
      c.index = i;
      c.score = v;
    } else if (c.runner_up < 0 || v < c.runner_up_score) {
      c.runner_up = i;
      c.runner_up_score = v;
    }
  }
  return c;
}

// Why nothing fits, per resource. Runs only on failure, so it may take a second pass.
Status Scheduler::NoFit(const PoolState& pool, const Amounts& need) const {
  const std::string& name = pool.pool.name;
  if (pool.nodes.empty()) {
    return Status::ResourceExhausted(fmt::format("no node in pool '{}'", name));
  }
  // Could any node of the pool hold it when empty?
  bool ever = false;
  for (const NodeSlot& s : pool.nodes) {
    bool fits = true;
    for (int r = 0; r < kResourceKinds; ++r) {
      fits = fits && need[r] <= s.capacity[r] && need[r] <= s.limit[r];
    }
    ever = ever || fits;
  }
  if (!ever) {
    std::string msg = fmt::format(
        "request exceeds the capacity of every node in pool '{}' ({} "
        "node(s)):",
        name, pool.nodes.size());
    bool any_alone = false;
    for (int r = 0; r < kResourceKinds; ++r) {
      const NodeSlot* largest = nullptr;
      for (const NodeSlot& s : pool.nodes) {
        if (largest == nullptr || s.capacity[r] > largest->capacity[r]) largest = &s;
      }
      const ResourceKind kind = kKinds[r];
      if (need[r] > largest->capacity[r]) {
        any_alone = true;
        msg += fmt::format(" {} {} > largest {} ({});", ResourceName(kind),
                           FormatAmount(kind, need[r]), FormatAmount(kind, largest->capacity[r]),
                           largest->id);
      }
    }
    if (!any_alone) msg += " no single node has every resource it asks for at once;";
    msg.pop_back();
    return Status::InvalidArgument(std::move(msg));
  }
  int ready = 0;
  for (const NodeSlot& s : pool.nodes) ready += s.schedulable ? 1 : 0;
  if (ready == 0) {
    return Status::ResourceExhausted(fmt::format(
        "no ready node in pool '{}' ({} node(s), all draining or lost)", name, pool.nodes.size()));
  }
  std::string msg = fmt::format("no node fits in pool '{}' ({} ready node(s)):", name, ready);
  bool all_ok = true;
  for (int r = 0; r < kResourceKinds; ++r) {
    const ResourceKind kind = kKinds[r];
    int count = 0;
    const NodeSlot* largest = nullptr;
    int64_t largest_free = 0;
    for (const NodeSlot& s : pool.nodes) {
      if (!s.schedulable) continue;
      const int64_t usable = std::min(s.free[r], s.capacity[r]);
      if (need[r] <= usable) ++count;
      if (largest == nullptr || usable > largest_free) {
        largest = &s;
        largest_free = usable;
      }
    }
    if (count > 0) {
      msg += fmt::format(" {} ok ({} of {} nodes);", ResourceName(kind), count, ready);
    } else {
      all_ok = false;
      msg +=
          fmt::format(" {} needs {} (largest free {} on {});", ResourceName(kind),
                      FormatAmount(kind, need[r]), FormatAmount(kind, largest_free), largest->id);
    }
  }
  if (all_ok) msg += " no single node has enough of every resource at once;";
  msg.pop_back();
  return Status::ResourceExhausted(std::move(msg));
}

std::string Scheduler::Explain(const PoolState& pool, const Choice& c, const Amounts& need) const {
  const NodeSlot& s = pool.nodes[c.index];
  int ready = 0;
  for (const NodeSlot& n : pool.nodes) ready += n.schedulable ? 1 : 0;
  std::string out;
  if (options_.score == Score::kFirstFit) {
    out =
        fmt::format("first fit in pool '{}': {} is the first node by id of {} fitting ({} ready);",
                    pool.pool.name, s.id, c.fit, ready);
  } else {
    out = fmt::format("best fit ({}) in pool '{}': {} of {} ready node(s) fit;",
                      ScoreName(options_.score), pool.pool.name, c.fit, ready);
  }
  out += fmt::format(" after placement {} has", s.id);
  for (int r = 0; r < kResourceKinds; ++r) {
    out += ' ';
    out += FreeOf(kKinds[r], s.free[r] - need[r], s.limit[r]);
    out += r + 1 < kResourceKinds ? ',' : ';';
  }
  if (pool.overcommit_milli_cpu != 1000 || pool.overcommit_milli_memory != 1000) {
    out += fmt::format(" pool overcommit cpu x{:.3f}, memory x{:.3f};", pool.pool.overcommit_cpu,
                       pool.pool.overcommit_memory);
  }
  if (options_.score != Score::kFirstFit) {
    out += fmt::format(" score {:.4f} (lower is better)", c.score);
    if (c.runner_up >= 0) {
      out += fmt::format("; runner-up {} {:.4f}", pool.nodes[c.runner_up].id, c.runner_up_score);
    } else {
      out += "; no other node fits";
    }
  }
  if (out.back() == ';') out.pop_back();
  return out;
}

Result<Placement> Scheduler::ChooseIn(const PoolState& pool, const PlacementRequest& request,
                                      ResourceRequest* resolved_out) const {
  HANGAR_TRY(CheckRequest(request.task_id, request.resources));
  if (reservations_.count(request.task_id) != 0) {
    return Status::AlreadyExists(fmt::format("task '{}' is already placed on node '{}'",
                                             request.task_id,
                                             reservations_.at(request.task_id).node_id));
  }
  HANGAR_ASSIGN_OR_RETURN(ResourceRequest resolved, Resolve(pool, request.resources));
  const Amounts need = ToAmounts(resolved);
  const Choice c = Scan(pool, need);
  if (c.index < 0) return NoFit(pool, need);
  Placement p;
  p.task_id = request.task_id;
  p.node_id = pool.nodes[c.index].id;
  p.reserved = ToResources(need);
  p.score = c.score;
  p.nodes_fit = c.fit;
  if (options_.explain) p.explanation = Explain(pool, c, need);
  if (resolved_out != nullptr) *resolved_out = resolved;
  return p;
}

Result<Placement> Scheduler::Choose(const PlacementRequest& request) const {
  const PoolState* pool = FindPool(request.pool);
  if (pool == nullptr) {
    return Status::NotFound(
        fmt::format("task '{}': unknown pool '{}'", request.task_id, request.pool));
  }
  return ChooseIn(*pool, request, nullptr);
}

void Scheduler::Reserve(NodeSlot& node, std::string_view task_id, const ResourceRequest& request,
                        const Amounts& need) {
  for (int r = 0; r < kResourceKinds; ++r) {
    node.allocated[r] += need[r];
    node.free[r] -= need[r];
  }
  ++node.tasks;
  reservations_.emplace(std::string(task_id), Reservation{node.id, request, need});
}

Result<Placement> Scheduler::Place(const PlacementRequest& request) {
  PoolState* pool = FindPool(request.pool);
  if (pool == nullptr) {
    return Status::NotFound(
        fmt::format("task '{}': unknown pool '{}'", request.task_id, request.pool));
  }
  ResourceRequest resolved;
  HANGAR_ASSIGN_OR_RETURN(Placement p, ChooseIn(*pool, request, &resolved));
  NodeSlot* node = FindNode(p.node_id);
  Reserve(*node, request.task_id, resolved, ToAmounts(p.reserved));
  return p;
}

std::vector<Result<Placement>> Scheduler::PlaceBatch(const std::vector<PlacementRequest>& requests,
                                                     BatchOptions options) {
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t{0});
  if (options.order == BatchOrder::kPriority) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return requests[a].priority > requests[b].priority;
    });
  } else if (options.order == BatchOrder::kDecreasing) {
    // Dominant share of the pool's largest node per resource: one yardstick per pool, so the
    // order does not depend on which node a request would land on.
    std::map<std::string_view, std::array<double, kResourceKinds>> yardstick;
    for (const auto& [name, pool] : pools_) {
      std::array<double, kResourceKinds> inv{};
      for (int r = 0; r < kResourceKinds; ++r) {
        int64_t largest = 0;
        for (const NodeSlot& s : pool.nodes) largest = std::max(largest, s.capacity[r]);
        inv[r] = largest > 0 ? 1.0 / static_cast<double>(largest) : 0.0;
      }
      yardstick.emplace(name, inv);
    }
    std::vector<double> key(requests.size(), 0.0);
    for (size_t i = 0; i < requests.size(); ++i) {
      auto y = yardstick.find(requests[i].pool);
      const PoolState* pool = FindPool(requests[i].pool);
      if (y == yardstick.end() || pool == nullptr) continue;
      Amounts need = ToAmounts(requests[i].resources);
      if (need[3] == 0) need[3] = pool->pool.default_iops;
      for (int r = 0; r < kResourceKinds; ++r) {
        key[i] = std::max(key[i], static_cast<double>(need[r]) * y->second[r]);
      }
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return key[a] > key[b]; });
  }
  std::vector<Result<Placement>> out(requests.size(),
                                     Result<Placement>(Status::Internal("not attempted")));
  std::map<std::string, std::string, std::less<>> held;  // pool -> task it waits behind
  for (size_t i : order) {
    const PlacementRequest& req = requests[i];
    if (options.hold_pool_on_no_fit) {
      auto h = held.find(req.pool);
      if (h != held.end()) {
        out[i] = Status::ResourceExhausted(
            fmt::format("task '{}' waits behind task '{}' in pool '{}' (strict order)", req.task_id,
                        h->second, req.pool));
        continue;
      }
    }
    out[i] = Place(req);
    if (options.hold_pool_on_no_fit && !out[i].ok() &&
        out[i].status().code() == Code::kResourceExhausted) {
      held.emplace(req.pool, req.task_id);
    }
  }
  return out;
}

// ---- explicit accounting --------------------------------------------------------------------

Result<Resources> Scheduler::Allocate(std::string_view task_id, std::string_view node_id,
                                      const ResourceRequest& request) {
  HANGAR_TRY(CheckRequest(task_id, request));
  auto placed = reservations_.find(std::string(task_id));
  if (placed != reservations_.end()) {
    return Status::AlreadyExists(
        fmt::format("task '{}' is already placed on node '{}'", task_id, placed->second.node_id));
  }
  PoolState* pool = nullptr;
  NodeSlot* node = FindNode(node_id, &pool);
  if (node == nullptr) return Status::NotFound(fmt::format("unknown node '{}'", node_id));
  if (!node->schedulable) {
    return Status::FailedPrecondition(
        fmt::format("node '{}' is not schedulable (draining or lost)", node_id));
  }
  HANGAR_ASSIGN_OR_RETURN(ResourceRequest resolved, Resolve(*pool, request));
  const Amounts need = ToAmounts(resolved);
  std::string why;
  for (int r = 0; r < kResourceKinds; ++r) {
    const ResourceKind kind = kKinds[r];
    if (need[r] > node->capacity[r]) {
      why += fmt::format(" {} needs {}, more than the node's capacity {};", ResourceName(kind),
                         FormatAmount(kind, need[r]), FormatAmount(kind, node->capacity[r]));
    } else if (need[r] > node->free[r]) {
      why += fmt::format(" {} needs {}, free {};", ResourceName(kind), FormatAmount(kind, need[r]),
                         FormatAmount(kind, node->free[r]));
    }
  }
  if (!why.empty()) {
    why.pop_back();
    return Status::ResourceExhausted(
        fmt::format("task '{}' does not fit on node '{}':{}", task_id, node_id, why));
  }
  Reserve(*node, task_id, resolved, need);
  return ToResources(need);
}

Status Scheduler::Release(std::string_view task_id) {
  auto it = reservations_.find(std::string(task_id));
  if (it == reservations_.end()) {
    return Status::NotFound(fmt::format("task '{}' holds no allocation", task_id));
  }
  NodeSlot* node = FindNode(it->second.node_id);
  assert(node != nullptr && "a reservation outlived its node");
  for (int r = 0; r < kResourceKinds; ++r) {
    node->allocated[r] -= it->second.amounts[r];
    node->free[r] += it->second.amounts[r];
  }
  --node->tasks;
  reservations_.erase(it);
  return Status::Ok();
}

Status Scheduler::Restore(const std::vector<Assignment>& assignments) {
  // Validate everything first: all or nothing.
  std::unordered_map<std::string, Amounts> totals;  // node id -> sum
  std::set<std::string_view> seen;
  std::vector<ResourceRequest> resolved;
  resolved.reserve(assignments.size());
  for (const Assignment& a : assignments) {
    HANGAR_TRY(CheckRequest(a.task_id, a.resources).With("restore"));
    if (!seen.insert(a.task_id).second) {
      return Status::InvalidArgument(
          fmt::format("restore: task '{}' appears more than once", a.task_id));
    }
    const PoolState* pool = nullptr;
    if (FindNode(a.node_id, &pool) == nullptr) {
      return Status::NotFound(
          fmt::format("restore: task '{}' is on unknown node '{}'", a.task_id, a.node_id));
    }
    HANGAR_ASSIGN_OR_RETURN(ResourceRequest r, Resolve(*pool, a.resources));
    Amounts& sum = totals[a.node_id];
    const Amounts need = ToAmounts(r);
    for (int k = 0; k < kResourceKinds; ++k) {
      if (__builtin_add_overflow(sum[k], need[k], &sum[k]) || sum[k] > kMaxAmount * 64) {
        return Status::InvalidArgument(
            fmt::format("restore: the {} allocated on node '{}' overflows", ResourceName(kKinds[k]),
                        a.node_id));
      }
    }
    resolved.push_back(r);
  }
  reservations_.clear();
  for (auto& [name, pool] : pools_) {
    for (NodeSlot& s : pool.nodes) {
      s.allocated = {};
      s.tasks = 0;
      Recompute(pool, s);
    }
  }
  for (size_t i = 0; i < assignments.size(); ++i) {
    PoolState* pool = nullptr;
    NodeSlot* node = FindNode(assignments[i].node_id, &pool);
    Reserve(*node, assignments[i].task_id, resolved[i], ToAmounts(resolved[i]));
  }
  return Status::Ok();
}

// ---- views ----------------------------------------------------------------------------------

Result<Resources> Scheduler::Free(std::string_view node_id) const {
  const NodeSlot* node = FindNode(node_id);
  if (node == nullptr) return Status::NotFound(fmt::format("unknown node '{}'", node_id));
  return ToResources(node->free);
}

Result<Resources> Scheduler::Allocated(std::string_view node_id) const {
  const NodeSlot* node = FindNode(node_id);
  if (node == nullptr) return Status::NotFound(fmt::format("unknown node '{}'", node_id));
  return ToResources(node->allocated);
}

Result<NodeView> Scheduler::GetNode(std::string_view node_id) const {
  const PoolState* pool = nullptr;
  const NodeSlot* node = FindNode(node_id, &pool);
  if (node == nullptr) return Status::NotFound(fmt::format("unknown node '{}'", node_id));
  return View(*pool, *node);
}

std::vector<NodeView> Scheduler::Nodes() const {
  std::vector<NodeView> out;
  for (const auto& [name, pool] : pools_) {
    for (const NodeSlot& s : pool.nodes) out.push_back(View(pool, s));
  }
  std::sort(out.begin(), out.end(),
            [](const NodeView& a, const NodeView& b) { return a.id < b.id; });
  return out;
}

std::vector<Assignment> Scheduler::Allocations() const {
  std::vector<Assignment> out;
  out.reserve(reservations_.size());
  for (const auto& [task, r] : reservations_) out.push_back({task, r.node_id, r.request});
  std::sort(out.begin(), out.end(),
            [](const Assignment& a, const Assignment& b) { return a.task_id < b.task_id; });
  return out;
}

std::vector<Pool> Scheduler::Pools() const {
  std::vector<Pool> out;
  for (const auto& [name, pool] : pools_) out.push_back(pool.pool);
  return out;
}

bool Scheduler::Placed(std::string_view task_id) const {
  return reservations_.count(std::string(task_id)) != 0;
}

}  // namespace hangar::control
