#include "hangar/api/json.h"

#include <gtest/gtest.h>

namespace hangar::api {
namespace {

TEST(ParseJson, ParsesValidDocuments) {
  Result<nlohmann::json> j = ParseJson(R"({"a": [1, 2], "b": "x"})");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["b"], "x");
}

TEST(ParseJson, NamesByteAndProblem) {
  Result<nlohmann::json> j = ParseJson(R"({"name": "x",})");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), Code::kInvalidArgument);
  const std::string& m = j.status().message();
  EXPECT_EQ(m.rfind("invalid JSON at byte 14: ", 0), 0u) << m;
  EXPECT_NE(m.find("expected string literal"), std::string::npos) << m;
  EXPECT_EQ(m.find("json.exception"), std::string::npos) << m;

  EXPECT_EQ(ParseJson("").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseJson("{} trailing").status().code(), Code::kInvalidArgument);
}

TEST(DumpJson, NeverThrowsOnInvalidUtf8) {
  nlohmann::json j = {{"s", std::string("bad \xff byte")}};
  std::string out;
  ASSERT_NO_THROW(out = DumpJson(j));
  EXPECT_NE(out.find("bad"), std::string::npos);
}

TEST(JsonResponse, SetsStatusAndType) {
  Response r = JsonResponse({{"id", "sb1"}}, 201);
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"id":"sb1"})");
}

}  // namespace
}  // namespace hangar::api
