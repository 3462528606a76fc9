// bench_node_density: how many idle shared-tier sandboxes one node holds, and what each costs.
//
//   bench_node_density [--count N] [--jobs J] [--settle S] [--init envd|sleep] [--envd PATH]
//
// N sandboxes (default 500) with the smallest sensible resources (disk 64 MiB, memory 64 MiB,
// pids 64, cpu 250 m), each idle: envd as init when it is built next to this binary and works,
// else the host's static busybox running `sleep`. Created by J threads (default 2), measured,
// then all destroyed, and the node checked for leftovers (loop devices, mounts, cgroups, uid
// leases, state directories).
//
// Memory, three ways (the machine is shared, so the global figures carry other people's noise):
//   sandbox   sum of the sandboxes' own memory cgroups (memory.usage_in_bytes: the init's pages
//             + kernel memory charged to the group) / N — what the sandbox itself uses
//   agent     this process runs in a memory cgroup of its own (a child of the one it was started
//             in); its growth / N is the host-side memory charged to the node agent: mounts,
//             namespaces, task structs of the inits, the disks' page cache and metadata buffers
//   global    MemAvailable drop / N, minus the sandbox share: host-side including kernel memory
//             no cgroup is charged for (loop devices' queues, slab that is not accounted), with
//             Slab/KernelStack/PageTables/Percpu deltas
// If N cannot be reached, the first failure is reported as the ceiling and what was created is
// measured. Exit 0 unless something failed or leaked (timings and sizes are never asserted).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "bench_node_common.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/mount.h"
#ifdef HANGAR_BENCH_HAVE_ENVD
#include "hangar/envd/client.h"
#endif

namespace hangar::bench {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct Flags {
  int count = 500;
  int jobs = 2;
  int settle = 3;
  std::string init = "auto";  // auto | envd | sleep
  std::string envd_path;
};

std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto num = [&](int& out, int min) {
      if (i + 1 >= argc) return false;
      out = std::atoi(argv[++i]);
      return out >= min;
    };
    bool ok = true;
    if (a == "--count")
      ok = num(f.count, 1);
    else if (a == "--jobs")
      ok = num(f.jobs, 1);
    else if (a == "--settle")
      ok = num(f.settle, 0);
    else if (a == "--init" && i + 1 < argc)
      f.init = argv[++i];
    else if (a == "--envd" && i + 1 < argc)
      f.envd_path = argv[++i];
    else
      ok = false;
    if (!ok || (f.init != "auto" && f.init != "envd" && f.init != "sleep")) return std::nullopt;
  }
  return f;
}

const std::string kMemcgMount = "/sys/fs/cgroup/memory";

// "memory.stat" as key → value.
std::map<std::string, int64_t> ReadKeyValues(const std::string& path) {
  std::map<std::string, int64_t> m;
  std::istringstream in(ReadFile(path).value_or(""));
  std::string k;
  int64_t v;
  while (in >> k >> v) m[k] = v;
  return m;
}

int64_t ReadNumber(const std::string& path) {
  return std::atoll(ReadFile(path).value_or("0").c_str());
}

// This process in a v1 memory cgroup of its own, below the one it started in; moved back and
// the group removed on destruction.
class AgentMemcg {
 public:
  static Result<std::unique_ptr<AgentMemcg>> Enter() {
    if (!fs::exists(kMemcgMount + "/memory.usage_in_bytes")) {
      return Status::FailedPrecondition("no cgroup v1 memory hierarchy at " + kMemcgMount);
    }
    std::string parent;
    std::istringstream in(ReadFile("/proc/self/cgroup").value_or(""));
    std::string line;
    while (std::getline(in, line)) {
      auto p = line.find(":memory:");
      if (p != std::string::npos) parent = line.substr(p + 8);
    }
    if (parent.empty()) return Status::FailedPrecondition("no memory line in /proc/self/cgroup");
    auto m = std::unique_ptr<AgentMemcg>(new AgentMemcg());
    m->parent_ = kMemcgMount + (parent == "/" ? "" : parent);
    m->dir_ = fmt::format("{}/hangar-bench-density-agent-{}", m->parent_, ::getpid());
    if (::mkdir(m->dir_.c_str(), 0755) != 0) {
      return Status::FromErrno(errno, "mkdir(" + m->dir_ + ")");
    }
    m->made_ = true;
    HANGAR_TRY(WriteFile(m->dir_ + "/cgroup.procs", std::to_string(::getpid())));
    m->inside_ = true;
    return m;
  }
  ~AgentMemcg() {
    if (inside_) (void)WriteFile(parent_ + "/cgroup.procs", std::to_string(::getpid()));
    // Charges left (page cache) move to the parent when the group goes.
    for (int i = 0; i < 50 && made_ && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i) {
      std::this_thread::sleep_for(20ms);
    }
  }
  int64_t usage() const { return ReadNumber(dir_ + "/memory.usage_in_bytes"); }
  int64_t kmem() const { return ReadNumber(dir_ + "/memory.kmem.usage_in_bytes"); }
  std::map<std::string, int64_t> stat() const { return ReadKeyValues(dir_ + "/memory.stat"); }

