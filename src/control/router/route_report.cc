// `hangar route test`: a policy over a JSON-lines file of tasks, offline.
#include <map>
#include <string>

#include <fmt/format.h>

#include "hangar/control/policy.h"

namespace hangar::control {

Result<RouteTestReport> RouteTest(const Policy& policy, std::istream& jsonl) {
  RouteTestReport report;
  report.policy_version = policy.version();
  std::map<std::string, int64_t> counts;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(jsonl, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json body = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) {
      return Status::InvalidArgument(fmt::format("line {}: not valid JSON", line_no));
    }
    auto facts = TaskFactsFromJson(body);
    if (!facts.ok()) return facts.status().With(fmt::format("line {}", line_no));
    const Decision d = policy.Decide(*facts);
    ++report.tasks;
    ++report.by_tier[static_cast<size_t>(d.tier)];
    ++counts[d.rule];
    if (d.failed_closed) ++report.failed_closed;
    if (d.rule == "requested") ++report.raised_by_request;
    for (const Rule& r : policy.rules()) {
      if (r.is_forbid() && r.name == d.rule) ++report.raised_by_forbid;
    }
  }
  if (jsonl.bad()) return Status::Internal(fmt::format("reading tasks after line {}", line_no));
  for (const Rule& r : policy.rules()) {
    auto it = counts.find(r.name);
    report.by_rule.emplace_back(r.name, it == counts.end() ? 0 : it->second);
  }
  for (const char* name : {"default", "requested"}) {
    auto it = counts.find(name);
    report.by_rule.emplace_back(name, it == counts.end() ? 0 : it->second);
  }
  return report;
}

namespace {
std::string Share(int64_t n, int64_t total) {
  return total == 0
             ? "-"
             : fmt::format("{:.1f}%", 100.0 * static_cast<double>(n) / static_cast<double>(total));
}
}  // namespace

std::string FormatRouteTest(const RouteTestReport& r) {
  std::string out = fmt::format("policy {}: {} tasks\n\n", r.policy_version, r.tasks);
  out += fmt::format("{:<10} {:>8} {:>7}\n", "tier", "tasks", "share");
  for (size_t t = 0; t < r.by_tier.size(); ++t) {
    out += fmt::format("{:<10} {:>8} {:>7}\n", TierName(static_cast<Tier>(t)), r.by_tier[t],
                       Share(r.by_tier[t], r.tasks));
  }
  size_t width = 13;
  for (const auto& [name, n] : r.by_rule) width = std::max(width, name.size());
  out += fmt::format("\n{:<{}} {:>8} {:>7}\n", "deciding rule", width, "tasks", "share");
  for (const auto& [name, n] : r.by_rule) {
    out += fmt::format("{:<{}} {:>8} {:>7}\n", name, width, n, Share(n, r.tasks));
  }
  out += fmt::format("\nraised by a forbid: {}, by the requested tier: {}, failed closed: {}\n",
                     r.raised_by_forbid, r.raised_by_request, r.failed_closed);
  return out;
}

nlohmann::json RouteTestJson(const RouteTestReport& r) {
  nlohmann::json tiers = nlohmann::json::object();
  for (size_t t = 0; t < r.by_tier.size(); ++t) {
    const double share =
        r.tasks ? static_cast<double>(r.by_tier[t]) / static_cast<double>(r.tasks) : 0.0;
    tiers[std::string(TierName(static_cast<Tier>(t)))] = {{"tasks", r.by_tier[t]},
                                                          {"share", share}};
  }
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& [name, n] : r.by_rule) {
    const double share = r.tasks ? static_cast<double>(n) / static_cast<double>(r.tasks) : 0.0;
    rules.push_back({{"rule", name}, {"tasks", n}, {"share", share}});
  }
  return {{"policy_version", r.policy_version},
          {"tasks", r.tasks},
          {"tiers", tiers},
          {"rules", rules},
          {"raised_by_forbid", r.raised_by_forbid},
          {"raised_by_request", r.raised_by_request},
          {"failed_closed", r.failed_closed}};
}

}  // namespace hangar::control
