// bench_microvm: the isolated tier on this host (TCG without /dev/kvm).
//   1. time to first command, three ways in the same run, interleaved per iteration:
//      cold boot, snapshot restore, and a claim from the warm pool (Create -> envd runs `echo`);
//      p50 / p99 and the ratios between them. Each measurement starts with the warm pool full,
//      so the pool's background refill never competes with the VM being measured;
//   2. host memory per idle VM (the VMM cgroup's memory and QEMU's RSS) for restored VMs, and
//      the cgroup memory of a paused warm pool VM, against the guest RAM they were given;
//   3. IOPS limit accuracy: fio --direct=1 4 KiB random reads of the guest's disk (/dev/vda,
//      read-only) under read_iops, and random writes to a file of its root filesystem under
//      write_iops, with the limit set on QEMU's command line (restore path) and by QMP at claim
//      (warm pool path): fio's IOPS / the limit; 4 psync jobs (one I/O in flight each) so that
//      a slow TCG guest can still offer more than the limit, and the same jobs unlimited in the
//      same run as the headroom (a figure well under the limit with little headroom measures
//      the guest, not the limit).
// Needs root, busybox-static, fio (copied into the template with its libraries), QEMU, the
// guest kernel cache and the envd binary next to this one (or $HANGAR_ENVD).
// Usage: bench_microvm [runs=5] [idle_vms=2] [iops_limit=200] [fio_seconds=10]
// (runs=0: the IOPS part only).
// Benchmark, not a test: prints figures, asserts nothing.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "hangar/microvm/microvm_driver.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"

using namespace hangar;
using Ms = std::chrono::duration<double, std::milli>;

namespace {

[[noreturn]] void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "bench_microvm: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(1);
}

// Runs `cmd args` as root in the sandbox; stdout only (stderr goes into an error).
Result<std::string> Exec(const node::Sandbox& sb, const std::string& cmd,
                         std::vector<std::string> args) {
  node::EnvdEndpoint ep = sb.Envd();
  HANGAR_ASSIGN_OR_RETURN(
      envd::Client c,
      envd::Client::Create({"", ep.tcp, ep.access_token}, {.timeout = std::chrono::seconds(180)}));
  std::string out, err;
  HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo done,
                          c.Run({.cmd = cmd, .args = std::move(args), .user = "root"},
                                {.on_stdout = [&](std::string_view s) { out += s; },
                                 .on_stderr = [&](std::string_view s) { err += s; }}));
  if (done.exit_code != 0) {
    return Status::Internal(fmt::format("{} exited {}: {}", cmd, done.exit_code, err));
  }
  return out;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  // Nearest rank: with fewer than 100 samples p99 is the maximum.
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

