// Sandbox and Driver: the one interface every isolation tier implements.
//
// Tiers differ in how they isolate (ns: namespaces + seccomp on the shared kernel; gvisor: a
// user-space kernel; microvm: a guest kernel), never in what they offer: every sandbox runs
// envd, and exec and files go through envd's protocol (E2B's envd protocol: Connect RPC +
// /files) on the endpoint the driver reports. So the layers above — the node agent's API, the
// control plane, the e2b compatibility layer — are the same for every tier.
//
// Lifecycle:   Create ──► running ──Pause──► paused ──Resume──► running
//                            │                                     │
//                            └──────────── Stop ──► stopped ◄──────┘
//              Destroy (from any state) releases every resource: processes, cgroup, mounts,
//              loop device, uid range, state directory. Destroy is idempotent and must succeed
//              even for a half-created sandbox; Create cleans up after itself on failure, so a
//              failed Create leaves nothing behind.
//
// Recovery: after a node agent crash, Driver::Recover() finds what the previous run left (from
// its state directory and from the kernel: cgroups, mounts, loop devices, uid ranges) and either
// re-adopts a sandbox that is still whole or destroys it. Nothing is leaked across a restart.
//
// Thread safety: a Driver may be called from any thread. One Sandbox's methods are serialized
// by the caller (the supervisor); different sandboxes are independent.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/clock.h"
#include "hangar/base/status.h"

namespace hangar::node {

// What a task asks for. Zero means "the node's default" where a default exists.
struct Resources {
  int64_t cpu_millis = 1000;  // CPU quota: 1000 = one full core
  int64_t memory_mb = 512;    // hard limit; an OOM is contained in the sandbox
  int64_t disk_mb = 1024;     // size of the sandbox's own disk (hard quota)
  int64_t read_iops = 0;      // 0 = unlimited (the node's pool may impose a default)
  int64_t write_iops = 0;
  int64_t read_bps = 0;  // bytes/s
  int64_t write_bps = 0;
  int64_t pids = 512;  // max processes + threads
};

// Network: none (loopback only) by default. The egress allowlist is a later issue; the seam is
// here so a driver can refuse what it cannot enforce.
struct NetworkPolicy {
  bool loopback_only = true;
  std::vector<std::string> egress_allow;  // host[:port] patterns; must be empty for now
};

struct SandboxSpec {
  std::string id;             // ^[a-z0-9]{1,40}$, unique on the node
  std::string template_name;  // a template known to the node's TemplateStore
  Resources resources;
  NetworkPolicy network;
  std::map<std::string, std::string> env;  // default environment of processes inside
  std::chrono::seconds timeout{0};         // 0 = no timeout; the supervisor enforces it
  std::map<std::string, std::string> labels;
};

enum class SandboxState { kCreating, kRunning, kPaused, kStopped, kFailed };
constexpr std::string_view StateName(SandboxState s) {
  switch (s) {
    case SandboxState::kCreating:
      return "creating";
    case SandboxState::kRunning:
      return "running";
    case SandboxState::kPaused:
      return "paused";
    case SandboxState::kStopped:
      return "stopped";
    case SandboxState::kFailed:
      return "failed";
  }
  return "unknown";
}

// How the node reaches envd inside the sandbox.
struct EnvdEndpoint {
  std::string unix_socket;   // host path of envd's socket; "" if TCP
  std::string tcp;           // "host:port" when reached over TCP (e.g. a VM port forward)
  std::string access_token;  // sent as X-Access-Token; "" when envd has no token
};

// Resource use so far, for metering and the dashboard.
struct Usage {
  uint64_t cpu_usec = 0;
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;
  uint64_t io_read_ops = 0, io_write_ops = 0;
  uint64_t io_read_bytes = 0, io_write_bytes = 0;
  uint64_t disk_used_bytes = 0, disk_total_bytes = 0;
  uint64_t disk_inodes_used = 0, disk_inodes_total = 0;
  uint64_t pids = 0;
};

struct SandboxInfo {
  std::string id;
  std::string driver;  // "ns", "gvisor", "microvm"
  SandboxState state = SandboxState::kCreating;
  std::string reason;  // why it is failed or stopped, for people
  Clock::WallTime created_at;
  int init_pid = -1;        // host pid of the sandbox's init (envd or the VMM), -1 if none
  uint32_t uid_base = 0;    // host uid of root inside (ns tier), 0 if not applicable
  std::string disk_device;  // "7:3" — the sandbox disk's major:minor, "" if none
};

class Sandbox {
 public:
  virtual ~Sandbox() = default;
  virtual SandboxInfo Info() const = 0;
  virtual EnvdEndpoint Envd() const = 0;
  virtual Result<Usage> GetUsage() = 0;
  // Freezes every process of the sandbox (cgroup freezer or VM pause); Resume thaws them.
  virtual Status Pause() = 0;
  virtual Status Resume() = 0;
  // Ends every process (SIGTERM to init, SIGKILL after `grace`); the disk is kept until
  // Destroy so files can still be collected.
  virtual Status Stop(std::chrono::milliseconds grace) = 0;
  // Releases everything; idempotent.
  virtual Status Destroy() = 0;
};
using SandboxPtr = std::unique_ptr<Sandbox>;

struct RecoveryReport {
  std::vector<std::string> adopted;    // still whole: running again under this agent
  std::vector<std::string> destroyed;  // incomplete or dead: every resource released
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string_view Name() const = 0;
  // ok if this host can run the driver; otherwise why not ("no /dev/kvm", "runsc not found").
  virtual Status Available() const = 0;
  // Validates the spec, creates and starts the sandbox; returns once envd answers.
  virtual Result<SandboxPtr> Create(const SandboxSpec& spec) = 0;
  // After a restart: adopt or destroy what the previous run left.
  virtual Result<std::pair<RecoveryReport, std::vector<SandboxPtr>>> Recover() = 0;
};
using DriverPtr = std::unique_ptr<Driver>;

}  // namespace hangar::node
