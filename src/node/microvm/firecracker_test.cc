#include "hangar/microvm/firecracker.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

// Request shapes are checked against Firecracker's documented API
// (src/firecracker/swagger/firecracker.yaml: MachineConfiguration, BootSource, Drive,
// RateLimiter, TokenBucket, Vsock, InstanceActionInfo, Vm, SnapshotCreateParams,
// SnapshotLoadParams).
namespace hangar::microvm::firecracker {
namespace {

BootConfig Boot() {
  BootConfig b;
  b.kernel = "vmlinux";
  b.initrd = "initrd.img";
  b.boot_args = "console=ttyS0 panic=-1";
  b.rootfs = "rootfs.ext4";
  b.vsock_uds = "v.sock";
  return b;
}

TEST(FirecrackerTest, StartRequestsInOrderWithDocumentedFields) {
  node::Resources r;
  r.cpu_millis = 1500;
  r.memory_mb = 512;
  auto reqs = StartRequests(r, Boot());
  ASSERT_TRUE(reqs.ok()) << reqs.status().ToString();
  ASSERT_EQ(reqs->size(), 5u);
  const auto& mc = (*reqs)[0];
  EXPECT_EQ(mc.method, "PUT");
  EXPECT_EQ(mc.path, "/machine-config");
  EXPECT_EQ(mc.body, (nlohmann::json{{"vcpu_count", 2}, {"mem_size_mib", 512}, {"smt", false}}));
  EXPECT_EQ((*reqs)[1].path, "/boot-source");
  EXPECT_EQ((*reqs)[1].body, (nlohmann::json{{"kernel_image_path", "vmlinux"},
                                             {"initrd_path", "initrd.img"},
                                             {"boot_args", "console=ttyS0 panic=-1"}}));
  const auto& drive = (*reqs)[2];
  EXPECT_EQ(drive.path, "/drives/rootfs");
  EXPECT_EQ(drive.body["drive_id"], "rootfs");
  EXPECT_EQ(drive.body["path_on_host"], "rootfs.ext4");
  EXPECT_EQ(drive.body["is_root_device"], true);
  EXPECT_EQ(drive.body["is_read_only"], false);
  EXPECT_FALSE(drive.body.contains("rate_limiter"));  // no limit asked
  EXPECT_EQ((*reqs)[3].path, "/vsock");
  EXPECT_EQ((*reqs)[3].body, (nlohmann::json{{"guest_cid", 3}, {"uds_path", "v.sock"}}));
  EXPECT_EQ((*reqs)[4].path, "/actions");
  EXPECT_EQ((*reqs)[4].body, (nlohmann::json{{"action_type", "InstanceStart"}}));
  for (const auto& q : *reqs) EXPECT_NE(q.path, "/network-interfaces/eth0");
}

TEST(FirecrackerTest, RateLimiterTokenBucketsFromTheRequest) {
  node::Resources r;
  r.read_iops = 400;
  r.write_iops = 100;
  r.write_bps = 10 << 20;
  nlohmann::json rl = DriveRateLimiter(r);
  // One bucket for reads and writes: the smaller non-zero limit, refilled every second.
  EXPECT_EQ(rl["ops"], (nlohmann::json{{"size", 100}, {"refill_time", 1000}}));
  EXPECT_EQ(rl["bandwidth"], (nlohmann::json{{"size", 10 << 20}, {"refill_time", 1000}}));
  node::Resources only_ops;
  only_ops.read_iops = 250;
  nlohmann::json o = DriveRateLimiter(only_ops);
  EXPECT_EQ(o["ops"]["size"], 250);
  EXPECT_FALSE(o.contains("bandwidth"));
  EXPECT_TRUE(DriveRateLimiter(node::Resources{}).is_null());
  auto reqs = StartRequests(r, Boot());
  ASSERT_TRUE(reqs.ok());
  EXPECT_EQ((*reqs)[2].body["rate_limiter"], rl);
}

TEST(FirecrackerTest, ResourcesFirecrackerCannotExpressAreRejected) {
  node::Resources big;
  big.cpu_millis = 33'000;
  auto r = StartRequests(big, Boot());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("32"), std::string::npos);
  node::Resources tiny;
  tiny.memory_mb = 64;
  EXPECT_EQ(StartRequests(tiny, Boot()).status().code(), Code::kInvalidArgument);
}

TEST(FirecrackerTest, PauseResumeAndSnapshotRequests) {
  EXPECT_EQ(PauseRequest().method, "PATCH");
  EXPECT_EQ(PauseRequest().path, "/vm");
  EXPECT_EQ(PauseRequest().body, (nlohmann::json{{"state", "Paused"}}));
  EXPECT_EQ(ResumeRequest().body, (nlohmann::json{{"state", "Resumed"}}));
  auto c = SnapshotCreateRequest("vm.snap", "vm.mem");
  EXPECT_EQ(c.path, "/snapshot/create");
  EXPECT_EQ(c.body, (nlohmann::json{{"snapshot_type", "Full"},
                                    {"snapshot_path", "vm.snap"},
                                    {"mem_file_path", "vm.mem"}}));
  auto l = SnapshotLoadRequest("vm.snap", "vm.mem");
  EXPECT_EQ(l.path, "/snapshot/load");
  EXPECT_EQ(l.body["mem_backend"],
            (nlohmann::json{{"backend_type", "File"}, {"backend_path", "vm.mem"}}));
  EXPECT_EQ(l.body["resume_vm"], true);
}

TEST(FirecrackerTest, JailerCommandLine) {
  auto a = JailerArgs("/usr/bin/jailer", "/usr/bin/firecracker", "sb1", 123, 456, "/srv/jail");
  std::vector<std::string> want = {"/usr/bin/jailer",
                                   "--id",
                                   "sb1",
                                   "--exec-file",
                                   "/usr/bin/firecracker",
                                   "--uid",
                                   "123",
                                   "--gid",
                                   "456",
                                   "--chroot-base-dir",
                                   "/srv/jail",
                                   "--",
                                   "--api-sock",
                                   "/run/firecracker.socket"};
  EXPECT_EQ(a, want);
}

// Where it cannot run, the backend says why and creates nothing.
TEST(FirecrackerTest, ReportsItselfUnavailableWhereItCannotRun) {
  int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm >= 0) ::close(kvm);
  auto d = NewDriver("/nonexistent/firecracker", "/nonexistent/jailer");
  Status st = d->Available();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find(kvm < 0 ? "/dev/kvm" : "/nonexistent/firecracker"),
            std::string::npos);
  node::SandboxSpec spec;
  spec.id = "a1";
  spec.template_name = "busybox";
  auto created = d->Create(spec);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), Code::kFailedPrecondition);
}

}  // namespace
}  // namespace hangar::microvm::firecracker
