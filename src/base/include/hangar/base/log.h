// Structured logging: one event = a message plus typed key/value fields.
//
//   log::Info("sandbox started", {{"id", id}, {"ms", 12.5}});
//
// Text format (default, for people):  2026-11-29T08:53:18.123Z INFO sandbox started id=sb1 ms=12.5
// JSON lines (--log-format json):     {"ts":"...","level":"info","msg":"sandbox
// started","id":"sb1","ms":12.5} Output goes to stderr. Thread safety: every function may be called
// from any thread; a line is written whole.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"

namespace hangar::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class Format { kText, kJson };

using Field = std::pair<std::string_view, nlohmann::json>;
using Fields = std::initializer_list<Field>;

Result<Level> ParseLevel(std::string_view s);    // debug|info|warn|error
Result<Format> ParseFormat(std::string_view s);  // text|json

// Sets format and minimum level. Safe to call again (e.g. after config is loaded).
void Init(Format format, Level level);
// Redirects output to a file descriptor the caller keeps open (tests capture with a pipe).
// -1 restores stderr.
void SetOutputFd(int fd);
bool Enabled(Level level);

void Write(Level level, std::string_view msg, Fields fields = {});
inline void Debug(std::string_view msg, Fields f = {}) { Write(Level::kDebug, msg, f); }
inline void Info(std::string_view msg, Fields f = {}) { Write(Level::kInfo, msg, f); }
inline void Warn(std::string_view msg, Fields f = {}) { Write(Level::kWarn, msg, f); }
inline void Error(std::string_view msg, Fields f = {}) { Write(Level::kError, msg, f); }

// Formats one line without writing it (used by Write and by tests).
std::string FormatLine(Format format, Level level, std::string_view ts, std::string_view msg,
                       Fields fields);

}  // namespace hangar::log
