// The routing policy: which isolation tier a task gets, and why.
//
// Contract:
//  - Policy::Parse reads the YAML policy (docs/routing.md): `version: 1`, a mandatory `default`
//    tier and ordered `rules`, each with a unique `name`, a `when` expression (expr.h) and
//    exactly one of `tier` (a tier rule) or `forbid` (a list of tiers the task may not run on).
//    Anything else — unknown keys, duplicate names, unknown tiers, a forbid listing `isolated`,
//    an expression that does not compile — is an error "SOURCE:LINE:COL: what", pointing into the
//    YAML text (for an expression error, at the offending character when the scalar is plain,
//    quoted on one line, or a literal block; otherwise at the scalar).
//  - Decide (and its fast core, Route) never lowers a tier:
//      1. the first tier rule whose `when` is true gives the tier, else the default;
//      2. the caller's requested tier raises it (never lowers it);
//      3. every forbid rule whose `when` is true forbids its tiers, and the tier is raised to the
//         weakest tier at or above it that no matching forbid names. Forbids always win: no rule
//         order and no requested tier lands a task on a forbidden tier. `isolated` cannot be
//         forbidden, so a tier always exists.
//    Tier rules after the first match are not evaluated; every forbid rule is.
//  - Fail closed: if any evaluated rule fails (step budget exhausted, a malformed run-time
//    glob), the decision is `isolated`, naming the rule and the error.
//  - Capacity is not an input: a shortage never moves a task to a weaker tier (the scheduler
//    keeps it pending instead).
//  - version() is a short hash of the policy text; Decision carries it.
// Thread safety: a Policy is immutable after Parse; Route/Decide may run from any number of
// threads. PolicyStore is safe to use from any thread: readers get a shared_ptr to an immutable
// policy and keep it as long as they like; a reload swaps the pointer.
#pragma once

#include <array>
#include <cstdint>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"
#include "hangar/control/expr.h"
#include "hangar/control/model.h"

namespace hangar::control {

inline constexpr size_t kMaxPolicyRules = 1000;

struct Rule {
  std::string name;
  std::string description;
  Expr when;
  std::optional<Tier> tier;         // set: a tier rule
  std::array<bool, 3> forbid = {};  // indexed by Tier; a forbid rule when !tier
  int line = 0;                     // where the rule starts in the YAML (1-based)
  int column = 0;
  bool is_forbid() const { return !tier.has_value(); }
};

enum class RuleOutcome : uint8_t { kSkipped, kNotMatched, kMatched, kError };
std::string_view RuleOutcomeName(RuleOutcome outcome);  // skipped|not_matched|matched|error

// What Route decides, without words: indexes into Policy::rules().
struct Verdict {
  Tier tier = Tier::kIsolated;       // the final tier
  Tier rule_tier = Tier::kIsolated;  // what the first matching tier rule (or the default) said
  int32_t rule = -1;                 // that tier rule; -1 = the default
  bool raised_by_request = false;    // the requested tier was above rule_tier
  uint8_t forbidden = 0;             // bit (1 << tier) per tier a matching forbid named
  int32_t raised_by = -1;            // the forbid rule that moved the tier up, if any
  int32_t failed_rule = -1;          // ≥ 0: that rule failed; tier is isolated (fail closed)
};

// A decision in words, as stored with the task (see RoutingDecision in model.h).
struct Decision {
  Tier tier = Tier::kIsolated;
  // The rule that set the final tier: a tier rule, "default", "requested" (the caller's tier
  // raised it), a forbid rule that raised it, or the rule whose failure made it isolated.
  std::string rule;
  // e.g. rule 'payments-isolated' matched: paths[1]="services/payments/api.go" matches
  // "services/payments/**" -> isolated
  std::string explanation;
  // [{rule, kind: tier|forbid, outcome: matched|not_matched|error|skipped, tier|forbid,
  //   witness?, error?}] for every rule, in policy order.
  nlohmann::json trace = nlohmann::json::array();
  std::string policy_version;
  bool failed_closed = false;
};

class Policy {
 public:
  // `source_name` prefixes error positions ("policy.yaml:12:9: ...").
  static Result<Policy> Parse(std::string_view yaml, std::string_view source_name = "policy",
                              const ExprLimits& limits = {});
  static Result<Policy> LoadFile(const std::string& path, const ExprLimits& limits = {});
  // No rules: everything gets `default_tier` (for running without a policy file).
  static Policy Builtin(Tier default_tier);

  // The decision alone, allocation-free unless a rule fails. `outcomes`, when given, is resized
  // to rules().size() and records each rule's outcome; `error` receives a failure's message.
  Verdict Route(const TaskFacts& facts, std::vector<RuleOutcome>* outcomes = nullptr,
                std::string* error = nullptr) const;
  // Route plus the explanation and the trace (re-evaluates matching rules in explain mode).
  Decision Decide(const TaskFacts& facts) const;

  Tier default_tier() const { return default_; }
  const std::vector<Rule>& rules() const { return rules_; }
  const std::string& version() const { return version_; }
  const std::string& source_name() const { return source_name_; }

 private:
  Tier default_ = Tier::kShared;
  std::vector<Rule> rules_;
  std::vector<int32_t> tier_rules_;    // indexes, in order
  std::vector<int32_t> forbid_rules_;  // indexes, in order
  std::string version_;
  std::string source_name_;
};

// Fills the stored record from a decision.
RoutingDecision ToRoutingDecision(const Decision& decision, std::string task_id, int64_t at_ms);

// The current policy, replaceable at run time without a restart.
class PolicyStore {
 public:
  explicit PolicyStore(Policy initial);

  std::shared_ptr<const Policy> Current() const;
  // Parses the file and, only if it is valid, makes it current. On error the current policy is
  // kept and the error (with line and column) is returned.
  Status ReloadFromFile(const std::string& path);
  Status ReloadFromText(std::string_view yaml, std::string_view source_name);
  Decision Decide(const TaskFacts& facts) const { return Current()->Decide(facts); }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Policy> current_;
};

// `hangar route test POLICY TASKS.jsonl`: decide every task of a JSON-lines file offline.
struct RouteTestReport {
  std::string policy_version;
  int64_t tasks = 0;
  std::array<int64_t, 3> by_tier = {};  // indexed by Tier
  // Deciding rule (Decision::rule) → tasks, in policy order, then "default" and "requested";
  // rules that decided nothing are listed with 0 (dead rules show up).
  std::vector<std::pair<std::string, int64_t>> by_rule;
  int64_t failed_closed = 0;
  int64_t raised_by_request = 0;
  int64_t raised_by_forbid = 0;
};
// Each non-blank line is a task (TaskFactsFromJson); an error names its line: "line 3: ...".
Result<RouteTestReport> RouteTest(const Policy& policy, std::istream& jsonl);
std::string FormatRouteTest(const RouteTestReport& report);  // a table for people
nlohmann::json RouteTestJson(const RouteTestReport& report);

}  // namespace hangar::control
