#include "hangar/base/log.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/fd.h"

namespace hangar::log {
namespace {

TEST(LogTest, TextLineHasFieldsAndQuotesWhenNeeded) {
  std::string line = FormatLine(Format::kText, Level::kInfo, "2026-01-01T00:00:00.000Z",
                                "sandbox started", {{"id", "sb1"}, {"ms", 12.5}, {"why", "a b"}});
  EXPECT_EQ(line, "2026-01-01T00:00:00.000Z INFO sandbox started id=sb1 ms=12.5 why=\"a b\"\n");
}

TEST(LogTest, JsonLineIsOneParsableObject) {
  std::string line = FormatLine(Format::kJson, Level::kWarn, "T", "disk \"low\"",
                                {{"free_mb", 12}, {"ok", false}});
  ASSERT_EQ(line.back(), '\n');
  ASSERT_EQ(line.find('\n'), line.size() - 1) << "a JSON log record must be one line";
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["ts"], "T");
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["msg"], "disk \"low\"");
  EXPECT_EQ(j["free_mb"], 12);
  EXPECT_EQ(j["ok"], false);
}

TEST(LogTest, LevelFilterAndOutputRedirect) {
  auto p = MakePipe();
  ASSERT_TRUE(p.ok());
  SetOutputFd(p->write.get());
  Init(Format::kJson, Level::kWarn);
  Info("hidden");
  Error("shown", {{"k", "v"}});
  SetOutputFd(-1);
  Init(Format::kText, Level::kInfo);
  p->write.Reset();
  char buf[4096];
  ssize_t n = ::read(p->read.get(), buf, sizeof buf);
  ASSERT_GT(n, 0);
  std::string out(buf, static_cast<size_t>(n));
  EXPECT_EQ(out.find("hidden"), std::string::npos);
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["msg"], "shown");
  EXPECT_EQ(j["level"], "error");
}

TEST(LogTest, ParseRejectsUnknownNames) {
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(*ParseFormat("json"), Format::kJson);
  auto bad = ParseFormat("xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'xml'"), std::string::npos);
  EXPECT_FALSE(ParseLevel("loud").ok());
}

}  // namespace
}  // namespace hangar::log
