// TaskFacts from the API create-body shape.
#include <set>

#include <fmt/format.h>

#include "hangar/control/expr.h"

namespace hangar::control {
namespace {

using nlohmann::json;

std::string TypeOf(const json& v) { return v.type_name(); }

Result<std::string> GetString(const json& v, std::string_view field) {
  if (!v.is_string()) {
    return Status::InvalidArgument(
        fmt::format("field '{}' must be a string, got {}", field, TypeOf(v)));
  }
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() > kMaxFactStringSize) {
    return Status::InvalidArgument(
        fmt::format("field '{}' is longer than {} bytes", field, kMaxFactStringSize));
  }
  return s;
}

Result<std::vector<std::string>> GetList(const json& v, std::string_view field) {
  if (!v.is_array()) {
    return Status::InvalidArgument(
        fmt::format("field '{}' must be an array of strings, got {}", field, TypeOf(v)));
  }
  if (v.size() > kMaxFactListSize) {
    return Status::InvalidArgument(
        fmt::format("field '{}' has {} entries, more than {}", field, v.size(), kMaxFactListSize));
  }
  std::vector<std::string> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    HANGAR_ASSIGN_OR_RETURN(std::string s, GetString(v[i], fmt::format("{}[{}]", field, i)));
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::map<std::string, std::string>> GetMap(const json& v, std::string_view field) {
  if (!v.is_object()) {
    return Status::InvalidArgument(
        fmt::format("field '{}' must be an object of strings, got {}", field, TypeOf(v)));
  }
  if (v.size() > kMaxFactListSize) {
    return Status::InvalidArgument(
        fmt::format("field '{}' has {} entries, more than {}", field, v.size(), kMaxFactListSize));
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    if (key.size() > kMaxFactStringSize) {
      return Status::InvalidArgument(
          fmt::format("field '{}' has a key longer than {} bytes", field, kMaxFactStringSize));
    }
    HANGAR_ASSIGN_OR_RETURN(std::string s, GetString(value, fmt::format("{}.{}", field, key)));
    out.emplace(key, std::move(s));
  }
  return out;
}

}  // namespace

Result<TaskFacts> TaskFactsFromJson(const json& body) {
  if (!body.is_object()) {
    return Status::InvalidArgument(
        fmt::format("a task must be a JSON object, got {}", TypeOf(body)));
  }
  // Create-body fields that exist but do not influence routing.
  static const std::set<std::string, std::less<>> kIgnored = {
      "command", "resources", "env", "timeout_s", "priority", "idempotency_key"};
  TaskFacts f;
  for (const auto& [key, value] : body.items()) {
    if (key == "team") {
      HANGAR_ASSIGN_OR_RETURN(f.team, GetString(value, key));
    } else if (key == "repo") {
      HANGAR_ASSIGN_OR_RETURN(f.repo, GetString(value, key));
    } else if (key == "template") {
      HANGAR_ASSIGN_OR_RETURN(f.template_name, GetString(value, key));
    } else if (key == "labels") {
      HANGAR_ASSIGN_OR_RETURN(f.labels, GetMap(value, key));
    } else if (key == "metadata") {
      HANGAR_ASSIGN_OR_RETURN(f.metadata, GetMap(value, key));
    } else if (key == "paths") {
      HANGAR_ASSIGN_OR_RETURN(f.paths, GetList(value, key));
    } else if (key == "secrets") {
      HANGAR_ASSIGN_OR_RETURN(f.secrets, GetList(value, key));
    } else if (key == "egress") {
      HANGAR_ASSIGN_OR_RETURN(f.egress, GetList(value, key));
    } else if (key == "tier") {
      if (value.is_null()) continue;
      HANGAR_ASSIGN_OR_RETURN(std::string name, GetString(value, key));
      auto tier = ParseTier(name);
      if (!tier.ok()) return tier.status().With("field 'tier'");
      f.requested_tier = *tier;
    } else if (kIgnored.find(key) == kIgnored.end()) {
      return Status::InvalidArgument(fmt::format(
          "unknown field '{}' (the router reads team, repo, template, labels, metadata, paths, "
          "secrets, egress, tier)",
          key));
    }
  }
  return f;
}

nlohmann::json TaskFactsToJson(const TaskFacts& f) {
  json j = json::object();
  if (!f.team.empty()) j["team"] = f.team;
  if (!f.repo.empty()) j["repo"] = f.repo;
  if (!f.template_name.empty()) j["template"] = f.template_name;
  if (!f.labels.empty()) j["labels"] = f.labels;
  if (!f.metadata.empty()) j["metadata"] = f.metadata;
  if (!f.paths.empty()) j["paths"] = f.paths;
  if (!f.secrets.empty()) j["secrets"] = f.secrets;
  if (!f.egress.empty()) j["egress"] = f.egress;
  if (f.requested_tier) j["tier"] = std::string(TierName(*f.requested_tier));
  return j;
}

std::string QuoteString(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace hangar::control
