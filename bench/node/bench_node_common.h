// Shared pieces of the node benchmarks (bench_node_start, bench_node_density, bench_node_io):
// statistics, a stop flag for SIGINT/SIGTERM, a tiny rootfs template, and BenchNode — one
// NsDriver with everything it needs (template store, cgroup backend, id allocator, compiled
// seccomp program) in a private data directory, cgroup root and uid range, which destroys every
// sandbox it created and checks for leaks when it goes.
//
// Benchmarks, not tests: nothing here asserts a timing. Errors are Status values; the mains
// print them and exit 1.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "hangar/base/status.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/ns_driver.h"
#include "hangar/node/seccomp.h"
#include "hangar/node/userns.h"
#include "hangar/storage/template_store.h"

namespace hangar::bench {

using SteadyClock = std::chrono::steady_clock;

inline double MsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

// Median and nearest-rank p99 of a sample (milliseconds or any unit).
struct Summary {
  size_t n = 0;
  double median = 0, p99 = 0, mean = 0, min = 0, max = 0;
};
Summary Summarize(std::vector<double> v);
// "median 12.34  p99 20.01  (n=60)"
std::string FormatSummary(const Summary& s, const char* unit = "ms");

// SIGINT/SIGTERM set a flag; loops poll it and unwind through the RAII owners, so an
// interrupted benchmark cleans up like a finished one. Exit code 130 then.
void InstallStopHandler();
bool StopRequested();

// "/var/tmp/hangar-template-cache" or $HANGAR_TEMPLATE_CACHE.
std::string TemplateCacheDir();

// A tiny template in `store` named `name`: static busybox (sh, sleep, true, ...), the host's
// dynamic /usr/bin/true with the exact loader and libc it needs (so the sandbox runs the same
// binary as the host peers), /etc/passwd with root and `user`, the usual directories. The
// unpacked tree is left at `scratch`/rootfs (the crun and bwrap peers use it as their root).
Result<storage::TemplateInfo> ImportMiniTemplate(storage::TemplateStore& store,
                                                 const std::string& name,
                                                 const std::string& scratch);

// Path of a file next to this executable (e.g. "envd"), or "" if there is none.
std::string SiblingBinary(const std::string& name);

struct BenchNodeOptions {
  std::string tag;  // [a-z0-9-]; names the cgroup root and data directory
  storage::TemplateStore* templates = nullptr;
  const node::SeccompProgram* seccomp = nullptr;
  std::string init_path;
  std::vector<std::string> init_args;
  bool wait_for_envd = false;
  std::map<uint64_t, size_t> disk_pool;  // size_mb → ready disks
  uint32_t id_slots = 64;
  uint32_t id_base = 0;             // 0: derived from the tag (distinct from the tests' ranges)
  node::WarmPoolOptions warm_pool;  // the driver's pre-started sandboxes (off by default)
  int64_t default_write_bps = 0;    // the driver's node default I/O limits
  int64_t default_write_iops = 0;
  // The driver's namespace pool (NsDriverOptions::netns_pool / userns_pool); -1: its default.
  int netns_pool = -1;
  int userns_pool = -1;
};

// What is left of a BenchNode's resources (all zero after a clean teardown).
struct Leaks {
  size_t loops = 0, mounts = 0, cgroups = 0, leases = 0, sandbox_dirs = 0;
  bool any() const { return loops || mounts || cgroups || leases || sandbox_dirs; }
  std::string ToString() const;
};

class BenchNode {
 public:
  static Result<std::unique_ptr<BenchNode>> Open(BenchNodeOptions options);
  // Destroys every sandbox still tracked, closes the driver (its disk pool), removes the cgroup
  // root and the data directory. Leaks are reported on stderr.
  ~BenchNode();
  BenchNode(const BenchNode&) = delete;
  BenchNode& operator=(const BenchNode&) = delete;

  // Creates and tracks a sandbox (thread-safe).
  Result<node::Sandbox*> Create(const node::SandboxSpec& spec);
  // Destroys and forgets it (thread-safe).
  Status Destroy(const std::string& id);
  Status DestroyAll(int threads = 1);
  size_t live() const;
  // Destroys every sandbox, closes the driver (its pool's disks go), checks for leftovers and
  // removes the cgroup root. The destructor calls it if nobody did.
  Leaks Close();

  // Loops, mounts, cgroups, uid leases and sandbox directories left now.
  Leaks CheckLeaks();
  // Disks the driver's pool holds ready (attached loops under <data>/disks minus live ones).
  size_t PooledDisks();
  // Waits until the pool holds `n` disks (false on timeout).
  bool WaitForPool(size_t n, std::chrono::milliseconds timeout);

  const std::string& data_dir() const { return data_; }
  node::Driver& driver() { return *driver_; }
  node::CgroupBackend& cgroups() { return *cgroups_; }
  node::IdRangeAllocator& ids() { return *ids_; }

 private:
  BenchNode() = default;

  BenchNodeOptions o_;
  TempDir tmp_;
  std::string data_;
  node::CgroupBackendPtr cgroups_;
  std::unique_ptr<node::IdRangeAllocator> ids_;
  node::DriverPtr driver_;
  mutable std::mutex mu_;
  std::map<std::string, node::SandboxPtr> sandboxes_;
  std::optional<Leaks> closed_;
};

// Waits until the process `pid` has exited (pidfd; a zombie counts). false on timeout.
bool WaitForExit(pid_t pid, std::chrono::milliseconds timeout);

// /proc/meminfo as name → kB.
std::map<std::string, int64_t> ReadMeminfo();

// Count of /sys/block/loop* devices (bound or not) and of bound ones.
size_t CountLoopDevices(bool bound_only);

// One line of the load this run saw: "load 3.85 3.85 3.08, cpu psi some avg60 61.0%".
std::string LoadLine();

}  // namespace hangar::bench
