// The expression language: lexer, recursive-descent parser that type-checks as it builds a flat
// node array, and a tree-walking evaluator over string_views into the facts (no allocation on
// the hot path; explain mode allocates the witness).
#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "hangar/control/expr.h"

namespace hangar::control {

using Op = Expr::Op;
using Type = Expr::Type;
using ExprNode = Expr::Node;

namespace expr_detail {

constexpr size_t kMaxSlots = 4;  // hard cap on macro nesting (ExprLimits may lower it)

std::string_view TypeName(Type t) {
  switch (t) {
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "int";
    case Type::kString:
      return "string";
    case Type::kStringList:
      return "list(string)";
    case Type::kIntList:
      return "list(int)";
    case Type::kStringMap:
      return "map(string, string)";
  }
  return "?";
}

enum class Tok : uint8_t {
  kEnd,
  kIdent,
  kInt,
  kString,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kDot,
  kNot,
  kAnd,
  kOr,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kMinus,
};

struct Token {
  Tok kind = Tok::kEnd;
  size_t begin = 0, end = 0;
  std::string text;  // identifier name or decoded string literal
  int64_t ival = 0;
};

struct Fail {
  size_t offset;
  std::string message;
};

// Tokenizes the whole source; on error fills `fail`.
bool Lex(std::string_view src, std::vector<Token>& out, Fail& fail) {
  size_t i = 0;
  const size_t n = src.size();
  auto simple = [&](Tok k, size_t len) {
    out.push_back({k, i, i + len, std::string(src.substr(i, len)), 0});
    i += len;
  };
  while (i < n) {
    const char c = src[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    const char next = i + 1 < n ? src[i + 1] : '\0';
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < n && (std::isalnum(static_cast<unsigned char>(src[j])) || src[j] == '_')) ++j;
      out.push_back({Tok::kIdent, i, j, std::string(src.substr(i, j - i)), 0});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < n && std::isdigit(static_cast<unsigned char>(src[j]))) ++j;
      int64_t v = 0;
      auto r = std::from_chars(src.data() + i, src.data() + j, v);
      if (r.ec != std::errc()) {
        fail = {i, "integer literal out of range"};
        return false;
      }
      if (j < n && (std::isalpha(static_cast<unsigned char>(src[j])) || src[j] == '.')) {
        fail = {i, "malformed number (only decimal integers are supported)"};
        return false;
      }
      out.push_back({Tok::kInt, i, j, {}, v});
      i = j;
    } else if (c == '"' || c == '\'') {
      std::string text;
      size_t j = i + 1;
      bool closed = false;
      while (j < n) {
        char d = src[j];
        if (d == c) {
          closed = true;
          ++j;
          break;
        }
        if (d == '\n') break;
        if (d == '\\') {
          if (j + 1 >= n) break;
          const char e = src[j + 1];
          switch (e) {
            case '\\':
              text += '\\';
              break;
            case '"':
              text += '"';
              break;
            case '\'':
              text += '\'';
              break;
            case 'n':
              text += '\n';
              break;
            case 't':
              text += '\t';
              break;
            case 'r':
              text += '\r';
              break;
            default:
              fail = {j, fmt::format("unknown escape '\\{}' in string", e)};
              return false;
          }
          j += 2;
          continue;
        }
        text += d;
        ++j;
      }
      if (!closed) {
        fail = {i, "unterminated string literal"};
        return false;
      }
      out.push_back({Tok::kString, i, j, std::move(text), 0});
      i = j;
    } else if (c == '(') {
      simple(Tok::kLParen, 1);
    } else if (c == ')') {
      simple(Tok::kRParen, 1);
    } else if (c == '[') {
      simple(Tok::kLBracket, 1);
    } else if (c == ']') {
      simple(Tok::kRBracket, 1);
    } else if (c == ',') {
      simple(Tok::kComma, 1);
    } else if (c == '.') {
      simple(Tok::kDot, 1);
    } else if (c == '-') {
      simple(Tok::kMinus, 1);
    } else if (c == '&' && next == '&') {
      simple(Tok::kAnd, 2);
    } else if (c == '|' && next == '|') {
      simple(Tok::kOr, 2);
    } else if (c == '=' && next == '=') {
      simple(Tok::kEq, 2);
    } else if (c == '!' && next == '=') {
      simple(Tok::kNe, 2);
    } else if (c == '!') {
      simple(Tok::kNot, 1);
    } else if (c == '<' && next == '=') {
      simple(Tok::kLe, 2);
    } else if (c == '<') {
      simple(Tok::kLt, 1);
    } else if (c == '>' && next == '=') {
      simple(Tok::kGe, 2);
    } else if (c == '>') {
      simple(Tok::kGt, 1);
    } else if (c == '=') {
      fail = {i, "'=' is not an operator; did you mean '=='?"};
      return false;
    } else if (c == '&' || c == '|') {
      fail = {i, fmt::format("'{}' is not an operator; did you mean '{}{}'?", c, c, c)};
      return false;
    } else {
      fail = {i, fmt::format("unexpected character {}", QuoteString(std::string_view(&c, 1)))};
      return false;
    }
  }
  out.push_back({Tok::kEnd, n, n, {}, 0});
  return true;
}

constexpr std::string_view kIdentifiers =
    "team, repo, template, labels, metadata, paths, secrets, egress";

struct Var {
  std::string name;
  uint8_t slot;
  Type type;
  int32_t receiver;
};

}  // namespace expr_detail

using namespace expr_detail;  // NOLINT(google-build-using-namespace): this file's own helpers

struct Expr::Impl {
  // ---------------------------------------------------------------- parser
  class Parser {
   public:
    Parser(Expr& e, std::vector<Token> toks, const ExprLimits& limits)
        : e_(e), toks_(std::move(toks)), limits_(limits) {}