 private:
  AgentMemcg() = default;
  std::string parent_, dir_;
  bool made_ = false, inside_ = false;
};

struct Snapshot {
  std::map<std::string, int64_t> meminfo;  // kB, averaged over a few samples
  int64_t agent_usage = 0, agent_kmem = 0, agent_rss = 0, agent_cache = 0;
  size_t loops_bound = 0, loops_all = 0, mounts = 0, tasks = 0;
};

size_t CountLines(const std::string& path) {
  std::istringstream in(ReadFile(path).value_or(""));
  std::string l;
  size_t n = 0;
  while (std::getline(in, l)) ++n;
  return n;
}

size_t TaskCount() {  // /proc/loadavg: "0.1 0.2 0.3 7/136 5079"
  std::istringstream in(ReadFile("/proc/loadavg").value_or(""));
  std::string a, b, c, t;
  in >> a >> b >> c >> t;
  auto p = t.find('/');
  return p == std::string::npos ? 0 : std::strtoull(t.c_str() + p + 1, nullptr, 10);
}

Snapshot Take(const AgentMemcg* agent, int samples = 5) {
  Snapshot s;
  for (int i = 0; i < samples; ++i) {
    for (const auto& [k, v] : ReadMeminfo()) s.meminfo[k] += v;
    if (i + 1 < samples) std::this_thread::sleep_for(200ms);
  }
  for (auto& [k, v] : s.meminfo) v /= samples;
  if (agent) {
    s.agent_usage = agent->usage();
    s.agent_kmem = agent->kmem();
    auto st = agent->stat();
    s.agent_rss = st["rss"];
    s.agent_cache = st["cache"];
  }
  s.loops_bound = CountLoopDevices(true);
  s.loops_all = CountLoopDevices(false);
  s.mounts = CountLines("/proc/self/mountinfo");
  s.tasks = TaskCount();
  return s;
}

// MemAvailable's spread over a few seconds with nothing of ours changing: the noise floor.
std::pair<int64_t, int64_t> MemAvailableRange(int samples) {
  int64_t lo = INT64_MAX, hi = 0;
  for (int i = 0; i < samples && !StopRequested(); ++i) {
    int64_t v = ReadMeminfo()["MemAvailable"];
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    std::this_thread::sleep_for(200ms);
  }
  return {lo, hi};
}

std::string Kib(double bytes) { return fmt::format("{:8.0f} KiB", bytes / 1024.0); }

