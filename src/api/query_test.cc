#include "hangar/api/query.h"

#include <gtest/gtest.h>

namespace hangar::api {
namespace {

TEST(PercentDecode, DecodesEscapes) {
  EXPECT_EQ(*PercentDecode("a%20b%2fc%7E"), "a b/c~");
  EXPECT_EQ(*PercentDecode("a+b"), "a+b");
  EXPECT_EQ(*PercentDecode("a+b", true), "a b");
  EXPECT_EQ(*PercentDecode(""), "");
}

TEST(PercentDecode, RejectsBrokenEscapes) {
  for (const char* bad : {"%", "%2", "a%g0", "%0z"}) {
    Result<std::string> r = PercentDecode(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  }
  EXPECT_EQ(PercentDecode("ab%2").status().message(), "invalid percent-encoding at byte 2");
}

TEST(PercentEncode, RoundTrips) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  EXPECT_EQ(*PercentDecode(PercentEncode(all)), all);
  EXPECT_EQ(PercentEncode("a b/c~"), "a%20b%2Fc~");
}

TEST(QueryParams, Parses) {
  Result<QueryParams> q = QueryParams::Parse("state=running&tag=a&tag=b%26c&flag&&q=x+y&e=");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->Get("state"), "running");
  EXPECT_EQ(q->GetAll("tag"), (std::vector<std::string_view>{"a", "b&c"}));
  EXPECT_TRUE(q->Has("flag"));
  EXPECT_EQ(q->Get("flag"), "");
  EXPECT_EQ(q->Get("q"), "x y");
  EXPECT_EQ(q->Get("e"), "");
  EXPECT_FALSE(q->Get("missing").has_value());
  EXPECT_EQ(q->items().size(), 6u);
}

TEST(QueryParams, RejectsBadEncoding) {
  EXPECT_EQ(QueryParams::Parse("a=%zz").status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace hangar::api
