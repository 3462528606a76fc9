// Unit tests of the cgroup unit: layout detection from mountinfo text, name validation, and
// the exact bytes each backend writes, checked against an in-memory cgroupfs (FakeCgroupFs).
// The fake covers the v2 memory/io/cpu/pids files this hybrid-cgroup machine cannot delegate;
// what the kernel does with those bytes is covered by cgroup_privileged_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/node/cgroup.h"
#include "testing/fake_cgroup_fs.h"

namespace hangar::node {
namespace {

using ::testing::ElementsAre;
using testing::FakeCgroupFs;
using ::testing::HasSubstr;

// ---- layout detection ----

constexpr char kHybridMountinfo[] =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "37 30 0:34 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(CgroupLayoutTest, HybridIsV1WithEveryController) {
  auto layout = ParseCgroupLayout(kHybridMountinfo);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->mode, CgroupMode::kV1);
  EXPECT_EQ(layout->v1_mounts.at("memory"), "/sys/fs/cgroup/memory");
  EXPECT_EQ(layout->v1_mounts.at("cpuacct"), "/sys/fs/cgroup/cpuacct");
  EXPECT_EQ(layout->v1_mounts.count("name=systemd"), 0u);
  EXPECT_EQ(layout->v2_mount, "/sys/fs/cgroup/unified");
}

TEST(CgroupLayoutTest, PureV2) {
  auto layout = ParseCgroupLayout(
      "25 21 0:22 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
      "26 21 0:23 / /proc rw - proc proc rw\n");
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->mode, CgroupMode::kV2);
  EXPECT_EQ(layout->v2_mount, "/sys/fs/cgroup");
  EXPECT_TRUE(layout->v1_mounts.empty());
}

TEST(CgroupLayoutTest, CoMountedControllersShareAPathAndEscapesAreDecoded) {
  auto layout = ParseCgroupLayout(
      "31 30 0:28 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
      "34 30 0:31 / /cg/mem\\040ory rw - cgroup cgroup rw,memory\n"
      "35 30 0:32 / /cg/rest rw - cgroup cgroup rw,pids,blkio,freezer\n");
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->v1_mounts.at("cpu"), "/cg/cpu,cpuacct");
  EXPECT_EQ(layout->v1_mounts.at("cpuacct"), "/cg/cpu,cpuacct");
  EXPECT_EQ(layout->v1_mounts.at("memory"), "/cg/mem ory");
  EXPECT_EQ(layout->v1_mounts.at("freezer"), "/cg/rest");
}

TEST(CgroupLayoutTest, SplitLayoutIsRefusedNamingTheMissingControllers) {
  auto layout = ParseCgroupLayout(
      "34 30 0:31 / /cg/memory rw - cgroup cgroup rw,memory\n"
      "40 30 0:37 / /cg/unified rw - cgroup2 cgroup2 rw\n");
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(layout.status().message(), HasSubstr("cpu,cpuacct,pids,blkio,freezer"));
}

TEST(CgroupLayoutTest, NoCgroupFilesystemIsAnError) {
  auto layout = ParseCgroupLayout("26 21 0:23 / /proc rw - proc proc rw\n");
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), Code::kFailedPrecondition);
}

TEST(CgroupLayoutTest, DetectsThisMachine) {
  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  ::testing::Test::RecordProperty("cgroup_mode", std::string(CgroupModeName(layout->mode)));
}

