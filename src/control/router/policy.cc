// Policy parsing (YAML → rules with compiled expressions), routing, explanations, reloads.
#include "hangar/control/policy.h"

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace hangar::control {
namespace {

constexpr Tier kStrongest = Tier::kIsolated;

std::string ShortHash(std::string_view text) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return fmt::format("{:016x}", h).substr(0, 12);
}

// Errors point into the YAML text: "source:line:col: message".
class Errors {
 public:
  explicit Errors(std::string_view source) : source_(source) {}
  Status At(int line0, int col0, std::string_view message) const {
    return Status::InvalidArgument(
        fmt::format("{}:{}:{}: {}", source_, line0 + 1, col0 + 1, message));
  }
  Status At(const YAML::Node& node, std::string_view message) const {
    const YAML::Mark m = node.Mark();
    return At(m.line < 0 ? 0 : m.line, m.column < 0 ? 0 : m.column, message);
  }

 private:
  std::string source_;
};

bool ValidRuleName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) ||
                    (i > 0 && (c == '-' || c == '_' || c == '.'));
    if (!ok) return false;
  }
  return true;
}

// Where, in the YAML text, offset `err` of a scalar's value is. nullopt when the scalar's style
// (folded, multi-line, with escapes) does not map offsets one to one.
std::optional<std::pair<int, int>> MapExprPosition(std::string_view text, const YAML::Mark& mark,
                                                   const std::string& value, const ExprError& err) {
  if (mark.pos < 0 || static_cast<size_t>(mark.pos) >= text.size()) return std::nullopt;
  const size_t pos = static_cast<size_t>(mark.pos);
  const char first = text[pos];
  if (value.find('\n') == std::string::npos && first != '|' && first != '>') {
    size_t start = pos;
    if (first == '\'' || first == '"') {
      start = pos + 1;
      if (start + value.size() >= text.size() || text[start + value.size()] != first) {
        return std::nullopt;
      }
    }
    if (text.substr(start, value.size()) != value) return std::nullopt;  // escapes, folding
    return std::make_pair(mark.line, mark.column + static_cast<int>(start - pos + err.offset));
  }
  if (first == '|') {
    // Literal block: value line k is file line mark.line + k, after the indentation.
    std::vector<std::string_view> lines;
    size_t line_start = text.rfind('\n', pos);
    line_start = line_start == std::string_view::npos ? 0 : line_start + 1;
    for (size_t p = line_start; p <= text.size();) {
      const size_t nl = text.find('\n', p);
      const size_t end = nl == std::string_view::npos ? text.size() : nl;
      lines.push_back(text.substr(p, end - p));
      if (nl == std::string_view::npos) break;
      p = nl + 1;
    }
    std::vector<std::string_view> value_lines;
    std::string_view v = value;
    for (size_t p = 0; p <= v.size();) {
      const size_t nl = v.find('\n', p);
      const size_t end = nl == std::string_view::npos ? v.size() : nl;
      value_lines.push_back(v.substr(p, end - p));
      if (nl == std::string_view::npos) break;
      p = nl + 1;
    }
    const size_t k = static_cast<size_t>(err.line);  // 1-based line inside the expression
    if (k == 0 || k > value_lines.size() || k >= lines.size()) return std::nullopt;
    const std::string_view file_line = lines[k];
    const std::string_view value_line = value_lines[k - 1];
    if (!file_line.ends_with(value_line)) return std::nullopt;
    const size_t indent = file_line.size() - value_line.size();
    return std::make_pair(mark.line + static_cast<int>(k),
                          static_cast<int>(indent) + err.column - 1);
  }
  return std::nullopt;
}

Status CheckKeys(const YAML::Node& map, const std::set<std::string, std::less<>>& allowed,
                 std::string_view what, const Errors& errors) {
  std::set<std::string, std::less<>> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar())
      return errors.At(kv.first, fmt::format("{}: keys must be names", what));
    const std::string key = kv.first.Scalar();
    if (allowed.find(key) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return errors.At(kv.first,
                       fmt::format("{}: unknown key '{}' (allowed: {})", what, key, list));
    }
    if (!seen.insert(key).second) {
      return errors.At(kv.first, fmt::format("{}: duplicate key '{}'", what, key));
    }
  }
  return Status::Ok();
}

Result<Tier> TierAt(const YAML::Node& node, std::string_view what, const Errors& errors) {
  if (!node.IsScalar()) {
    return errors.At(node,
                     fmt::format("{} must be a tier name (shared, hardened, isolated)", what));
  }
  auto tier = ParseTier(node.Scalar());
  if (!tier.ok()) return errors.At(node, fmt::format("{}: {}", what, tier.status().message()));
  return *tier;
}

