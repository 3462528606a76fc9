#include "commands.h"

#include <sstream>

#include <gtest/gtest.h>

namespace hangar::cli {
namespace {

using namespace std::chrono_literals;

TEST(HumanDurationTest, PicksTheTwoLargestUnits) {
  EXPECT_EQ(HumanDuration(850ms), "850ms");
  EXPECT_EQ(HumanDuration(12s), "12s");
  EXPECT_EQ(HumanDuration(12min + 5s), "12m 5s");
  EXPECT_EQ(HumanDuration(3h + 4min + 59s), "3h 4m");
  EXPECT_EQ(HumanDuration(24h * 3 + 4h), "3d 4h");
}

TEST(StatusCommandTest, UnreachableDaemonIsOneLineAndExitOne) {
  GlobalOptions g;
  g.server = "http://127.0.0.1:1";  // nothing listens on port 1
  g.timeout_ms = 2000;
  std::ostringstream out, err;
  EXPECT_EQ(RunStatus(g, out, err), 1);
  EXPECT_TRUE(out.str().empty());
  std::string e = err.str();
  EXPECT_EQ(e.rfind("hangar: error: cannot reach hangard at http://127.0.0.1:1: ", 0), 0u) << e;
  EXPECT_NE(e.find("refused"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), e.size() - 1) << "one line";
}

TEST(StatusCommandTest, BadServerUrlIsUsageError) {
  GlobalOptions g;
  g.server = "https://example.invalid";
  std::ostringstream out, err;
  EXPECT_EQ(RunStatus(g, out, err), 2);
  EXPECT_NE(err.str().find("hangar: error:"), std::string::npos);
}

}  // namespace
}  // namespace hangar::cli