TEST(CgroupNameTest, RejectsEverythingThatCouldEscapeTheRoot) {
  for (const char* bad : {"", ".", "..", "a/b", "../x", "a b", "x\n", "ü"}) {
    EXPECT_EQ(ValidateCgroupName(bad).code(), Code::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ValidateCgroupName(std::string(65, 'a')).code(), Code::kInvalidArgument);
  EXPECT_TRUE(ValidateCgroupName(std::string(64, 'a')).ok());
  EXPECT_TRUE(ValidateCgroupName("sb-01_x.y").ok());
}

// ---- v1 file formats ----

class CgroupV1FormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* m :
         {"/cg", "/cg/cpu,cpuacct", "/cg/memory", "/cg/pids", "/cg/blkio", "/cg/freezer"}) {
      fs_.AddDir(m);
    }
    fs_.template_files = {{"cgroup.procs", ""},
                          {"cpu.cfs_period_us", "100000"},
                          {"cpu.cfs_quota_us", "-1"},
                          {"cpuacct.usage", "0"},
                          {"memory.limit_in_bytes", "9223372036854771712"},
                          {"memory.memsw.limit_in_bytes", "9223372036854771712"},
                          {"memory.usage_in_bytes", "0"},
                          {"memory.max_usage_in_bytes", "0"},
                          {"pids.max", "max"},
                          {"pids.current", "0"},
                          {"freezer.state", "THAWED"},
                          {"blkio.throttle.read_iops_device", ""},
                          {"blkio.throttle.write_iops_device", ""},
                          {"blkio.throttle.read_bps_device", ""},
                          {"blkio.throttle.write_bps_device", ""},
                          {"blkio.throttle.io_serviced_recursive", "Total 0\n"},
                          {"blkio.throttle.io_service_bytes_recursive", "Total 0\n"}};
    std::map<std::string, std::string> mounts = {
        {"cpu", "/cg/cpu,cpuacct"}, {"cpuacct", "/cg/cpu,cpuacct"}, {"memory", "/cg/memory"},
        {"pids", "/cg/pids"},       {"blkio", "/cg/blkio"},         {"freezer", "/cg/freezer"}};
    CgroupOptions options;
    options.settle_timeout = std::chrono::milliseconds(50);
    auto b = MakeCgroupV1Backend(mounts, options, fs_);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(*b);
  }

  FakeCgroupFs fs_;
  CgroupBackendPtr backend_;
};

TEST_F(CgroupV1FormatTest, CreateMakesOneDirectoryPerDistinctHierarchy) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  EXPECT_THAT(
      backend_->Paths("sb1"),
      ElementsAre("/cg/blkio/hangar/sb1", "/cg/cpu,cpuacct/hangar/sb1", "/cg/freezer/hangar/sb1",
                  "/cg/memory/hangar/sb1", "/cg/pids/hangar/sb1"));
  for (const std::string& p : backend_->Paths("sb1")) EXPECT_TRUE(fs_.HasDir(p)) << p;
  EXPECT_EQ(backend_->Create("sb1").code(), Code::kAlreadyExists);
  EXPECT_EQ(backend_->Create("../etc").code(), Code::kInvalidArgument);
}

TEST_F(CgroupV1FormatTest, FailedCreateLeavesNothingBehind) {
  fs_.mkdir_errors["/cg/memory/hangar/sb1"] = Status::ResourceExhausted("injected");
  EXPECT_EQ(backend_->Create("sb1").code(), Code::kResourceExhausted);
  for (const std::string& p : backend_->Paths("sb1")) EXPECT_FALSE(fs_.HasDir(p)) << p;
  auto list = backend_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(CgroupV1FormatTest, SetLimitsWritesEveryFile) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  // A rule from an earlier policy for another device must be lifted.
  fs_.SetFile("/cg/blkio/hangar/sb1/blkio.throttle.read_iops_device", "8:0 500\n");
  CgroupLimits l;
  l.cpu_millicores = 1500;
  l.memory_bytes = 256 << 20;
  l.pids_max = 16;
  l.io = {{254, 0, /*riops=*/100, /*wiops=*/200, /*rbps=*/0, /*wbps=*/1 << 20}};
  ASSERT_TRUE(backend_->SetLimits("sb1", l).ok());

  const std::string cpu = "/cg/cpu,cpuacct/hangar/sb1/";
  EXPECT_THAT(fs_.WritesTo(cpu + "cpu.cfs_period_us"), ElementsAre("100000"));
  EXPECT_THAT(fs_.WritesTo(cpu + "cpu.cfs_quota_us"), ElementsAre("150000"));
  const std::string mem = "/cg/memory/hangar/sb1/";
  // memsw is lifted before the memory limit moves, then pinned to it (no swap beyond it).
  EXPECT_THAT(fs_.WritesTo(mem + "memory.memsw.limit_in_bytes"), ElementsAre("-1", "268435456"));
  EXPECT_THAT(fs_.WritesTo(mem + "memory.limit_in_bytes"), ElementsAre("268435456"));
  EXPECT_THAT(fs_.WritesTo("/cg/pids/hangar/sb1/pids.max"), ElementsAre("16"));
  const std::string blk = "/cg/blkio/hangar/sb1/blkio.throttle.";
  EXPECT_THAT(fs_.WritesTo(blk + "read_iops_device"), ElementsAre("254:0 100", "8:0 0"));
  EXPECT_THAT(fs_.WritesTo(blk + "write_iops_device"), ElementsAre("254:0 200"));
  EXPECT_THAT(fs_.WritesTo(blk + "read_bps_device"), ElementsAre("254:0 0"));
  EXPECT_THAT(fs_.WritesTo(blk + "write_bps_device"), ElementsAre("254:0 1048576"));
}

