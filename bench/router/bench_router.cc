// bench_router: routing decisions per second with 50 realistic rules, single thread, against a
// floor: the same 50 predicates hand-written as C++ lambdas over the same facts, applying the
// same decision procedure (first tier match, every forbid, requested tier, forbids raise).
//
//   bench_router [--tasks N] [--rounds N] [--seed N]
//
// Prints, per contender, decisions/s on-CPU (from the median ns per decision over batches of
// 100) and wall-clock (median over rounds), the p99 per decision, then the ratio router/floor. Also
// the full Decide() (explanation and JSON trace, what the control plane stores per task). Checks
// that router and floor agree on every task's tier; exits 1 if they do not. Timings are never
// asserted.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "hangar/control/policy.h"

namespace {

using hangar::control::Decision;
using hangar::control::Policy;
using hangar::control::TaskFacts;
using hangar::control::Tier;
using Clock = std::chrono::steady_clock;

// One rule as policy text and as the equivalent hand-written predicate.
struct Spec {
  std::string name;
  std::string when;
  std::string action;  // "tier: x" or "forbid: [..]"
  std::function<bool(const TaskFacts&)> fn;
  bool forbid = false;
  Tier tier = Tier::kShared;
  std::array<bool, 3> forbids = {};
};

const std::vector<std::string> kServices = {"payments", "auth",  "billing", "ledger", "identity",
                                            "search",   "feeds", "mobile",  "web",    "ml"};
const std::vector<std::string> kTeams = {"payments", "auth",     "growth", "search",  "mobile",
                                         "web",      "platform", "ml",     "data",    "infra",
                                         "security", "sre",      "ads",    "support", "docs",
                                         "red-team", "finance",  "legal",  "core",    "devex"};

bool UnderDir(std::string_view p, std::string_view dir) {  // glob "dir/**"
  return p.starts_with(dir) && (p.size() == dir.size() || p[dir.size()] == '/');
}
bool OneLevel(std::string_view p, std::string_view prefix) {  // glob "prefix*" (no '/' after)
  return p.starts_with(prefix) && p.find('/', prefix.size()) == std::string_view::npos;
}
std::string_view Label(const TaskFacts& f, const std::string& key) {
  auto it = f.labels.find(key);
  return it == f.labels.end() ? std::string_view() : std::string_view(it->second);
}

std::vector<Spec> MakeRules() {
  std::vector<Spec> r;
  auto tier = [](Tier t) { return fmt::format("tier: {}", hangar::control::TierName(t)); };
  // 10 path rules: one per service.
  for (size_t i = 0; i < kServices.size(); ++i) {
    const std::string dir = "services/" + kServices[i];
    const Tier t = i < 4 ? Tier::kIsolated : Tier::kHardened;
    r.push_back({"svc-" + kServices[i], fmt::format("paths.exists(p, p.matches(\"{}/**\"))", dir),
                 tier(t),
                 [dir](const TaskFacts& f) {
                   return std::any_of(f.paths.begin(), f.paths.end(),
                                      [&](const std::string& p) { return UnderDir(p, dir); });
                 },
                 false, t});
  }
  // 8 label rules.
  const std::vector<std::pair<std::string, std::string>> labels = {
      {"sensitivity", "high"},    {"env", "prod"},        {"data", "pii"},
      {"compliance", "pci"},      {"source", "external"}, {"risk", "high"},
      {"customer", "enterprise"}, {"env", "staging"}};
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto [k, v] = labels[i];
    const Tier t = i < 4 ? Tier::kIsolated : Tier::kHardened;
    r.push_back({fmt::format("label-{}-{}", k, v), fmt::format("labels.{} == \"{}\"", k, v),
                 tier(t), [k, v](const TaskFacts& f) { return Label(f, k) == v; }, false, t});
  }
  // 6 secrets tier rules and 4 secrets forbids.
  const std::vector<std::string> secret_dirs = {
      "prod/db",   "prod/stripe", "prod/aws", "staging/db", "staging/aws",
      "ci/deploy", "prod/github", "prod/gcp", "vault/root", "partners"};
  for (size_t i = 0; i < secret_dirs.size(); ++i) {
    const std::string dir = secret_dirs[i];
    auto fn = [dir](const TaskFacts& f) {
      return std::any_of(f.secrets.begin(), f.secrets.end(),
                         [&](const std::string& s) { return UnderDir(s, dir); });
    };
    const std::string when = fmt::format("secrets.exists(s, s.matches(\"{}/**\"))", dir);
    if (i < 6) {
      const Tier t = i < 3 ? Tier::kIsolated : Tier::kHardened;
      r.push_back({"secret-" + std::to_string(i), when, tier(t), fn, false, t});
    } else {
      Spec s{"forbid-secret-" + std::to_string(i), when, "forbid: [shared, hardened]", fn, true};
      s.forbids = {true, true, false};
      r.push_back(std::move(s));
    }
  }
  // 6 egress rules (4 tier, 2 forbids).
  const std::vector<std::string> suffixes = {".internal:443", ".corp:443", "github.com:443",
                                             "s3.amazonaws.com:443"};
  for (size_t i = 0; i < suffixes.size(); ++i) {
    const std::string suf = suffixes[i];
    r.push_back({"egress-" + std::to_string(i),
                 fmt::format("egress.exists(e, e.endsWith(\"{}\"))", suf), tier(Tier::kHardened),
                 [suf](const TaskFacts& f) {
                   return std::any_of(f.egress.begin(), f.egress.end(),
                                      [&](const std::string& e) { return e.ends_with(suf); });
                 },
                 false, Tier::kHardened});
  }
  {
    Spec s{"forbid-any-egress", "size(egress) > 0", "forbid: [shared]",
           [](const TaskFacts& f) { return !f.egress.empty(); }, true};
    s.forbids = {true, false, false};
    r.push_back(std::move(s));
    Spec m{"forbid-many-egress", "size(egress) > 3", "forbid: [shared, hardened]",
           [](const TaskFacts& f) { return f.egress.size() > 3; }, true};
    m.forbids = {true, true, false};
    r.push_back(std::move(m));
  }
  // 6 team / repo rules.
  r.push_back({"team-security", "team in [\"security\", \"red-team\"]", tier(Tier::kIsolated),
               [](const TaskFacts& f) { return f.team == "security" || f.team == "red-team"; },
               false, Tier::kIsolated});
  r.push_back({"team-finance", "team == \"finance\" || team == \"legal\"", tier(Tier::kHardened),
               [](const TaskFacts& f) { return f.team == "finance" || f.team == "legal"; }, false,
               Tier::kHardened});
  for (const std::string repo : {"core", "kernel", "payments-sdk", "infra-live"}) {
    const std::string prefix = "github.com/acme/" + repo;
    r.push_back({"repo-" + repo, fmt::format("repo.startsWith(\"{}\")", prefix),
                 tier(Tier::kHardened),
                 [prefix](const TaskFacts& f) { return f.repo.starts_with(prefix); }, false,
                 Tier::kHardened});
  }
  // 6 composite rules.
  r.push_back({"prod-terraform",
               "labels.env == \"prod\" && paths.exists(p, p.matches(\"**/*.tf\"))",
               tier(Tier::kIsolated),
               [](const TaskFacts& f) {
                 return Label(f, "env") == "prod" &&
                        std::any_of(f.paths.begin(), f.paths.end(),
                                    [](const std::string& p) { return p.ends_with(".tf"); });
               },
               false, Tier::kIsolated});
  r.push_back(
      {"ci-config", "paths.exists(p, p.matches(\".github/workflows/*\"))", tier(Tier::kHardened),
       [](const TaskFacts& f) {
         return std::any_of(f.paths.begin(), f.paths.end(),
                            [](const std::string& p) { return OneLevel(p, ".github/workflows/"); });
       },
       false, Tier::kHardened});
  r.push_back(
      {"migrations", "paths.exists(p, p.matches(\"**/migrations/**\"))", tier(Tier::kHardened),
       [](const TaskFacts& f) {
         return std::any_of(f.paths.begin(), f.paths.end(), [](const std::string& p) {
           return p.starts_with("migrations/") || p.find("/migrations/") != std::string::npos;
         });
       },
       false, Tier::kHardened});
  r.push_back(
      {"big-change", "size(paths) > 5 && labels.reviewed != \"true\"", tier(Tier::kHardened),
       [](const TaskFacts& f) { return f.paths.size() > 5 && Label(f, "reviewed") != "true"; },
       false, Tier::kHardened});
  {
    Spec s{"forbid-pii-shared", "labels.data == \"pii\" || metadata.dataset == \"customers\"",
           "forbid: [shared]",
           [](const TaskFacts& f) {
             auto it = f.metadata.find("dataset");
             return Label(f, "data") == "pii" ||
                    (it != f.metadata.end() && it->second == "customers");
           },
           true};
    s.forbids = {true, false, false};
    r.push_back(std::move(s));
  }
  r.push_back({"gpu-template", "template.startsWith(\"cuda-\")", tier(Tier::kHardened),
               [](const TaskFacts& f) { return f.template_name.starts_with("cuda-"); }, false,
               Tier::kHardened});
  r.push_back({"security-ticket", "metadata.ticket.startsWith(\"SEC-\")", tier(Tier::kIsolated),
               [](const TaskFacts& f) {
                 auto it = f.metadata.find("ticket");
                 return it != f.metadata.end() && it->second.starts_with("SEC-");
               },
               false, Tier::kIsolated});
  r.push_back({"vendored-code",
               "paths.exists(p, p.matches(\"vendor/**\") || p.matches(\"third_party/**\"))",
               tier(Tier::kHardened),
               [](const TaskFacts& f) {
                 return std::any_of(f.paths.begin(), f.paths.end(), [](const std::string& p) {
                   return UnderDir(p, "vendor") || UnderDir(p, "third_party");
                 });
               },
               false, Tier::kHardened});
  {
    Spec s{"forbid-many-secrets", "size(secrets) > 2", "forbid: [shared]",
           [](const TaskFacts& f) { return f.secrets.size() > 2; }, true};
    s.forbids = {true, false, false};
    r.push_back(std::move(s));
  }
  r.push_back({"docs-only",
               "size(paths) > 0 && paths.all(p, p.matches(\"docs/**\") || p.endsWith(\".md\"))",
               tier(Tier::kShared),
               [](const TaskFacts& f) {
                 return !f.paths.empty() &&
                        std::all_of(f.paths.begin(), f.paths.end(), [](const std::string& p) {
                          return UnderDir(p, "docs") || p.ends_with(".md");
                        });
               },
               false, Tier::kShared});
  return r;
}

