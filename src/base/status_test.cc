#include "hangar/base/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace hangar {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(StatusTest, FromErrnoNamesCallAndMapsCode) {
  Status s = Status::FromErrno(ENOENT, "open(/nope, O_RDONLY)");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.message(), "open(/nope, O_RDONLY): No such file or directory");
  EXPECT_EQ(s.sys_errno(), ENOENT);
  EXPECT_EQ(Status::FromErrno(EACCES, "x").code(), Code::kPermissionDenied);
  EXPECT_EQ(Status::FromErrno(ENOSPC, "x").code(), Code::kResourceExhausted);
  EXPECT_EQ(Status::FromErrno(EADDRINUSE, "x").code(), Code::kAlreadyExists);
  EXPECT_EQ(Status::FromErrno(EIO, "x").code(), Code::kInternal);
}

TEST(StatusTest, WithAddsContextAndKeepsCode) {
  Status s = Status::FromErrno(EEXIST, "mkdir(/a)").With("creating sandbox sb1");
  EXPECT_EQ(s.code(), Code::kAlreadyExists);
  EXPECT_EQ(s.message(), "creating sandbox sb1: mkdir(/a): File exists");
  EXPECT_EQ(s.sys_errno(), EEXIST);
  EXPECT_TRUE(Status::Ok().With("ctx").ok());
}

TEST(StatusTest, CodeNamesAreSnakeCase) {
  EXPECT_EQ(CodeName(Code::kInvalidArgument), "invalid_argument");
  EXPECT_EQ(CodeName(Code::kResourceExhausted), "resource_exhausted");
  EXPECT_EQ(Status::NotFound("sandbox x").ToString(), "not_found: sandbox x");
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  HANGAR_ASSIGN_OR_RETURN(int h, Half(x));
  HANGAR_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  HANGAR_TRY(Half(x).status());
  return Status::Ok();
}

TEST(ResultTest, PropagatesValuesAndErrors) {
  ASSERT_TRUE(Quarter(8).ok());
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);  // 6/2 = 3 is odd
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.value_or(-1), -1);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(3).code(), Code::kInvalidArgument);
}

TEST(ResultTest, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

}  // namespace
}  // namespace hangar
