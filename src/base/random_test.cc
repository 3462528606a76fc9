#include "hangar/base/random.h"

#include <set>

#include <gtest/gtest.h>

namespace hangar {
namespace {

TEST(RandomHex, LengthAlphabetAndNoRepeats) {
  EXPECT_EQ(RandomHex(0), "");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string h = RandomHex(16);
    ASSERT_EQ(h.size(), 32u);
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
    EXPECT_TRUE(seen.insert(h).second) << "repeated: " << h;
  }
  // Every nibble value shows up across 16 KiB of output.
  std::string big = RandomHex(8192);
  for (char c : std::string("0123456789abcdef")) EXPECT_NE(big.find(c), std::string::npos) << c;
}

}  // namespace
}  // namespace hangar
