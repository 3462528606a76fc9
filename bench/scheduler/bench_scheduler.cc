// bench_scheduler: placement rate and packing quality of hangar::control::Scheduler on a mixed
// four-resource workload, single thread, against a naive first-fit peer measured in the same
// run and against the physical floor of packing (the lower bound on nodes).
//
//   bench_scheduler [--nodes 1000] [--big-nodes 5000] [--rounds 5] [--seed 42] [--seeds 10]
//
// Nodes: 16 cores, 64 GiB, 500 GiB disk, 20k IOPS. Workload (fixed seed): 50 % small, 25 %
// medium, 10 % large, 8 % IOPS-heavy, 7 % memory-heavy. Two workloads:
//  - fill: tasks worth 1.15x the cluster in the busiest resource, placed one by one in arrival
//    order (what the service does) until the list is exhausted; the rate counts every call.
//  - half: tasks worth 0.5x the cluster; all fit; nodes used against the lower bound
//    LB = max over resources of ceil(sum of requests / node capacity).
// Rates are medians over rounds (each round a fresh cluster); p50/p99 are per Place call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "hangar/control/scheduler.h"

namespace {

using hangar::control::BatchOrder;
using hangar::control::NodeCapacity;
using hangar::control::NodeSpec;
using hangar::control::Placement;
using hangar::control::PlacementRequest;
using hangar::control::Pool;
using hangar::control::ResourceRequest;
using hangar::control::Scheduler;
using hangar::control::SchedulerOptions;
using hangar::control::Score;
using Clock = std::chrono::steady_clock;

constexpr NodeCapacity kNode{16000, 65536, 512000, 20000};
constexpr int kKinds = 4;

int64_t Get(const ResourceRequest& r, int k) {
  switch (k) {
    case 0:
      return r.cpu_millis;
    case 1:
      return r.memory_mb;
    case 2:
      return r.disk_mb;
    default:
      return r.iops;
  }
}
int64_t Cap(int k) {
  const int64_t c[kKinds] = {kNode.cpu_millis, kNode.memory_mb, kNode.disk_mb, kNode.iops};
  return c[k];
}

// Tasks until the busiest resource reaches `fraction` of `nodes` nodes.
std::vector<PlacementRequest> Workload(uint64_t seed, double fraction, int nodes) {
  std::mt19937_64 rng(seed);
  auto u = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  std::vector<PlacementRequest> out;
  double sum[kKinds] = {0, 0, 0, 0};
  for (int i = 0;; ++i) {
    const int64_t cls = u(0, 99);
    ResourceRequest r;
    if (cls < 50) {  // small
      r = {u(250, 1000), u(512, 2048), u(1024, 10240), u(50, 300), 0};
    } else if (cls < 75) {  // medium
      r = {u(1000, 4000), u(2048, 8192), u(10240, 40960), u(200, 1000), 0};
    } else if (cls < 85) {  // large
      r = {u(4000, 8000), u(8192, 32768), u(20480, 102400), u(500, 2000), 0};
    } else if (cls < 93) {  // IOPS-heavy
      r = {u(500, 2000), u(1024, 4096), u(10240, 51200), u(2000, 8000), 0};
    } else {  // memory-heavy
      r = {u(500, 2000), u(16384, 32768), u(10240, 51200), u(100, 500), 0};
    }
    double dominant = 0;
    for (int k = 0; k < kKinds; ++k) {
      sum[k] += static_cast<double>(Get(r, k));
      dominant = std::max(dominant, sum[k] / (static_cast<double>(Cap(k)) * nodes));
    }
    if (dominant > fraction) break;
    out.push_back({fmt::format("task-{:07d}", i), "shared", r, 0});
  }
  return out;
}

int64_t LowerBound(const std::vector<const ResourceRequest*>& placed) {
  int64_t lb = 0;
  for (int k = 0; k < kKinds; ++k) {
    int64_t sum = 0;
    for (const ResourceRequest* r : placed) sum += Get(*r, k);
    lb = std::max(lb, (sum + Cap(k) - 1) / Cap(k));
  }
  return lb;
}

struct Run {
  double seconds = 0;
  int64_t calls = 0;
  int64_t placed = 0;
  int64_t nodes_used = 0;
  int64_t lower_bound = 0;
  std::vector<double> latency_ns;  // per call (online runs only)
};

std::string NodeId(int i) { return fmt::format("node-{:05d}", i); }

Run RunScheduler(const std::vector<PlacementRequest>& work, int nodes, Score score, bool decreasing,
                 bool explain, bool record_latency) {
  Scheduler s(SchedulerOptions{score, explain});
  Pool pool;
  pool.name = "shared";
  if (!s.SetPool(pool).ok()) std::abort();
  for (int i = 0; i < nodes; ++i) {
    if (!s.AddOrUpdateNode(NodeSpec{NodeId(i), "shared", kNode, true}).ok()) std::abort();
  }
  Run run;
  run.calls = static_cast<int64_t>(work.size());
  std::vector<const ResourceRequest*> placed;
  placed.reserve(work.size());
  size_t explanation_bytes = 0;
  if (decreasing) {
    const auto t0 = Clock::now();
    auto results = s.PlaceBatch(work, {BatchOrder::kDecreasing, false});
    run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].ok()) placed.push_back(&work[i].resources);
    }
  } else {
    if (record_latency) run.latency_ns.reserve(work.size());
    const auto t0 = Clock::now();
    for (const PlacementRequest& req : work) {
      const auto c0 = record_latency ? Clock::now() : Clock::time_point{};
      auto p = s.Place(req);
      if (record_latency) {
        run.latency_ns.push_back(
            std::chrono::duration<double, std::nano>(Clock::now() - c0).count());
      }
      if (p.ok()) {
        placed.push_back(&req.resources);
        explanation_bytes += p->explanation.size();
      }
    }
    run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  (void)explanation_bytes;
  run.placed = static_cast<int64_t>(placed.size());
  for (const auto& n : s.Nodes()) run.nodes_used += n.tasks > 0 ? 1 : 0;
  run.lower_bound = LowerBound(placed);
  return run;
}

