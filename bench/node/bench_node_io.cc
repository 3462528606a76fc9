// bench_node_io: disk I/O isolation between shared-tier sandboxes, and IOPS limit accuracy.
//
//   bench_node_io [--runtime S] [--iops-runtime S] [--read-iops N] [--write-iops N]
//                 [--neighbour-wbps MiB] [--neighbour-wiops N] [--no-node-default]
//                 [--template NAME] [--prepare]
//
// Every fio runs inside a real sandbox (NsDriver: user/pid/mnt/net namespaces, id-mapped overlay
// root on its own loop disk, cgroup limits, seccomp) on its own disk. The sandbox's init is the
// host's static busybox running `exec $BENCH_CMD`, which execs the template's own /usr/bin/fio
// (PID 1 of the sandbox is then fio); the JSON report lands in the sandbox's console log.
// The template is the Debian base + fio (TemplateStore::BuildDebianBase, cached under
// $HANGAR_TEMPLATE_CACHE; ~100 s the first time, or run with --prepare beforehand).
//
// Isolation: the victim does 4 KiB random direct reads and 4 KiB buffered random writes each
// followed by fsync (two fio jobs, queue depth 1) on its disk, alone and then beside a neighbour
// that floods its own disk with 1 MiB buffered sequential writes:
//   1. solo;  2. neighbour unthrottled;  3. neighbour with Resources.write_bps/write_iops (the
//   driver writes the throttle for the neighbour's loop device to its blkio group and, on
//   cgroup v1, to the root blkio group, which background writeback passes through);
//   4. (unless --no-node-default) the neighbour asks for no limit, on a driver whose
//   default_write_bps/iops are that same limit.
// Printed: victim p50/p99 of reads, of writes and of fsyncs, each as a ratio to solo; the
// neighbour's device write rate (/sys/block/loopN/stat) during the victim's run.
// Accuracy: fio --direct=1 random reads (writes) at queue depth 8 in a sandbox with read_iops
// (write_iops) set; measured/limit, beside the same job unthrottled.
// Exit 0 unless something failed (timings are reported, never asserted).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_node_common.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"

namespace hangar::bench {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

struct Flags {
  int runtime = 12;      // victim, seconds (after a 2 s ramp)
  int iops_runtime = 8;  // each limited IOPS run (after a 1 s ramp)
  int read_iops = 200;
  int write_iops = 500;
  int neighbour_wbps_mib = 16;
  int neighbour_wiops = 400;
  bool node_default = true;
  bool prepare_only = false;
  std::string template_name = "bench-bookworm-fio";
};

void Usage() {
  std::fprintf(stderr,
               "usage: bench_node_io [--runtime S] [--iops-runtime S] [--read-iops N] "
               "[--write-iops N]\n"
               "                     [--neighbour-wbps MiB] [--neighbour-wiops N] "
               "[--no-node-default]\n"
               "                     [--template NAME] [--prepare]\n");
}

std::optional<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto num = [&](int& out) {
      if (i + 1 >= argc) return false;
      out = std::atoi(argv[++i]);
      return out > 0;
    };
    bool ok = true;
    if (a == "--runtime")
      ok = num(f.runtime);
    else if (a == "--iops-runtime")
      ok = num(f.iops_runtime);
    else if (a == "--read-iops")
      ok = num(f.read_iops);
    else if (a == "--write-iops")
      ok = num(f.write_iops);
    else if (a == "--neighbour-wbps")
      ok = num(f.neighbour_wbps_mib);
    else if (a == "--neighbour-wiops")
      ok = num(f.neighbour_wiops);
    else if (a == "--no-node-default")
      f.node_default = false;
    else if (a == "--prepare")
      f.prepare_only = true;
    else if (a == "--template" && i + 1 < argc)
      f.template_name = argv[++i];
    else
      ok = false;
    if (!ok) return std::nullopt;
  }
  return f;
}