void Print(const char* what, const std::vector<double>& v) {
  std::printf("%-40s n=%zu  p50 %8.0f ms  p99 %8.0f ms\n", what, v.size(), Percentile(v, 50),
              Percentile(v, 99));
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 50); }

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 5;
  const int idle_vms = argc > 2 ? std::atoi(argv[2]) : 2;
  const int iops_limit = argc > 3 ? std::atoi(argv[3]) : 200;
  const int fio_seconds = argc > 4 ? std::atoi(argv[4]) : 10;
  std::string envd_path = std::getenv("HANGAR_ENVD") ? std::getenv("HANGAR_ENVD") : "";
  if (envd_path.empty()) {
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    std::string dir = n > 0 ? std::string(self, static_cast<size_t>(n)) : "";
    envd_path = dir.substr(0, dir.rfind('/')) + "/envd";
  }
  auto tmp = TempDir::Make("hangar-bench-microvm-", "/var/tmp");
  if (!tmp.ok()) Die("tempdir", tmp.status());
  storage::TemplateStoreOptions so;
  so.root = tmp->path() + "/templates";
  auto store = storage::TemplateStore::Open(so);
  if (!store.ok()) Die("template store", store.status());
  if (auto t = node::testing::ImportBusyboxTemplate(*store, tmp->path(), "bench", {"/usr/bin/fio"});
      !t.ok()) {
    Die("template (busybox + fio)", t.status());
  }
  auto layout = node::DetectCgroupLayout();
  if (!layout.ok()) Die("cgroups", layout.status());
  node::CgroupOptions co;
  co.root = "hangar-bench-microvm";
  auto cg = node::MakeCgroupBackend(*layout, co);
  if (!cg.ok()) Die("cgroups", cg.status());
  constexpr int64_t kMemoryMb = 256, kPoolDiskMb = 256, kRestoreDiskMb = 300;
  microvm::MicroVmDriverOptions o;
  o.data_dir = tmp->path() + "/data";
  o.templates = &*store;
  o.cgroups = cg->get();
  o.envd_path = envd_path;
  o.warm_pool.entries = {{.template_name = "bench",
                          .size = 1,
                          .vcpus = 1,
                          .memory_mb = kMemoryMb,
                          .disk_mb = kPoolDiskMb}};
  auto s0 = std::chrono::steady_clock::now();
  auto driver = microvm::NewMicroVmDriver(o);
  if (!driver.ok()) Die("driver", driver.status());
  node::Driver& d = **driver;
  // The refill builds the snapshot of (bench, 1 vCPU, 256 MiB), then restores the pool's VM.
  if (!microvm::WaitForMicroVmWarmPool(d, std::chrono::minutes(10))) {
    Die("warm pool", Status::DeadlineExceeded("the warm pool did not fill in 10 minutes"));
  }
  const double fill_ms = Ms(std::chrono::steady_clock::now() - s0).count();

  enum class Path { kCold, kRestore, kPool };
  auto spec = [&](const std::string& id, Path p) {
    node::SandboxSpec s;
    s.id = id;
    s.template_name = "bench";
    s.resources.cpu_millis = 1000;
    s.resources.memory_mb = kMemoryMb;
    s.resources.disk_mb = p == Path::kPool ? kPoolDiskMb : kRestoreDiskMb;  // 300: a pool miss
    if (p == Path::kCold) s.env = {{"COLD", "1"}};  // a non-empty env never restores
    return s;
  };
  auto wait_pool = [&] {
    if (!microvm::WaitForMicroVmWarmPool(d, std::chrono::minutes(5))) {
      Die("warm pool", Status::DeadlineExceeded("the warm pool did not refill in 5 minutes"));
    }
  };
  auto first_command = [&](const node::SandboxSpec& s) {
    wait_pool();
    auto t0 = std::chrono::steady_clock::now();
    auto sb = d.Create(s);
    if (!sb.ok()) Die("create " + s.id, sb.status());
    auto out = Exec(**sb, "/bin/echo", {"ready"});
    if (!out.ok()) Die("first command", out.status());
    double ms = Ms(std::chrono::steady_clock::now() - t0).count();
    (void)(*sb)->Destroy();
    return ms;
  };

  std::printf("microVM (QEMU, %s), %d runs each, interleaved; host load %.2f\n",
              ::access("/dev/kvm", R_OK | W_OK) == 0 ? "KVM" : "TCG", runs, [] {
                double l[3] = {0, 0, 0};
                return ::getloadavg(l, 3) > 0 ? l[0] : -1.0;
              }());
  std::vector<double> cold, restore, pool;
  if (runs > 0) {
    for (int i = 0; i < runs; ++i) {
      cold.push_back(first_command(spec(fmt::format("cold{}", i), Path::kCold)));
      restore.push_back(first_command(spec(fmt::format("snap{}", i), Path::kRestore)));
      pool.push_back(first_command(spec(fmt::format("pool{}", i), Path::kPool)));
    }
    node::WarmPoolStats ps = microvm::GetMicroVmWarmPoolStats(d);
    Print("cold boot -> first command", cold);
    Print("snapshot restore -> first command", restore);
    Print("warm pool claim -> first command", pool);
    std::printf("%-40s %8.0f ms (snapshot build + pool fill, once)\n", "driver open -> pool ready",
                fill_ms);
    std::printf("warm pool: claimed %zu, misses %zu, refills %zu, failures %zu\n", ps.claimed,
                ps.misses, ps.created, ps.failures);
    std::printf("ratio restore/cold (p50)                 %.3f  (target <= 0.25)\n",
                Median(restore) / Median(cold));
    std::printf("ratio pool/cold    (p50)                 %.3f  (p99 %.3f)\n",
                Median(pool) / Median(cold), Percentile(pool, 99) / Percentile(cold, 99));
    std::printf("ratio pool/restore (p50)                 %.3f  (p99 %.3f)\n",
                Median(pool) / Median(restore), Percentile(pool, 99) / Percentile(restore, 99));

    // Idle memory: restored VMs left alone for a few seconds; the paused pool VM beside them.
    wait_pool();
    std::vector<node::SandboxPtr> idle;
    for (int i = 0; i < idle_vms; ++i) {
      auto sb = d.Create(spec(fmt::format("idle{}", i), Path::kRestore));
      if (!sb.ok()) Die("create idle", sb.status());
      idle.push_back(std::move(*sb));
    }
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::vector<double> cg_mb, rss_mb, pool_mb;
    for (auto& sb : idle) {
      auto u = sb->GetUsage();
      if (u.ok()) cg_mb.push_back(static_cast<double>(u->memory_bytes) / (1 << 20));
      auto status = ReadFile(fmt::format("/proc/{}/status", sb->Info().init_pid));
      if (status.ok()) {
        size_t p = status->find("VmRSS:");
        if (p != std::string::npos) rss_mb.push_back(std::atof(status->c_str() + p + 6) / 1024);
      }
    }
    if (auto groups = (*cg)->List(); groups.ok()) {
      for (const std::string& g : *groups) {
        if (g.rfind("pool-", 0) != 0) continue;
        if (auto u = (*cg)->ReadUsage(g); u.ok()) {
          pool_mb.push_back(static_cast<double>(u->memory_current) / (1 << 20));
        }
      }
    }
    std::printf("idle VM host memory (cgroup)             p50 %6.1f MiB  (guest RAM 256 MiB)\n",
                Median(cg_mb));
    std::printf("idle VM QEMU RSS                         p50 %6.1f MiB\n", Median(rss_mb));
    if (!pool_mb.empty()) {
      std::printf("paused warm pool VM host memory (cgroup) p50 %6.1f MiB\n", Median(pool_mb));
    }
    for (auto& sb : idle) (void)sb->Destroy();
  }

  // IOPS accuracy: fio --direct=1, 4 KiB, psync (one I/O in flight per job), time-based.
  std::printf("IOPS limit %d, fio --direct=1 --bs=4k --ioengine=psync --numjobs=4, %d s each:\n",
              iops_limit, fio_seconds);
  for (int pass = 0; pass < 3; ++pass) {
    const bool unlimited = pass == 0;
    const Path path = pass == 2 ? Path::kPool : Path::kRestore;
    for (bool read : {true, false}) {
      wait_pool();
      auto s = spec(fmt::format("fio{}{}", pass, read ? "r" : "w"), path);
      if (!unlimited) (read ? s.resources.read_iops : s.resources.write_iops) = iops_limit;
      auto sb = d.Create(s);
      if (!sb.ok()) Die("create " + s.id, sb.status());
      std::vector<std::string> args = {"--name=j",         "--direct=1",
                                       "--bs=4k",          "--thread",
                                       "--time_based",     fmt::format("--runtime={}", fio_seconds),
                                       "--numjobs=4",      "--group_reporting",
                                       "--ioengine=psync", "--output-format=json"};
      if (read) {
        args.insert(args.end(), {"--rw=randread", "--filename=/dev/vda", "--readonly"});
      } else {
        args.insert(args.end(), {"--rw=randwrite", "--filename=/root/fio.dat", "--size=32M"});
      }
      if (!read) {
        // The file written out first (1 MiB writes, flushed), so that the timed job overwrites
        // allocated blocks: no extent conversions in ext4's journal sharing the write budget.
        auto lay = Exec(**sb, "/usr/bin/fio",
                        {"--name=lay", "--filename=/root/fio.dat", "--size=32M", "--rw=write",
                         "--bs=1M", "--end_fsync=1", "--thread"});
        if (!lay.ok()) Die("fio layout", lay.status());
      }
      // The virtual disk's own count (QMP query-blockstats) over the same window: what the
      // throttle saw, including the guest filesystem's own I/O.
      auto u0 = (*sb)->GetUsage();
      const auto t0 = std::chrono::steady_clock::now();
      auto out = Exec(**sb, "/usr/bin/fio", args);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto u1 = (*sb)->GetUsage();
      if (!out.ok()) Die("fio", out.status());
      double disk_ops = 0;
      if (u0.ok() && u1.ok()) {
        disk_ops = static_cast<double>(read ? u1->io_read_ops - u0->io_read_ops
                                            : u1->io_write_ops - u0->io_write_ops) /
                   secs;
      }
      auto j =
          nlohmann::json::parse(out->substr(std::min(out->find('{'), out->size())), nullptr, false);
      if (j.is_discarded() || !j.contains("jobs")) {
        Die("fio output", Status::Internal(out->substr(0, 400)));
      }
      const double iops = j["jobs"][0][read ? "read" : "write"]["iops"].get<double>();
      const char* rw = read ? "randread" : "randwrite";
      if (unlimited) {
        std::printf("  %-9s %-34s no limit:  measured %6.1f IOPS (headroom %.1f x the limit)\n", rw,
                    "(restore, unthrottled)", iops, iops / iops_limit);
      } else {
        std::printf(
            "  %-9s %-34s limit %d: measured %6.1f IOPS = %.3f x limit  (virtual disk %6.1f "
            "ops/s over the envd call = %.3f x)\n",
            rw,
            path == Path::kPool ? "(warm pool claim: QMP throttle)"
                                : "(restore: -drive throttling)",
            iops_limit, iops, iops / iops_limit, disk_ops, disk_ops / iops_limit);
      }
      (void)(*sb)->Destroy();
    }
  }
  driver->reset();
  (void)(*cg)->RemoveRoot();
  return 0;
}
