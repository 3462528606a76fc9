#include "hangar/node/caps.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace hangar::node {
namespace {

TEST(CapsTest, DefaultSetIsDockersMinusNetRawAndNothingDangerous) {
  EXPECT_EQ(CapabilityNames(DefaultSandboxCapabilities()),
            "CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER,CAP_FSETID,CAP_KILL,CAP_SETGID,CAP_SETUID,"
            "CAP_SETPCAP,CAP_NET_BIND_SERVICE,CAP_SYS_CHROOT,CAP_MKNOD,CAP_AUDIT_WRITE,"
            "CAP_SETFCAP");
  for (int dangerous : {12 /*NET_ADMIN*/, 13 /*NET_RAW*/, 16 /*SYS_MODULE*/, 17 /*SYS_RAWIO*/,
                        19 /*SYS_PTRACE*/, 21 /*SYS_ADMIN*/, 22 /*SYS_BOOT*/, 24 /*SYS_RESOURCE*/,
                        25 /*SYS_TIME*/, 38 /*PERFMON*/, 39 /*BPF*/}) {
    EXPECT_EQ(DefaultSandboxCapabilities() & (CapMask{1} << dangerous), 0u)
        << CapabilityName(dangerous);
  }
}

TEST(CapsTest, Names) {
  EXPECT_EQ(CapabilityName(0), "CAP_CHOWN");
  EXPECT_EQ(CapabilityName(21), "CAP_SYS_ADMIN");
  EXPECT_EQ(CapabilityName(40), "CAP_CHECKPOINT_RESTORE");
  EXPECT_EQ(CapabilityName(55), "CAP_55");
}

TEST(CapsTest, ParsesProcStatus) {
  auto st = ParseCapabilityState(
      "Name:\tcat\nUid:\t0\t0\t0\t0\nNoNewPrivs:\t1\nCapInh:\t0000000000000000\n"
      "CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t000001ffffffffff\n"
      "CapAmb:\t0000000000000000\nSeccomp:\t2\n");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->effective, 0xa80425fbu);
  EXPECT_EQ(st->permitted, 0xa80425fbu);
  EXPECT_EQ(st->bounding, 0x1ffffffffffu);
  EXPECT_EQ(st->inheritable, 0u);
  EXPECT_EQ(st->ambient, 0u);
  EXPECT_TRUE(st->no_new_privs);
  EXPECT_FALSE(ParseCapabilityState("Name:\tcat\nCapEff:\tzz\n").ok());
  EXPECT_FALSE(ParseCapabilityState("Name:\tcat\n").ok());
}

TEST(CapsTest, ReadsItsOwnState) {
  auto st = ReadCapabilityState(0);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto last = LastCapability();
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_GE(*last, 37);
}

}  // namespace
}  // namespace hangar::node