std::string PolicyText(const std::vector<Spec>& rules) {
  std::string out = "version: 1\ndefault: shared\nrules:\n";
  for (const Spec& s : rules) {
    out += fmt::format("  - name: {}\n    when: '{}'\n    {}\n", s.name, s.when, s.action);
  }
  return out;
}

std::vector<TaskFacts> MakeTasks(size_t n, uint64_t seed) {
  // A fleet where most work is routine: ~70% of tasks touch ordinary code with no secrets and
  // no egress (they go through every rule and land on the default), the rest trip one or more
  // rules. Routine tasks are the expensive ones for the router: nothing matches early.
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t k) { return static_cast<size_t>(rng() % k); };
  auto chance = [&](int percent) { return static_cast<int>(pick(100)) < percent; };
  const std::vector<std::string> plain_paths = {"README.md",
                                                "src/main.go",
                                                "src/util/strings.go",
                                                "web/app/index.tsx",
                                                "web/app/routes.tsx",
                                                "Makefile",
                                                "go.mod",
                                                "lib/parser.py",
                                                "lib/lexer.py",
                                                "tests/test_api.py",
                                                "tests/test_parser.py",
                                                "cmd/server/main.go",
                                                "pkg/cache/lru.go",
                                                "pkg/cache/lru_test.go",
                                                "package.json",
                                                "src/components/Button.tsx"};
  const std::vector<std::string> risky_paths = {"infra/prod/main.tf", "db/migrations/001_init.sql",
                                                ".github/workflows/ci.yml",
                                                "vendor/github.com/x/y.go", "docs/guide.md"};
  const std::vector<std::pair<std::string, std::string>> benign_labels = {
      {"env", "dev"},     {"source", "internal"}, {"reviewed", "true"}, {"owner", "alice"},
      {"owner", "bob"},   {"priority", "p2"},     {"priority", "p3"},   {"kind", "refactor"},
      {"kind", "bugfix"}, {"sensitivity", "low"}};
  const std::vector<std::pair<std::string, std::string>> risky_labels = {
      {"sensitivity", "high"}, {"env", "prod"},    {"data", "pii"},
      {"source", "external"},  {"env", "staging"}, {"risk", "high"}};
  const std::vector<std::string> dev_secrets = {"dev/db/url", "dev/api-key", "dev/sentry/dsn"};
  const std::vector<std::string> risky_secrets = {"staging/db/url", "prod/db/password",
                                                  "prod/stripe/key", "ci/deploy/token"};
  const std::vector<std::string> egress_pool = {"pypi.org:443", "registry.npmjs.org:443",
                                                "github.com:443", "api.internal:443",
                                                "proxy.corp:443"};
  std::vector<std::string> teams = kTeams;  // 4 of the 20 trip team rules; dilute to ~5%
  for (int i = 0; i < 60; ++i) teams.push_back("team-" + std::to_string(i));
  const std::vector<std::string> repos = {
      "web",       "shop", "mobile-app", "ml-models", "docs",          "tools", "cli",
      "dashboard", "api",  "search",     "feeds",     "notifications", "core",  "payments-sdk"};
  std::vector<TaskFacts> tasks(n);
  for (TaskFacts& f : tasks) {
    f.team = teams[pick(teams.size())];
    f.repo = "github.com/acme/" + repos[pick(chance(90) ? repos.size() - 2 : repos.size())];
    f.template_name = chance(3) ? "cuda-12" : (chance(50) ? "python-3.12" : "node-20");
    for (size_t k = 0, m = 1 + pick(3); k < m; ++k) {
      const auto& [key, value] = chance(6) ? risky_labels[pick(risky_labels.size())]
                                           : benign_labels[pick(benign_labels.size())];
      f.labels[key] = value;
    }
    if (chance(30))
      f.metadata["ticket"] = (chance(5) ? "SEC-" : "ENG-") + std::to_string(pick(999));
    if (chance(3)) f.metadata["dataset"] = "customers";
    for (size_t k = 0, m = 1 + pick(5); k < m; ++k) {
      if (chance(2)) {
        f.paths.push_back("services/" + kServices[pick(kServices.size())] + "/handler.go");
      } else if (chance(4)) {
        f.paths.push_back(risky_paths[pick(risky_paths.size())]);
      } else {
        f.paths.push_back(plain_paths[pick(plain_paths.size())]);
      }
    }
    if (chance(15)) {
      for (size_t k = 0, m = 1 + pick(2); k < m; ++k) {
        f.secrets.push_back(chance(25) ? risky_secrets[pick(risky_secrets.size())]
                                       : dev_secrets[pick(dev_secrets.size())]);
      }
    }
    if (chance(12)) {
      for (size_t k = 0, m = 1 + pick(2); k < m; ++k) {
        f.egress.push_back(egress_pool[pick(egress_pool.size())]);
      }
    }
    if (chance(5)) f.requested_tier = static_cast<Tier>(pick(3));
  }
  return tasks;
}

