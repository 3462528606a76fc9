#include "guest.h"

#include <gtest/gtest.h>

namespace hangar::envd::internal {
namespace {

using namespace std::string_literals;

TEST(GuestTest, EnvFileEntriesAreNulSeparatedAndValuesMayHoldNewlines) {
  auto env = ParseEnvFile("PATH=/bin:/usr/bin\0MULTI=a\nb\0EMPTY=\0\0EQ=x=y\0"s);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->size(), 4u);
  EXPECT_EQ(env->at("PATH"), "/bin:/usr/bin");
  EXPECT_EQ(env->at("MULTI"), "a\nb");
  EXPECT_EQ(env->at("EMPTY"), "");
  EXPECT_EQ(env->at("EQ"), "x=y");
  auto last = ParseEnvFile("A=1\0B=2"s);  // no trailing NUL
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->at("B"), "2");
  EXPECT_TRUE(ParseEnvFile("").value().empty());
}

TEST(GuestTest, EnvFileEntryWithoutNameOrEqualsIsRejectedByName) {
  auto no_eq = ParseEnvFile("A=1\0JUSTANAME\0"s);
  ASSERT_FALSE(no_eq.ok());
  EXPECT_EQ(no_eq.status().code(), Code::kInvalidArgument);
  EXPECT_NE(no_eq.status().message().find("JUSTANAME"), std::string::npos);
  EXPECT_FALSE(ParseEnvFile("=value\0"s).ok());
}

TEST(GuestTest, BlocksForDeviceCountsWholeBlocks) {
  EXPECT_EQ(BlocksForDevice(uint64_t{1} << 30, 4096), 262144u);
  EXPECT_EQ(BlocksForDevice((uint64_t{1} << 30) + 4095, 4096), 262144u);
  EXPECT_EQ(BlocksForDevice(1000, 0), 0u);
}

TEST(GuestTest, GrowRefusesWhatIsNotAnExt4Mount) {
  auto st = GrowExt4ToDevice("/nonexistent/path");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/nonexistent/path"), std::string::npos);
  // /proc is not ext4 (and has no block device): an error, nothing resized.
  EXPECT_FALSE(GrowExt4ToDevice("/proc").ok());
}

TEST(GuestTest, BadHostnameAndClockAreRejectedBeforeAnySyscall) {
  EXPECT_EQ(SetHostname("").code(), Code::kInvalidArgument);
  EXPECT_EQ(SetHostname(std::string(65, 'a')).code(), Code::kInvalidArgument);
  EXPECT_EQ(SetClock(0).code(), Code::kInvalidArgument);
  EXPECT_EQ(SetClock(-5).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace hangar::envd::internal