// The peer: textbook first-fit, no sort, no score, no explanation, no bookkeeping by task.
Run RunNaive(const std::vector<PlacementRequest>& work, int nodes) {
  struct N {
    int64_t free[kKinds];
    int tasks;
  };
  std::vector<N> cluster(nodes,
                         N{{kNode.cpu_millis, kNode.memory_mb, kNode.disk_mb, kNode.iops}, 0});
  Run run;
  run.calls = static_cast<int64_t>(work.size());
  std::vector<const ResourceRequest*> placed;
  placed.reserve(work.size());
  const auto t0 = Clock::now();
  for (const PlacementRequest& req : work) {
    const int64_t need[kKinds] = {req.resources.cpu_millis, req.resources.memory_mb,
                                  req.resources.disk_mb, req.resources.iops};
    for (N& n : cluster) {
      if (need[0] <= n.free[0] && need[1] <= n.free[1] && need[2] <= n.free[2] &&
          need[3] <= n.free[3]) {
        for (int k = 0; k < kKinds; ++k) n.free[k] -= need[k];
        ++n.tasks;
        placed.push_back(&req.resources);
        break;
      }
    }
  }
  run.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  run.placed = static_cast<int64_t>(placed.size());
  for (const N& n : cluster) run.nodes_used += n.tasks > 0 ? 1 : 0;
  run.lower_bound = LowerBound(placed);
  return run;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(std::ceil(p * v.size())) - 1);
  return v[i];
}

struct Row {
  std::string name;
  double calls_per_s = 0;   // median over rounds
  double placed_per_s = 0;  // median over rounds
  double p50_ns = 0, p99_ns = 0;
  Run last;
};

template <typename F>
Row Measure(std::string name, int rounds, F&& once) {
  Row row;
  row.name = std::move(name);
  std::vector<double> calls, placed, lat;
  for (int i = 0; i < rounds; ++i) {
    Run r = once();
    calls.push_back(static_cast<double>(r.calls) / r.seconds);
    placed.push_back(static_cast<double>(r.placed) / r.seconds);
    lat.insert(lat.end(), r.latency_ns.begin(), r.latency_ns.end());
    row.last = std::move(r);
  }
  row.calls_per_s = Median(calls);
  row.placed_per_s = Median(placed);
  if (!lat.empty()) {
    row.p50_ns = Percentile(lat, 0.50);
    row.p99_ns = Percentile(lat, 0.99);
  }
  return row;
}

void PrintRows(const std::vector<Row>& rows, double peer_placed_per_s, bool fill) {
  fmt::print("  {:<34} {:>12} {:>12} {:>8} {:>8} {:>7} {:>6} {:>6} {:>8} {:>9}\n", "scheduler",
             "placed/s", "calls/s", "p50 us", "p99 us", "placed", "used", "LB",
             fill ? "nodes/LB" : "used/LB", "vs naive");
  for (const Row& r : rows) {
    const std::string p50 = r.p50_ns > 0 ? fmt::format("{:.1f}", r.p50_ns / 1000) : "-";
    const std::string p99 = r.p99_ns > 0 ? fmt::format("{:.1f}", r.p99_ns / 1000) : "-";
    fmt::print("  {:<34} {:>12.0f} {:>12.0f} {:>8} {:>8} {:>7} {:>6} {:>6} {:>8.3f} {:>8.2f}x\n",
               r.name, r.placed_per_s, r.calls_per_s, p50, p99, r.last.placed, r.last.nodes_used,
               r.last.lower_bound,
               static_cast<double>(r.last.nodes_used) / static_cast<double>(r.last.lower_bound),
               r.placed_per_s / peer_placed_per_s);
  }
}

