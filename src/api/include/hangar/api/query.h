// Percent-encoding and query strings (RFC 3986 §2.1, application/x-www-form-urlencoded).
//
// Decoding is strict: a '%' not followed by two hex digits is an invalid_argument naming the
// byte offset, because silently passing it through would let two spellings of one name reach
// the store. Thread safety: pure functions; QueryParams is a value.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::api {

// Decodes %XX escapes; with plus_as_space (query strings), '+' becomes ' '.
Result<std::string> PercentDecode(std::string_view s, bool plus_as_space = false);
// Encodes every byte outside RFC 3986 unreserved (A-Z a-z 0-9 - . _ ~): safe for one path
// segment or one query value. For building request paths: "/v1/sandboxes/" + PercentEncode(id).
std::string PercentEncode(std::string_view s);

class QueryParams {
 public:
  // Parses "a=1&b=x%20y&flag": keys and values decoded, '+' as space; a key without '=' has
  // value "". Empty pieces ("a=1&&b=2") are skipped.
  static Result<QueryParams> Parse(std::string_view query);

  // First value of `key`, if present.
  std::optional<std::string_view> Get(std::string_view key) const;
  std::vector<std::string_view> GetAll(std::string_view key) const;
  bool Has(std::string_view key) const { return Get(key).has_value(); }
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace hangar::api
