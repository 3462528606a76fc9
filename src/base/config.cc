#include "hangar/base/config.h"

#include <cassert>
#include <charconv>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

extern char** environ;

namespace hangar {

std::string ConfigOption::EnvName() const {
  std::string out = "HANGAR_";
  for (char c : key) out += (c == '.') ? '_' : static_cast<char>(std::toupper(c));
  return out;
}

std::string ConfigOption::FlagName() const {
  std::string out = "--";
  for (char c : key) out += (c == '.' || c == '_') ? '-' : c;
  return out;
}

ConfigSchema& ConfigSchema::Add(ConfigOption option) {
  assert(Find(option.key) == nullptr && "duplicate config key");
  options_.push_back(std::move(option));
  return *this;
}

const ConfigOption* ConfigSchema::Find(std::string_view key) const {
  for (const auto& o : options_) {
    if (o.key == key) return &o;
  }
  return nullptr;
}

std::string_view SourceName(ConfigSource s) {
  switch (s) {
    case ConfigSource::kDefault:
      return "default";
    case ConfigSource::kFile:
      return "file";
    case ConfigSource::kEnv:
      return "env";
    case ConfigSource::kFlag:
      return "flag";
  }
  return "?";
}

const Config::Entry& Config::At(std::string_view key) const {
  auto it = values_.find(key);
  assert(it != values_.end() && "undeclared config key");
  return it->second;
}

bool Config::Has(std::string_view key) const { return values_.find(key) != values_.end(); }

const std::string& Config::GetString(std::string_view key) const { return At(key).value; }

int64_t Config::GetInt(std::string_view key) const {
  const Entry& e = At(key);
  assert(e.type == OptionType::kInt);
  int64_t v = 0;
  std::from_chars(e.value.data(), e.value.data() + e.value.size(), v);
  return v;
}

bool Config::GetBool(std::string_view key) const {
  const Entry& e = At(key);
  assert(e.type == OptionType::kBool);
  return e.value == "true";
}

ConfigSource Config::SourceOf(std::string_view key) const { return At(key).source; }

std::string Config::Describe() const {
  std::string out;
  for (const auto& [k, e] : values_) {
    out +=
        fmt::format("{} = {} ({})\n", k, e.value.empty() ? "\"\"" : e.value, SourceName(e.source));
  }
  return out;
}

namespace {

// Checks `raw` against the option and returns its canonical text.
Result<std::string> Normalize(const ConfigOption& opt, const std::string& raw) {
  switch (opt.type) {
    case OptionType::kString:
      return raw;
    case OptionType::kInt: {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), v);
      if (ec != std::errc() || p != raw.data() + raw.size() || raw.empty()) {
        return Status::InvalidArgument(fmt::format("{} must be an integer", opt.key));
      }
      if (v < opt.min || v > opt.max) {
        return Status::InvalidArgument(
            fmt::format("{} must be between {} and {}", opt.key, opt.min, opt.max));
      }
      return std::to_string(v);
    }
    case OptionType::kBool:
      if (raw == "true" || raw == "1" || raw == "yes" || raw == "on") return std::string("true");
      if (raw == "false" || raw == "0" || raw == "no" || raw == "off") return std::string("false");
      return Status::InvalidArgument(fmt::format("{} must be true or false", opt.key));
    case OptionType::kEnum:
      for (const auto& c : opt.choices) {
        if (c == raw) return raw;
      }
      return Status::InvalidArgument(
          fmt::format("{} must be one of: {}", opt.key, fmt::join(opt.choices, ", ")));
  }
  return Status::Internal("unknown option type");
}

std::string Where(const std::string& file, const YAML::Mark& m) {
  return fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
}

// Walks a YAML mapping, collecting dotted leaf keys with their positions.
Status Flatten(const YAML::Node& node, const std::string& prefix, const std::string& file,
               const ConfigSchema& schema, std::map<std::string, std::string>& out) {
  if (!node.IsMap()) {
    return Status::InvalidArgument(
        fmt::format("{}: expected a mapping{}", Where(file, node.Mark()),
                    prefix.empty() ? "" : fmt::format(" under '{}'", prefix)));
  }
  for (const auto& kv : node) {
    std::string name = kv.first.as<std::string>();
    std::string key = prefix.empty() ? name : prefix + "." + name;
    const YAML::Node& v = kv.second;
    if (v.IsMap()) {
      HANGAR_TRY(Flatten(v, key, file, schema, out));
      continue;
    }
    const ConfigOption* opt = schema.Find(key);
    if (opt == nullptr) {
      return Status::InvalidArgument(
          fmt::format("{}: unknown key '{}'", Where(file, kv.first.Mark()), key));
    }
    if (!v.IsScalar()) {
      return Status::InvalidArgument(
          fmt::format("{}: '{}' must be a single value", Where(file, v.Mark()), key));
    }
    auto norm = Normalize(*opt, v.Scalar());
    if (!norm.ok()) {
      return Status::InvalidArgument(
          fmt::format("{}: {}", Where(file, v.Mark()), norm.status().message()));
    }
    out[key] = *norm;
  }
  return Status::Ok();
}

}  // namespace

Result<Config> ResolveConfig(const ConfigSchema& schema, const ConfigInputs& in) {
  Config cfg;
  for (const auto& o : schema.options()) {
    cfg.values_[o.key] = Config::Entry{o.type, o.default_value, ConfigSource::kDefault};
  }

  if (in.file_text) {
    std::map<std::string, std::string> file_values;
    try {
      YAML::Node root = YAML::Load(*in.file_text);
      if (!root.IsNull()) HANGAR_TRY(Flatten(root, "", in.file_name, schema, file_values));
    } catch (const YAML::Exception& e) {
      return Status::InvalidArgument(fmt::format("{}: {}", Where(in.file_name, e.mark), e.msg));
    }
    for (auto& [k, v] : file_values) {
      auto& e = cfg.values_[k];
      e.value = v;
      e.source = ConfigSource::kFile;
    }
  }

  for (const auto& o : schema.options()) {
    auto it = in.env.find(o.EnvName());
    if (it == in.env.end()) continue;
    auto norm = Normalize(o, it->second);
    if (!norm.ok()) {
      return Status::InvalidArgument(
          fmt::format("{}='{}': {}", it->first, it->second, norm.status().message()));
    }
    cfg.values_[o.key] = Config::Entry{o.type, *norm, ConfigSource::kEnv};
  }

  for (const auto& [k, raw] : in.flags) {
    const ConfigOption* o = schema.Find(k);
    if (o == nullptr) return Status::InvalidArgument(fmt::format("unknown option '{}'", k));
    auto norm = Normalize(*o, raw);
    if (!norm.ok()) {
      return Status::InvalidArgument(
          fmt::format("{} {}: {}", o->FlagName(), raw, norm.status().message()));
    }
    cfg.values_[k] = Config::Entry{o->type, *norm, ConfigSource::kFlag};
  }
  return cfg;
}

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    if (kv.rfind("HANGAR_", 0) != 0) continue;
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    out.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return out;
}

}  // namespace hangar