    std::optional<Fail> fail;

    int32_t ParseTop() {
      const int32_t n = ParseOr();
      if (n < 0) return -1;
      if (Peek().kind != Tok::kEnd) return Error(Peek().begin, "unexpected " + Describe(Peek()));
      if (e_.nodes_[n].type != Type::kBool) {
        return Error(
            0, fmt::format("the expression must be bool, got {}", TypeName(e_.nodes_[n].type)));
      }
      return n;
    }

   private:
    const Token& Peek(size_t ahead = 0) const {
      return toks_[std::min(pos_ + ahead, toks_.size() - 1)];
    }
    const Token& Next() { return toks_[std::min(pos_++, toks_.size() - 1)]; }
    bool IsIdent(const Token& t, std::string_view name) const {
      return t.kind == Tok::kIdent && t.text == name;
    }
    static std::string Describe(const Token& t) {
      switch (t.kind) {
        case Tok::kEnd:
          return "end of expression";
        case Tok::kIdent:
          return fmt::format("'{}'", t.text);
        case Tok::kInt:
          return "number";
        case Tok::kString:
          return "string";
        default:
          return "'" + t.text + "'";
      }
    }
    int32_t Error(size_t offset, std::string message) {
      if (!fail) fail = Fail{offset, std::move(message)};
      return -1;
    }
    bool Expect(Tok kind, std::string_view what) {
      if (Peek().kind == kind) {
        ++pos_;
        return true;
      }
      Error(Peek().begin, fmt::format("expected {}, got {}", what, Describe(Peek())));
      return false;
    }
    int32_t Add(ExprNode node) {
      if (e_.nodes_.size() >= limits_.max_nodes) {
        return Error(node.begin,
                     fmt::format("expression too large (more than {} nodes)", limits_.max_nodes));
      }
      e_.nodes_.push_back(node);
      return static_cast<int32_t>(e_.nodes_.size() - 1);
    }
    const ExprNode& N(int32_t i) const { return e_.nodes_[static_cast<size_t>(i)]; }
    Type T(int32_t i) const { return N(i).type; }

    int32_t Binary(Op op, Type type, int32_t a, int32_t b) {
      ExprNode n{op, type};
      n.a = a;
      n.b = b;
      n.begin = N(a).begin;
      n.end = N(b).end;
      return Add(n);
    }

    struct DepthGuard {
      Parser& p;
      bool ok;
      explicit DepthGuard(Parser& parser) : p(parser), ok(++p.depth_ <= p.limits_.max_depth) {}
      ~DepthGuard() { --p.depth_; }
    };

    int32_t ParseOr() {
      DepthGuard guard(*this);
      if (!guard.ok) {
        return Error(Peek().begin,
                     fmt::format("expression nested deeper than {} levels", limits_.max_depth));
      }
      int32_t lhs = ParseAnd();
      while (lhs >= 0 && Peek().kind == Tok::kOr) {
        const Token& op = Next();
        const int32_t rhs = ParseAnd();
        if (rhs < 0) return -1;
        if (T(lhs) != Type::kBool || T(rhs) != Type::kBool) {
          return Error(op.begin, fmt::format("'||' needs bool operands, got {} and {}",
                                             TypeName(T(lhs)), TypeName(T(rhs))));
        }
        lhs = Binary(Op::kOr, Type::kBool, lhs, rhs);
      }
      return lhs;
    }

    int32_t ParseAnd() {
      int32_t lhs = ParseRel();
      while (lhs >= 0 && Peek().kind == Tok::kAnd) {
        const Token& op = Next();
        const int32_t rhs = ParseRel();
        if (rhs < 0) return -1;
        if (T(lhs) != Type::kBool || T(rhs) != Type::kBool) {
          return Error(op.begin, fmt::format("'&&' needs bool operands, got {} and {}",
                                             TypeName(T(lhs)), TypeName(T(rhs))));
        }
        lhs = Binary(Op::kAnd, Type::kBool, lhs, rhs);
      }
      return lhs;
    }

    int32_t ParseRel() {
      int32_t lhs = ParseUnary();
      for (;;) {
        if (lhs < 0) return -1;
        const Token& t = Peek();
        Op op;
        std::string_view text;
        switch (t.kind) {
          case Tok::kEq:
            op = Op::kEq;
            text = "==";
            break;
          case Tok::kNe:
            op = Op::kNe;
            text = "!=";
            break;
          case Tok::kLt:
            op = Op::kLt;
            text = "<";
            break;
          case Tok::kLe:
            op = Op::kLe;
            text = "<=";
            break;
          case Tok::kGt:
            op = Op::kGt;
            text = ">";
            break;
          case Tok::kGe:
            op = Op::kGe;
            text = ">=";
            break;
          case Tok::kIdent:
            if (t.text != "in") return lhs;
            op = Op::kIn;
            text = "in";
            break;
          default:
            return lhs;
        }
        const size_t at = t.begin;
        ++pos_;
        const int32_t rhs = ParseUnary();
        if (rhs < 0) return -1;
        const Type l = T(lhs), r = T(rhs);
        if (op == Op::kIn) {
          const bool ok =
              (l == Type::kString && (r == Type::kStringList || r == Type::kStringMap)) ||
              (l == Type::kInt && r == Type::kIntList);
          if (!ok) {
            std::string hint = r == Type::kString ? " (for substrings use s.contains(t))" : "";
            return Error(
                at, fmt::format("'in' cannot test {} in {}{}", TypeName(l), TypeName(r), hint));
          }
        } else if (l != r) {
          return Error(at, fmt::format("cannot compare {} with {} using '{}'", TypeName(l),
                                       TypeName(r), text));
        } else if (l != Type::kBool && l != Type::kInt && l != Type::kString) {
          return Error(at, fmt::format("'{}' does not compare {} values", text, TypeName(l)));
        } else if (l == Type::kBool && op != Op::kEq && op != Op::kNe) {
          return Error(at, fmt::format("'{}' does not order bool values", text));
        }
        lhs = Binary(op, Type::kBool, lhs, rhs);
      }
    }