TEST_F(CgroupV1FormatTest, ZeroMeansUnlimited) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  ASSERT_TRUE(backend_->SetLimits("sb1", CgroupLimits{}).ok());
  EXPECT_EQ(fs_.File("/cg/cpu,cpuacct/hangar/sb1/cpu.cfs_quota_us"), "-1");
  EXPECT_EQ(fs_.File("/cg/memory/hangar/sb1/memory.limit_in_bytes"), "-1");
  EXPECT_EQ(fs_.File("/cg/memory/hangar/sb1/memory.memsw.limit_in_bytes"), "-1");
  EXPECT_EQ(fs_.File("/cg/pids/hangar/sb1/pids.max"), "max");
}

TEST_F(CgroupV1FormatTest, CpuBelowKernelMinimumIsRejected) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  CgroupLimits l;
  l.cpu_millicores = 9;  // 900 us per 100 ms: below the kernel's 1 ms minimum
  EXPECT_EQ(backend_->SetLimits("sb1", l).code(), Code::kInvalidArgument);
  l.cpu_millicores = 10;
  EXPECT_TRUE(backend_->SetLimits("sb1", l).ok());
}

TEST_F(CgroupV1FormatTest, ReadUsageParsesEveryFile) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  fs_.SetFile("/cg/cpu,cpuacct/hangar/sb1/cpuacct.usage", "123456789\n");
  fs_.SetFile("/cg/memory/hangar/sb1/memory.usage_in_bytes", "4096\n");
  fs_.SetFile("/cg/memory/hangar/sb1/memory.max_usage_in_bytes", "8192\n");
  fs_.SetFile("/cg/pids/hangar/sb1/pids.current", "3\n");
  fs_.SetFile("/cg/blkio/hangar/sb1/blkio.throttle.io_serviced_recursive",
              "254:0 Read 10\n254:0 Write 20\n254:0 Sync 30\n254:0 Async 0\n254:0 Discard 0\n"
              "254:0 Total 30\n7:3 Read 1\n7:3 Write 2\nTotal 33\n");
  fs_.SetFile("/cg/blkio/hangar/sb1/blkio.throttle.io_service_bytes_recursive",
              "254:0 Read 40960\n254:0 Write 81920\n7:3 Read 512\n7:3 Write 1024\nTotal 1\n");
  auto u = backend_->ReadUsage("sb1");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->cpu_usec, 123456u);
  EXPECT_EQ(u->memory_current, 4096u);
  EXPECT_EQ(u->memory_peak, 8192u);
  EXPECT_EQ(u->pids_current, 3u);
  EXPECT_THAT(u->io, ElementsAre(IoDeviceUsage{7, 3, 1, 2, 512, 1024},
                                 IoDeviceUsage{254, 0, 10, 20, 40960, 81920}));
}