Result<Rule> ParseRule(const YAML::Node& node, size_t index, std::string_view text,
                       const ExprLimits& limits, const Errors& errors) {
  const std::string where = fmt::format("rules[{}]", index);
  if (!node.IsMap())
    return errors.At(node, where + " must be a mapping with name, when, tier|forbid");
  HANGAR_TRY(CheckKeys(node, {"name", "description", "when", "tier", "forbid"}, where, errors));
  Rule rule;
  rule.line = node.Mark().line + 1;
  rule.column = node.Mark().column + 1;
  const YAML::Node name = node["name"];
  if (!name) return errors.At(node, where + ": missing 'name'");
  if (!name.IsScalar() || !ValidRuleName(name.Scalar())) {
    return errors.At(name, where +
                               ": 'name' must be letters, digits, '-', '_' or '.', starting "
                               "with a letter or digit");
  }
  rule.name = name.Scalar();
  const std::string label = fmt::format("rule '{}'", rule.name);
  if (rule.name == "default" || rule.name == "requested") {
    return errors.At(name, fmt::format("{}: the name is reserved (decisions use it)", label));
  }
  if (const YAML::Node d = node["description"]) {
    if (!d.IsScalar()) return errors.At(d, label + ": 'description' must be text");
    rule.description = d.Scalar();
  }
  const YAML::Node when = node["when"];
  if (!when) return errors.At(node, label + ": missing 'when' (use when: 'true' to always match)");
  if (!when.IsScalar() || when.Scalar().empty()) {
    return errors.At(when, label + ": 'when' must be a non-empty expression");
  }
  ExprError expr_error;
  auto expr = Expr::Compile(when.Scalar(), limits, &expr_error);
  if (!expr.ok()) {
    auto at = MapExprPosition(text, when.Mark(), when.Scalar(), expr_error);
    if (at) {
      return errors.At(at->first, at->second,
                       fmt::format("{}: in 'when': {}", label, expr_error.message));
    }
    return errors.At(when, fmt::format("{}: in 'when' at {}:{} of the expression: {}", label,
                                       expr_error.line, expr_error.column, expr_error.message));
  }
  rule.when = std::move(*expr);
  const YAML::Node tier = node["tier"];
  const YAML::Node forbid = node["forbid"];
  if (tier && forbid) {
    return errors.At(forbid, label + ": has both 'tier' and 'forbid'; a rule is one or the other");
  }
  if (!tier && !forbid) return errors.At(node, label + ": needs 'tier' or 'forbid'");
  if (tier) {
    HANGAR_ASSIGN_OR_RETURN(rule.tier, TierAt(tier, label + ": 'tier'", errors));
    return rule;
  }
  if (!forbid.IsSequence() || forbid.size() == 0) {
    return errors.At(forbid, label + ": 'forbid' must be a non-empty list of tiers, e.g. [shared]");
  }
  for (const auto& t : forbid) {
    HANGAR_ASSIGN_OR_RETURN(Tier ft, TierAt(t, label + ": 'forbid'", errors));
    if (ft == kStrongest) {
      return errors.At(t, fmt::format("{}: 'forbid' cannot name '{}': it is the strongest tier, "
                                      "where every task must always be able to go (the router "
                                      "only raises tiers)",
                                      label, TierName(kStrongest)));
    }
    rule.forbid[static_cast<size_t>(ft)] = true;
  }
  return rule;
}

std::string TierList(const std::array<bool, 3>& tiers) {
  std::string out;
  for (size_t t = 0; t < tiers.size(); ++t) {
    if (!tiers[t]) continue;
    out += out.empty() ? "" : ", ";
    out += TierName(static_cast<Tier>(t));
  }
  return out;
}

}  // namespace

std::string_view RuleOutcomeName(RuleOutcome outcome) {
  switch (outcome) {
    case RuleOutcome::kSkipped:
      return "skipped";
    case RuleOutcome::kNotMatched:
      return "not_matched";
    case RuleOutcome::kMatched:
      return "matched";
    case RuleOutcome::kError:
      return "error";
  }
  return "?";
}