// Sectors written to a block device so far (/sys/dev/block/M:m/stat, field 7).
uint64_t SectorsWritten(const std::string& majmin) {
  std::istringstream in(ReadFile("/sys/dev/block/" + majmin + "/stat").value_or(""));
  uint64_t v[7] = {};
  for (auto& x : v) in >> x;
  return v[6];
}

class IoBench {
 public:
  // `defaults_node` is a node whose driver imposes the default write limits (or null).
  IoBench(Flags f, BenchNode& node, std::string fio_template, BenchNode* defaults_node)
      : f_(std::move(f)),
        node_(node),
        defaults_node_(defaults_node),
        tmpl_(std::move(fio_template)) {}

  // Starts a sandbox running `/usr/bin/fio <args>` as its init.
  Result<node::Sandbox*> StartFio(const std::string& id, const std::string& fio_args,
                                  node::Resources r, BenchNode* on = nullptr) {
    node::SandboxSpec spec;
    spec.id = id;
    spec.template_name = tmpl_;
    spec.resources = r;
    spec.env = {{"BENCH_CMD", "/usr/bin/fio " + fio_args}};
    return (on ? *on : node_).Create(spec);
  }

  // Waits for a fio sandbox to finish and returns fio's JSON report from its console.
  Result<json> FinishFio(node::Sandbox* sb, std::chrono::seconds timeout) {
    std::string id = sb->Info().id;
    bool exited = WaitForExit(sb->Info().init_pid, timeout);
    std::string console =
        ReadFile(node_.data_dir() + "/sandboxes/" + id + "/console.log").value_or("");
    HANGAR_TRY(node_.Destroy(id));
    if (StopRequested()) return Status::Cancelled("interrupted");
    if (!exited) return Status::DeadlineExceeded(fmt::format("fio in {} did not finish", id));
    size_t b = console.find('{'), e = console.rfind('}');
    json j = b == std::string::npos || e == std::string::npos
                 ? json()
                 : json::parse(console.substr(b, e - b + 1), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("jobs")) {
      return Status::Internal(
          fmt::format("no fio JSON in {}'s console: {}", id, console.substr(0, 2000)));
    }
    return j;
  }

  struct Victim {
    double read_p50_us = 0, read_p99_us = 0, write_p50_us = 0, write_p99_us = 0;
    double fsync_p50_us = 0, fsync_p99_us = 0, read_iops = 0, write_iops = 0;
    double neighbour_mbps = -1;  // neighbour's device write rate during the run, -1: none
    double wall_s = 0;           // the whole step: sandboxes, layout, run, teardown
  };

  static double Pct(const json& lat, const char* p) {
    if (!lat.contains("percentile") || !lat["percentile"].contains(p)) return 0;
    return lat["percentile"][p].get<double>() / 1000.0;
  }

  Result<Victim> RunVictim(const std::string& id, const std::string& neighbour_dev) {
    std::string args = fmt::format(
        "--output-format=json --directory=/var/tmp --filename=victim.dat --size=64M --bs=4k "
        "--ioengine=psync --iodepth=1 --time_based --runtime={} --ramp_time=2 "
        "--randrepeat=0 --name=reads --rw=randread --direct=1 "
        "--name=writes --rw=randwrite --direct=0 --fsync=1",
        f_.runtime);
    node::Resources r;
    r.memory_mb = 256;
    r.disk_mb = 512;
    uint64_t s0 = neighbour_dev.empty() ? 0 : SectorsWritten(neighbour_dev);
    auto t0 = SteadyClock::now();
    HANGAR_ASSIGN_OR_RETURN(node::Sandbox * sb, StartFio(id, args, r));
    HANGAR_ASSIGN_OR_RETURN(json j, FinishFio(sb, std::chrono::seconds(f_.runtime + 120)));
    double secs = MsSince(t0) / 1000.0;
    Victim v;
    if (!neighbour_dev.empty()) {
      v.neighbour_mbps =
          static_cast<double>(SectorsWritten(neighbour_dev) - s0) * 512.0 / 1e6 / secs;
    }
    for (const auto& job : j["jobs"]) {
      if (job.value("jobname", "") == "reads") {
        v.read_p50_us = Pct(job["read"]["clat_ns"], "50.000000");
        v.read_p99_us = Pct(job["read"]["clat_ns"], "99.000000");
        v.read_iops = job["read"].value("iops", 0.0);
      } else if (job.value("jobname", "") == "writes") {
        v.write_p50_us = Pct(job["write"]["clat_ns"], "50.000000");
        v.write_p99_us = Pct(job["write"]["clat_ns"], "99.000000");
        v.fsync_p50_us = Pct(job["sync"]["lat_ns"], "50.000000");
        v.fsync_p99_us = Pct(job["sync"]["lat_ns"], "99.000000");
        v.write_iops = job["write"].value("iops", 0.0);
      }
    }
    if (v.read_p99_us <= 0 || v.fsync_p99_us <= 0) {
      return Status::Internal("victim fio report lacks read or fsync percentiles");
    }
    return v;
  }

