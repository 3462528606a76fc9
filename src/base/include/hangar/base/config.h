// Layered configuration: defaults < YAML file < environment < command-line flags.
//
// A program declares its options once in a ConfigSchema (key, type, default, help). From that
// one declaration come: the YAML keys (`http.threads` is `http: {threads: 4}`), the
// environment variables (HANGAR_HTTP_THREADS), the flags (--http-threads) and the help text.
// Resolution checks every value against its type and bounds and rejects unknown keys in the
// file with the file's line and column, so a typo never silently falls back to a default.
//
// Thread safety: a resolved Config is immutable; read it from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "hangar/base/status.h"

namespace hangar {

enum class OptionType { kString, kInt, kBool, kEnum };

struct ConfigOption {
  std::string key;  // dotted, lower_snake segments: "http.max_body_bytes"
  OptionType type = OptionType::kString;
  std::string default_value;  // textual; "" for none
  std::string help;
  int64_t min = INT64_MIN;  // kInt bounds
  int64_t max = INT64_MAX;
  std::vector<std::string> choices;  // kEnum

  // HANGAR_HTTP_MAX_BODY_BYTES
  std::string EnvName() const;
  // --http-max-body-bytes
  std::string FlagName() const;
};

class ConfigSchema {
 public:
  ConfigSchema& Add(ConfigOption option);
  const std::vector<ConfigOption>& options() const { return options_; }
  const ConfigOption* Find(std::string_view key) const;

 private:
  std::vector<ConfigOption> options_;
};

enum class ConfigSource { kDefault, kFile, kEnv, kFlag };
std::string_view SourceName(ConfigSource s);

class Config {
 public:
  // Typed access to a declared key. Asking for an undeclared key or the wrong type is a
  // programming error (asserts); values were validated during resolution.
  const std::string& GetString(std::string_view key) const;
  int64_t GetInt(std::string_view key) const;
  bool GetBool(std::string_view key) const;
  ConfigSource SourceOf(std::string_view key) const;
  bool Has(std::string_view key) const;

  // Every key with its value and where it came from: `key = value (source)`.
  std::string Describe() const;

 private:
  friend Result<Config> ResolveConfig(const ConfigSchema&, const struct ConfigInputs&);
  struct Entry {
    OptionType type;
    std::string value;
    ConfigSource source;
  };
  const Entry& At(std::string_view key) const;
  std::map<std::string, Entry, std::less<>> values_;
};

struct ConfigInputs {
  // YAML text and the name to show in errors; nullopt when there is no file.
  std::optional<std::string> file_text;
  std::string file_name = "config";
  // The process environment (only HANGAR_* entries matter).
  std::map<std::string, std::string> env;
  // Values given as flags, by key.
  std::map<std::string, std::string> flags;
};

// Applies the layers in precedence order and validates. Errors name the key, the value and the
// layer, e.g. "config.yaml:4:3: unknown key 'http.thread'" or
// "HANGAR_HTTP_THREADS='x': http.threads must be an integer".
Result<Config> ResolveConfig(const ConfigSchema& schema, const ConfigInputs& inputs);

// The HANGAR_* variables of this process.
std::map<std::string, std::string> ProcessEnvironment();

}  // namespace hangar