// The floor: the same decision procedure over the hand-written predicates.
Tier FloorDecide(const std::vector<Spec>& rules, const std::vector<size_t>& tier_rules,
                 const std::vector<size_t>& forbid_rules, const TaskFacts& f) {
  Tier t = Tier::kShared;
  for (size_t i : tier_rules) {
    if (rules[i].fn(f)) {
      t = rules[i].tier;
      break;
    }
  }
  if (f.requested_tier && *f.requested_tier > t) t = *f.requested_tier;
  std::array<bool, 3> forbidden = {};
  for (size_t i : forbid_rules) {
    if (!rules[i].fn(f)) continue;
    for (size_t k = 0; k < 3; ++k) forbidden[k] = forbidden[k] || rules[i].forbids[k];
  }
  while (t < Tier::kIsolated && forbidden[static_cast<size_t>(t)]) {
    t = static_cast<Tier>(static_cast<int>(t) + 1);
  }
  return t;
}

struct Stats {
  double median_rate = 0;  // decisions/s, median over rounds
  double median_ns = 0;    // per decision, median over batches
  double p99_ns = 0;
};

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[k];
}

// Runs `decide(task)` over all tasks, `rounds` times, in batches of 100.
template <typename F>
Stats Measure(const std::vector<TaskFacts>& tasks, int rounds, F&& decide, uint64_t& sink) {
  constexpr size_t kBatch = 100;
  std::vector<double> rates, batch_ns;
  for (int r = 0; r < rounds; ++r) {
    const auto start = Clock::now();
    for (size_t b = 0; b < tasks.size(); b += kBatch) {
      const auto bs = Clock::now();
      const size_t end = std::min(tasks.size(), b + kBatch);
      for (size_t i = b; i < end; ++i) sink += static_cast<uint64_t>(decide(tasks[i]));
      const auto be = Clock::now();
      batch_ns.push_back(std::chrono::duration<double, std::nano>(be - bs).count() /
                         static_cast<double>(end - b));
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    rates.push_back(static_cast<double>(tasks.size()) / secs);
  }
  return {Quantile(rates, 0.5), Quantile(batch_ns, 0.5), Quantile(batch_ns, 0.99)};
}

// Two rates: wall-clock (decisions / elapsed, median over rounds; depressed whenever the shared
// machine preempts us) and on-CPU (1e9 / median ns per decision over batches of 100; robust to
// preemption, which lands in the p99). The ratio uses the on-CPU figures.
void Print(std::string_view what, const Stats& s) {
  std::printf("%-34s %10.0f /s on-CPU  %10.0f /s wall   %7.1f ns median  %8.1f ns p99\n",
              std::string(what).c_str(), 1e9 / s.median_ns, s.median_rate, s.median_ns, s.p99_ns);
}

}  // namespace

