#include "protocol.h"

#include <gtest/gtest.h>

namespace hangar::envd::internal {
namespace {

TEST(EnvelopeTest, EncodesFlagsAndBigEndianLength) {
  std::string e = Envelope(kFlagEndStream, "{}");
  ASSERT_EQ(e.size(), 7u);
  EXPECT_EQ(static_cast<uint8_t>(e[0]), 0x02);
  EXPECT_EQ(e.substr(1, 4), std::string("\0\0\0\x02", 4));
  EXPECT_EQ(e.substr(5), "{}");
  std::string big = Envelope(0, std::string(0x010203, 'x'));
  EXPECT_EQ(big.substr(1, 4), std::string("\x00\x01\x02\x03", 4));
}

TEST(EnvelopeTest, ReaderReassemblesFramesSplitAnywhere) {
  std::string stream =
      Envelope(0, R"({"a":1})") + Envelope(0, "") + EndStreamEnvelope(Status::Ok());
  for (size_t step = 1; step <= stream.size(); ++step) {
    EnvelopeReader r;
    std::vector<Frame> frames;
    for (size_t i = 0; i < stream.size(); i += step) {
      ASSERT_TRUE(r.Feed(std::string_view(stream).substr(i, step)).ok());
      while (auto f = r.Next()) frames.push_back(*f);
    }
    ASSERT_EQ(frames.size(), 3u) << "step " << step;
    EXPECT_EQ(frames[0].payload, R"({"a":1})");
    EXPECT_EQ(frames[1].payload, "");
    EXPECT_TRUE(frames[2].end_stream());
    EXPECT_EQ(frames[2].payload, "{}");
    EXPECT_EQ(r.pending(), 0u);
  }
}

TEST(EnvelopeTest, ReaderRejectsAbsurdLength) {
  EnvelopeReader r;
  EXPECT_EQ(r.Feed(std::string("\x00\x7f\xff\xff\xff", 5)).code(), Code::kInvalidArgument);
}

TEST(EnvelopeTest, EndStreamCarriesConnectError) {
  std::string e = EndStreamEnvelope(Status::NotFound("no such process"));
  auto j = nlohmann::json::parse(e.substr(5));
  EXPECT_EQ(j["error"]["code"], "not_found");
  EXPECT_EQ(j["error"]["message"], "no such process");
  EXPECT_EQ(EndStreamEnvelope(Status::Cancelled("x")).find("\"canceled\"") != std::string::npos,
            true);
}

TEST(EnvelopeTest, SingleEnvelopeValidates) {
  EXPECT_EQ(*SingleEnvelope(Envelope(0, "{}")), "{}");
  EXPECT_EQ(SingleEnvelope("{}").status().code(), Code::kInvalidArgument);  // not enveloped
  EXPECT_EQ(SingleEnvelope(Envelope(0, "{}") + "x").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SingleEnvelope(Envelope(0, "{}").substr(0, 6)).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SingleEnvelope(Envelope(kFlagCompressed, "{}")).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(SingleEnvelope(Envelope(kFlagEndStream, "{}")).status().code(), Code::kInvalidArgument);
}

TEST(ConnectCodesTest, FollowConnectsTable) {
  EXPECT_EQ(ConnectCodeName(Code::kCancelled), "canceled");
  EXPECT_EQ(ConnectHttpStatus(Code::kFailedPrecondition), 400);
  EXPECT_EQ(ConnectHttpStatus(Code::kNotFound), 404);
  EXPECT_EQ(ConnectHttpStatus(Code::kAlreadyExists), 409);
  EXPECT_EQ(ConnectHttpStatus(Code::kPermissionDenied), 403);
  EXPECT_EQ(ConnectHttpStatus(Code::kUnauthenticated), 401);
  EXPECT_EQ(ConnectHttpStatus(Code::kResourceExhausted), 429);
  EXPECT_EQ(ConnectHttpStatus(Code::kUnimplemented), 501);
  EXPECT_EQ(ConnectHttpStatus(Code::kDeadlineExceeded), 504);
  EXPECT_EQ(CodeFromConnectName("canceled"), Code::kCancelled);
  EXPECT_EQ(CodeFromConnectName("out_of_range"), Code::kInvalidArgument);
  EXPECT_EQ(CodeFromConnectName("data_loss"), Code::kInternal);
  Status s = StatusFromErrorJson({{"code", "already_exists"}, {"message", "m"}}, 409);
  EXPECT_EQ(s.code(), Code::kAlreadyExists);
  EXPECT_EQ(s.message(), "m");
  EXPECT_EQ(StatusFromErrorJson({{"code", 507}, {"message", "full"}}, 507).code(),
            Code::kResourceExhausted);
}

TEST(TimestampTest, FormatsLikeProtobuf) {
  EXPECT_EQ(FormatTimestamp(0, 0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatTimestamp(1764406398, 123000000), "2025-11-29T08:53:18.123Z");
  EXPECT_EQ(FormatTimestamp(1764406398, 123456000), "2025-11-29T08:53:18.123456Z");
  EXPECT_EQ(FormatTimestamp(1764406398, 1), "2025-11-29T08:53:18.000000001Z");
}

TEST(TimestampTest, ParsesWhatItFormatsAndOffsets) {
  auto t = ParseTimestamp("2025-11-29T08:53:18.123456789Z");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->time_since_epoch().count(), 1764406398123456789LL);
  auto o = ParseTimestamp("2025-11-29T09:53:18+01:00");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(o->time_since_epoch()).count(),
            1764406398);
  EXPECT_FALSE(ParseTimestamp("2025-11-29 08:53:18Z").ok());
  EXPECT_FALSE(ParseTimestamp("yesterday").ok());
}

TEST(FieldTest, AcceptsBothSpellingsAndStringIntegers) {
  nlohmann::json m = {{"watcher_id", "w1"}, {"size", "123"}, {"depth", 2}, {"flag", true}};
  EXPECT_EQ(*GetString(m, "watcherId", "watcher_id"), "w1");
  EXPECT_EQ(*GetInt(m, "size"), 123);
  EXPECT_EQ(*GetInt(m, "depth"), 2);
  EXPECT_EQ(*GetInt(m, "missing", {}, 7), 7);
  EXPECT_TRUE(*GetBool(m, "flag"));
  EXPECT_EQ(GetString(m, "depth").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(GetInt(m, "flag").status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace hangar::envd::internal
