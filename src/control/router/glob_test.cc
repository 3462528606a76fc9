#include <string>

#include <gtest/gtest.h>

#include "hangar/control/expr.h"

namespace hangar::control {
namespace {

bool M(std::string_view pattern, std::string_view text) {
  auto g = Glob::Compile(pattern);
  EXPECT_TRUE(g.ok()) << pattern << ": " << g.status().ToString();
  return g.ok() && g->Matches(text);
}

std::string CompileError(std::string_view pattern) {
  auto g = Glob::Compile(pattern);
  EXPECT_FALSE(g.ok()) << pattern << " compiled";
  return g.ok() ? "" : g.status().message();
}

TEST(GlobTest, LiteralMatchesOnlyItself) {
  EXPECT_TRUE(M("a/b.go", "a/b.go"));
  EXPECT_FALSE(M("a/b.go", "a/b.gox"));
  EXPECT_FALSE(M("a/b.go", "xa/b.go"));
  EXPECT_FALSE(M("a/b.go", ""));
}

TEST(GlobTest, StarDoesNotCrossSlash) {
  EXPECT_TRUE(M("prod/*", "prod/db"));
  EXPECT_TRUE(M("prod/*", "prod/"));
  EXPECT_FALSE(M("prod/*", "prod/db/password"));
  EXPECT_FALSE(M("prod/*", "production/db"));
  EXPECT_TRUE(M("*.md", "README.md"));
  EXPECT_FALSE(M("*.md", "docs/README.md"));
  EXPECT_TRUE(M("a/*/c", "a/b/c"));
  EXPECT_FALSE(M("a/*/c", "a/b/x/c"));
  EXPECT_TRUE(M("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(M("a*b*c", "aX/bYYc"));
}

TEST(GlobTest, DoubleStarMatchesZeroOrMoreSegments) {
  EXPECT_TRUE(M("a/**/b", "a/b"));
  EXPECT_TRUE(M("a/**/b", "a/x/b"));
  EXPECT_TRUE(M("a/**/b", "a/x/y/z/b"));
  EXPECT_FALSE(M("a/**/b", "a/xb"));
  EXPECT_FALSE(M("a/**/b", "ab"));
  EXPECT_FALSE(M("a/**/b", "a/x/b/c"));
  // Trailing: the directory itself and everything below it.
  EXPECT_TRUE(M("services/payments/**", "services/payments"));
  EXPECT_TRUE(M("services/payments/**", "services/payments/api.go"));
  EXPECT_TRUE(M("services/payments/**", "services/payments/a/b/c.go"));
  EXPECT_FALSE(M("services/payments/**", "services/paymentsx/api.go"));
  EXPECT_FALSE(M("services/payments/**", "services/payment"));
  EXPECT_FALSE(M("services/payments/**", "other/services/payments/x"));
  // Leading.
  EXPECT_TRUE(M("**/*.tf", "main.tf"));
  EXPECT_TRUE(M("**/*.tf", "infra/prod/main.tf"));
  EXPECT_FALSE(M("**/*.tf", "main.tfvars"));
  EXPECT_FALSE(M("**/*.tf", "a.tf/readme"));
  EXPECT_TRUE(M("**/test_*.py", "pkg/a/test_x.py"));
  EXPECT_TRUE(M("*/**/test_*.py", "pkg/test_x.py"));
  EXPECT_FALSE(M("*/**/test_*.py", "test_x.py"));
  // Alone, and inside a segment (crosses '/').
  EXPECT_TRUE(M("**", ""));
  EXPECT_TRUE(M("**", "a/b/c"));
  EXPECT_TRUE(M("a**z", "a/b/c/z"));
  EXPECT_FALSE(M("a**z", "a/b/c/zz/"));
}

TEST(GlobTest, QuestionMarkClassesAndEscapes) {
  EXPECT_TRUE(M("a?c", "abc"));
  EXPECT_FALSE(M("a?c", "a/c"));
  EXPECT_FALSE(M("a?c", "ac"));
  EXPECT_TRUE(M("[abc]x", "bx"));
  EXPECT_FALSE(M("[abc]x", "dx"));
  EXPECT_TRUE(M("v[0-9]", "v7"));
  EXPECT_FALSE(M("v[0-9]", "vx"));
  EXPECT_TRUE(M("[!a]b", "xb"));
  EXPECT_FALSE(M("[!a]b", "ab"));
  EXPECT_FALSE(M("[!a]b", "/b"));  // a class never matches '/'
  EXPECT_TRUE(M("[]]", "]"));
  EXPECT_TRUE(M("[a-]", "-"));
  EXPECT_TRUE(M("a\\*b", "a*b"));
  EXPECT_FALSE(M("a\\*b", "axb"));
  EXPECT_TRUE(M("\\[x\\]", "[x]"));
}

TEST(GlobTest, MalformedPatternsAreRejectedWithOffset) {
  EXPECT_EQ(CompileError("src/[abc"), "invalid glob \"src/[abc\": unclosed '[' at offset 4");
  EXPECT_EQ(CompileError("[z-a]"),
            "invalid glob \"[z-a]\": reversed range 'z-a' in '[' at offset 0");
  EXPECT_EQ(CompileError("a\\"),
            "invalid glob \"a\\\\\": trailing '\\' escapes nothing at offset 1");
  EXPECT_EQ(CompileError("a/***"),
            "invalid glob \"a/***\": more than two '*' in a row at offset 2");
  EXPECT_EQ(CompileError(""), "invalid glob \"\": empty pattern");
  EXPECT_NE(CompileError(std::string(2000, 'a')).find("longer than"), std::string::npos);
}

TEST(GlobTest, ManyStarsStayPolynomial) {
  // Naive backtracking takes exponential time here; the memo keeps it to tokens × length.
  auto g = Glob::Compile("*a*a*a*a*a*a*a*a*a*a*b");
  ASSERT_TRUE(g.ok());
  const std::string text(300, 'a');
  uint64_t steps = 0;
  EXPECT_FALSE(g->Matches(text, &steps));
  EXPECT_LT(steps, 25u * 301u * 2u);
  EXPECT_GT(steps, 0u);
  auto dirs = Glob::Compile("**/x/**/x/**/x/**/y");
  ASSERT_TRUE(dirs.ok());
  std::string path;
  for (int i = 0; i < 200; ++i) path += "x/";
  steps = 0;
  EXPECT_FALSE(dirs->Matches(path + "z", &steps));
  EXPECT_LT(steps, 2'000'000u);
  EXPECT_TRUE(dirs->Matches(path + "y"));
}

}  // namespace
}  // namespace hangar::control