int main(int argc, char** argv) {
  size_t n_tasks = 10000;
  int rounds = 9;
  uint64_t seed = 42;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tasks")) {
      n_tasks = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (!std::strcmp(argv[i], "--rounds")) {
      rounds = std::atoi(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--seed")) {
      seed = std::strtoull(argv[i + 1], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: bench_router [--tasks N] [--rounds N] [--seed N]\n");
      return 2;
    }
  }
  if (n_tasks == 0 || rounds <= 0) {
    std::fprintf(stderr, "bench_router: --tasks and --rounds must be positive\n");
    return 2;
  }
  const std::vector<Spec> rules = MakeRules();
  auto policy = Policy::Parse(PolicyText(rules), "bench-policy");
  if (!policy.ok()) {
    std::fprintf(stderr, "bench_router: %s\n", policy.status().ToString().c_str());
    return 1;
  }
  std::vector<size_t> tier_rules, forbid_rules;
  for (size_t i = 0; i < rules.size(); ++i)
    (rules[i].forbid ? forbid_rules : tier_rules).push_back(i);
  const std::vector<TaskFacts> tasks = MakeTasks(n_tasks, seed);

  // Router and floor must agree before their speeds mean anything.
  std::array<size_t, 3> mix = {};
  size_t mismatches = 0, default_hits = 0;
  for (const TaskFacts& t : tasks) {
    const auto v = policy->Route(t);
    ++mix[static_cast<size_t>(v.tier)];
    default_hits += v.rule < 0;
    if (v.tier != FloorDecide(rules, tier_rules, forbid_rules, t)) ++mismatches;
  }
  std::printf("bench_router: %zu rules (%zu tier, %zu forbid), %zu tasks, %d rounds, seed %llu\n",
              rules.size(), tier_rules.size(), forbid_rules.size(), tasks.size(), rounds,
              static_cast<unsigned long long>(seed));
  std::printf("tier mix: shared %.1f%%, hardened %.1f%%, isolated %.1f%%; default %.1f%%\n",
              100.0 * static_cast<double>(mix[0]) / static_cast<double>(tasks.size()),
              100.0 * static_cast<double>(mix[1]) / static_cast<double>(tasks.size()),
              100.0 * static_cast<double>(mix[2]) / static_cast<double>(tasks.size()),
              100.0 * static_cast<double>(default_hits) / static_cast<double>(tasks.size()));
  if (mismatches) {
    std::fprintf(stderr, "bench_router: router and floor disagree on %zu tasks\n", mismatches);
    return 1;
  }

  uint64_t sink = 0;
  // Interleave so that machine noise hits both contenders alike.
  Stats route{}, floor{};
  std::vector<double> route_rates, floor_rates;
  for (int r = 0; r < 3; ++r) {
    route = Measure(
        tasks, rounds, [&](const TaskFacts& t) { return policy->Route(t).tier; }, sink);
    floor = Measure(
        tasks, rounds,
        [&](const TaskFacts& t) { return FloorDecide(rules, tier_rules, forbid_rules, t); }, sink);
    route_rates.push_back(route.median_rate);
    floor_rates.push_back(floor.median_rate);
  }
  route.median_rate = Quantile(route_rates, 0.5);
  floor.median_rate = Quantile(floor_rates, 0.5);
  const int decide_rounds = std::max(1, rounds / 3);
  const Stats decide = Measure(
      tasks, decide_rounds,
      [&](const TaskFacts& t) {
        const Decision d = policy->Decide(t);
        return static_cast<int>(d.tier) + static_cast<int>(d.explanation.size() & 1);
      },
      sink);

  Print("router Route() (tier + rule)", route);
  Print("floor: C++ lambdas", floor);
  std::printf("ratio router/floor (on-CPU): %.2f; wall-clock: %.2f\n",
              floor.median_ns / route.median_ns, route.median_rate / floor.median_rate);
  Print("router Decide() (+ words, trace)", decide);
  std::printf("target >= 1,000,000 decisions/s, 50 rules (Route): on-CPU %s, wall-clock %s\n",
              1e9 / route.median_ns >= 1e6 ? "met" : "NOT met",
              route.median_rate >= 1e6 ? "met" : "NOT met");
  std::printf("(sink %llu)\n", static_cast<unsigned long long>(sink % 10));
  return 0;
}
