// ParseMicroVmWarmPool: the node option node.microvm_warm_pool (a superset of node.warm_pool's
// syntax), defaults, and bad input named in the error.
#include <gtest/gtest.h>

#include "hangar/microvm/microvm_driver.h"

namespace hangar::microvm {
namespace {

TEST(MicroVmWarmPoolConfig, ParsesItemsWithDefaults) {
  auto none = ParseMicroVmWarmPool("");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto p = ParseMicroVmWarmPool("base:2,tiny:1:256,big:3:2048:1024:2");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].template_name, "base");
  EXPECT_EQ((*p)[0].size, 2u);
  EXPECT_EQ((*p)[0].disk_mb, 1024);
  EXPECT_EQ((*p)[0].memory_mb, 512);
  EXPECT_EQ((*p)[0].vcpus, 1);
  EXPECT_EQ((*p)[1].disk_mb, 256);
  EXPECT_EQ((*p)[1].memory_mb, 512);
  EXPECT_EQ((*p)[2].size, 3u);
  EXPECT_EQ((*p)[2].disk_mb, 2048);
  EXPECT_EQ((*p)[2].memory_mb, 1024);
  EXPECT_EQ((*p)[2].vcpus, 2);
}

TEST(MicroVmWarmPoolConfig, BadItemsAreNamed) {
  for (const char* bad : {"base", ":2", "base:", "base:0", "base:101", "base:x", "base:2:32",
                          "base:2:256:16", "base:2:256:512:0", "base:2:256:512:65",
                          "base:2:256:512:1:9", "base:2x", "b ase:1", "base:1,base:2"}) {
    auto p = ParseMicroVmWarmPool(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(p.status().message().find("node.microvm_warm_pool"), std::string::npos)
        << p.status().ToString();
  }
  auto p = ParseMicroVmWarmPool("good:1,bad:0");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("'bad:0'"), std::string::npos) << p.status().ToString();
}

}  // namespace
}  // namespace hangar::microvm