TEST_F(CgroupV1FormatTest, KillAndRemoveFreezesThawsRemovesAndIsIdempotent) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  fs_.AddDir("/cg/pids/hangar/sb1/nested");  // the sandbox made a child group
  fs_.SetFile("/cg/pids/hangar/sb1/nested/cgroup.procs", "");
  ASSERT_TRUE(backend_->KillAndRemove("sb1").ok());
  EXPECT_THAT(fs_.WritesTo("/cg/freezer/hangar/sb1/freezer.state"),
              ElementsAre("FROZEN", "THAWED"));
  EXPECT_FALSE(fs_.HasDir("/cg/pids/hangar/sb1/nested"));
  for (const std::string& p : backend_->Paths("sb1")) EXPECT_FALSE(fs_.HasDir(p)) << p;
  EXPECT_TRUE(backend_->KillAndRemove("sb1").ok());
  EXPECT_TRUE(backend_->KillAndRemove("never-existed").ok());
}

TEST_F(CgroupV1FormatTest, RemovalThatStaysBusyReportsTheDirectory) {
  ASSERT_TRUE(backend_->Create("sb1").ok());
  fs_.rmdir_errors["/cg/memory/hangar/sb1"] = Status::Unavailable("injected EBUSY");
  Status s = backend_->KillAndRemove("sb1");
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded);
  EXPECT_THAT(s.message(), HasSubstr("rmdir(/cg/memory/hangar/sb1)"));
  // The group is still listed, so reconciliation retries it later.
  auto list = backend_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, ElementsAre("sb1"));
}

TEST_F(CgroupV1FormatTest, ListIsTheUnionOverHierarchies) {
  // A crash between two mkdirs leaves a group in some hierarchies only; List must report it.
  fs_.AddDir("/cg/pids/hangar");
  fs_.AddDir("/cg/pids/hangar/half");
  ASSERT_TRUE(backend_->Create("full").ok());
  auto list = backend_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list, ElementsAre("full", "half"));
  ASSERT_TRUE(backend_->KillAndRemove("half").ok());
  ASSERT_TRUE(backend_->KillAndRemove("full").ok());
  ASSERT_TRUE(backend_->RemoveRoot().ok());
  EXPECT_FALSE(fs_.HasDir("/cg/pids/hangar"));
}

TEST_F(CgroupV1FormatTest, RenameMovesTheGroupInEveryHierarchyOrNone) {
  ASSERT_TRUE(backend_->Create("pool-1").ok());
  fs_.AddDir("/cg/freezer/hangar/taken");  // a leftover in one hierarchy only
  // The third hierarchy (in Paths order: blkio, cpu, freezer) refuses: the first two are
  // renamed back.
  EXPECT_EQ(backend_->Rename("pool-1", "taken").code(), Code::kAlreadyExists);
  for (const std::string& p : backend_->Paths("pool-1")) EXPECT_TRUE(fs_.HasDir(p)) << p;
  EXPECT_EQ(backend_->Rename("pool-1", "../x").code(), Code::kInvalidArgument);
  EXPECT_EQ(backend_->Rename("nope", "sb2").code(), Code::kNotFound);
  ASSERT_TRUE(backend_->Rename("pool-1", "sb1").ok());
  for (const std::string& p : backend_->Paths("sb1")) {
    EXPECT_TRUE(fs_.HasDir(p)) << p;
    EXPECT_TRUE(fs_.Exists(p + "/cgroup.procs")) << p;
  }
  for (const std::string& p : backend_->Paths("pool-1")) EXPECT_FALSE(fs_.HasDir(p)) << p;
  EXPECT_THAT(*backend_->List(), ElementsAre("sb1", "taken"));
}

