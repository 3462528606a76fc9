#include "protocol.h"

#include <array>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace hangar::envd::internal {

std::string_view ConnectCodeName(Code code) {
  // Connect's names are hangar's, except that Connect spells it "canceled".
  return code == Code::kCancelled ? "canceled" : CodeName(code);
}

int ConnectHttpStatus(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
      return 400;
    case Code::kFailedPrecondition:
      return 400;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
      return 409;
    case Code::kAborted:
      return 409;
    case Code::kResourceExhausted:
      return 429;
    case Code::kCancelled:
      return 499;
    case Code::kUnimplemented:
      return 501;
    case Code::kUnavailable:
      return 503;
    case Code::kDeadlineExceeded:
      return 504;
    case Code::kInternal:
      return 500;
  }
  return 500;
}

Code CodeFromConnectName(std::string_view name) {
  for (int i = static_cast<int>(Code::kInvalidArgument); i <= static_cast<int>(Code::kInternal);
       ++i) {
    if (ConnectCodeName(static_cast<Code>(i)) == name) return static_cast<Code>(i);
  }
  if (name == "cancelled") return Code::kCancelled;  // Hangar's spelling, from our own servers
  if (name == "out_of_range") return Code::kInvalidArgument;
  return Code::kInternal;
}

Code CodeFromHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return Code::kInvalidArgument;
    case 401:
      return Code::kUnauthenticated;
    case 403:
      return Code::kPermissionDenied;
    case 404:
      return Code::kNotFound;
    case 409:
      return Code::kAlreadyExists;
    case 413:
    case 429:
    case 507:
      return Code::kResourceExhausted;
    case 499:
      return Code::kCancelled;
    case 501:
      return Code::kUnimplemented;
    case 502:
    case 503:
      return Code::kUnavailable;
    case 504:
      return Code::kDeadlineExceeded;
    default:
      return Code::kInternal;
  }
}

nlohmann::json ErrorJson(const Status& status) {
  return {{"code", ConnectCodeName(status.code())}, {"message", status.message()}};
}

Status StatusFromErrorJson(const nlohmann::json& error, int http_status) {
  if (!error.is_object()) {
    return Status(CodeFromHttpStatus(http_status), "HTTP " + std::to_string(http_status));
  }
  std::string message;
  if (auto it = error.find("message"); it != error.end() && it->is_string()) message = *it;
  auto code = error.find("code");
  if (code != error.end() && code->is_string()) {
    Code c = CodeFromConnectName(code->get<std::string>());
    if (c == Code::kOk) c = Code::kInternal;
    return Status(c, message);
  }
  // envd's /files errors carry the HTTP status as an integer code.
  return Status(CodeFromHttpStatus(http_status), message);
}