Result<Policy> Policy::Parse(std::string_view text, std::string_view source_name,
                             const ExprLimits& limits) {
  const Errors errors(source_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return errors.At(e.mark.line < 0 ? 0 : e.mark.line, e.mark.column < 0 ? 0 : e.mark.column,
                     "invalid YAML: " + e.msg);
  }
  try {
    if (!root.IsMap()) {
      return errors.At(0, 0, "a policy must be a YAML mapping with version, default and rules");
    }
    HANGAR_TRY(CheckKeys(root, {"version", "default", "rules"}, "policy", errors));
    Policy p;
    p.source_name_ = std::string(source_name);
    p.version_ = ShortHash(text);
    const YAML::Node version = root["version"];
    if (!version) return errors.At(0, 0, "missing 'version' (this router reads version: 1)");
    if (!version.IsScalar() || version.Scalar() != "1") {
      return errors.At(version, "unsupported 'version' (this router reads version: 1)");
    }
    const YAML::Node def = root["default"];
    if (!def) {
      return errors.At(0, 0, "missing 'default': the tier for tasks no rule matches is mandatory");
    }
    HANGAR_ASSIGN_OR_RETURN(p.default_, TierAt(def, "'default'", errors));
    if (const YAML::Node rules = root["rules"]; rules && !rules.IsNull()) {
      if (!rules.IsSequence()) return errors.At(rules, "'rules' must be a list");
      if (rules.size() > kMaxPolicyRules) {
        return errors.At(rules, fmt::format("more than {} rules", kMaxPolicyRules));
      }
      std::map<std::string, int> names;
      for (size_t i = 0; i < rules.size(); ++i) {
        HANGAR_ASSIGN_OR_RETURN(Rule rule, ParseRule(rules[i], i, text, limits, errors));
        if (auto [it, fresh] = names.emplace(rule.name, rule.line); !fresh) {
          return errors.At(
              rules[i]["name"],
              fmt::format("duplicate rule name '{}' (first at line {})", rule.name, it->second));
        }
        const auto index = static_cast<int32_t>(p.rules_.size());
        (rule.is_forbid() ? p.forbid_rules_ : p.tier_rules_).push_back(index);
        p.rules_.push_back(std::move(rule));
      }
    }
    return p;
  } catch (const YAML::Exception& e) {  // conversions on malformed nodes
    return errors.At(e.mark.line < 0 ? 0 : e.mark.line, e.mark.column < 0 ? 0 : e.mark.column,
                     e.msg);
  }
}

Result<Policy> Policy::LoadFile(const std::string& path, const ExprLimits& limits) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, fmt::format("open({})", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::FromErrno(errno, fmt::format("read({})", path));
  return Parse(text.str(), path, limits);
}

Policy Policy::Builtin(Tier default_tier) {
  Policy p;
  p.default_ = default_tier;
  p.source_name_ = "builtin";
  p.version_ = ShortHash(fmt::format("version: 1\ndefault: {}\n", TierName(default_tier)));
  return p;
}

Verdict Policy::Route(const TaskFacts& facts, std::vector<RuleOutcome>* outcomes,
                      std::string* error) const {
  Verdict v;
  if (outcomes) outcomes->assign(rules_.size(), RuleOutcome::kSkipped);
  auto record = [&](int32_t i, RuleOutcome o) {
    if (outcomes) (*outcomes)[static_cast<size_t>(i)] = o;
  };
  auto fail_closed = [&](int32_t i, const Status& st) {
    record(i, RuleOutcome::kError);
    if (error) *error = st.message();
    v.failed_rule = i;
    v.tier = kStrongest;
    return v;
  };
  v.rule_tier = default_;
  for (int32_t i : tier_rules_) {
    const Rule& r = rules_[static_cast<size_t>(i)];
    auto m = r.when.Evaluate(facts);
    if (!m.ok()) return fail_closed(i, m.status());
    if (*m) {
      record(i, RuleOutcome::kMatched);
      v.rule = i;
      v.rule_tier = *r.tier;
      break;
    }
    record(i, RuleOutcome::kNotMatched);
  }
  Tier tier = v.rule_tier;
  if (facts.requested_tier && *facts.requested_tier > tier) {
    tier = *facts.requested_tier;
    v.raised_by_request = true;
  }
  std::array<int32_t, 3> forbidder = {-1, -1, -1};
  for (int32_t i : forbid_rules_) {
    const Rule& r = rules_[static_cast<size_t>(i)];
    auto m = r.when.Evaluate(facts);
    if (!m.ok()) return fail_closed(i, m.status());
    record(i, *m ? RuleOutcome::kMatched : RuleOutcome::kNotMatched);
    if (!*m) continue;
    for (size_t t = 0; t < 3; ++t) {
      if (!r.forbid[t]) continue;
      v.forbidden |= static_cast<uint8_t>(1u << t);
      if (forbidder[t] < 0) forbidder[t] = i;
    }
  }
  while (tier < kStrongest && (v.forbidden >> static_cast<int>(tier)) & 1) {
    v.raised_by = forbidder[static_cast<size_t>(tier)];
    tier = static_cast<Tier>(static_cast<int>(tier) + 1);
  }
  v.tier = tier;
  return v;
}

