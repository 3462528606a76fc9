#include "hangar/base/base64.h"

#include <gtest/gtest.h>

namespace hangar {
namespace {

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> v[] = {{"", ""},
                                                   {"f", "Zg=="},
                                                   {"fo", "Zm8="},
                                                   {"foo", "Zm9v"},
                                                   {"foob", "Zm9vYg=="},
                                                   {"fooba", "Zm9vYmE="},
                                                   {"foobar", "Zm9vYmFy"}};
  for (auto [plain, enc] : v) {
    EXPECT_EQ(Base64Encode(plain), enc);
    EXPECT_EQ(*Base64Decode(enc), plain);
    std::string raw = enc;
    while (!raw.empty() && raw.back() == '=') raw.pop_back();
    EXPECT_EQ(Base64RawEncode(plain), raw);
    EXPECT_EQ(*Base64Decode(raw), plain);
  }
}

TEST(Base64Test, AcceptsUrlAlphabetAndBinary) {
  std::string bin;
  for (int i = 0; i < 256; ++i) bin.push_back(static_cast<char>(i));
  std::string enc = Base64Encode(bin);
  EXPECT_EQ(*Base64Decode(enc), bin);
  std::string url = enc;
  for (char& c : url) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  EXPECT_EQ(*Base64Decode(url), bin);
  EXPECT_EQ(Base64Decode("ab$d").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Base64Decode("a").status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace hangar
