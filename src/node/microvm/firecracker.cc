#include "hangar/microvm/firecracker.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "hangar/base/child.h"
#include "hangar/microvm/microvm_driver.h"

namespace hangar::microvm::firecracker {

namespace {

nlohmann::json Bucket(int64_t a, int64_t b) {
  int64_t rate = a > 0 && b > 0 ? std::min(a, b) : std::max(a, b);
  if (rate <= 0) return nullptr;
  return {{"size", rate}, {"refill_time", 1000}};
}

bool Found(const std::string& bin) {
  if (bin.find('/') != std::string::npos) return ::access(bin.c_str(), X_OK) == 0;
  auto r = RunCommand({"/bin/sh", "-c", "command -v \"$0\"", bin});
  return r.ok() && r->status.success();
}

class FirecrackerDriver final : public node::Driver {
 public:
  FirecrackerDriver(std::string fc, std::string jailer)
      : fc_(std::move(fc)), jailer_(std::move(jailer)) {}
  std::string_view Name() const override { return "firecracker"; }
  Status Available() const override { return firecracker::Available(fc_, jailer_); }
  Result<node::SandboxPtr> Create(const node::SandboxSpec&) override {
    HANGAR_TRY(Available());
    return Status::Unimplemented("the Firecracker backend has not been run on a KVM host yet");
  }
  Result<std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>> Recover() override {
    return std::pair<node::RecoveryReport, std::vector<node::SandboxPtr>>{};
  }

 private:
  std::string fc_, jailer_;
};

}  // namespace

nlohmann::json DriveRateLimiter(const node::Resources& r) {
  nlohmann::json ops = Bucket(r.read_iops, r.write_iops);
  nlohmann::json bw = Bucket(r.read_bps, r.write_bps);
  if (ops.is_null() && bw.is_null()) return nullptr;
  nlohmann::json rl = nlohmann::json::object();
  if (!bw.is_null()) rl["bandwidth"] = bw;
  if (!ops.is_null()) rl["ops"] = ops;
  return rl;
}

Result<std::vector<ApiRequest>> StartRequests(const node::Resources& r, const BootConfig& boot) {
  const int vcpus = VcpusFor(r.cpu_millis);
  if (vcpus > 32) {
    return Status::InvalidArgument(
        fmt::format("Firecracker runs at most 32 vCPUs, asked {}", vcpus));
  }
  if (r.memory_mb < 128) {
    return Status::InvalidArgument(
        fmt::format("memory_mb = {} is below the microVM minimum of 128", r.memory_mb));
  }
  std::vector<ApiRequest> out;
  out.push_back({"PUT",
                 "/machine-config",
                 {{"vcpu_count", vcpus}, {"mem_size_mib", r.memory_mb}, {"smt", false}}});
  nlohmann::json bs = {{"kernel_image_path", boot.kernel}, {"boot_args", boot.boot_args}};
  if (!boot.initrd.empty()) bs["initrd_path"] = boot.initrd;
  out.push_back({"PUT", "/boot-source", bs});
  nlohmann::json drive = {{"drive_id", "rootfs"},
                          {"path_on_host", boot.rootfs},
                          {"is_root_device", true},
                          {"is_read_only", false}};
  if (nlohmann::json rl = DriveRateLimiter(r); !rl.is_null()) drive["rate_limiter"] = rl;
  out.push_back({"PUT", "/drives/rootfs", drive});
  if (!boot.vsock_uds.empty()) {
    out.push_back({"PUT", "/vsock", {{"guest_cid", boot.guest_cid}, {"uds_path", boot.vsock_uds}}});
  }
  out.push_back({"PUT", "/actions", {{"action_type", "InstanceStart"}}});
  return out;
}

ApiRequest PauseRequest() { return {"PATCH", "/vm", {{"state", "Paused"}}}; }
ApiRequest ResumeRequest() { return {"PATCH", "/vm", {{"state", "Resumed"}}}; }

ApiRequest SnapshotCreateRequest(const std::string& snapshot_path, const std::string& mem_path) {
  return {
      "PUT",
      "/snapshot/create",
      {{"snapshot_type", "Full"}, {"snapshot_path", snapshot_path}, {"mem_file_path", mem_path}}};
}

ApiRequest SnapshotLoadRequest(const std::string& snapshot_path, const std::string& mem_path) {
  return {"PUT",
          "/snapshot/load",
          {{"snapshot_path", snapshot_path},
           {"mem_backend", {{"backend_type", "File"}, {"backend_path", mem_path}}},
           {"resume_vm", true}}};
}

std::vector<std::string> JailerArgs(const std::string& jailer, const std::string& fc,
                                    const std::string& id, uint32_t uid, uint32_t gid,
                                    const std::string& chroot_base) {
  return {jailer,
          "--id",
          id,
          "--exec-file",
          fc,
          "--uid",
          std::to_string(uid),
          "--gid",
          std::to_string(gid),
          "--chroot-base-dir",
          chroot_base,
          "--",
          "--api-sock",
          "/run/firecracker.socket"};
}

Status Available(const std::string& fc, const std::string& jailer) {
  int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return Status::FailedPrecondition("firecracker needs /dev/kvm: no usable /dev/kvm");
  ::close(kvm);
  if (!Found(fc)) return Status::FailedPrecondition(fmt::format("{} binary not found", fc));
  if (!Found(jailer)) return Status::FailedPrecondition(fmt::format("{} binary not found", jailer));
  return Status::Ok();
}

node::DriverPtr NewDriver(std::string firecracker, std::string jailer) {
  return std::make_unique<FirecrackerDriver>(std::move(firecracker), std::move(jailer));
}

}  // namespace hangar::microvm::firecracker