Decision Policy::Decide(const TaskFacts& facts) const {
  std::vector<RuleOutcome> outcomes;
  std::string error;
  const Verdict v = Route(facts, &outcomes, &error);
  Decision d;
  d.tier = v.tier;
  d.policy_version = version_;
  std::vector<std::string> witnesses(rules_.size());
  for (size_t i = 0; i < rules_.size(); ++i) {
    if (outcomes[i] != RuleOutcome::kMatched) continue;
    auto again = rules_[i].when.Evaluate(facts, &witnesses[i]);
    if (!again.ok()) witnesses[i] = "(no witness: " + again.status().message() + ")";
  }
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    nlohmann::json e = {{"rule", r.name},
                        {"kind", r.is_forbid() ? "forbid" : "tier"},
                        {"outcome", RuleOutcomeName(outcomes[i])}};
    if (r.is_forbid()) {
      e["forbid"] = nlohmann::json::array();
      for (size_t t = 0; t < 3; ++t) {
        if (r.forbid[t]) e["forbid"].push_back(TierName(static_cast<Tier>(t)));
      }
    } else {
      e["tier"] = TierName(*r.tier);
    }
    if (outcomes[i] == RuleOutcome::kMatched) e["witness"] = witnesses[i];
    if (outcomes[i] == RuleOutcome::kError) e["error"] = error;
    d.trace.push_back(std::move(e));
  }

  if (v.failed_rule >= 0) {
    d.rule = rules_[static_cast<size_t>(v.failed_rule)].name;
    d.failed_closed = true;
    d.explanation = fmt::format("rule '{}' failed to evaluate ({}); failing closed to {}", d.rule,
                                error, TierName(kStrongest));
    return d;
  }
  std::vector<std::string> parts;
  if (v.rule >= 0) {
    const auto i = static_cast<size_t>(v.rule);
    d.rule = rules_[i].name;
    parts.push_back(
        fmt::format("rule '{}' matched: {} -> {}", d.rule, witnesses[i], TierName(v.rule_tier)));
  } else {
    d.rule = "default";
    parts.push_back(fmt::format("no rule matched: default {}", TierName(v.rule_tier)));
  }
  Tier base = v.rule_tier;
  if (facts.requested_tier) {
    if (v.raised_by_request) {
      d.rule = "requested";
      base = *facts.requested_tier;
      parts.push_back(fmt::format("requested tier {} raises it to {}",
                                  TierName(*facts.requested_tier), TierName(base)));
    } else if (*facts.requested_tier < v.rule_tier) {
      parts.push_back(fmt::format("requested tier {} ignored (a request never lowers the tier)",
                                  TierName(*facts.requested_tier)));
    }
  }
  for (int32_t i : forbid_rules_) {
    const auto k = static_cast<size_t>(i);
    if (outcomes[k] != RuleOutcome::kMatched) continue;
    parts.push_back(fmt::format("forbid '{}' matched: {} -> not on {}", rules_[k].name,
                                witnesses[k], TierList(rules_[k].forbid)));
  }
  if (v.raised_by >= 0) {
    d.rule = rules_[static_cast<size_t>(v.raised_by)].name;
    parts.push_back(fmt::format("raised {} -> {}", TierName(base), TierName(v.tier)));
  }
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) d.explanation += "; ";
    d.explanation += parts[k];
  }
  return d;
}

RoutingDecision ToRoutingDecision(const Decision& decision, std::string task_id, int64_t at_ms) {
  RoutingDecision r;
  r.task_id = std::move(task_id);
  r.tier = decision.tier;
  r.rule = decision.rule;
  r.explanation = decision.explanation;
  r.policy_version = decision.policy_version;
  r.trace = decision.trace;
  r.at_ms = at_ms;
  return r;
}

PolicyStore::PolicyStore(Policy initial)
    : current_(std::make_shared<const Policy>(std::move(initial))) {}

std::shared_ptr<const Policy> PolicyStore::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

Status PolicyStore::ReloadFromFile(const std::string& path) {
  auto p = Policy::LoadFile(path);
  if (!p.ok()) return p.status();  // the current policy stays
  auto next = std::make_shared<const Policy>(std::move(*p));
  std::lock_guard lock(mu_);
  current_ = std::move(next);
  return Status::Ok();
}

Status PolicyStore::ReloadFromText(std::string_view yaml, std::string_view source_name) {
  auto p = Policy::Parse(yaml, source_name);
  if (!p.ok()) return p.status();
  auto next = std::make_shared<const Policy>(std::move(*p));
  std::lock_guard lock(mu_);
  current_ = std::move(next);
  return Status::Ok();
}

}  // namespace hangar::control