bool ConstantTimeEquals(std::string_view given, std::string_view expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

std::string Envelope(uint8_t flags, std::string_view payload) {
  std::string out;
  out.reserve(5 + payload.size());
  uint32_t n = static_cast<uint32_t>(payload.size());
  out.push_back(static_cast<char>(flags));
  out.push_back(static_cast<char>((n >> 24) & 0xff));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  out.append(payload);
  return out;
}

std::string EndStreamEnvelope(const Status& status) {
  nlohmann::json end = nlohmann::json::object();
  if (!status.ok()) end["error"] = ErrorJson(status);
  return Envelope(kFlagEndStream,
                  end.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

namespace {
uint32_t ReadLength(const char* p) {
  auto b = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}
}  // namespace

Status EnvelopeReader::Feed(std::string_view bytes) {
  if (offset_ > 0 && offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  }
  buffer_.append(bytes);
  if (pending() >= 5 && ReadLength(buffer_.data() + offset_ + 1) > kMaxEnvelopeBytes) {
    return Status::InvalidArgument(
        "envelope of " + std::to_string(ReadLength(buffer_.data() + offset_ + 1)) +
        " bytes exceeds the limit of " + std::to_string(kMaxEnvelopeBytes));
  }
  return Status::Ok();
}

std::optional<Frame> EnvelopeReader::Next() {
  if (pending() < 5) return std::nullopt;
  const char* p = buffer_.data() + offset_;
  uint32_t n = ReadLength(p + 1);
  if (n > kMaxEnvelopeBytes || pending() < 5 + static_cast<size_t>(n)) return std::nullopt;
  Frame f;
  f.flags = static_cast<uint8_t>(p[0]);
  f.payload.assign(p + 5, n);
  offset_ += 5 + n;
  // Compact once the consumed prefix dominates, so a long stream does not grow the buffer.
  if (offset_ > (1 << 16) && offset_ * 2 > buffer_.size()) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  return f;
}

Result<std::string> SingleEnvelope(std::string_view body) {
  if (body.size() < 5) {
    return Status::InvalidArgument("request body of " + std::to_string(body.size()) +
                                   " bytes is not a Connect envelope (at least 5 bytes)");
  }
  auto flags = static_cast<uint8_t>(body[0]);
  uint32_t n = ReadLength(body.data() + 1);
  if (body.size() != 5 + static_cast<size_t>(n)) {
    return Status::InvalidArgument("Connect envelope declares " + std::to_string(n) +
                                   " bytes but the request body carries " +
                                   std::to_string(body.size() - 5));
  }
  if (flags & kFlagCompressed) {
    return Status::InvalidArgument("compressed Connect envelopes are not supported");
  }
  if (flags & kFlagEndStream) {
    return Status::InvalidArgument("a request envelope must not have the end-of-stream flag");
  }
  return std::string(body.substr(5));
}

// --- Timestamp --------------------------------------------------------------------------------

std::string FormatTimestamp(int64_t seconds, int32_t nanos) {
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  if (nanos != 0) {
    char frac[16];
    if (nanos % 1'000'000 == 0) {
      std::snprintf(frac, sizeof frac, ".%03d", nanos / 1'000'000);
    } else if (nanos % 1000 == 0) {
      std::snprintf(frac, sizeof frac, ".%06d", nanos / 1000);
    } else {
      std::snprintf(frac, sizeof frac, ".%09d", nanos);
    }
    out += frac;
  }
  out += 'Z';
  return out;
}

Result<Clock::WallTime> ParseTimestamp(std::string_view text) {
  auto bad = [&] {
    return Status::InvalidArgument("invalid timestamp '" + std::string(text) + "'");
  };
  if (text.size() < 20) return bad();
  auto num = [&](size_t pos, size_t len, int& out) {
    auto [p, ec] = std::from_chars(text.data() + pos, text.data() + pos + len, out);
    return ec == std::errc() && p == text.data() + pos + len;
  };
  std::tm tm{};
  int year, mon, day, hour, min, sec;
  if (!num(0, 4, year) || text[4] != '-' || !num(5, 2, mon) || text[7] != '-' || !num(8, 2, day) ||
      (text[10] != 'T' && text[10] != 't') || !num(11, 2, hour) || text[13] != ':' ||
      !num(14, 2, min) || text[16] != ':' || !num(17, 2, sec)) {
    return bad();
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  size_t pos = 19;
  int64_t nanos = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 9) nanos = nanos * 10 + (text[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return bad();
    for (int d = digits; d < 9; ++d) nanos *= 10;
  }
  int64_t offset = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos + 6 == text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int oh, om;
    if (!num(pos + 1, 2, oh) || text[pos + 3] != ':' || !num(pos + 4, 2, om)) return bad();
    offset = (oh * 3600 + om * 60) * (text[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return bad();
  }
  if (pos != text.size()) return bad();
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset;
  return Clock::WallTime(std::chrono::seconds(secs) + std::chrono::nanoseconds(nanos));
}

// --- field access -----------------------------------------------------------------------------

const nlohmann::json* Field(const nlohmann::json& msg, std::string_view camel,
                            std::string_view snake) {
  if (!msg.is_object()) return nullptr;
  auto it = msg.find(camel);
  if (it == msg.end() && !snake.empty()) it = msg.find(snake);
  if (it == msg.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<std::string> GetString(const nlohmann::json& msg, std::string_view camel,
                              std::string_view snake, std::string fallback) {
  const nlohmann::json* f = Field(msg, camel, snake);
  if (f == nullptr) return fallback;
  if (!f->is_string()) {
    return Status::InvalidArgument("field " + std::string(camel) + " must be a string");
  }
  return f->get<std::string>();
}

Result<bool> GetBool(const nlohmann::json& msg, std::string_view camel, std::string_view snake,
                     bool fallback) {
  const nlohmann::json* f = Field(msg, camel, snake);
  if (f == nullptr) return fallback;
  if (!f->is_boolean()) {
    return Status::InvalidArgument("field " + std::string(camel) + " must be a boolean");
  }
  return f->get<bool>();
}

Result<int64_t> GetInt(const nlohmann::json& msg, std::string_view camel, std::string_view snake,
                       int64_t fallback) {
  const nlohmann::json* f = Field(msg, camel, snake);
  if (f == nullptr) return fallback;
  if (f->is_number_integer()) return f->get<int64_t>();
  if (f->is_number_float()) {
    double d = f->get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
  }
  if (f->is_string()) {
    const std::string& s = f->get_ref<const std::string&>();
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size()) return v;
  }
  return Status::InvalidArgument("field " + std::string(camel) + " must be an integer");
}

}  // namespace hangar::envd::internal
