// The router's expression language: a small, typed subset of CEL evaluated over one task's facts.
//
// Contract:
//  - TaskFacts is what the router knows about a task: plain values, nothing else is consulted.
//    TaskFactsFromJson accepts the API create-body shape and rejects unknown fields, wrong types
//    and values over the limits below, naming the field.
//  - Glob::Compile rejects malformed patterns (unclosed '[', reversed range, trailing '\', three
//    or more '*' in a row) naming the offset. Matching is polynomial in pattern × path length.
//    Semantics: '*' any run of characters except '/'; '?' one character except '/'; '[abc]',
//    '[a-z]', '[!x]' one character (never '/'); '**' as a whole segment matches zero or more
//    segments ("a/**/b" matches "a/b", "a/x/y/b"; "a/**" matches "a" and everything below it;
//    "**/x" matches "x" and "d/x"); '**' inside a segment matches any characters including '/';
//    '\c' matches c literally.
//  - Expr::Compile parses and type-checks once; every type error is found here (the language has
//    no dynamic values). It enforces static bounds (source length, node count, nesting depth,
//    macro nesting) and computes cost_bound(): the most steps one evaluation can take when every
//    list holds at most ExprLimits::max_list_size elements.
//  - Expr::Evaluate never hangs and never throws: it counts steps (nodes, macro iterations, glob
//    matcher steps) and stops with an error past ExprLimits::max_steps. The other runtime error
//    is a malformed glob computed at run time (`p.matches(labels.pattern)`).
//  - Explain mode (Evaluate with a witness) returns the same value and also says why a true
//    result is true, e.g. `paths[1]="services/payments/api.go" matches "services/payments/**"`.
// Thread safety: a compiled Expr / Glob is immutable; Evaluate may run from any number of threads.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"
#include "hangar/control/model.h"

namespace hangar::control {

// What the router decides on. Lists and maps hold what the task asked for, as sent.
struct TaskFacts {
  std::string team;
  std::string repo;
  std::string template_name;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> paths;    // repository paths the task touches
  std::vector<std::string> secrets;  // secret names requested
  std::vector<std::string> egress;   // egress destinations requested
  std::optional<Tier> requested_tier;
};

// Bounds TaskFactsFromJson enforces (the API applies the same ones).
inline constexpr size_t kMaxFactListSize = 1024;  // paths, secrets, egress; labels, metadata
inline constexpr size_t kMaxFactStringSize = 4096;

// {team?, repo?, template?, labels{}, metadata{}, paths[], secrets[], egress[], tier?}. The other
// create-body fields the router does not read (command, resources, env, timeout_s, priority,
// idempotency_key) are accepted and ignored; any other field is an error naming it.
Result<TaskFacts> TaskFactsFromJson(const nlohmann::json& body);
nlohmann::json TaskFactsToJson(const TaskFacts& facts);

// A compiled path glob (see the contract above for the syntax).
class Glob {
 public:
  static Result<Glob> Compile(std::string_view pattern);
  // `steps`, when given, is increased by the matcher's work (for the evaluation budget).
  bool Matches(std::string_view text, uint64_t* steps = nullptr) const;
  const std::string& pattern() const { return pattern_; }

 private:
  enum class Op : uint8_t { kChar, kAny, kClass, kStar, kAnyStar, kOptDirs, kOptTail };
  struct Token {
    Op op;
    char c = 0;
    uint16_t cls = 0;  // index into classes_
  };
  enum class Shape : uint8_t { kLiteral, kPrefixTail, kOneStar, kOneAnyStar, kGeneral };
  bool MatchFrom(std::string_view s, size_t ti, size_t si, std::vector<uint8_t>* memo,
                 uint64_t* steps) const;
  bool MatchOne(const Token& t, unsigned char ch) const;

  std::string pattern_;
  std::string prefix_;         // leading literal characters, checked first
  std::string suffix_;         // trailing literal characters, checked first
  std::vector<Token> tokens_;  // what lies between prefix_ and suffix_
  std::vector<std::array<uint64_t, 4>> classes_;
  Shape shape_ = Shape::kLiteral;
  size_t star_tokens_ = 0;
};

struct ExprLimits {
  size_t max_source_bytes = 16 * 1024;
  size_t max_nodes = 1000;
  size_t max_depth = 64;                    // parenthesis / operator nesting
  size_t max_macro_nesting = 2;             // exists/all inside exists/all
  size_t max_list_size = kMaxFactListSize;  // for cost_bound()
  uint64_t max_steps = 1'000'000;           // per evaluation
};

// Where a compile error is, inside the expression source (0-based byte offset; line and column
// are 1-based, counted inside the expression).
struct ExprError {
  size_t offset = 0;
  int line = 1;
  int column = 1;
  std::string message;  // without the position
};

class Expr {
 public:
  enum class Type : uint8_t { kBool, kInt, kString, kStringList, kIntList, kStringMap };

  // The source must be a bool expression. On error the Status message is "line:col: message"
  // (inside the expression) and `error`, when given, receives the parts.
  static Result<Expr> Compile(std::string_view source, const ExprLimits& limits = {},
                              ExprError* error = nullptr);

  Result<bool> Evaluate(const TaskFacts& facts) const;
  // Explain mode: on true, `witness` says why (see the contract). Slower; for explanations.
  Result<bool> Evaluate(const TaskFacts& facts, std::string* witness) const;

  const std::string& source() const { return source_; }
  size_t node_count() const { return nodes_.size(); }
  uint64_t cost_bound() const { return cost_bound_; }

  // Opaque node storage; public only so the evaluator (an implementation detail) can name it.
  enum class Op : uint8_t {
    kBoolConst,
    kIntConst,
    kStrConst,
    kStrListConst,
    kIntListConst,
    kTeam,
    kRepo,
    kTemplate,
    kLabels,
    kMetadata,
    kPaths,
    kSecrets,
    kEgress,
    kVar,
    kMapGet,
    kNot,
    kAnd,
    kOr,
    kEq,
    kNe,
    kLt,
    kLe,
    kGt,
    kGe,
    kIn,
    kSize,
    kStartsWith,
    kEndsWith,
    kContains,
    kMatches,
    kExists,
    kAll,
  };
  struct Node {
    Op op;
    Type type;
    uint8_t slot = 0;  // kVar, kExists, kAll: comprehension variable slot
    uint8_t fast = 0;  // a fused form of this subtree for the hot path (expr.cc), 0 = none
    int32_t a = -1, b = -1, c = -1;  // children
    int64_t ival = 0;  // kIntConst value, kBoolConst 0/1; index into constants for others
    uint32_t begin = 0, end = 0;  // source range, for explanations
  };
  struct Impl;

 private:
  friend struct Impl;
  std::string source_;
  std::vector<Node> nodes_;
  int32_t root_ = -1;
  std::vector<std::string> strings_;
  std::vector<std::vector<std::string>> str_lists_;
  std::vector<std::vector<int64_t>> int_lists_;
  std::vector<Glob> globs_;  // literal patterns, compiled once (Node::ival of kMatches, or -1)
  uint64_t cost_bound_ = 0;
  uint64_t max_steps_ = 0;
};

// "services/x" → "\"services/x\"" (JSON string quoting, for explanations).
std::string QuoteString(std::string_view s);

}  // namespace hangar::control
