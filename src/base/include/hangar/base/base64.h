// Base64 (RFC 4648): the one implementation every module uses (exec output in NDJSON events,
// proto3 JSON bytes in envd's protocol, HTTP Basic credentials).
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "hangar/base/status.h"

namespace hangar {

// Standard base64 with padding (what proto3 JSON emits for bytes).
std::string Base64Encode(std::string_view data);
// Standard alphabet without padding (Go's base64.RawStdEncoding).
std::string Base64RawEncode(std::string_view data);
// Accepts the standard and the URL-safe alphabet, with or without padding (proto3 JSON parsers
// must). Anything else → invalid_argument naming the offset.
Result<std::string> Base64Decode(std::string_view text);

}  // namespace hangar
