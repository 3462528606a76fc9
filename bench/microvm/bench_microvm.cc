// bench_microvm: the isolated tier on this host (TCG without /dev/kvm).
//   1. time to first command: cold boot vs snapshot restore (Create -> envd runs `echo`),
//      medians and max, and the ratio restore/cold measured in the same run;
//   2. host memory per idle VM (the VMM cgroup's memory and QEMU's RSS), against the guest RAM
//      it was given;
//   3. IOPS limit accuracy: 4 KiB direct reads of the guest's disk (busybox dd iflag=direct)
//      under a read_iops limit, measured rate / limit.
// Needs root, busybox-static, QEMU, the guest kernel cache and the envd binary next to this
// one (or $HANGAR_ENVD). Usage: bench_microvm [runs=3] [idle_vms=2] [iops_limit=200]
// Benchmark, not a test: prints figures, asserts nothing.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "hangar/microvm/microvm_driver.h"
#include "hangar/node/cgroup.h"
#include "hangar/storage/template_store.h"

using namespace hangar;
using Ms = std::chrono::duration<double, std::milli>;

namespace {

[[noreturn]] void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "bench_microvm: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(1);
}

Result<storage::TemplateInfo> ImportTemplate(storage::TemplateStore& store,
                                             const std::string& work) {
  const std::string root = work + "/tmpl";
  for (const char* d : {"/bin", "/etc", "/home/user", "/tmp", "/proc", "/dev", "/root", "/sys"}) {
    HANGAR_TRY(MakeDirs(root + d));
  }
  HANGAR_TRY(RunChecked({"cp", "/bin/busybox", root + "/bin/busybox"}).status());
  for (const char* a : {"sh", "echo", "dd", "cat", "sleep"}) {
    const std::string link = root + "/bin/" + a;
    if (::symlink("busybox", link.c_str()) != 0) return Status::FromErrno(errno, "symlink");
  }
  HANGAR_TRY(WriteFile(root + "/etc/passwd",
                       "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"));
  HANGAR_TRY(WriteFile(root + "/etc/group", "root:x:0:\nuser:x:1000:\n"));
  const std::string tar = work + "/tmpl.tar";
  HANGAR_TRY(RunChecked({"tar", "-C", root, "-cf", tar, "."}).status());
  return store.ImportTarball("bench", tar);
}

Result<std::string> Run(const node::Sandbox& sb, const std::string& script) {
  node::EnvdEndpoint ep = sb.Envd();
  HANGAR_ASSIGN_OR_RETURN(
      envd::Client c,
      envd::Client::Create({"", ep.tcp, ep.access_token}, {.timeout = std::chrono::seconds(120)}));
  std::string out, err;
  HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo done,
                          c.Run({.cmd = "/bin/sh", .args = {"-c", script}, .user = "root"},
                                {.on_stdout = [&](std::string_view s) { out += s; },
                                 .on_stderr = [&](std::string_view s) { err += s; }}));
  if (done.exit_code != 0) return Status::Internal("command failed: " + err);
  return out + err;
}