  // The neighbour: 1 MiB buffered sequential writes to its own disk, until destroyed.
  Result<node::Sandbox*> StartNeighbour(const std::string& id, int64_t wbps, int64_t wiops,
                                        BenchNode& on) {
    node::Resources r;
    r.memory_mb = 512;
    r.disk_mb = 2048;
    r.write_bps = wbps;
    r.write_iops = wiops;
    return StartFio(id,
                    "--output-format=json --name=flood --directory=/var/tmp --filename=flood.dat "
                    "--size=1536M --rw=write --bs=1M --direct=0 --ioengine=psync --time_based "
                    "--runtime=900",
                    r, &on);
  }

  // Victim beside a neighbour that asks for write_bps/write_iops (0: none). The driver writes
  // the limit to the neighbour's blkio group and, on cgroup v1, to the root blkio group for its
  // loop device. `node_default`: the neighbour asks for nothing and runs on the node whose
  // driver imposes the default write limit.
  Result<Victim> RunWithNeighbour(const std::string& tag, int64_t wbps, int64_t wiops,
                                  bool node_default) {
    BenchNode& on = node_default && defaults_node_ ? *defaults_node_ : node_;
    HANGAR_ASSIGN_OR_RETURN(node::Sandbox * nb, StartNeighbour("nb" + tag, wbps, wiops, on));
    std::string dev = nb->Info().disk_device;
    // Let the flood fill the page cache and reach the device before the victim starts.
    for (int i = 0; i < 30 && !StopRequested(); ++i) std::this_thread::sleep_for(100ms);
    auto v = RunVictim("vi" + tag, dev);
    Status d = on.Destroy("nb" + tag);
    if (!v.ok()) return v.status();
    if (!d.ok()) return d;
    return v;
  }

  // fio --direct=1 random reads or writes at queue depth 8 with the given IOPS limit (0: none).
  Result<double> RunIops(const std::string& id, bool write, int64_t limit, int runtime) {
    node::Resources r;
    r.memory_mb = 256;
    r.disk_mb = 256;
    (write ? r.write_iops : r.read_iops) = limit;
    std::string args = fmt::format(
        "--output-format=json --name=iops --directory=/var/tmp --filename=iops.dat --size=64M "
        "--rw={} --bs=4k --direct=1 --ioengine=libaio --iodepth=8 --time_based --runtime={} "
        "--ramp_time=1 --randrepeat=0",
        write ? "randwrite" : "randread", runtime);
    HANGAR_ASSIGN_OR_RETURN(node::Sandbox * sb, StartFio(id, args, r));
    HANGAR_ASSIGN_OR_RETURN(json j, FinishFio(sb, std::chrono::seconds(runtime + 120)));
    return j["jobs"][0][write ? "write" : "read"].value("iops", 0.0);
  }

 private:
  Flags f_;
  BenchNode& node_;
  BenchNode* defaults_node_;
  std::string tmpl_;
};

std::string Us(double v) { return fmt::format("{:9.0f} us", v); }
std::string Ratio(double v, double base) {
  return base > 0 ? fmt::format("{:5.2f}x", v / base) : "    -";
}

