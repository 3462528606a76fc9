// Path globs for `s.matches(glob)`. A pattern compiles to a literal prefix, a literal suffix and
// the tokens between them; the common shapes ("a/b/**", "prod/*", "*.tf", exact names) are
// answered by prefix/suffix checks alone, the rest by a backtracking matcher that memoises failed
// (token, position) pairs when the pattern has two or more stars, so no input makes it exponential.
#include <fmt/format.h>

#include "hangar/control/expr.h"

namespace hangar::control {
namespace {

constexpr size_t kMaxGlobBytes = 1024;

void SetBit(std::array<uint64_t, 4>& bits, unsigned char c) { bits[c >> 6] |= 1ULL << (c & 63); }
bool TestBit(const std::array<uint64_t, 4>& bits, unsigned char c) {
  return (bits[c >> 6] >> (c & 63)) & 1;
}

}  // namespace

Result<Glob> Glob::Compile(std::string_view pattern) {
  auto error = [&](size_t at, std::string_view what) {
    return Status::InvalidArgument(
        fmt::format("invalid glob {}: {} at offset {}", QuoteString(pattern), what, at));
  };
  if (pattern.empty()) return Status::InvalidArgument("invalid glob \"\": empty pattern");
  if (pattern.size() > kMaxGlobBytes) {
    return Status::InvalidArgument(
        fmt::format("invalid glob: longer than {} bytes", kMaxGlobBytes));
  }
  Glob g;
  g.pattern_ = std::string(pattern);
  std::vector<Token> toks;
  const size_t n = pattern.size();
  for (size_t i = 0; i < n;) {
    const char ch = pattern[i];
    if (ch == '\\') {
      if (i + 1 == n) return error(i, "trailing '\\' escapes nothing");
      toks.push_back({Op::kChar, pattern[i + 1]});
      i += 2;
    } else if (ch == '?') {
      toks.push_back({Op::kAny});
      ++i;
    } else if (ch == '[') {
      size_t j = i + 1;
      bool negate = false;
      if (j < n && (pattern[j] == '!' || pattern[j] == '^')) {
        negate = true;
        ++j;
      }
      std::array<uint64_t, 4> bits{};
      bool first = true;
      bool closed = false;
      while (j < n) {
        char lo = pattern[j];
        if (lo == ']' && !first) {
          closed = true;
          ++j;
          break;
        }
        if (lo == '\\') {
          if (j + 1 == n) break;
          lo = pattern[++j];
        }
        ++j;
        char hi = lo;
        if (j + 1 < n && pattern[j] == '-' && pattern[j + 1] != ']') {
          hi = pattern[j + 1];
          if (hi == '\\') {
            if (j + 2 >= n) break;
            hi = pattern[j + 2];
            ++j;
          }
          j += 2;
          if (static_cast<unsigned char>(hi) < static_cast<unsigned char>(lo)) {
            return error(i, fmt::format("reversed range '{}-{}' in '['", lo, hi));
          }
        }
        for (unsigned c = static_cast<unsigned char>(lo); c <= static_cast<unsigned char>(hi);
             ++c) {
          SetBit(bits, static_cast<unsigned char>(c));
        }
        first = false;
      }
      if (!closed) return error(i, "unclosed '['");
      if (negate) {
        for (auto& w : bits) w = ~w;
      }
      bits['/' >> 6] &= ~(1ULL << ('/' & 63));  // a class never matches '/'
      if (g.classes_.size() >= 0xffff) return error(i, "too many '[' classes");
      g.classes_.push_back(bits);
      toks.push_back({Op::kClass, 0, static_cast<uint16_t>(g.classes_.size() - 1)});
      i = j;
    } else if (ch == '*') {
      size_t run = 0;
      while (i + run < n && pattern[i + run] == '*') ++run;
      if (run > 2) return error(i, "more than two '*' in a row");
      if (run == 1) {
        toks.push_back({Op::kStar});
        ++i;
        continue;
      }
      const bool seg_start = toks.empty() || (toks.back().op == Op::kChar && toks.back().c == '/');
      const bool at_end = i + 2 == n;
      const bool seg_end = at_end || pattern[i + 2] == '/';
      if (seg_start && seg_end) {
        if (at_end) {
          if (toks.empty()) {
            toks.push_back({Op::kAnyStar});  // "**" alone: everything
          } else {
            toks.pop_back();  // "a/**" = "a" followed by nothing or by "/..."
            toks.push_back({Op::kOptTail});
          }
          i += 2;
        } else {
          toks.push_back({Op::kOptDirs});  // "**/" = zero or more "segment/"
          i += 3;
        }
      } else {
        toks.push_back({Op::kAnyStar});  // inside a segment: any characters, '/' included
        i += 2;
      }
    } else {
      toks.push_back({Op::kChar, ch});
      ++i;
    }
  }

  size_t lo = 0;
  while (lo < toks.size() && toks[lo].op == Op::kChar) g.prefix_ += toks[lo++].c;
  size_t hi = toks.size();
  while (hi > lo && toks[hi - 1].op == Op::kChar) --hi;
  for (size_t k = hi; k < toks.size(); ++k) g.suffix_ += toks[k].c;
  g.tokens_.assign(toks.begin() + static_cast<ptrdiff_t>(lo),
                   toks.begin() + static_cast<ptrdiff_t>(hi));
  for (const Token& t : g.tokens_) {
    if (t.op == Op::kStar || t.op == Op::kAnyStar || t.op == Op::kOptDirs) ++g.star_tokens_;
  }
  if (g.tokens_.empty()) {
    g.shape_ = Shape::kLiteral;
  } else if (g.tokens_.size() == 1 && g.tokens_[0].op == Op::kOptTail) {
    g.shape_ = Shape::kPrefixTail;
  } else if (g.tokens_.size() == 1 && g.tokens_[0].op == Op::kStar) {
    g.shape_ = Shape::kOneStar;
  } else if (g.tokens_.size() == 1 && g.tokens_[0].op == Op::kAnyStar) {
    g.shape_ = Shape::kOneAnyStar;
  } else {
    g.shape_ = Shape::kGeneral;
  }
  return g;
}

bool Glob::MatchOne(const Token& t, unsigned char ch) const {
  switch (t.op) {
    case Op::kChar:
      return static_cast<unsigned char>(t.c) == ch;
    case Op::kAny:
      return ch != '/';
    case Op::kClass:
      return TestBit(classes_[t.cls], ch);
    default:
      return false;
  }
}

bool Glob::Matches(std::string_view s, uint64_t* steps) const {
  if (steps) ++*steps;
  switch (shape_) {
    case Shape::kLiteral:
      return s == prefix_;
    case Shape::kPrefixTail:
      // The first-byte test spares a memcmp call for most non-matching paths.
      return s.size() >= prefix_.size() && (prefix_.empty() || s[0] == prefix_[0]) &&
             s.starts_with(prefix_) && (s.size() == prefix_.size() || s[prefix_.size()] == '/');
    default:
      break;
  }
  if (s.size() < prefix_.size() + suffix_.size() || !s.starts_with(prefix_) ||
      !s.ends_with(suffix_)) {
    return false;
  }
  const std::string_view mid = s.substr(prefix_.size(), s.size() - prefix_.size() - suffix_.size());
  switch (shape_) {
    case Shape::kOneStar:
      return mid.find('/') == std::string_view::npos;
    case Shape::kOneAnyStar:
      return true;
    default:
      break;
  }
  if (star_tokens_ < 2) return MatchFrom(mid, 0, 0, nullptr, steps);
  // One bit per (token, position) that is known not to match.
  std::vector<uint8_t> memo(tokens_.size() * (mid.size() + 1), 0);
  return MatchFrom(mid, 0, 0, &memo, steps);
}

bool Glob::MatchFrom(std::string_view s, size_t ti, size_t si, std::vector<uint8_t>* memo,
                     uint64_t* steps) const {
  for (;;) {
    if (steps) ++*steps;
    if (ti == tokens_.size()) return si == s.size();
    const Token& t = tokens_[ti];
    if (t.op == Op::kChar || t.op == Op::kAny || t.op == Op::kClass) {
      if (si < s.size() && MatchOne(t, static_cast<unsigned char>(s[si]))) {
        ++ti;
        ++si;
        continue;
      }
      return false;
    }
    if (t.op == Op::kOptTail) return si == s.size() || s[si] == '/';  // always the last token
    break;
  }
  const size_t key = ti * (s.size() + 1) + si;
  if (memo && (*memo)[key]) return false;
  const Token& t = tokens_[ti];
  bool ok = false;
  switch (t.op) {
    case Op::kStar:
      for (size_t j = si;; ++j) {
        if (MatchFrom(s, ti + 1, j, memo, steps)) {
          ok = true;
          break;
        }
        if (j == s.size() || s[j] == '/') break;
      }
      break;
    case Op::kAnyStar:
      for (size_t j = si; j <= s.size() && !ok; ++j) ok = MatchFrom(s, ti + 1, j, memo, steps);
      break;
    case Op::kOptDirs:
      ok = MatchFrom(s, ti + 1, si, memo, steps);
      for (size_t j = si; j < s.size() && !ok; ++j) {
        if (s[j] == '/') ok = MatchFrom(s, ti + 1, j + 1, memo, steps);
      }
      break;
    default:
      break;
  }
  if (!ok && memo) (*memo)[key] = 1;
  return ok;
}

}  // namespace hangar::control