TEST_F(CgroupV1FormatTest, RootDeviceLimitIsWrittenToTheHierarchyRootAndCleared) {
  for (const char* f :
       {"read_iops_device", "write_iops_device", "read_bps_device", "write_bps_device"}) {
    fs_.SetFile(std::string("/cg/blkio/blkio.throttle.") + f, "");
  }
  ASSERT_TRUE(backend_->SetRootDeviceLimit({7, 3, 0, 400, 0, 16 << 20}).ok());
  const std::string blk = "/cg/blkio/blkio.throttle.";
  EXPECT_THAT(fs_.WritesTo(blk + "write_bps_device"), ElementsAre("7:3 16777216"));
  EXPECT_THAT(fs_.WritesTo(blk + "write_iops_device"), ElementsAre("7:3 400"));
  EXPECT_THAT(fs_.WritesTo(blk + "read_iops_device"), ElementsAre("7:3 0"));
  // What the kernel shows: only the non-zero rules, one per line.
  fs_.SetFile(blk + "write_bps_device", "7:3 16777216\n8:0 100\n");
  fs_.SetFile(blk + "write_iops_device", "7:3 400\n");
  fs_.SetFile(blk + "read_iops_device", "");
  auto rules = backend_->RootDeviceLimits();
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  ASSERT_EQ(rules->size(), 2u);
  EXPECT_EQ((*rules)[0].major, 7u);
  EXPECT_EQ((*rules)[0].wbps, 16u << 20);
  EXPECT_EQ((*rules)[0].wiops, 400u);
  EXPECT_EQ((*rules)[1].major, 8u);
  EXPECT_EQ((*rules)[1].wbps, 100u);
  ASSERT_TRUE(backend_->SetRootDeviceLimit({7, 3, 0, 0, 0, 0}).ok());
  EXPECT_EQ(fs_.WritesTo(blk + "write_bps_device").back(), "7:3 0");
  EXPECT_EQ(fs_.WritesTo(blk + "write_iops_device").back(), "7:3 0");
}

TEST(CgroupV1Test, MissingHierarchyIsRefused) {
  FakeCgroupFs fs;
  auto b = MakeCgroupV1Backend({{"memory", "/cg/memory"}}, {}, fs);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kFailedPrecondition);
}

// ---- v2 file formats ----

class CgroupV2FormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.AddDir("/cg2");
    fs_.SetFile("/cg2/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    fs_.SetFile("/cg2/cgroup.subtree_control", "cpuset\n");
    fs_.template_files = {{"cgroup.controllers", ""},
                          {"cgroup.subtree_control", ""},
                          {"cgroup.procs", ""},
                          {"cgroup.events", "populated 0\nfrozen 0\n"},
                          {"cgroup.freeze", "0"},
                          {"cgroup.kill", ""},
                          {"cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"},
                          {"cpu.max", "max 100000"},
                          {"memory.max", "max"},
                          {"memory.swap.max", "max"},
                          {"memory.current", "0"},
                          {"memory.peak", "0"},
                          {"pids.max", "max"},
                          {"pids.current", "0"},
                          {"io.max", ""},
                          {"io.stat", ""}};
    // The kernel reflects cgroup.freeze in cgroup.events once every task is frozen.
    fs_.on_write = [this](const std::string& path, const std::string& data) {
      const std::string suffix = "/cgroup.freeze";
      if (path.size() > suffix.size() && path.ends_with(suffix)) {
        fs_.SetFile(path.substr(0, path.size() - suffix.size()) + "/cgroup.events",
                    "populated 0\nfrozen " + data + "\n");
      }
    };
  }

  CgroupBackendPtr Make(CgroupOptions options = {}) {
    options.settle_timeout = std::chrono::milliseconds(50);
    auto b = MakeCgroupV2Backend("/cg2", options, fs_);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    return b.ok() ? std::move(*b) : nullptr;
  }

  FakeCgroupFs fs_;
};

TEST_F(CgroupV2FormatTest, DelegatesControllersThroughEveryLevel) {
  CgroupOptions o;
  o.root = "hangar.slice/sandboxes";
  auto b = Make(o);
  ASSERT_NE(b, nullptr);
  // cpuset was already on at the top; only the missing ones are added, in one write.
  EXPECT_THAT(fs_.WritesTo("/cg2/cgroup.subtree_control"), ElementsAre("+cpu +io +memory +pids"));
  EXPECT_THAT(fs_.WritesTo("/cg2/hangar.slice/cgroup.subtree_control"),
              ElementsAre("+cpu +io +memory +pids"));
  EXPECT_THAT(fs_.WritesTo("/cg2/hangar.slice/sandboxes/cgroup.subtree_control"),
              ElementsAre("+cpu +io +memory +pids"));
  EXPECT_EQ(b->controllers(), (std::set<std::string>{"cpu", "freezer", "io", "memory", "pids"}));
  EXPECT_THAT(b->Paths("x"), ElementsAre("/cg2/hangar.slice/sandboxes/x"));
}

