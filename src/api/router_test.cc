#include "hangar/api/router.h"

#include <gtest/gtest.h>

namespace hangar::api {
namespace {

Handler Named(std::string name) {
  return [name](const Request&) -> Result<Response> { return Response::Text(name); };
}

std::string ParamsOf(const RouteMatch& m) {
  std::string s;
  for (const auto& [k, v] : m.params) s += std::string(k) + "=" + v + ";";
  return s;
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(r_.Get("/v1/sandboxes", Named("list")).ok());
    ASSERT_TRUE(r_.Post("/v1/sandboxes", Named("create")).ok());
    ASSERT_TRUE(r_.Get("/v1/sandboxes/{id}", Named("get")).ok());
    ASSERT_TRUE(r_.Delete("/v1/sandboxes/{id}", Named("delete")).ok());
    ASSERT_TRUE(r_.Get("/v1/sandboxes/pool", Named("pool")).ok());
    ASSERT_TRUE(r_.Post("/v1/sandboxes/{id}/exec", Named("exec")).ok());
    ASSERT_TRUE(r_.Get("/v1/sandboxes/{id}/files/{path...}", Named("file")).ok());
    ASSERT_TRUE(r_.Get("/", Named("root")).ok());
  }
  Router r_;
};

TEST_F(RouterTest, MatchesLiteralsAndParams) {
  RouteMatch m = r_.Match("GET", "/v1/sandboxes");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->pattern, "/v1/sandboxes");
  EXPECT_TRUE(m.params.empty());

  m = r_.Match("GET", "/v1/sandboxes/sb-1");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->pattern, "/v1/sandboxes/{id}");
  EXPECT_EQ(ParamsOf(m), "id=sb-1;");

  m = r_.Match("POST", "/v1/sandboxes/sb-1/exec");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->pattern, "/v1/sandboxes/{id}/exec");

  m = r_.Match("GET", "/");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->pattern, "/");
}

TEST_F(RouterTest, LiteralBeatsParam) {
  RouteMatch m = r_.Match("GET", "/v1/sandboxes/pool");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->pattern, "/v1/sandboxes/pool");
  // The literal has no DELETE, so the param route answers it.
  m = r_.Match("DELETE", "/v1/sandboxes/pool");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->pattern, "/v1/sandboxes/{id}");
  EXPECT_EQ(ParamsOf(m), "id=pool;");
}

TEST_F(RouterTest, ParamsArePercentDecoded) {
  RouteMatch m = r_.Match("GET", "/v1/sandboxes/a%20b%2Fc");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(ParamsOf(m), "id=a b/c;");
  m = r_.Match("GET", "/v1/sandboxes/bad%zz");
  EXPECT_EQ(m.kind, RouteMatch::Kind::kBadPath);
  EXPECT_EQ(m.error.code(), Code::kInvalidArgument);
}

TEST_F(RouterTest, RestParamTakesTheRemainder) {
  RouteMatch m = r_.Match("GET", "/v1/sandboxes/sb1/files/etc/app%20x/conf.yaml");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(ParamsOf(m), "id=sb1;path=etc/app x/conf.yaml;");
  m = r_.Match("GET", "/v1/sandboxes/sb1/files/");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(ParamsOf(m), "id=sb1;path=;");
}

TEST_F(RouterTest, UnknownPathIsNotFound) {
  EXPECT_EQ(r_.Match("GET", "/v2/sandboxes").kind, RouteMatch::Kind::kNotFound);
  EXPECT_EQ(r_.Match("GET", "/v1/sandboxes/").kind, RouteMatch::Kind::kNotFound);  // empty {id}
  EXPECT_EQ(r_.Match("GET", "/v1/sandboxes/x/y").kind, RouteMatch::Kind::kNotFound);
  EXPECT_EQ(r_.Match("GET", "v1").kind, RouteMatch::Kind::kBadPath);
}

TEST_F(RouterTest, WrongMethodListsAllowed) {
  RouteMatch m = r_.Match("PUT", "/v1/sandboxes");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kMethodNotAllowed);
  EXPECT_EQ(m.allow, "GET, HEAD, POST");
  m = r_.Match("POST", "/v1/sandboxes/sb1");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kMethodNotAllowed);
  EXPECT_EQ(m.allow, "DELETE, GET, HEAD");
  EXPECT_TRUE(m.params.empty());
}

TEST_F(RouterTest, HeadUsesGet) {
  RouteMatch m = r_.Match("HEAD", "/v1/sandboxes/x");
  ASSERT_EQ(m.kind, RouteMatch::Kind::kFound);
  EXPECT_EQ(m.route->method, "GET");
}

TEST(RouterRegistration, RejectsBadPatterns) {
  Router r;
  EXPECT_FALSE(r.Get("v1/x", Named("a")).ok());
  EXPECT_FALSE(r.Get("/v1/{}", Named("a")).ok());
  EXPECT_FALSE(r.Get("/v1/x{id}", Named("a")).ok());
  EXPECT_FALSE(r.Get("/v1/{rest...}/x", Named("a")).ok());
  EXPECT_FALSE(r.Handle("get", "/v1", Named("a")).ok());
  EXPECT_FALSE(r.Get("/v1", nullptr).ok());
  ASSERT_TRUE(r.Get("/v1/{id}", Named("a")).ok());
  Status dup = r.Get("/v1/{id}", Named("b"));
  EXPECT_EQ(dup.code(), Code::kInvalidArgument);
  EXPECT_NE(dup.message().find("already registered"), std::string::npos) << dup.message();
  Status conflict = r.Post("/v1/{name}", Named("c"));
  EXPECT_NE(conflict.message().find("conflicts"), std::string::npos) << conflict.message();
}

}  // namespace
}  // namespace hangar::api
