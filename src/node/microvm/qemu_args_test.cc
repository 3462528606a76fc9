#include "hangar/microvm/qemu_args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "hangar/microvm/microvm_driver.h"

namespace hangar::microvm {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// The value following `flag` (the first occurrence), "" if absent.
std::string After(const std::vector<std::string>& a, const std::string& flag) {
  auto it = std::find(a.begin(), a.end(), flag);
  return it == a.end() || it + 1 == a.end() ? "" : *(it + 1);
}

VmConfig Sample() {
  VmConfig c;
  c.kernel = "/k/vmlinuz";
  c.initrd = "/k/initrd.img";
  c.cmdline = GuestCmdline();
  c.vcpus = 2;
  c.memory_mb = 512;
  c.disk = "/d/sb/disk.qcow2";
  c.console_log = "/d/sb/console.log";
  c.qmp_socket = "/d/sb/qmp.sock";
  c.pid_file = "/d/sb/qemu.pid";
  c.fw_cfg = {{"token", "/d/sb/fw/token"}};
  return c;
}

TEST(QemuArgsTest, TcgVmHasRequestedSizeConsoleQmpAndNoDefaults) {
  auto a = BuildQemuArgs(Sample());
  EXPECT_EQ(a[0], "qemu-system-x86_64");
  EXPECT_EQ(After(a, "-M"), "pc");
  EXPECT_EQ(After(a, "-accel"), "tcg,tb-size=64");
  EXPECT_EQ(After(a, "-m"), "512M");
  EXPECT_EQ(After(a, "-smp"), "2");
  EXPECT_THAT(a, Contains("-nodefaults"));
  EXPECT_THAT(a, Contains("-no-reboot"));
  EXPECT_EQ(After(a, "-serial"), "chardev:console");
  EXPECT_EQ(After(a, "-chardev"), "file,id=console,append=on,path=/d/sb/console.log");
  EXPECT_EQ(After(a, "-qmp"), "unix:/d/sb/qmp.sock,server=on,wait=off");
  EXPECT_EQ(After(a, "-pidfile"), "/d/sb/qemu.pid");
  EXPECT_EQ(After(a, "-fw_cfg"), "name=opt/hangar/token,file=/d/sb/fw/token");
  EXPECT_EQ(After(a, "-incoming"), "");
  EXPECT_THAT(After(a, "-append"), HasSubstr("panic=-1"));
}

TEST(QemuArgsTest, KvmUsesHostCpu) {
  VmConfig c = Sample();
  c.kvm = true;
  auto a = BuildQemuArgs(c);
  EXPECT_EQ(After(a, "-accel"), "kvm");
  EXPECT_EQ(After(a, "-cpu"), "host");
}

TEST(QemuArgsTest, NetworkIsRestrictedAndOnlyForwardsEnvdOnLoopback) {
  VmConfig c = Sample();
  c.host_port = 40001;
  auto a = BuildQemuArgs(c);
  std::string net = After(a, "-netdev");
  EXPECT_THAT(net, HasSubstr("restrict=on"));
  EXPECT_THAT(net, HasSubstr("hostfwd=tcp:127.0.0.1:40001-:49983"));
  EXPECT_THAT(net, Not(HasSubstr("guestfwd")));
  EXPECT_EQ(std::count(a.begin(), a.end(), "-netdev"), 1);
}

TEST(QemuArgsTest, ThrottlingOnlyForLimitsThatAreSet) {
  VmConfig c = Sample();
  std::string none = After(BuildQemuArgs(c), "-drive");
  EXPECT_THAT(none, Not(HasSubstr("throttling")));
  EXPECT_THAT(none, HasSubstr("file=/d/sb/disk.qcow2"));
  EXPECT_THAT(none, HasSubstr("format=qcow2"));
  c.throttle = {.read_iops = 100, .write_iops = 0, .read_bps = 0, .write_bps = 1 << 20};
  std::string d = After(BuildQemuArgs(c), "-drive");
  EXPECT_THAT(d, HasSubstr("throttling.iops-read=100"));
  EXPECT_THAT(d, Not(HasSubstr("iops-write")));
  EXPECT_THAT(d, HasSubstr("throttling.bps-write=1048576"));
  EXPECT_THAT(d, Not(HasSubstr("bps-read")));
}

TEST(QemuArgsTest, RestoreDiffersOnlyInIncoming) {
  VmConfig c = Sample();
  auto cold = BuildQemuArgs(c);
  c.incoming = "exec:cat /s/state.bin";
  auto restore = BuildQemuArgs(c);
  ASSERT_EQ(restore.size(), cold.size() + 2);
  EXPECT_TRUE(std::equal(cold.begin(), cold.end(), restore.begin()));
  EXPECT_EQ(After(restore, "-incoming"), "exec:cat /s/state.bin");
}

// Entropy: virtio-rng from the host's /dev/urandom, rate-limited, and a vmgenid device whose
// GUID QEMU draws anew at every start (a restore included); in the restore's argv too.
TEST(QemuArgsTest, EntropyDevicesAreAttachedToEveryVm) {
  VmConfig c = Sample();
  c.incoming = "exec:cat /s/state.bin";
  auto a = BuildQemuArgs(c);
  EXPECT_EQ(After(a, "-object"), "rng-random,id=rng0,filename=/dev/urandom");
  EXPECT_THAT(a, Contains("virtio-rng-pci,rng=rng0,id=rng,max-bytes=4096,period=1000"));
  EXPECT_THAT(a, Contains("vmgenid,guid=auto,id=vmgenid"));
  // The GUID must not be fixed: a constant would make every restore look like the same VM.
  for (const auto& arg : a) EXPECT_THAT(arg, Not(HasSubstr("guid=0"))) << arg;
  EXPECT_GE(kVmLayoutVersion, 2);
}

TEST(QemuArgsTest, VcpusRoundUpAndAreAtLeastOne) {
  EXPECT_EQ(VcpusFor(0), 1);
  EXPECT_EQ(VcpusFor(50), 1);
  EXPECT_EQ(VcpusFor(1000), 1);
  EXPECT_EQ(VcpusFor(1001), 2);
  EXPECT_EQ(VcpusFor(4000), 4);
}

}  // namespace
}  // namespace hangar::microvm