int Run(const Flags& f) {
  auto store = storage::TemplateStore::Open({.root = TemplateCacheDir()});
  if (!store.ok()) {
    std::fprintf(stderr, "template store: %s\n", store.status().ToString().c_str());
    return 1;
  }
  if (!store->Get(f.template_name).ok()) {
    std::printf("building template %s (Debian base + fio) in %s; ~100 s the first time...\n",
                f.template_name.c_str(), store->root().c_str());
    std::fflush(stdout);
  }
  storage::DebianBaseOptions dbo;
  dbo.extra_packages = {"fio"};
  auto t0 = SteadyClock::now();
  auto tmpl = store->BuildDebianBase(f.template_name, dbo);
  if (!tmpl.ok()) {
    std::fprintf(stderr, "template: %s\n", tmpl.status().ToString().c_str());
    return 1;
  }
  if (::access((tmpl->rootfs + "/usr/bin/fio").c_str(), X_OK) != 0) {
    std::fprintf(stderr, "template %s has no /usr/bin/fio\n", f.template_name.c_str());
    return 1;
  }
  std::printf("template %s ready (%.1f s)\n", f.template_name.c_str(), MsSince(t0) / 1000);
  if (f.prepare_only) return 0;

  auto policy = node::DefaultSeccompPolicy();
  if (!policy.ok()) return std::fprintf(stderr, "%s\n", policy.status().ToString().c_str()), 1;
  auto prog = node::CompileSeccompPolicy(*policy);
  if (!prog.ok()) return std::fprintf(stderr, "%s\n", prog.status().ToString().c_str()), 1;

  BenchNodeOptions o;
  o.tag = "io";
  o.templates = &*store;
  o.seccomp = &*prog;
  o.init_path = "/bin/busybox";
  o.init_args = {"sh", "-c", "exec $BENCH_CMD"};
  o.id_slots = 16;
  auto node = BenchNode::Open(o);
  if (!node.ok()) return std::fprintf(stderr, "%s\n", node.status().ToString().c_str()), 1;
  const int64_t wbps = int64_t{f.neighbour_wbps_mib} << 20;
  const int64_t wiops = f.neighbour_wiops;
  // A second node whose driver imposes the same limit as its default (NsDriverOptions::
  // default_write_bps/iops) on sandboxes that ask for none.
  std::unique_ptr<BenchNode> defaults_node;
  if (f.node_default) {
    BenchNodeOptions od = o;
    od.tag = "iodef";
    od.default_write_bps = wbps;
    od.default_write_iops = wiops;
    auto n = BenchNode::Open(od);
    if (!n.ok()) return std::fprintf(stderr, "%s\n", n.status().ToString().c_str()), 1;
    defaults_node = std::move(*n);
  }

  std::printf("%s\n", LoadLine().c_str());
  IoBench b(f, **node, f.template_name, defaults_node.get());
  int rc = 0;
  auto fail = [&](const char* what, const Status& s) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    rc = StopRequested() ? 130 : 1;
  };

  std::printf(
      "\n== I/O isolation: victim = 4 KiB random direct reads + 4 KiB buffered random "
      "writes with fsync (qd 1, %d s)\n",
      f.runtime);
  std::printf(
      "   neighbour = 1 MiB buffered sequential writes on its own disk; limit = "
      "write_bps %d MiB/s + write_iops %d\n",
      f.neighbour_wbps_mib, f.neighbour_wiops);
  struct Row {
    std::string name;
    IoBench::Victim v;
  };
  std::vector<Row> rows;
  auto step = SteadyClock::now();
  auto solo = b.RunVictim("visolo", "");
  if (!solo.ok()) {
    fail("victim solo", solo.status());
  } else {
    rows.push_back({"solo", *solo});
    rows.back().v.wall_s = MsSince(step) / 1000;
    step = SteadyClock::now();
    auto add = [&](const char* name, Result<IoBench::Victim> r) {
      if (r.ok()) {
        rows.push_back({name, *r});
        rows.back().v.wall_s = MsSince(step) / 1000;
      } else if (rc == 0) {
        fail(name, r.status());
      }
      step = SteadyClock::now();
    };
    if (rc == 0) add("neighbour unthrottled", b.RunWithNeighbour("u", 0, 0, false));
    if (rc == 0) {
      add("neighbour limited (Resources)", b.RunWithNeighbour("t", wbps, wiops, false));
    }
    if (rc == 0 && f.node_default) {
      add("neighbour asks none (node default)", b.RunWithNeighbour("d", 0, 0, true));
    }
    std::printf("   %-40s %12s %12s %12s %12s %8s %8s %9s %6s\n", "", "read p50", "read p99",
                "write p99", "fsync p99", "read", "fsync", "nbr disk", "step");
    std::printf("   %-40s %12s %12s %12s %12s %8s %8s %9s %6s\n", "", "", "", "", "", "p99/solo",
                "p99/solo", "MB/s", "s");
    for (const auto& r : rows) {
      std::printf("   %-40s %12s %12s %12s %12s %8s %8s %9s %6.0f\n", r.name.c_str(),
                  Us(r.v.read_p50_us).c_str(), Us(r.v.read_p99_us).c_str(),
                  Us(r.v.write_p99_us).c_str(), Us(r.v.fsync_p99_us).c_str(),
                  Ratio(r.v.read_p99_us, solo->read_p99_us).c_str(),
                  Ratio(r.v.fsync_p99_us, solo->fsync_p99_us).c_str(),
                  r.v.neighbour_mbps < 0 ? "-" : fmt::format("{:.1f}", r.v.neighbour_mbps).c_str(),
                  r.v.wall_s);
    }
    for (const auto& r : rows) {
      double worst =
          std::max(r.v.read_p99_us / solo->read_p99_us, r.v.fsync_p99_us / solo->fsync_p99_us);
      std::printf(
          "SUMMARY io.victim_p99_ratio[%s] %.2f (read p99 %.0f us, fsync p99 %.0f us; "
          "target <= 1.5 with limits)\n",
          r.name.c_str(), worst, r.v.read_p99_us, r.v.fsync_p99_us);
    }
  }

  if (rc == 0) {
    std::printf("\n== IOPS limit accuracy: fio --direct=1 4 KiB random, libaio qd 8, %d s\n",
                f.iops_runtime);
    struct Acc {
      const char* name;
      bool write;
      int64_t limit;
    };
    for (Acc a : {Acc{"read_iops", false, f.read_iops}, Acc{"write_iops", true, f.write_iops}}) {
      auto step_t0 = SteadyClock::now();
      auto free_run = b.RunIops(std::string("free") + (a.write ? "w" : "r"), a.write, 0, 4);
      auto lim =
          b.RunIops(std::string("lim") + (a.write ? "w" : "r"), a.write, a.limit, f.iops_runtime);
      if (!free_run.ok() || !lim.ok()) {
        fail(a.name, !lim.ok() ? lim.status() : free_run.status());
        break;
      }
      std::printf(
          "   %-10s limit %5lld: measured %8.1f IOPS = %.3f of the limit "
          "(unthrottled %.0f IOPS; step %.0f s)\n",
          a.name, static_cast<long long>(a.limit), *lim, *lim / static_cast<double>(a.limit),
          *free_run, MsSince(step_t0) / 1000);
      std::printf("SUMMARY io.%s_accuracy %.3f (limit %lld, measured %.1f; target 0.90-1.10)\n",
                  a.name, *lim / static_cast<double>(a.limit), static_cast<long long>(a.limit),
                  *lim);
    }
  }
  return rc;
}

}  // namespace
}  // namespace hangar::bench

int main(int argc, char** argv) {
  using namespace hangar::bench;
  auto flags = ParseFlags(argc, argv);
  if (!flags) {
    Usage();
    return 2;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_node_io needs root (namespaces, mounts, cgroups, loop devices)\n");
    return 2;
  }
  hangar::log::Init(hangar::log::Format::kText, hangar::log::Level::kWarn);
  InstallStopHandler();
  int rc = Run(*flags);
  if (StopRequested() && rc == 0) rc = 130;
  return rc;
}