    int32_t ParseUnary() {
      const Token& t = Peek();
      if (t.kind == Tok::kNot) {
        ++pos_;
        DepthGuard guard(*this);
        if (!guard.ok) {
          return Error(t.begin,
                       fmt::format("expression nested deeper than {} levels", limits_.max_depth));
        }
        const int32_t a = ParseUnary();
        if (a < 0) return -1;
        if (T(a) != Type::kBool) {
          return Error(t.begin, fmt::format("'!' needs a bool operand, got {}", TypeName(T(a))));
        }
        ExprNode n{Op::kNot, Type::kBool};
        n.a = a;
        n.begin = static_cast<uint32_t>(t.begin);
        n.end = N(a).end;
        return Add(n);
      }
      if (t.kind == Tok::kMinus) {
        ++pos_;
        const Token& num = Peek();
        if (num.kind != Tok::kInt) {
          return Error(t.begin, "'-' is only allowed before an integer literal (no arithmetic)");
        }
        ++pos_;
        ExprNode n{Op::kIntConst, Type::kInt};
        n.ival = -num.ival;
        n.begin = static_cast<uint32_t>(t.begin);
        n.end = static_cast<uint32_t>(num.end);
        return ParsePostfix(Add(n));
      }
      return ParsePostfix(ParsePrimary());
    }

    int32_t ParsePrimary() {
      const Token& t = Next();
      ExprNode n{Op::kBoolConst, Type::kBool};
      n.begin = static_cast<uint32_t>(t.begin);
      n.end = static_cast<uint32_t>(t.end);
      switch (t.kind) {
        case Tok::kInt:
          n.op = Op::kIntConst;
          n.type = Type::kInt;
          n.ival = t.ival;
          return Add(n);
        case Tok::kString:
          n.op = Op::kStrConst;
          n.type = Type::kString;
          n.ival = static_cast<int64_t>(e_.strings_.size());
          e_.strings_.push_back(t.text);
          return Add(n);
        case Tok::kLParen: {
          const int32_t inner = ParseOr();
          if (inner < 0) return -1;
          if (!Expect(Tok::kRParen, "')'")) return -1;
          return inner;
        }
        case Tok::kLBracket:
          return ParseList(t);
        case Tok::kIdent:
          break;
        default:
          return Error(t.begin, "expected a value, got " + Describe(t));
      }
      if (t.text == "true" || t.text == "false") {
        n.ival = t.text == "true";
        return Add(n);
      }
      if (Peek().kind == Tok::kLParen) {
        if (t.text != "size") {
          return Error(t.begin, fmt::format("unknown function '{}' (functions: size; methods: "
                                            "startsWith, endsWith, contains, matches, size, "
                                            "exists, all)",
                                            t.text));
        }
        ++pos_;
        const int32_t arg = ParseOr();
        if (arg < 0) return -1;
        if (!Expect(Tok::kRParen, "')'")) return -1;
        return Size(arg, t.begin, toks_[pos_ - 1].end);
      }
      for (auto it = vars_.rbegin(); it != vars_.rend(); ++it) {
        if (it->name == t.text) {
          n.op = Op::kVar;
          n.type = it->type;
          n.slot = it->slot;
          n.a = it->receiver;
          return Add(n);
        }
      }
      static const std::pair<std::string_view, std::pair<Op, Type>> kFacts[] = {
          {"team", {Op::kTeam, Type::kString}},
          {"repo", {Op::kRepo, Type::kString}},
          {"template", {Op::kTemplate, Type::kString}},
          {"labels", {Op::kLabels, Type::kStringMap}},
          {"metadata", {Op::kMetadata, Type::kStringMap}},
          {"paths", {Op::kPaths, Type::kStringList}},
          {"secrets", {Op::kSecrets, Type::kStringList}},
          {"egress", {Op::kEgress, Type::kStringList}},
      };
      for (const auto& [name, what] : kFacts) {
        if (t.text == name) {
          n.op = what.first;
          n.type = what.second;
          return Add(n);
        }
      }
      if (t.text == "null") return Error(t.begin, "null is not supported");
      return Error(t.begin,
                   fmt::format("unknown identifier '{}' (known: {})", t.text, kIdentifiers));
    }

    int32_t ParseList(const Token& open) {
      std::vector<std::string> strs;
      std::vector<int64_t> ints;
      std::optional<Type> elem;
      while (Peek().kind != Tok::kRBracket) {
        const Token& t = Next();
        int64_t sign = 1;
        const Token* v = &t;
        if (t.kind == Tok::kMinus) {
          sign = -1;
          v = &Next();
          if (v->kind != Tok::kInt) return Error(t.begin, "'-' must be followed by an integer");
        }
        Type ty;
        if (v->kind == Tok::kString) {
          ty = Type::kString;
          strs.push_back(v->text);
        } else if (v->kind == Tok::kInt) {
          ty = Type::kInt;
          ints.push_back(sign * v->ival);
        } else {
          return Error(v->begin,
                       "list elements must be string or integer literals, got " + Describe(*v));
        }
        if (elem && *elem != ty) {
          return Error(v->begin,
                       fmt::format("list mixes {} and {} elements", TypeName(*elem), TypeName(ty)));
        }
        elem = ty;
        if (Peek().kind == Tok::kComma) {
          ++pos_;
        } else if (Peek().kind != Tok::kRBracket) {
          return Error(Peek().begin, "expected ',' or ']' in list, got " + Describe(Peek()));
        }
      }
      const Token& close = Next();
      ExprNode n{Op::kStrListConst, Type::kStringList};
      n.begin = static_cast<uint32_t>(open.begin);
      n.end = static_cast<uint32_t>(close.end);
      if (elem == Type::kInt) {
        n.op = Op::kIntListConst;
        n.type = Type::kIntList;
        n.ival = static_cast<int64_t>(e_.int_lists_.size());
        e_.int_lists_.push_back(std::move(ints));
      } else {
        n.ival = static_cast<int64_t>(e_.str_lists_.size());
        e_.str_lists_.push_back(std::move(strs));
      }
      return Add(n);
    }