void Print(const char* what, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::printf("%-34s n=%zu  p50 %8.0f ms  max %8.0f ms\n", what, v.size(), v[v.size() / 2],
              v.back());
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 3;
  const int idle_vms = argc > 2 ? std::atoi(argv[2]) : 2;
  const int iops_limit = argc > 3 ? std::atoi(argv[3]) : 200;
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
  if (auto t = ImportTemplate(*store, tmp->path()); !t.ok()) Die("template", t.status());
  auto layout = node::DetectCgroupLayout();
  if (!layout.ok()) Die("cgroups", layout.status());
  node::CgroupOptions co;
  co.root = "hangar-bench-microvm";
  auto cg = node::MakeCgroupBackend(*layout, co);
  if (!cg.ok()) Die("cgroups", cg.status());
  microvm::MicroVmDriverOptions o;
  o.data_dir = tmp->path() + "/data";
  o.templates = &*store;
  o.cgroups = cg->get();
  o.envd_path = envd_path;
  auto driver = microvm::NewMicroVmDriver(o);
  if (!driver.ok()) Die("driver", driver.status());
  node::Driver& d = **driver;
  auto spec = [](const std::string& id, bool cold) {
    node::SandboxSpec s;
    s.id = id;
    s.template_name = "bench";
    s.resources.cpu_millis = 1000;
    s.resources.memory_mb = 256;
    s.resources.disk_mb = 256;
    if (cold) s.env = {{"COLD", "1"}};  // a non-empty env never restores
    return s;
  };
  auto first_command = [&](const node::SandboxSpec& s) {
    auto t0 = std::chrono::steady_clock::now();
    auto sb = d.Create(s);
    if (!sb.ok()) Die("create " + s.id, sb.status());
    auto out = Run(**sb, "echo ready");
    if (!out.ok()) Die("first command", out.status());
    double ms = Ms(std::chrono::steady_clock::now() - t0).count();
    (void)(*sb)->Destroy();
    return ms;
  };

  std::printf("microVM (QEMU %s), %d runs each\n", "TCG or KVM per /dev/kvm", runs);
  std::vector<double> cold, warm;
  for (int i = 0; i < runs; ++i)
    cold.push_back(first_command(spec(fmt::format("cold{}", i), true)));
  auto s0 = std::chrono::steady_clock::now();
  if (Status st = microvm::PrepareSnapshot(d, "bench", 1, 256); !st.ok()) Die("snapshot", st);
  double snap_ms = Ms(std::chrono::steady_clock::now() - s0).count();
  for (int i = 0; i < runs; ++i)
    warm.push_back(first_command(spec(fmt::format("snap{}", i), false)));
  Print("cold boot -> first command", cold);
  Print("snapshot restore -> first command", warm);
  std::printf("%-34s %8.0f ms (once per template/size)\n", "snapshot build", snap_ms);
  std::printf("ratio restore/cold (p50)           %.3f  (target <= 0.25)\n",
              Median(warm) / Median(cold));

  // Idle memory: restored VMs left alone for a few seconds.
  std::vector<node::SandboxPtr> idle;
  for (int i = 0; i < idle_vms; ++i) {
    auto sb = d.Create(spec(fmt::format("idle{}", i), false));
    if (!sb.ok()) Die("create idle", sb.status());
    idle.push_back(std::move(*sb));
  }
  std::this_thread::sleep_for(std::chrono::seconds(5));
  std::vector<double> cg_mb, rss_mb;
  for (auto& sb : idle) {
    auto u = sb->GetUsage();
    if (u.ok()) cg_mb.push_back(static_cast<double>(u->memory_bytes) / (1 << 20));
    auto status = ReadFile(fmt::format("/proc/{}/status", sb->Info().init_pid));
    if (status.ok()) {
      size_t p = status->find("VmRSS:");
      if (p != std::string::npos) rss_mb.push_back(std::atof(status->c_str() + p + 6) / 1024);
    }
  }
  std::printf("idle VM host memory (cgroup)       p50 %6.1f MiB  (guest RAM 256 MiB)\n",
              Median(cg_mb));
  std::printf("idle VM QEMU RSS                   p50 %6.1f MiB\n", Median(rss_mb));
  for (auto& sb : idle) (void)sb->Destroy();

  // IOPS accuracy: 4 KiB direct reads of the raw disk under a read_iops limit.
  auto s = spec("iops", false);
  s.resources.read_iops = iops_limit;
  auto sb = d.Create(s);
  if (!sb.ok()) Die("create iops", sb.status());
  const int count = iops_limit * 5;
  auto t0 = std::chrono::steady_clock::now();
  auto out = Run(**sb, fmt::format("dd if=/dev/vda of=/dev/null bs=4096 count={} iflag=direct "
                                   "2>&1",
                                   count));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!out.ok()) Die("dd", out.status());
  double rate = count / secs;
  std::printf("read IOPS limit %d: measured %.0f ops/s = %.2f x limit (incl. one envd call)\n",
              iops_limit, rate, rate / iops_limit);
  (void)(*sb)->Destroy();
  driver->reset();
  (void)(*cg)->RemoveRoot();
  return 0;
}