void Section(int nodes, uint64_t seed, int rounds, bool all_scores) {
  const std::vector<Score> scores =
      all_scores ? std::vector<Score>{Score::kL2Remaining, Score::kMaxRemaining,
                                      Score::kDominantBestFit, Score::kFirstFit}
                 : std::vector<Score>{Score::kL2Remaining};
  for (const bool fill : {true, false}) {
    const double fraction = fill ? 1.15 : 0.5;
    const auto work = Workload(seed, fraction, nodes);
    fmt::print(
        "\n== {} nodes (16 cores, 64 GiB, 500 GiB, 20k IOPS), {} workload: {} tasks worth "
        "{:.2f}x the cluster in its busiest resource, seed {}, {} rounds\n",
        nodes, fill ? "fill" : "half", work.size(), fraction, seed, rounds);
    std::vector<Row> rows;
    Row peer =
        Measure("peer: naive first-fit (no sort)", rounds, [&] { return RunNaive(work, nodes); });
    for (Score score : scores) {
      const std::string name(hangar::control::ScoreName(score));
      rows.push_back(Measure(name + ", online", rounds,
                             [&] { return RunScheduler(work, nodes, score, false, true, true); }));
      if (score == Score::kL2Remaining) {
        rows.push_back(Measure(name + ", online, no explain", rounds, [&] {
          return RunScheduler(work, nodes, score, false, false, false);
        }));
      }
      rows.push_back(Measure(name + ", batch decreasing", rounds,
                             [&] { return RunScheduler(work, nodes, score, true, true, false); }));
    }
    rows.push_back(std::move(peer));
    PrintRows(rows, rows.back().placed_per_s, fill);
    const Row& head = rows.front();
    fmt::print(
        "  default ({}) online: {:.0f} placements/s = {:.1f}x the 10,000/s target, {:.1f}x "
        "Kubernetes' CI threshold of 810 pods/s (5,000 nodes; reference, not measured "
        "here)\n",
        head.name, head.placed_per_s, head.placed_per_s / 10000, head.placed_per_s / 810);
  }
}

// Packing only (no timing): nodes used / LB on the half workload over `count` seeds, for every
// scorer online and batch-decreasing, and the naive peer.
void PackingSweep(int nodes, uint64_t seed, int count) {
  fmt::print("\n== packing over {} seeds ({}..{}), {} nodes, half workload: nodes used / LB\n",
             count, seed, seed + count - 1, nodes);
  fmt::print("  {:<40} {:>8} {:>8} {:>8}\n", "scheduler", "mean", "min", "max");
  auto report = [&](const std::string& name, auto&& run) {
    double sum = 0, lo = 1e9, hi = 0;
    for (int i = 0; i < count; ++i) {
      const auto work = Workload(seed + i, 0.5, nodes);
      const Run r = run(work);
      const double ratio = static_cast<double>(r.nodes_used) / static_cast<double>(r.lower_bound);
      sum += ratio;
      lo = std::min(lo, ratio);
      hi = std::max(hi, ratio);
    }
    fmt::print("  {:<40} {:>8.4f} {:>8.4f} {:>8.4f}\n", name, sum / count, lo, hi);
  };
  for (Score score :
       {Score::kL2Remaining, Score::kMaxRemaining, Score::kDominantBestFit, Score::kFirstFit}) {
    const std::string name(hangar::control::ScoreName(score));
    for (const bool decreasing : {false, true}) {
      report(name + (decreasing ? ", batch decreasing" : ", online"),
             [&](const std::vector<PlacementRequest>& work) {
               return RunScheduler(work, nodes, score, decreasing, false, false);
             });
    }
  }
  report("peer: naive first-fit (no sort)",
         [&](const std::vector<PlacementRequest>& work) { return RunNaive(work, nodes); });
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = 1000, big = 5000, rounds = 5, seeds = 10;
  uint64_t seed = 42;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--nodes") == 0) {
      nodes = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--big-nodes") == 0) {
      big = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--rounds") == 0) {
      rounds = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--seeds") == 0) {
      seeds = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--seed") == 0) {
      seed = std::strtoull(argv[i + 1], nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if ((argc - 1) % 2 != 0 || nodes <= 0 || rounds <= 0 || big < 0 || seeds < 0) {
    std::fprintf(stderr,
                 "usage: bench_scheduler [--nodes N>0] [--big-nodes N>=0] [--rounds N>0] "
                 "[--seed S] [--seeds N>=0]\n");
    return 2;
  }
  fmt::print(
      "bench_scheduler: single thread; rates are medians of {} rounds, each a fresh "
      "cluster; 'vs naive' = placed/s over the naive first-fit peer's, same run\n",
      rounds);
  Section(nodes, seed, rounds, true);
  if (seeds > 0) PackingSweep(nodes, seed, seeds);
  if (big > 0) Section(big, seed, std::max(1, rounds / 2), false);
  return 0;
}
