#include "hangar/api/error.h"

#include <gtest/gtest.h>

#include "hangar/api/json.h"

namespace hangar::api {
namespace {

TEST(Error, StatusMapping) {
  EXPECT_EQ(HttpStatusFor(Code::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(Code::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(Code::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(Code::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(Code::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(Code::kFailedPrecondition), 409);
  EXPECT_EQ(HttpStatusFor(Code::kAborted), 409);
  EXPECT_EQ(HttpStatusFor(Code::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(Code::kCancelled), 499);
  EXPECT_EQ(HttpStatusFor(Code::kUnimplemented), 501);
  EXPECT_EQ(HttpStatusFor(Code::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(Code::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(Code::kInternal), 500);
}

TEST(Error, BodyShape) {
  nlohmann::json body = *ParseJson(ErrorBody(Status::NotFound("sandbox sb1 not found")));
  EXPECT_EQ(body, (nlohmann::json{{"code", "not_found"}, {"message", "sandbox sb1 not found"}}));
  Response r = ErrorResponse(Status::ResourceExhausted("too big"), 413);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.content_type, "application/json");
}

TEST(Error, CodeNamesRoundTrip) {
  for (int i = 1; i <= static_cast<int>(Code::kInternal); ++i) {
    Code c = static_cast<Code>(i);
    EXPECT_EQ(CodeFromName(CodeName(c)), c);
  }
  EXPECT_FALSE(CodeFromName("nope").has_value());
}

TEST(Error, StatusFromHttpUsesTheBody) {
  Status s = StatusFromHttp(409, ErrorBody(Status::FailedPrecondition("sandbox is stopped")));
  EXPECT_EQ(s, Status::FailedPrecondition("sandbox is stopped"));
  EXPECT_TRUE(StatusFromHttp(204, "").ok());
}

TEST(Error, StatusFromHttpFallsBackToTheStatus) {
  Status s = StatusFromHttp(502, "<html>Bad Gateway</html>");
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "HTTP 502: <html>Bad Gateway</html>");
  EXPECT_EQ(StatusFromHttp(404, "").code(), Code::kNotFound);
  EXPECT_EQ(StatusFromHttp(418, "").code(), Code::kInvalidArgument);
  EXPECT_EQ(StatusFromHttp(500, R"({"code": "bogus", "message": "x"})").code(), Code::kInternal);
}

}  // namespace
}  // namespace hangar::api
