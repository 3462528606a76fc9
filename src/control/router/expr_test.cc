#include <string>

#include <gtest/gtest.h>

#include "hangar/control/expr.h"

namespace hangar::control {
namespace {

TaskFacts Sample() {
  TaskFacts f;
  f.team = "payments";
  f.repo = "github.com/acme/shop";
  f.template_name = "python-3.12";
  f.labels = {{"sensitivity", "high"}, {"env", "dev"}};
  f.metadata = {{"ticket", "PAY-12"}};
  f.paths = {"README.md", "services/payments/api.go", "docs/x.md"};
  f.secrets = {"staging/db", "prod/stripe/key"};
  f.egress = {"api.stripe.com:443"};
  return f;
}

bool Eval(std::string_view src, const TaskFacts& f = Sample()) {
  auto e = Expr::Compile(src);
  EXPECT_TRUE(e.ok()) << src << ": " << e.status().ToString();
  if (!e.ok()) return false;
  auto v = e->Evaluate(f);
  EXPECT_TRUE(v.ok()) << src << ": " << v.status().ToString();
  return v.ok() && *v;
}

std::string Witness(std::string_view src, const TaskFacts& f = Sample()) {
  auto e = Expr::Compile(src);
  EXPECT_TRUE(e.ok()) << src << ": " << e.status().ToString();
  if (!e.ok()) return "";
  std::string w;
  auto v = e->Evaluate(f, &w);
  EXPECT_TRUE(v.ok() && *v) << src;
  return w;
}

std::string CompileError(std::string_view src, ExprError* err = nullptr,
                         const ExprLimits& limits = {}) {
  auto e = Expr::Compile(src, limits, err);
  EXPECT_FALSE(e.ok()) << src << " compiled";
  return e.ok() ? "" : e.status().message();
}

TEST(ExprTest, ComparisonOperators) {
  EXPECT_TRUE(Eval("team == \"payments\""));
  EXPECT_FALSE(Eval("team == 'auth'"));
  EXPECT_TRUE(Eval("team != 'auth'"));
  EXPECT_TRUE(Eval("team < 'q'"));
  EXPECT_FALSE(Eval("team < 'a'"));
  EXPECT_TRUE(Eval("team <= 'payments'"));
  EXPECT_TRUE(Eval("team > 'auth'"));
  EXPECT_TRUE(Eval("team >= 'payments'"));
  EXPECT_TRUE(Eval("size(paths) == 3"));
  EXPECT_TRUE(Eval("size(paths) > 2 && size(paths) >= 3 && size(paths) < 4 && size(paths) <= 3"));
  EXPECT_TRUE(Eval("size(egress) != 0"));
  EXPECT_TRUE(Eval("-1 < 0"));
  EXPECT_TRUE(Eval("(team == 'payments') == true"));
  EXPECT_TRUE(Eval("true != false"));
}

TEST(ExprTest, LogicalOperatorsAndParentheses) {
  EXPECT_TRUE(Eval("team == 'payments' && repo.endsWith('shop')"));
  EXPECT_FALSE(Eval("team == 'payments' && repo.endsWith('x')"));
  EXPECT_TRUE(Eval("team == 'x' || repo.startsWith('github.com/')"));
  EXPECT_FALSE(Eval("team == 'x' || team == 'y'"));
  EXPECT_TRUE(Eval("!(team == 'x')"));
  EXPECT_FALSE(Eval("!!(team == 'x')"));
  // && binds tighter than ||.
  EXPECT_TRUE(Eval("true || false && false"));
  EXPECT_FALSE(Eval("(true || false) && false"));
}

TEST(ExprTest, InOnListsMapsAndIntLists) {
  EXPECT_TRUE(Eval("team in ['auth', 'payments']"));
  EXPECT_FALSE(Eval("team in ['auth']"));
  EXPECT_FALSE(Eval("team in []"));
  EXPECT_TRUE(Eval("'prod/stripe/key' in secrets"));
  EXPECT_FALSE(Eval("'prod/x' in secrets"));
  EXPECT_TRUE(Eval("'sensitivity' in labels"));
  EXPECT_FALSE(Eval("'owner' in labels"));
  EXPECT_TRUE(Eval("'ticket' in metadata"));
  EXPECT_TRUE(Eval("size(paths) in [1, 2, 3]"));
  EXPECT_FALSE(Eval("size(paths) in [1, 2,]"));
}

TEST(ExprTest, StringMethodsSizeAndMapAccess) {
  EXPECT_TRUE(Eval("repo.startsWith('github.com/acme/')"));
  EXPECT_TRUE(Eval("repo.endsWith('/shop')"));
  EXPECT_TRUE(Eval("repo.contains('acme')"));
  EXPECT_FALSE(Eval("repo.contains('ACME')"));
  EXPECT_TRUE(Eval("template.matches('python-*')"));
  EXPECT_TRUE(Eval("size(team) == 8 && team.size() == 8 && labels.size() == 2"));
  EXPECT_TRUE(Eval("size(metadata) == 1"));
  EXPECT_TRUE(Eval("labels.sensitivity == 'high'"));
  EXPECT_TRUE(Eval("labels['env'] == 'dev'"));
  EXPECT_TRUE(Eval("metadata.ticket.startsWith('PAY-')"));
  EXPECT_TRUE(Eval("labels[metadata.ticket] == ''"));  // a computed key
  // A missing key reads as "".
  EXPECT_TRUE(Eval("labels.owner == ''"));
  EXPECT_TRUE(Eval("size(labels['no-such']) == 0"));
}

TEST(ExprTest, Macros) {
  EXPECT_TRUE(Eval("paths.exists(p, p.matches('services/payments/**'))"));
  EXPECT_FALSE(Eval("paths.exists(p, p.matches('services/auth/**'))"));
  EXPECT_TRUE(Eval("paths.all(p, size(p) > 0)"));
  EXPECT_FALSE(Eval("paths.all(p, p.endsWith('.md'))"));
  TaskFacts empty;
  EXPECT_TRUE(Eval("paths.all(p, p.endsWith('.md'))", empty));  // vacuously true
  EXPECT_FALSE(Eval("paths.exists(p, true)", empty));
  EXPECT_TRUE(Eval("labels.exists(k, k == 'env' && labels[k] == 'dev')"));
  EXPECT_TRUE(Eval("[1, 2, 3].all(n, n > 0)"));
  EXPECT_TRUE(Eval("['a', 'b'].exists(x, x == 'b')"));
  // Two levels, the inner body sees both variables.
  EXPECT_TRUE(
      Eval("secrets.exists(s, paths.exists(p, s.startsWith('prod/') && "
           "p.startsWith('services/')))"));
}

TEST(ExprTest, SyntaxErrorsNamePosition) {
  ExprError err;
  EXPECT_EQ(CompileError("team ==", &err), "1:8: expected a value, got end of expression");
  EXPECT_EQ(err.offset, 7u);
  EXPECT_EQ(CompileError("team = 'x'"), "1:6: '=' is not an operator; did you mean '=='?");
  EXPECT_EQ(CompileError("team == 'x' & repo == 'y'"),
            "1:13: '&' is not an operator; did you mean '&&'?");
  EXPECT_EQ(CompileError("team == 'x"), "1:9: unterminated string literal");
  EXPECT_EQ(CompileError("team == 'x' )"), "1:13: unexpected ')'");
  EXPECT_EQ(CompileError("(team == 'x'"), "1:13: expected ')', got end of expression");
  EXPECT_EQ(CompileError("team == 'x' #"), "1:13: unexpected character \"#\"");
  EXPECT_EQ(CompileError("team == 'a\\qb'"), "1:11: unknown escape '\\q' in string");
  EXPECT_EQ(CompileError("team == 'x' &&\n  bogus == 'y'", &err),
            "2:3: unknown identifier 'bogus' (known: team, repo, template, labels, metadata, "
            "paths, secrets, egress)");
  EXPECT_EQ(err.line, 2);
  EXPECT_EQ(err.column, 3);
  EXPECT_EQ(CompileError(""), "1:1: empty expression");
  EXPECT_EQ(CompileError("team == 99999999999999999999"), "1:9: integer literal out of range");
  EXPECT_EQ(CompileError("foo(team)"),
            "1:1: unknown function 'foo' (functions: size; methods: startsWith, endsWith, "
            "contains, matches, size, exists, all)");
  EXPECT_EQ(CompileError("team.lower() == 'x'"),
            "1:6: unknown method 'lower' (methods: startsWith, endsWith, contains, matches, "
            "size, exists, all)");
}

TEST(ExprTest, TypeErrorsAreCompileErrors) {
  EXPECT_EQ(CompileError("team"), "1:1: the expression must be bool, got string");
  EXPECT_EQ(CompileError("size(paths) == 'x'"), "1:13: cannot compare int with string using '=='");
  EXPECT_EQ(CompileError("paths == secrets"), "1:7: '==' does not compare list(string) values");
  EXPECT_EQ(CompileError("paths.startsWith('x')"),
            "1:7: 'startsWith' needs a string receiver, got list(string) (use exists(x, "
            "x.startsWith(...)))");
  EXPECT_EQ(CompileError("'x' in team"),
            "1:5: 'in' cannot test string in string (for substrings use s.contains(t))");
  EXPECT_EQ(CompileError("team.matches(1)"), "1:14: 'matches' needs a string argument, got int");
  EXPECT_EQ(CompileError("team && true"), "1:6: '&&' needs bool operands, got string and bool");
  EXPECT_EQ(CompileError("!team"), "1:1: '!' needs a bool operand, got string");
  EXPECT_EQ(CompileError("paths.exists(p, p)"),
            "1:17: the body of 'exists' must be bool, got string");
  EXPECT_EQ(CompileError("team.x == ''"),
            "1:6: '.x': string has no fields (only labels and metadata do)");
  EXPECT_EQ(CompileError("paths[0] == ''"),
            "1:6: '[...]' indexes labels or metadata, not list(string) (use exists() for lists)");
  EXPECT_EQ(CompileError("[team] == []"),
            "1:2: list elements must be string or integer literals, got 'team'");
  EXPECT_EQ(CompileError("['a', 1] == []"), "1:7: list mixes string and int elements");
  EXPECT_EQ(CompileError("paths.exists(paths, true)"),
            "1:14: 'paths' is reserved and cannot name a variable");
  EXPECT_EQ(CompileError("paths.exists(p, secrets.exists(p, true))"),
            "1:32: variable 'p' is already in use");
  EXPECT_EQ(CompileError("p == 'x'"),
            "1:1: unknown identifier 'p' (known: team, repo, template, labels, metadata, paths, "
            "secrets, egress)");
}

TEST(ExprTest, LiteralGlobIsCheckedAtCompileTime) {
  ExprError err;
  EXPECT_EQ(CompileError("paths.exists(p, p.matches('src/[abc'))", &err),
            "1:27: invalid glob \"src/[abc\": unclosed '[' at offset 4");
  EXPECT_EQ(err.offset, 26u);
}

TEST(ExprTest, StaticBounds) {
  std::string big = "team == 'x'";
  for (int i = 0; i < 400; ++i) big += " || team == 'x'";
  EXPECT_NE(CompileError(big).find("expression too large (more than 1000 nodes)"),
            std::string::npos);
  std::string deep = std::string(100, '(') + "true" + std::string(100, ')');
  EXPECT_NE(CompileError(deep).find("nested deeper than 64 levels"), std::string::npos);
  EXPECT_EQ(CompileError("paths.exists(a, paths.exists(b, paths.exists(c, true)))"),
            "1:39: exists/all nest at most 2 deep");
  EXPECT_EQ(CompileError(std::string(20000, ' ') + "true"),
            "1:1: expression longer than 16384 bytes");
  // The static bound grows with macro nesting.
  auto flat = Expr::Compile("paths.exists(p, p == 'x')");
  auto nested = Expr::Compile("paths.exists(p, secrets.exists(s, p == s))");
  ASSERT_TRUE(flat.ok() && nested.ok());
  EXPECT_GT(flat->cost_bound(), kMaxFactListSize);
  EXPECT_GT(nested->cost_bound(), flat->cost_bound() * 1000);
}

TEST(ExprTest, BudgetExhaustionIsAnErrorNotAHang) {
  // With the default budget: 1024 × 1024 glob matches of a multi-star pattern over long paths.
  TaskFacts f;
  for (size_t i = 0; i < kMaxFactListSize; ++i) f.paths.push_back(std::string(200, 'a'));
  auto e = Expr::Compile("paths.exists(a, paths.exists(b, a.matches('*a*a*a*b')))");
  ASSERT_TRUE(e.ok());
  auto v = e->Evaluate(f);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kResourceExhausted);
  EXPECT_EQ(v.status().message(), "evaluation budget of 1000000 steps exhausted");
  // A small budget trips on a plain nested loop.
  ExprLimits small;
  small.max_steps = 1000;
  auto e3 = Expr::Compile("paths.exists(a, paths.exists(b, a != b && a == b))", small);
  ASSERT_TRUE(e3.ok());
  TaskFacts g;
  for (int i = 0; i < 100; ++i) g.paths.push_back("p" + std::to_string(i));
  auto v3 = e3->Evaluate(g);
  ASSERT_FALSE(v3.ok());
  EXPECT_EQ(v3.status().message(), "evaluation budget of 1000 steps exhausted");
  // The same expression over a short list fits.
  TaskFacts h;
  h.paths = {"a", "b"};
  auto v4 = e3->Evaluate(h);
  ASSERT_TRUE(v4.ok());
  EXPECT_FALSE(*v4);
}

TEST(ExprTest, DefaultConstructedExprIsAnErrorNotACrash) {
  const Expr e;
  auto v = e.Evaluate(TaskFacts{});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kFailedPrecondition);
}