TEST_F(CgroupV2FormatTest, MissingRequiredControllerIsRefusedByName) {
  fs_.SetFile("/cg2/cgroup.controllers", "cpu pids\n");
  auto b = MakeCgroupV2Backend("/cg2", {}, fs_);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(b.status().message(), HasSubstr("io,memory"));
}

TEST_F(CgroupV2FormatTest, DelegationBlockedByProcessesNamesTheDirectory) {
  fs_.write_errors["/cg2/cgroup.subtree_control"] = Status::Unavailable("injected EBUSY");
  auto b = MakeCgroupV2Backend("/cg2", {}, fs_);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("/cg2 holds processes"));
}

TEST_F(CgroupV2FormatTest, SetLimitsWritesEveryFile) {
  auto b = Make();
  ASSERT_TRUE(b->Create("sb1").ok());
  fs_.SetFile("/cg2/hangar/sb1/io.max", "8:0 rbps=1 wbps=max riops=max wiops=max\n");
  CgroupLimits l;
  l.cpu_millicores = 250;
  l.memory_bytes = 512 << 20;
  l.pids_max = 64;
  l.io = {{254, 0, 100, 0, 0, 1 << 20}};
  ASSERT_TRUE(b->SetLimits("sb1", l).ok());
  const std::string d = "/cg2/hangar/sb1/";
  EXPECT_THAT(fs_.WritesTo(d + "cpu.max"), ElementsAre("25000 100000"));
  EXPECT_THAT(fs_.WritesTo(d + "memory.max"), ElementsAre("536870912"));
  EXPECT_THAT(fs_.WritesTo(d + "memory.swap.max"), ElementsAre("0"));
  EXPECT_THAT(fs_.WritesTo(d + "pids.max"), ElementsAre("64"));
  EXPECT_THAT(fs_.WritesTo(d + "io.max"),
              ElementsAre("254:0 riops=100 wiops=max rbps=max wbps=1048576",
                          "8:0 riops=max wiops=max rbps=max wbps=max"));

  ASSERT_TRUE(b->SetLimits("sb1", CgroupLimits{}).ok());
  EXPECT_EQ(fs_.File(d + "cpu.max"), "max 100000");
  EXPECT_EQ(fs_.File(d + "memory.max"), "max");
  EXPECT_EQ(fs_.File(d + "memory.swap.max"), "max");
  EXPECT_EQ(fs_.File(d + "pids.max"), "max");
}

TEST_F(CgroupV2FormatTest, LimitWithoutItsControllerIsRefusedNotDropped) {
  fs_.SetFile("/cg2/cgroup.controllers", "pids\n");
  CgroupOptions o;
  o.v2_required = {};
  auto b = Make(o);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->controllers(), (std::set<std::string>{"freezer", "pids"}));
  ASSERT_TRUE(b->Create("sb1").ok());
  CgroupLimits l;
  l.memory_bytes = 1 << 20;
  Status s = b->SetLimits("sb1", l);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("memory"));
  l = {};
  l.pids_max = 8;  // available: fine; unlimited values for absent controllers are fine too
  EXPECT_TRUE(b->SetLimits("sb1", l).ok());
  EXPECT_THAT(fs_.WritesTo("/cg2/hangar/sb1/cpu.max"), ElementsAre());
}