    int32_t Size(int32_t arg, size_t begin, size_t end) {
      const Type t = T(arg);
      if (t != Type::kString && t != Type::kStringList && t != Type::kIntList &&
          t != Type::kStringMap) {
        return Error(begin, fmt::format("size() needs a string, list or map, got {}", TypeName(t)));
      }
      ExprNode n{Op::kSize, Type::kInt};
      n.a = arg;
      n.begin = static_cast<uint32_t>(begin);
      n.end = static_cast<uint32_t>(end);
      return Add(n);
    }

    int32_t ParsePostfix(int32_t recv) {
      while (recv >= 0) {
        if (Peek().kind == Tok::kLBracket) {
          const Token& open = Next();
          if (T(recv) != Type::kStringMap) {
            return Error(open.begin,
                         fmt::format("'[...]' indexes labels or metadata, not {} (use exists() "
                                     "for lists)",
                                     TypeName(T(recv))));
          }
          const int32_t key = ParseOr();
          if (key < 0) return -1;
          if (T(key) != Type::kString) {
            return Error(N(key).begin,
                         fmt::format("a map key must be a string, got {}", TypeName(T(key))));
          }
          if (!Expect(Tok::kRBracket, "']'")) return -1;
          ExprNode n{Op::kMapGet, Type::kString};
          n.a = recv;
          n.b = key;
          n.begin = N(recv).begin;
          n.end = static_cast<uint32_t>(toks_[pos_ - 1].end);
          recv = Add(n);
          continue;
        }
        if (Peek().kind != Tok::kDot) return recv;
        ++pos_;
        const Token& name = Next();
        if (name.kind != Tok::kIdent) {
          return Error(name.begin,
                       "expected a field or method name after '.', got " + Describe(name));
        }
        if (Peek().kind != Tok::kLParen) {  // field selection: labels.key
          if (T(recv) != Type::kStringMap) {
            return Error(name.begin, fmt::format("'.{}': {} has no fields (only labels and "
                                                 "metadata do)",
                                                 name.text, TypeName(T(recv))));
          }
          ExprNode k{Op::kStrConst, Type::kString};
          k.ival = static_cast<int64_t>(e_.strings_.size());
          k.begin = static_cast<uint32_t>(name.begin);
          k.end = static_cast<uint32_t>(name.end);
          e_.strings_.push_back(name.text);
          const int32_t key = Add(k);
          if (key < 0) return -1;
          ExprNode n{Op::kMapGet, Type::kString};
          n.a = recv;
          n.b = key;
          n.begin = N(recv).begin;
          n.end = static_cast<uint32_t>(name.end);
          recv = Add(n);
          continue;
        }
        ++pos_;  // '('
        recv = ParseMethod(recv, name);
      }
      return recv;
    }

    int32_t ParseMethod(int32_t recv, const Token& name) {
      const std::string& m = name.text;
      if (m == "size") {
        if (!Expect(Tok::kRParen, "')'")) return -1;
        return Size(recv, N(recv).begin, toks_[pos_ - 1].end);
      }
      if (m == "exists" || m == "all") return ParseMacro(recv, name);
      Op op;
      if (m == "startsWith") {
        op = Op::kStartsWith;
      } else if (m == "endsWith") {
        op = Op::kEndsWith;
      } else if (m == "contains") {
        op = Op::kContains;
      } else if (m == "matches") {
        op = Op::kMatches;
      } else {
        return Error(name.begin, fmt::format("unknown method '{}' (methods: startsWith, endsWith, "
                                             "contains, matches, size, exists, all)",
                                             m));
      }
      if (T(recv) != Type::kString) {
        return Error(
            name.begin,
            fmt::format("'{}' needs a string receiver, got {}{}", m, TypeName(T(recv)),
                        T(recv) == Type::kStringList ? " (use exists(x, x." + m + "(...)))" : ""));
      }
      const int32_t arg = ParseOr();
      if (arg < 0) return -1;
      if (T(arg) != Type::kString) {
        return Error(N(arg).begin,
                     fmt::format("'{}' needs a string argument, got {}", m, TypeName(T(arg))));
      }
      if (Peek().kind == Tok::kComma) {
        return Error(Peek().begin, fmt::format("'{}' takes one argument", m));
      }
      if (!Expect(Tok::kRParen, "')'")) return -1;
      ExprNode n{op, Type::kBool};
      n.a = recv;
      n.b = arg;
      n.ival = -1;
      n.begin = N(recv).begin;
      n.end = static_cast<uint32_t>(toks_[pos_ - 1].end);
      if (op == Op::kMatches && N(arg).op == Op::kStrConst) {
        const std::string& pattern = e_.strings_[static_cast<size_t>(N(arg).ival)];
        auto glob = Glob::Compile(pattern);
        if (!glob.ok()) return Error(N(arg).begin, glob.status().message());
        n.ival = static_cast<int64_t>(e_.globs_.size());
        e_.globs_.push_back(std::move(*glob));
      }
      return Add(n);
    }

