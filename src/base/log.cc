#include "hangar/base/log.h"

#include <unistd.h>

#include <atomic>
#include <mutex>

#include <fmt/format.h>

#include "hangar/base/clock.h"

namespace hangar::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};
std::atomic<Format> g_format{Format::kText};
std::atomic<int> g_fd{STDERR_FILENO};
std::mutex g_write_mu;  // one line is written whole, never interleaved

std::string_view LevelName(Level l, bool upper) {
  switch (l) {
    case Level::kDebug:
      return upper ? "DEBUG" : "debug";
    case Level::kInfo:
      return upper ? "INFO" : "info";
    case Level::kWarn:
      return upper ? "WARN" : "warn";
    case Level::kError:
      return upper ? "ERROR" : "error";
  }
  return "?";
}

// Text values are printed bare unless they contain spaces, quotes or '=', so that
// `key=value` pairs stay machine-splittable.
void AppendTextValue(std::string& out, const nlohmann::json& v) {
  if (!v.is_string()) {
    out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  const auto& s = v.get_ref<const std::string&>();
  bool plain = !s.empty() && s.find_first_of(" \t\n\"=") == std::string::npos;
  if (plain) {
    out += s;
  } else {
    out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}

}  // namespace

Result<Level> ParseLevel(std::string_view s) {
  if (s == "debug") return Level::kDebug;
  if (s == "info") return Level::kInfo;
  if (s == "warn" || s == "warning") return Level::kWarn;
  if (s == "error") return Level::kError;
  return Status::InvalidArgument(
      fmt::format("unknown log level '{}' (expected debug, info, warn or error)", s));
}

Result<Format> ParseFormat(std::string_view s) {
  if (s == "text") return Format::kText;
  if (s == "json") return Format::kJson;
  return Status::InvalidArgument(fmt::format("unknown log format '{}' (expected text or json)", s));
}

void Init(Format format, Level level) {
  g_format = format;
  g_level = level;
}

void SetOutputFd(int fd) { g_fd = fd < 0 ? STDERR_FILENO : fd; }

bool Enabled(Level level) { return level >= g_level.load(std::memory_order_relaxed); }

std::string FormatLine(Format format, Level level, std::string_view ts, std::string_view msg,
                       Fields fields) {
  if (format == Format::kJson) {
    nlohmann::ordered_json j;
    j["ts"] = ts;
    j["level"] = LevelName(level, false);
    j["msg"] = msg;
    for (const auto& [k, v] : fields) j[std::string(k)] = v;
    std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out += '\n';
    return out;
  }
  std::string out = fmt::format("{} {} {}", ts, LevelName(level, true), msg);
  for (const auto& [k, v] : fields) {
    out += ' ';
    out += k;
    out += '=';
    AppendTextValue(out, v);
  }
  out += '\n';
  return out;
}

void Write(Level level, std::string_view msg, Fields fields) {
  if (!Enabled(level)) return;
  std::string line = FormatLine(g_format.load(), level,
                                FormatRfc3339(SystemClock::Instance().WallNow()), msg, fields);
  std::lock_guard lock(g_write_mu);
  const char* p = line.data();
  size_t left = line.size();
  int fd = g_fd.load();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a logging failure
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace hangar::log