TEST(ExprTest, RunTimeGlobErrorIsAnEvaluationError) {
  auto e = Expr::Compile("paths.exists(p, p.matches(labels.pattern))");
  ASSERT_TRUE(e.ok());
  TaskFacts f;
  f.paths = {"a/b"};
  f.labels = {{"pattern", "a/[b"}};
  auto v = e->Evaluate(f);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "invalid glob \"a/[b\": unclosed '[' at offset 2");
  f.labels["pattern"] = "a/*";
  auto ok = e->Evaluate(f);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(*ok);
}

TEST(ExprTest, WitnessNamesTheValue) {
  EXPECT_EQ(Witness("paths.exists(p, p.matches(\"services/payments/**\"))"),
            "paths[1]=\"services/payments/api.go\" matches \"services/payments/**\"");
  EXPECT_EQ(Witness("labels.sensitivity == 'high'"), "labels.sensitivity=\"high\" == \"high\"");
  EXPECT_EQ(Witness("team == 'x' || team in ['auth', 'payments']"),
            "team=\"payments\" in ['auth', 'payments']");
  EXPECT_EQ(Witness("size(egress) > 0 && repo.contains('acme')"),
            "size(egress)=1 > 0 and repo=\"github.com/acme/shop\" contains \"acme\"");
  EXPECT_EQ(Witness("!(team == 'auth')"), "not (team == 'auth')");
  EXPECT_EQ(Witness("paths.all(p, size(p) > 0)"), "all 3 of paths satisfy size(p) > 0");
  EXPECT_EQ(Witness("'sensitivity' in labels"), "\"sensitivity\" in labels");
  EXPECT_EQ(Witness("labels.exists(k, k.startsWith('sens'))"),
            "labels key \"sensitivity\" starts with \"sens\"");
  EXPECT_EQ(Witness("secrets.exists(s, paths.exists(p, s.startsWith('prod/') && "
                    "p.endsWith('.go')))"),
            "secrets[1]=\"prod/stripe/key\" starts with \"prod/\" and "
            "paths[1]=\"services/payments/api.go\" ends with \".go\"");
  // Explain mode returns the same value; false results carry no witness.
  auto e = Expr::Compile("team == 'auth'");
  ASSERT_TRUE(e.ok());
  std::string w = "stale";
  auto v = e->Evaluate(Sample(), &w);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(*v);
  EXPECT_EQ(w, "");
}