    int32_t ParseMacro(int32_t recv, const Token& name) {
      const Type rt = T(recv);
      if (rt != Type::kStringList && rt != Type::kIntList && rt != Type::kStringMap) {
        return Error(name.begin, fmt::format("'{}' needs a list or map receiver, got {}", name.text,
                                             TypeName(rt)));
      }
      if (macro_depth_ >= std::min(limits_.max_macro_nesting, kMaxSlots)) {
        return Error(name.begin, fmt::format("exists/all nest at most {} deep",
                                             std::min(limits_.max_macro_nesting, kMaxSlots)));
      }
      const Token& var = Next();
      if (var.kind != Tok::kIdent) {
        return Error(var.begin, fmt::format("'{}' needs a variable name as its first argument, "
                                            "e.g. paths.{}(p, p.startsWith(\"x\"))",
                                            name.text, name.text));
      }
      for (std::string_view reserved :
           {"team", "repo", "template", "labels", "metadata", "paths", "secrets", "egress", "in",
            "true", "false", "size", "null"}) {
        if (var.text == reserved) {
          return Error(var.begin,
                       fmt::format("'{}' is reserved and cannot name a variable", var.text));
        }
      }
      for (const Var& v : vars_) {
        if (v.name == var.text) {
          return Error(var.begin, fmt::format("variable '{}' is already in use", var.text));
        }
      }
      if (!Expect(Tok::kComma, "','")) return -1;
      const Type vt = rt == Type::kIntList ? Type::kInt : Type::kString;
      const auto slot = static_cast<uint8_t>(macro_depth_);
      vars_.push_back({var.text, slot, vt, recv});
      ++macro_depth_;
      const int32_t body = ParseOr();
      --macro_depth_;
      vars_.pop_back();
      if (body < 0) return -1;
      if (T(body) != Type::kBool) {
        return Error(N(body).begin, fmt::format("the body of '{}' must be bool, got {}", name.text,
                                                TypeName(T(body))));
      }
      if (!Expect(Tok::kRParen, "')'")) return -1;
      ExprNode n{name.text == "exists" ? Op::kExists : Op::kAll, Type::kBool};
      n.a = recv;
      n.b = body;
      n.slot = slot;
      n.begin = N(recv).begin;
      n.end = static_cast<uint32_t>(toks_[pos_ - 1].end);
      return Add(n);
    }

    Expr& e_;
    std::vector<Token> toks_;
    const ExprLimits& limits_;
    size_t pos_ = 0;
    size_t depth_ = 0;
    size_t macro_depth_ = 0;
    std::vector<Var> vars_;
  };

  // ---------------------------------------------------------------- fused forms
  // The hot shapes of routing rules, recognised once at compile time and evaluated without
  // per-node dispatch. Explain mode ignores them and walks the tree, so witnesses are unchanged.
  enum Fast : uint8_t {
    kFastNone = 0,
    kFastListGlob,  // list.exists|all(v, v.matches("literal"))
    kFastListStr,   // list.exists|all(v, v.startsWith|endsWith|contains|==|!= ("literal"))
    kFastMapConst,  // labels.k == "v" / metadata["k"] != "v"
  };
  static bool IsStrMethod(Op op) {
    return op == Op::kStartsWith || op == Op::kEndsWith || op == Op::kContains || op == Op::kEq ||
           op == Op::kNe;
  }
  static void Fuse(Expr& e) {
    for (ExprNode& n : e.nodes_) {
      if ((n.op == Op::kExists || n.op == Op::kAll) &&
          e.nodes_[static_cast<size_t>(n.a)].type == Type::kStringList) {
        const ExprNode& body = e.nodes_[static_cast<size_t>(n.b)];
        if (body.a < 0 || body.b < 0) continue;
        const ExprNode& lhs = e.nodes_[static_cast<size_t>(body.a)];
        const ExprNode& rhs = e.nodes_[static_cast<size_t>(body.b)];
        if (lhs.op != Op::kVar || lhs.slot != n.slot) continue;
        if (body.op == Op::kMatches && body.ival >= 0) {
          n.fast = kFastListGlob;
        } else if (IsStrMethod(body.op) && lhs.type == Type::kString && rhs.op == Op::kStrConst) {
          n.fast = kFastListStr;
        }
      } else if ((n.op == Op::kEq || n.op == Op::kNe) && n.a >= 0 && n.b >= 0) {
        const ExprNode& lhs = e.nodes_[static_cast<size_t>(n.a)];
        const ExprNode& rhs = e.nodes_[static_cast<size_t>(n.b)];
        if (lhs.op == Op::kMapGet && rhs.op == Op::kStrConst &&
            e.nodes_[static_cast<size_t>(lhs.b)].op == Op::kStrConst) {
          n.fast = kFastMapConst;
        }
      }
    }
  }
  static bool StrTest(Op op, std::string_view s, std::string_view t) {
    switch (op) {
      case Op::kStartsWith:
        return s.starts_with(t);
      case Op::kEndsWith:
        return s.ends_with(t);
      case Op::kContains:
        return s.find(t) != std::string_view::npos;
      case Op::kEq:
        return s == t;
      default:
        return s != t;
    }
  }