TEST_F(CgroupV2FormatTest, ReadUsageParsesEveryFile) {
  auto b = Make();
  ASSERT_TRUE(b->Create("sb1").ok());
  const std::string d = "/cg2/hangar/sb1/";
  fs_.SetFile(d + "cpu.stat", "usage_usec 777\nuser_usec 700\nsystem_usec 77\n");
  fs_.SetFile(d + "memory.current", "1000\n");
  fs_.SetFile(d + "memory.peak", "2000\n");
  fs_.SetFile(d + "pids.current", "5\n");
  fs_.SetFile(d + "io.stat",
              "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
              "7:3 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n");
  auto u = b->ReadUsage("sb1");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->cpu_usec, 777u);
  EXPECT_EQ(u->memory_current, 1000u);
  EXPECT_EQ(u->memory_peak, 2000u);
  EXPECT_EQ(u->pids_current, 5u);
  EXPECT_THAT(
      u->io, ElementsAre(IoDeviceUsage{7, 3, 3, 4, 1, 2}, IoDeviceUsage{254, 0, 1, 2, 4096, 8192}));
}

TEST_F(CgroupV2FormatTest, FreezeWaitsForTheKernelAndTimesOut) {
  auto b = Make();
  ASSERT_TRUE(b->Create("sb1").ok());
  ASSERT_TRUE(b->Freeze("sb1").ok());
  EXPECT_EQ(fs_.File("/cg2/hangar/sb1/cgroup.freeze"), "1");
  ASSERT_TRUE(b->Thaw("sb1").ok());
  EXPECT_EQ(fs_.File("/cg2/hangar/sb1/cgroup.freeze"), "0");
  fs_.on_write = nullptr;  // a task that never freezes (e.g. stuck in D state)
  Status s = b->Freeze("sb1");
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded);
  EXPECT_THAT(s.message(), HasSubstr("freeze of /cg2/hangar/sb1"));
}

TEST_F(CgroupV2FormatTest, KillAndRemoveUsesCgroupKillAndRemovesNestedGroups) {
  auto b = Make();
  ASSERT_TRUE(b->Create("sb1").ok());
  ASSERT_TRUE(fs_.Mkdir("/cg2/hangar/sb1/inner").ok());
  ASSERT_TRUE(b->KillAndRemove("sb1").ok());
  EXPECT_THAT(fs_.WritesTo("/cg2/hangar/sb1/cgroup.kill"), ElementsAre("1"));
  EXPECT_FALSE(fs_.HasDir("/cg2/hangar/sb1/inner"));
  EXPECT_FALSE(fs_.HasDir("/cg2/hangar/sb1"));
  EXPECT_TRUE(b->KillAndRemove("sb1").ok());
}

TEST_F(CgroupV2FormatTest, WithoutCgroupKillItFreezesFirst) {
  fs_.template_files.erase("cgroup.kill");  // kernel < 5.14
  auto b = Make();
  ASSERT_TRUE(b->Create("sb1").ok());
  ASSERT_TRUE(b->KillAndRemove("sb1").ok());
  EXPECT_THAT(fs_.WritesTo("/cg2/hangar/sb1/cgroup.freeze"), ElementsAre("1"));
  EXPECT_FALSE(fs_.HasDir("/cg2/hangar/sb1"));
}

TEST_F(CgroupV2FormatTest, ScopedCgroupRemovesOnEveryPath) {
  auto b = Make();
  {
    auto g = ScopedCgroup::Create(*b, "sb1");
    ASSERT_TRUE(g.ok());
    EXPECT_TRUE(fs_.HasDir("/cg2/hangar/sb1"));
  }
  EXPECT_FALSE(fs_.HasDir("/cg2/hangar/sb1"));
  std::string kept;
  {
    auto g = ScopedCgroup::Create(*b, "sb2");
    ASSERT_TRUE(g.ok());
    kept = g->Release();
  }
  EXPECT_TRUE(fs_.HasDir("/cg2/hangar/" + kept));
  EXPECT_FALSE(ScopedCgroup::Create(*b, "sb2").ok());  // AlreadyExists: nothing to own
  EXPECT_TRUE(fs_.HasDir("/cg2/hangar/sb2"));          // and the failed Create did not remove it
}

}  // namespace
}  // namespace hangar::node
