// protocol: the wire details of E2B's envd protocol shared by envd and hangar::envd::Client.
//
//  - Connect RPC (connectrpc.com/docs/protocol) with the JSON codec over HTTP/1.1:
//      unary:          POST /<pkg>.<Service>/<Method>, Content-Type application/json, body = the
//                      message; errors are {"code": "<connect code>", "message": "..."} with the
//                      HTTP status of the code (ConnectHttpStatus).
//      server stream:  Content-Type application/connect+json; request and response bodies are
//                      envelopes [flags:1][length:4, big-endian][JSON]; the response ends with an
//                      envelope whose flag has kEndStream set, carrying {} or {"error": {...}}.
//  - proto3 JSON: lowerCamelCase names (parsers also accept the proto names), bytes as base64,
//    int64 as decimal strings, enums by name, google.protobuf.Timestamp as RFC 3339 in UTC.
//
// Thread safety: pure functions; EnvelopeReader is a value owned by one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/base64.h"
#include "hangar/base/clock.h"
#include "hangar/base/status.h"

namespace hangar::envd::internal {

// --- Connect ----------------------------------------------------------------------------------

inline constexpr uint8_t kFlagCompressed = 0x01;
inline constexpr uint8_t kFlagEndStream = 0x02;
inline constexpr std::string_view kUnaryContentType = "application/json";
inline constexpr std::string_view kStreamContentType = "application/connect+json";
// Bounds one envelope: a request carries at most a few MiB of stdin; a bogus length must not
// make either side reserve gigabytes.
inline constexpr size_t kMaxEnvelopeBytes = 32 << 20;

// Connect's code names differ from Hangar's in one spelling ("canceled") and map to HTTP by
// Connect's table (failed_precondition is 400 there, not 409).
std::string_view ConnectCodeName(Code code);
int ConnectHttpStatus(Code code);
// Inverse of ConnectCodeName; unknown names (Connect's "unknown", "data_loss", ...) → internal,
// "out_of_range" → invalid_argument.
Code CodeFromConnectName(std::string_view name);
// The Code a bare HTTP status stands for, when a body carries no Connect error (Connect's table).
Code CodeFromHttpStatus(int http_status);

// {"code": "...", "message": "..."}
nlohmann::json ErrorJson(const Status& status);
// The Status an error object stands for ({"code","message"}); a malformed one → internal.
Status StatusFromErrorJson(const nlohmann::json& error, int http_status);

// Compares a secret in time independent of where the first difference is.
bool ConstantTimeEquals(std::string_view given, std::string_view expected);

// One envelope: flags, then the length of `payload` as 4 big-endian bytes, then `payload`.
std::string Envelope(uint8_t flags, std::string_view payload);
// The end-of-stream envelope: {} for ok, {"error": ErrorJson(status)} otherwise.
std::string EndStreamEnvelope(const Status& status);

struct Frame {
  uint8_t flags = 0;
  std::string payload;
  bool end_stream() const { return (flags & kFlagEndStream) != 0; }
};

// Splits a byte stream into envelopes as it arrives (chunk boundaries are arbitrary).
class EnvelopeReader {
 public:
  // Appends bytes; invalid_argument once a declared length exceeds kMaxEnvelopeBytes.
  Status Feed(std::string_view bytes);
  // The next complete frame, if any.
  std::optional<Frame> Next();
  // Bytes of an incomplete frame still buffered.
  size_t pending() const { return buffer_.size() - offset_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;
};

// The one message of a server-streaming request body: exactly one uncompressed, non-final
// envelope. Anything else is invalid_argument naming what is wrong.
Result<std::string> SingleEnvelope(std::string_view body);

// --- proto3 JSON ------------------------------------------------------------------------------

// Base64 as proto3 JSON wants it: hangar/base/base64.h.
using ::hangar::Base64Decode;
using ::hangar::Base64Encode;
using ::hangar::Base64RawEncode;

// google.protobuf.Timestamp: "2026-11-29T08:53:18.123456789Z", with 0, 3, 6 or 9 fractional
// digits as protobuf's own formatter chooses.
std::string FormatTimestamp(int64_t seconds, int32_t nanos);
Result<Clock::WallTime> ParseTimestamp(std::string_view text);

// Field access that accepts both spellings proto3 JSON allows ("watcherId" and "watcher_id").
// nullptr when absent or null.
const nlohmann::json* Field(const nlohmann::json& msg, std::string_view camel,
                            std::string_view snake = {});
// Typed getters: absent → fallback; present with the wrong JSON type → invalid_argument naming
// the field. Integers may arrive as JSON numbers or decimal strings (int64 and uint64 do).
Result<std::string> GetString(const nlohmann::json& msg, std::string_view camel,
                              std::string_view snake = {}, std::string fallback = {});
Result<bool> GetBool(const nlohmann::json& msg, std::string_view camel, std::string_view snake = {},
                     bool fallback = false);
Result<int64_t> GetInt(const nlohmann::json& msg, std::string_view camel,
                       std::string_view snake = {}, int64_t fallback = 0);

}  // namespace hangar::envd::internal