  // ---------------------------------------------------------------- cost bound
  static uint64_t Sat(uint64_t a, uint64_t b) {
    return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                        : a + b;
  }
  static uint64_t SatMul(uint64_t a, uint64_t b) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) {
      return std::numeric_limits<uint64_t>::max();
    }
    return a * b;
  }
  static uint64_t Cost(const Expr& e, int32_t i, const ExprLimits& lim) {
    if (i < 0) return 0;
    const ExprNode& n = e.nodes_[static_cast<size_t>(i)];
    const uint64_t list = lim.max_list_size;
    uint64_t c = 1;
    switch (n.op) {
      case Op::kExists:
      case Op::kAll:
        return Sat(Sat(c, Cost(e, n.a, lim)), SatMul(list, Sat(2, Cost(e, n.b, lim))));
      case Op::kIn:
        c = Sat(c, list);
        break;
      case Op::kMatches: {
        // Matcher steps ≤ (tokens + 1) × (text length + 1); a run-time pattern has at most as
        // many tokens as bytes.
        const uint64_t tokens = n.ival >= 0 ? e.globs_[static_cast<size_t>(n.ival)].pattern().size()
                                            : kMaxFactStringSize;
        c = Sat(c, SatMul(tokens + 2, kMaxFactStringSize + 1));
        break;
      }
      default:
        break;
    }
    return Sat(Sat(c, Cost(e, n.a, lim)), Cost(e, n.b, lim));
  }

  // ---------------------------------------------------------------- evaluator
  // Built once per evaluation: a constructor, not aggregate initialization, so the variable
  // slots (always written before they are read) are not zeroed on the hot path.
  struct Ctx {
    Ctx(const Expr& expr, const TaskFacts& facts) : e(expr), f(facts) {}
    const Expr& e;
    const TaskFacts& f;
    uint64_t steps = 0;
    bool failed = false;
    std::string error;
    std::vector<std::string>* parts = nullptr;  // explain mode
    std::string_view var_s[kMaxSlots];
    int64_t var_i[kMaxSlots];
    size_t var_index[kMaxSlots];
  };

  static const ExprNode& At(const Ctx& c, int32_t i) { return c.e.nodes_[static_cast<size_t>(i)]; }

  static void SetError(Ctx& c, std::string message) {
    if (!c.failed) {
      c.failed = true;
      c.error = std::move(message);
    }
  }
  static bool OverBudget(Ctx& c) {
    if (c.steps > c.e.max_steps_) {
      SetError(c, fmt::format("evaluation budget of {} steps exhausted", c.e.max_steps_));
      return true;
    }
    return c.failed;
  }

  static const std::map<std::string, std::string>& Map(const Ctx& c, int32_t i) {
    return At(c, i).op == Op::kLabels ? c.f.labels : c.f.metadata;
  }
  static const std::vector<std::string>& StrList(const Ctx& c, int32_t i) {
    const ExprNode& n = At(c, i);
    switch (n.op) {
      case Op::kPaths:
        return c.f.paths;
      case Op::kSecrets:
        return c.f.secrets;
      case Op::kEgress:
        return c.f.egress;
      default:
        return c.e.str_lists_[static_cast<size_t>(n.ival)];
    }
  }

  static std::string_view Str(Ctx& c, int32_t i) {
    ++c.steps;
    const ExprNode& n = At(c, i);
    switch (n.op) {
      case Op::kStrConst:
        return c.e.strings_[static_cast<size_t>(n.ival)];
      case Op::kTeam:
        return c.f.team;
      case Op::kRepo:
        return c.f.repo;
      case Op::kTemplate:
        return c.f.template_name;
      case Op::kVar:
        return c.var_s[n.slot];
      case Op::kMapGet: {
        const auto& m = Map(c, n.a);
        const ExprNode& k = At(c, n.b);
        auto it = k.op == Op::kStrConst ? m.find(c.e.strings_[static_cast<size_t>(k.ival)])
                                        : m.find(std::string(Str(c, n.b)));
        return it == m.end() ? std::string_view() : std::string_view(it->second);
      }
      default:
        return {};
    }
  }

  static int64_t Int(Ctx& c, int32_t i) {
    ++c.steps;
    const ExprNode& n = At(c, i);
    switch (n.op) {
      case Op::kIntConst:
        return n.ival;
      case Op::kVar:
        return c.var_i[n.slot];
      case Op::kSize: {
        const ExprNode& a = At(c, n.a);
        switch (a.type) {
          case Type::kString:
            return static_cast<int64_t>(Str(c, n.a).size());
          case Type::kStringList:
            return static_cast<int64_t>(StrList(c, n.a).size());
          case Type::kIntList:
            return static_cast<int64_t>(c.e.int_lists_[static_cast<size_t>(a.ival)].size());
          case Type::kStringMap:
            return static_cast<int64_t>(Map(c, n.a).size());
          default:
            return 0;
        }
      }
      default:
        return 0;
    }
  }

  template <typename T>
  static bool Compare(Op op, const T& a, const T& b) {
    switch (op) {
      case Op::kEq:
        return a == b;
      case Op::kNe:
        return a != b;
      case Op::kLt:
        return a < b;
      case Op::kLe:
        return a <= b;
      case Op::kGt:
        return a > b;
      case Op::kGe:
        return a >= b;
      default:
        return false;
    }
  }

  static size_t Mark(const Ctx& c) { return c.parts ? c.parts->size() : 0; }
  static void Truncate(Ctx& c, size_t mark) {
    if (c.parts) c.parts->resize(mark);
  }

  static bool FastBool(Ctx& c, const ExprNode& n) {
    if (n.fast == kFastMapConst) {
      const ExprNode& get = At(c, n.a);
      const auto& m = Map(c, get.a);
      const std::string& key = c.e.strings_[static_cast<size_t>(At(c, get.b).ival)];
      const std::string& want = c.e.strings_[static_cast<size_t>(At(c, n.b).ival)];
      auto it = m.find(key);
      const std::string_view have = it == m.end() ? std::string_view() : it->second;
      return (have == want) == (n.op == Op::kEq);
    }
    const bool exists = n.op == Op::kExists;
    const auto& list = StrList(c, n.a);
    const ExprNode& body = At(c, n.b);
    c.steps += list.size();
    if (c.steps > c.e.max_steps_) {
      OverBudget(c);
      return false;
    }
    if (n.fast == kFastListGlob) {
      const Glob& g = c.e.globs_[static_cast<size_t>(body.ival)];
      for (const std::string& s : list) {
        if (g.Matches(s, &c.steps) == exists) return exists;
      }
    } else {
      const std::string& t = c.e.strings_[static_cast<size_t>(At(c, body.b).ival)];
      for (const std::string& s : list) {
        if (StrTest(body.op, s, t) == exists) return exists;
      }
    }
    return !exists;
  }

  static bool Bool(Ctx& c, int32_t i) {
    ++c.steps;
    const ExprNode& n = At(c, i);
    if (n.fast != kFastNone && c.parts == nullptr) {
      const bool v = FastBool(c, n);
      if (n.fast == kFastListGlob && OverBudget(c)) return false;
      return v;
    }
    switch (n.op) {
      case Op::kBoolConst:
        if (c.parts && n.ival) c.parts->push_back("true");
        return n.ival != 0;
      case Op::kNot: {
        const size_t mark = Mark(c);
        const bool v = !Bool(c, n.a);
        Truncate(c, mark);
        if (v && c.parts) c.parts->push_back("not (" + Src(c, n.a) + ")");
        return v;
      }
      case Op::kAnd: {
        const size_t mark = Mark(c);
        const bool v = Bool(c, n.a) && Bool(c, n.b);
        if (!v) Truncate(c, mark);
        return v;
      }
      case Op::kOr: {
        const size_t mark = Mark(c);
        if (Bool(c, n.a)) return true;
        Truncate(c, mark);
        const bool v = Bool(c, n.b);
        if (!v) Truncate(c, mark);
        return v;
      }
      case Op::kEq:
      case Op::kNe:
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe: {
        bool v;
        switch (At(c, n.a).type) {
          case Type::kString:
            v = Compare(n.op, Str(c, n.a), Str(c, n.b));
            break;
          case Type::kInt:
            v = Compare(n.op, Int(c, n.a), Int(c, n.b));
            break;
          default: {
            const size_t mark = Mark(c);
            v = Compare(n.op, Bool(c, n.a), Bool(c, n.b));
            Truncate(c, mark);
            break;
          }
        }
        if (v && c.parts) Explain(c, n);
        return v;
      }
      case Op::kIn: {
        const ExprNode& rhs = At(c, n.b);
        bool v = false;
        if (rhs.type == Type::kStringMap) {
          const auto& m = Map(c, n.b);
          const ExprNode& k = At(c, n.a);
          v = k.op == Op::kStrConst ? m.count(c.e.strings_[static_cast<size_t>(k.ival)]) > 0
                                    : m.count(std::string(Str(c, n.a))) > 0;
        } else if (rhs.type == Type::kIntList) {
          const int64_t x = Int(c, n.a);
          const auto& l = c.e.int_lists_[static_cast<size_t>(rhs.ival)];
          c.steps += l.size();
          v = std::find(l.begin(), l.end(), x) != l.end();
        } else {
          const std::string_view x = Str(c, n.a);
          const auto& l = StrList(c, n.b);
          c.steps += l.size();
          for (const auto& s : l) {
            if (s == x) {
              v = true;
              break;
            }
          }
        }
        if (v && c.parts) Explain(c, n);
        return v;
      }
      case Op::kStartsWith:
      case Op::kEndsWith:
      case Op::kContains:
      case Op::kMatches: {
        const std::string_view s = Str(c, n.a);
        bool v = false;
        if (n.op == Op::kMatches) {
          if (n.ival >= 0) {
            v = c.e.globs_[static_cast<size_t>(n.ival)].Matches(s, &c.steps);
          } else {
            auto glob = Glob::Compile(Str(c, n.b));
            if (!glob.ok()) {
              SetError(c, glob.status().message());
              return false;
            }
            v = glob->Matches(s, &c.steps);
          }
          if (OverBudget(c)) return false;
        } else {
          const std::string_view t = Str(c, n.b);
          v = n.op == Op::kStartsWith ? s.starts_with(t)
              : n.op == Op::kEndsWith ? s.ends_with(t)
                                      : s.find(t) != std::string_view::npos;
        }
        if (v && c.parts) Explain(c, n);
        return v;
      }
      case Op::kExists:
      case Op::kAll:
        return Macro(c, n);
      default:
        return false;
    }
  }

  static bool Macro(Ctx& c, const ExprNode& n) {
    const bool exists = n.op == Op::kExists;
    const ExprNode& recv = At(c, n.a);
    const size_t mark = Mark(c);
    size_t count = 0;
    // Returns true to stop: `exists` found a witness or `all` found a counterexample.
    auto visit = [&](size_t index) {
      ++count;
      c.var_index[n.slot] = index;
      const size_t before = Mark(c);
      const bool v = Bool(c, n.b);
      if (OverBudget(c)) return true;
      if (exists && v) return true;
      Truncate(c, before);
      return !exists && !v;
    };
    bool stopped = false;
    if (recv.type == Type::kStringMap) {
      size_t index = 0;
      for (const auto& kv : Map(c, n.a)) {
        c.var_s[n.slot] = kv.first;
        if ((stopped = visit(index++))) break;
      }
    } else if (recv.type == Type::kIntList) {
      const auto& l = c.e.int_lists_[static_cast<size_t>(recv.ival)];
      for (size_t k = 0; k < l.size(); ++k) {
        c.var_i[n.slot] = l[k];
        if ((stopped = visit(k))) break;
      }
    } else {
      const auto& l = StrList(c, n.a);
      for (size_t k = 0; k < l.size(); ++k) {
        c.var_s[n.slot] = l[k];
        if ((stopped = visit(k))) break;
      }
    }
    if (c.failed) return false;
    const bool v = exists ? stopped : !stopped;
    if (!v) {
      Truncate(c, mark);
    } else if (!exists && c.parts) {
      Truncate(c, mark);
      c.parts->push_back(
          count == 0 ? Src(c, n.a) + " is empty"
                     : fmt::format("all {} of {} satisfy {}", count, Src(c, n.a), Src(c, n.b)));
    }
    return v;
  }

  // ---------------------------------------------------------------- explanations
  static std::string Src(const Ctx& c, int32_t i) {
    const ExprNode& n = At(c, i);
    return c.e.source_.substr(n.begin, n.end - n.begin);
  }

  // A value as an explanation shows it: literals as written, facts as `name=value`, a
  // comprehension variable as the list element it stands for: paths[1]="services/x".
  static std::string Describe(Ctx& c, int32_t i) {
    const ExprNode& n = At(c, i);
    switch (n.op) {
      case Op::kStrConst:
        return QuoteString(c.e.strings_[static_cast<size_t>(n.ival)]);
      case Op::kIntConst:
        return std::to_string(n.ival);
      case Op::kBoolConst:
        return n.ival ? "true" : "false";
      case Op::kStrListConst:
      case Op::kIntListConst:
      case Op::kLabels:
      case Op::kMetadata:
      case Op::kPaths:
      case Op::kSecrets:
      case Op::kEgress:
        return Src(c, i);
      case Op::kVar: {
        const ExprNode& recv = At(c, n.a);
        const std::string value =
            n.type == Type::kInt ? std::to_string(c.var_i[n.slot]) : QuoteString(c.var_s[n.slot]);
        if (recv.type == Type::kStringMap) return fmt::format("{} key {}", Src(c, n.a), value);
        return fmt::format("{}[{}]={}", Src(c, n.a), c.var_index[n.slot], value);
      }
      default:
        break;
    }
    switch (n.type) {
      case Type::kString:
        return fmt::format("{}={}", Src(c, i), QuoteString(Str(c, i)));
      case Type::kInt:
        return fmt::format("{}={}", Src(c, i), Int(c, i));
      default:
        return Src(c, i);
    }
  }

  static void Explain(Ctx& c, const ExprNode& n) {
    std::string_view op;
    switch (n.op) {
      case Op::kEq:
        op = "==";
        break;
      case Op::kNe:
        op = "!=";
        break;
      case Op::kLt:
        op = "<";
        break;
      case Op::kLe:
        op = "<=";
        break;
      case Op::kGt:
        op = ">";
        break;
      case Op::kGe:
        op = ">=";
        break;
      case Op::kIn:
        op = "in";
        break;
      case Op::kStartsWith:
        op = "starts with";
        break;
      case Op::kEndsWith:
        op = "ends with";
        break;
      case Op::kContains:
        op = "contains";
        break;
      case Op::kMatches:
        op = "matches";
        break;
      default:
        op = "?";
        break;
    }
    c.parts->push_back(fmt::format("{} {} {}", Describe(c, n.a), op, Describe(c, n.b)));
  }

  static Result<bool> Run(const Expr& e, const TaskFacts& f, std::string* witness) {
    if (e.root_ < 0) return Status::FailedPrecondition("evaluating an expression never compiled");
    Ctx c(e, f);
    if (!witness) {
      const bool v = Bool(c, e.root_);
      if (c.failed || OverBudget(c)) return Status::ResourceExhausted(c.error);
      return v;
    }
    std::vector<std::string> parts;
    c.parts = &parts;
    const bool v = Bool(c, e.root_);
    if (c.failed || OverBudget(c)) return Status::ResourceExhausted(c.error);
    witness->clear();
    if (v) {
      for (size_t k = 0; k < parts.size(); ++k) {
        if (k) *witness += " and ";
        *witness += parts[k];
      }
    }
    return v;
  }
};