TEST(TaskFactsTest, FromJsonReadsTheCreateBody) {
  auto f = TaskFactsFromJson(nlohmann::json::parse(R"({
    "team": "payments", "repo": "r", "template": "py", "labels": {"a": "b"},
    "metadata": {"m": "n"}, "paths": ["x"], "secrets": ["s"], "egress": ["e:443"],
    "tier": "hardened", "command": ["true"], "resources": {"cpu_millis": 500}, "priority": 1})"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->team, "payments");
  EXPECT_EQ(f->template_name, "py");
  EXPECT_EQ(f->labels.at("a"), "b");
  EXPECT_EQ(f->metadata.at("m"), "n");
  EXPECT_EQ(f->paths, std::vector<std::string>{"x"});
  EXPECT_EQ(f->egress, std::vector<std::string>{"e:443"});
  EXPECT_EQ(f->requested_tier, Tier::kHardened);
  auto back = TaskFactsFromJson(TaskFactsToJson(*f));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->secrets, f->secrets);
  EXPECT_EQ(back->requested_tier, f->requested_tier);
}

TEST(TaskFactsTest, FromJsonRejectsBadInput) {
  auto err = [](std::string_view text) {
    auto f = TaskFactsFromJson(nlohmann::json::parse(text));
    EXPECT_FALSE(f.ok()) << text;
    return f.ok() ? "" : f.status().message();
  };
  EXPECT_EQ(err(R"({"teem": "x"})"),
            "unknown field 'teem' (the router reads team, repo, template, labels, metadata, "
            "paths, secrets, egress, tier)");
  EXPECT_EQ(err(R"({"team": 3})"), "field 'team' must be a string, got number");
  EXPECT_EQ(err(R"({"paths": "a/b"})"), "field 'paths' must be an array of strings, got string");
  EXPECT_EQ(err(R"({"paths": ["a", 1]})"), "field 'paths[1]' must be a string, got number");
  EXPECT_EQ(err(R"({"labels": ["a"]})"), "field 'labels' must be an object of strings, got array");
  EXPECT_EQ(err(R"({"labels": {"a": true}})"), "field 'labels.a' must be a string, got boolean");
  EXPECT_EQ(err(R"({"tier": "gold"})"),
            "field 'tier': unknown tier 'gold' (valid: shared, hardened, isolated)");
  EXPECT_EQ(err(R"([1])"), "a task must be a JSON object, got array");
  nlohmann::json many = {{"paths", std::vector<std::string>(kMaxFactListSize + 1, "x")}};
  auto f = TaskFactsFromJson(many);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), "field 'paths' has 1025 entries, more than 1024");
}

}  // namespace
}  // namespace hangar::control