int Run(const Flags& f) {
  std::printf("%s\n", LoadLine().c_str());
  auto policy = node::DefaultSeccompPolicy();
  if (!policy.ok()) return std::fprintf(stderr, "%s\n", policy.status().ToString().c_str()), 1;
  auto prog = node::CompileSeccompPolicy(*policy);
  if (!prog.ok()) return std::fprintf(stderr, "%s\n", prog.status().ToString().c_str()), 1;
  auto scratch = TempDir::Make("hangar-bench-density-", "/var/tmp");
  if (!scratch.ok()) return std::fprintf(stderr, "%s\n", scratch.status().ToString().c_str()), 1;
  auto store = storage::TemplateStore::Open({.root = scratch->path() + "/templates"});
  if (!store.ok()) return std::fprintf(stderr, "%s\n", store.status().ToString().c_str()), 1;
  auto tmpl = ImportMiniTemplate(*store, "mini", scratch->path() + "/mini");
  if (!tmpl.ok())
    return std::fprintf(stderr, "template: %s\n", tmpl.status().ToString().c_str()), 1;

  // The agent's own memory cgroup first, so everything below is charged there.
  std::unique_ptr<AgentMemcg> agent;
  if (auto a = AgentMemcg::Enter(); a.ok()) {
    agent = std::move(*a);
  } else {
    std::printf("agent memcg: not measured (%s)\n", a.status().ToString().c_str());
  }

  Snapshot initial = Take(nullptr, 1);  // loops and mounts before this run touched anything
  BenchNodeOptions o;
  o.tag = "density";
  o.templates = &*store;
  o.seccomp = &*prog;
  o.disk_pool = {{64, 8}};
  o.id_slots = static_cast<uint32_t>(f.count + 8);
  std::string init_desc;
  std::string envd_path = f.envd_path.empty() ? SiblingBinary("envd") : f.envd_path;
#ifndef HANGAR_BENCH_HAVE_ENVD
  envd_path.clear();
#endif
  bool use_envd = f.init == "envd" || (f.init == "auto" && !envd_path.empty());
  if (use_envd && envd_path.empty()) {
    std::fprintf(stderr, "--init envd: no envd binary (build target envd or pass --envd)\n");
    return 1;
  }
  std::unique_ptr<BenchNode> node;
  auto open_node = [&](bool envd) -> Status {
    if (envd) {
      o.init_path = envd_path;
      o.init_args = {"--listen-fd", "3", "--log-level", "warn"};
      o.wait_for_envd = true;
      init_desc = "envd (" + envd_path + ")";
    } else {
      o.init_path = "/bin/busybox";
      o.init_args = {"sleep", "2147483647"};
      o.wait_for_envd = false;
      init_desc = "busybox sleep (no envd)";
    }
    node.reset();
    HANGAR_ASSIGN_OR_RETURN(node, BenchNode::Open(o));
    return Status::Ok();
  };
  if (Status s = open_node(use_envd); !s.ok()) {
    return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 1;
  }
  auto spec = [&](int i) {
    node::SandboxSpec s;
    s.id = fmt::format("d{}", i);
    s.template_name = "mini";
    s.resources.disk_mb = 64;
    s.resources.memory_mb = 64;
    s.resources.pids = 64;
    s.resources.cpu_millis = 250;
    return s;
  };
  // A probe: with envd, fall back to sleep if envd does not come up here.
  if (auto p = node->Create(spec(999999)); !p.ok()) {
    if (!use_envd || f.init == "envd") {
      return std::fprintf(stderr, "probe sandbox: %s\n", p.status().ToString().c_str()), 1;
    }
    std::printf("envd probe failed (%s); using busybox sleep\n", p.status().ToString().c_str());
    if (Status s = open_node(false); !s.ok()) {
      return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 1;
    }
  } else {
    (void)node->Destroy("d999999");
  }
  node->WaitForPool(8, 30s);
  std::printf("init: %s; resources: disk 64 MiB, memory 64 MiB, pids 64, cpu 250m; %d threads\n",
              init_desc.c_str(), f.jobs);

  auto noise = MemAvailableRange(10);
  Snapshot before = Take(agent.get());

  // Create.
  std::atomic<int> next{0}, created{0};
  std::mutex err_mu;
  std::optional<std::pair<int, Status>> ceiling;
  auto t0 = SteadyClock::now();
  auto worker = [&] {
    for (int i = next++; i < f.count; i = next++) {
      if (StopRequested()) return;
      {
        std::lock_guard lock(err_mu);
        if (ceiling) return;
      }
      auto sb = node->Create(spec(i));
      if (!sb.ok()) {
        std::lock_guard lock(err_mu);
        if (!ceiling) ceiling.emplace(created.load(), sb.status());
        return;
      }
      int c = ++created;
      if (c % 100 == 0) {
        std::printf("   %d created (%.1f s)\n", c, MsSince(t0) / 1000);
        std::fflush(stdout);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < f.jobs; ++j) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  double create_s = MsSince(t0) / 1000;
  const int n = created.load();
  if (StopRequested()) return 130;

  // Idle, then measure.
  for (int i = 0; i < f.settle * 10 && !StopRequested(); ++i) std::this_thread::sleep_for(100ms);
  Snapshot after = Take(agent.get());
  std::vector<double> sb_mem, sb_kmem;
  for (int i = 0; i < f.count; ++i) {
    std::string id = spec(i).id;
    for (const auto& dir : node->cgroups().Paths(id)) {
      if (dir.find("/memory/") == std::string::npos) continue;
      if (!fs::exists(dir)) continue;
      sb_mem.push_back(static_cast<double>(ReadNumber(dir + "/memory.usage_in_bytes")));
      sb_kmem.push_back(static_cast<double>(ReadNumber(dir + "/memory.kmem.usage_in_bytes")));
    }
  }

  // Destroy and check.
  auto t1 = SteadyClock::now();
  Status destroyed = node->DestroyAll(f.jobs);
  double destroy_s = MsSince(t1) / 1000;
  Leaks leaks = node->Close();
  node.reset();
  std::this_thread::sleep_for(1s);
  Snapshot end = Take(agent.get());

  // Report.
  const double N = n > 0 ? n : 1;
  auto mi = [](const Snapshot& s, const char* k) {
    auto it = s.meminfo.find(k);
    return it == s.meminfo.end() ? 0.0 : static_cast<double>(it->second) * 1024.0;
  };
  Summary mem = Summarize(sb_mem), kmem = Summarize(sb_kmem);
  double sandbox_per = mem.mean;
  double avail_drop = mi(before, "MemAvailable") - mi(after, "MemAvailable");
  double global_host_per = avail_drop / N - sandbox_per;
  double agent_per = static_cast<double>(after.agent_usage - before.agent_usage) / N;
  // Kernel memory that grew globally but is charged to no cgroup of ours (loop devices' queues,
  // unaccounted slab): the global kernel deltas minus the kmem charged to the sandboxes and
  // the agent. Noisy (other users), floored at 0.
  double kernel_global = (mi(after, "Slab") - mi(before, "Slab")) +
                         (mi(after, "KernelStack") - mi(before, "KernelStack")) +
                         (mi(after, "PageTables") - mi(before, "PageTables")) +
                         (mi(after, "Percpu") - mi(before, "Percpu"));
  double kmem_charged = kmem.mean * static_cast<double>(sb_kmem.size()) +
                        static_cast<double>(after.agent_kmem - before.agent_kmem);
  double unaccounted_per = std::max(0.0, kernel_global - kmem_charged) / N;

  std::printf("\n== Density: %d idle sandboxes (asked %d); init %s\n", n, f.count,
              init_desc.c_str());
  if (ceiling) {
    std::printf("   CEILING: creation stopped at %d: %s\n", ceiling->first,
                ceiling->second.ToString().c_str());
  }
  std::printf("   created in %.1f s (%.1f/s with %d threads), destroyed in %.1f s (%.1f/s)\n",
              create_s, n / create_s, f.jobs, destroy_s, n / std::max(destroy_s, 1e-3));
  std::printf("   per sandbox:\n");
  std::printf("     sandbox's own cgroup (init + its kernel memory)  mean %s  median %s  p99 %s\n",
              Kib(mem.mean).c_str(), Kib(mem.median).c_str(), Kib(mem.p99).c_str());
  std::printf("       of which kernel memory (kmem)                  mean %s\n",
              Kib(kmem.mean).c_str());
  if (agent) {
    std::printf(
        "     host-side, charged to the agent's memcg          %s  (rss %s, page cache "
        "%s, kmem %s)\n",
        Kib(agent_per).c_str(),
        Kib(static_cast<double>(after.agent_rss - before.agent_rss) / N).c_str(),
        Kib(static_cast<double>(after.agent_cache - before.agent_cache) / N).c_str(),
        Kib(static_cast<double>(after.agent_kmem - before.agent_kmem) / N).c_str());
  }
  std::printf(
      "     host-side, kernel memory charged to no cgroup (est.)  %s  (global "
      "Slab+KernelStack+PageTables+Percpu growth - kmem charged to sandboxes and agent)\n",
      Kib(unaccounted_per).c_str());
  std::printf(
      "     host-side, global (MemAvailable drop - sandbox)  %s  (noise: MemAvailable "
      "moved %.0f KiB over 2 s idle = %s per sandbox)\n",
      Kib(global_host_per).c_str(), static_cast<double>(noise.second - noise.first),
      Kib(static_cast<double>(noise.second - noise.first) * 1024.0 / N).c_str());
  std::printf("       Slab %s (unreclaimable %s), KernelStack %s, PageTables %s, Percpu %s\n",
              Kib((mi(after, "Slab") - mi(before, "Slab")) / N).c_str(),
              Kib((mi(after, "SUnreclaim") - mi(before, "SUnreclaim")) / N).c_str(),
              Kib((mi(after, "KernelStack") - mi(before, "KernelStack")) / N).c_str(),
              Kib((mi(after, "PageTables") - mi(before, "PageTables")) / N).c_str(),
              Kib((mi(after, "Percpu") - mi(before, "Percpu")) / N).c_str());
  std::printf(
      "   total: MemAvailable %+.0f MiB with %d sandboxes up; after destroy %+.0f MiB vs "
      "before\n",
      -avail_drop / 1048576.0, n,
      (mi(end, "MemAvailable") - mi(before, "MemAvailable")) / 1048576.0);
  std::printf(
      "   kernel objects while up: +%zd bound loop devices, +%zd loop devices in total, "
      "+%zd mounts in the host namespace, +%zd tasks\n",
      static_cast<ssize_t>(after.loops_bound) - static_cast<ssize_t>(before.loops_bound),
      static_cast<ssize_t>(after.loops_all) - static_cast<ssize_t>(before.loops_all),
      static_cast<ssize_t>(after.mounts) - static_cast<ssize_t>(before.mounts),
      static_cast<ssize_t>(after.tasks) - static_cast<ssize_t>(before.tasks));
  std::printf(
      "   after destroy: leftovers of this run: %s; host: bound loops %+zd, mounts %+zd, "
      "loop devices %+zd vs before the run (other users may change these; the kernel "
      "keeps unbound loop devices it created)\n",
      leaks.ToString().c_str(),
      static_cast<ssize_t>(end.loops_bound) - static_cast<ssize_t>(initial.loops_bound),
      static_cast<ssize_t>(end.mounts) - static_cast<ssize_t>(initial.mounts),
      static_cast<ssize_t>(end.loops_all) - static_cast<ssize_t>(initial.loops_all));
  double host_per = agent ? agent_per + unaccounted_per : global_host_per;
  std::printf("SUMMARY density.sandboxes %d of %d%s\n", n, f.count,
              ceiling ? " (ceiling reached)" : "");
  std::printf("SUMMARY density.sandbox_cgroup_per_sandbox %.0f KiB (mean; init %s)\n",
              sandbox_per / 1024, init_desc.c_str());
  std::printf(
      "SUMMARY density.host_side_per_sandbox %.0f KiB (agent memcg %.0f + uncharged kernel "
      "%.0f; MemAvailable-based %.0f +- %.0f; target <= 2048 KiB)\n",
      host_per / 1024, agent_per / 1024, unaccounted_per / 1024, global_host_per / 1024,
      static_cast<double>(noise.second - noise.first) / N);
  std::printf("SUMMARY density.total_per_sandbox %.0f KiB (MemAvailable drop / N)\n",
              avail_drop / N / 1024);
  std::printf("%s\n", LoadLine().c_str());
  if (!destroyed.ok()) {
    std::fprintf(stderr, "destroy: %s\n", destroyed.ToString().c_str());
    return 1;
  }
  if (leaks.any()) return 1;
  return 0;
}

}  // namespace
}  // namespace hangar::bench

int main(int argc, char** argv) {
  using namespace hangar::bench;
  auto flags = ParseFlags(argc, argv);
  if (!flags) {
    std::fprintf(stderr,
                 "usage: bench_node_density [--count N] [--jobs J] [--settle S] "
                 "[--init auto|envd|sleep] [--envd PATH]\n");
    return 2;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_node_density needs root (namespaces, mounts, cgroups, loops)\n");
    return 2;
  }
  hangar::log::Init(hangar::log::Format::kText, hangar::log::Level::kWarn);
  InstallStopHandler();
  int rc = Run(*flags);
  if (StopRequested() && rc == 0) rc = 130;
  return rc;
}