Result<Expr> Expr::Compile(std::string_view source, const ExprLimits& limits, ExprError* error) {
  auto fail = [&](const Fail& f) -> Status {
    ExprError err;
    err.offset = std::min(f.offset, source.size());
    for (size_t k = 0; k < err.offset; ++k) {
      if (source[k] == '\n') {
        ++err.line;
        err.column = 1;
      } else {
        ++err.column;
      }
    }
    err.message = f.message;
    Status st = Status::InvalidArgument(fmt::format("{}:{}: {}", err.line, err.column, f.message));
    if (error) *error = std::move(err);
    return st;
  };
  if (source.size() > limits.max_source_bytes) {
    return fail({0, fmt::format("expression longer than {} bytes", limits.max_source_bytes)});
  }
  Expr e;
  e.source_ = std::string(source);
  e.max_steps_ = limits.max_steps;
  std::vector<Token> toks;
  Fail lex_fail{0, {}};
  if (!Lex(e.source_, toks, lex_fail)) return fail(lex_fail);
  if (toks.size() == 1) return fail({0, "empty expression"});
  Impl::Parser parser(e, std::move(toks), limits);
  e.root_ = parser.ParseTop();
  if (parser.fail) {
    // An unknown-escape error is reported where the escape is; others where the token starts.
    return fail(*parser.fail);
  }
  e.cost_bound_ = Impl::Cost(e, e.root_, limits);
  Impl::Fuse(e);
  return e;
}

Result<bool> Expr::Evaluate(const TaskFacts& facts) const {
  return Impl::Run(*this, facts, nullptr);
}

Result<bool> Expr::Evaluate(const TaskFacts& facts, std::string* witness) const {
  return Impl::Run(*this, facts, witness);
}

}  // namespace hangar::control
