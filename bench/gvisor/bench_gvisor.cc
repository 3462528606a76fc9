// gVisor tier benchmark: Hangar's gVisor start against a bare `runsc run` of the same bundle,
// host memory per idle sandbox, and (with a fio template) IOPS limit accuracy.
//
//   bench_gvisor [--iterations 10] [--idle 3] [--fio /usr/bin/fio] [--fio-seconds 10]
//
// Start: each iteration interleaves three measurements on the same template and runsc flags:
//   hangar     GvisorDriver::Create (disk from the pool, overlay, cgroup, bundle, runsc run
//              --detach, envd /health) + the first command (`true`) through envd;
//   bare-true  `runsc run` of a bundle generated the same way running /bin/true (foreground, to
//              its exit) — the floor of any runsc start;
//   bare-envd  `runsc run --detach` of the same bundle running envd + /health + `true` through
//              envd: the same work as Hangar without the driver (disk, overlay, cgroup, state).
// Idle memory: K sandboxes created and left idle 2 s; RSS and PSS summed over every process of
// each sandbox's cgroup (runsc-sandbox, its ptrace stubs, runsc-gofer), and the cgroup's own
// memory.usage (which also counts page cache of its disk).
// IOPS: fio --direct=1 4k random reads/writes (psync) of a 256 MiB file on the sandbox's disk
// under a read_iops/write_iops limit of 200, in a busybox template with this host's fio copied
// in (busybox_template.h). Two figures per direction: fio's IOPS inside the sandbox, and the
// operations that reached the sandbox's loop device on the host (/sys/dev/block/M:m/stat) over
// the same window — for writes, until the data is on the device (fio, then `sync` inside and
// on the host). The
// cgroup's throttle acts on the device; runsc 20221219's gofer does not pass O_DIRECT to the
// host, so the two differ and the bench says so.
// Needs root and runsc. Nothing is asserted; figures go to README.md.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "../node/bench_node_common.h"
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "hangar/gvisor/bundle.h"
#include "hangar/gvisor/gvisor_driver.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"

extern char** environ;

namespace hangar::bench {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

Status WaitHealthy(const std::string& socket, std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (::access(socket.c_str(), F_OK) == 0) {
      auto c = envd::Client::Create({.unix_socket = socket}, {.timeout = 1000ms});
      if (c.ok() && c->Health().ok()) return Status::Ok();
    }
    std::this_thread::sleep_for(2ms);
  }
  return Status::DeadlineExceeded("envd did not answer on " + socket);
}

Status RunTrue(const std::string& socket) {
  HANGAR_ASSIGN_OR_RETURN(auto c, envd::Client::Create({.unix_socket = socket}));
  HANGAR_ASSIGN_OR_RETURN(envd::ExitInfo e, c.Run({.cmd = "/bin/true", .user = "root"}));
  if (e.exit_code != 0) return Status::Internal("true exited " + std::to_string(e.exit_code));
  return Status::Ok();
}

std::vector<std::string> Concat(std::vector<std::string> a, std::vector<std::string> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs argv with stdin/stdout/stderr on /dev/null and waits (`runsc run --detach` hands its
// stdio to the container, so a captured pipe would never see EOF).
Status RunQuiet(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (int fd = 0; fd < 3; ++fd) {
    posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Status::FromErrno(rc, "posix_spawn(" + argv[0] + ")");
  Child child = Child::Adopt(pid);
  HANGAR_ASSIGN_OR_RETURN(ExitStatus st, child.WaitFor(std::chrono::seconds(60)));
  if (!st.success()) return Status::Internal(argv[0] + " " + st.ToString());
  return Status::Ok();
}

// kB of a field in /proc/<pid>/smaps_rollup or status.
uint64_t ProcKb(pid_t pid, const char* file, const char* field) {
  auto text = ReadFile(fmt::format("/proc/{}/{}", pid, file));
  if (!text.ok()) return 0;
  size_t at = text->find(std::string(field) + ":");
  if (at == std::string::npos) return 0;
  return std::strtoull(text->c_str() + at + std::strlen(field) + 1, nullptr, 10);
}

std::vector<pid_t> CgroupPids(const std::string& root, const std::string& id) {
  std::vector<pid_t> pids;
  auto text = ReadFile(fmt::format("/sys/fs/cgroup/memory/{}/{}/cgroup.procs", root, id));
  if (!text.ok()) text = ReadFile(fmt::format("/sys/fs/cgroup/{}/{}/cgroup.procs", root, id));
  if (!text.ok()) return pids;
  size_t s = 0;
  while (s < text->size()) {
    size_t e = text->find('\n', s);
    if (e == std::string::npos) e = text->size();
    if (e > s) pids.push_back(std::stoi(text->substr(s, e - s)));
    s = e + 1;
  }
  return pids;
}

// The (empty) cgroup roots this run made, in every hierarchy.
void RemoveCgroupRoots(const std::vector<std::string>& roots) {
  std::error_code ec;
  for (const auto& h : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
    if (h.is_symlink(ec)) continue;
    for (const auto& r : roots) ::rmdir((h.path() / r).c_str());
  }
}

int Main(int argc, char** argv) {
  int iterations = 10;
  int idle = 3;
  std::string fio_binary = "/usr/bin/fio";
  int fio_seconds = 10;
  CLI::App app{"gVisor tier benchmark"};
  app.add_option("--iterations", iterations);
  app.add_option("--idle", idle);
  app.add_option("--fio", fio_binary,
                 "host fio copied into the template; \"\" skips the IOPS part");
  app.add_option("--fio-seconds", fio_seconds);
  CLI11_PARSE(app, argc, argv);
  InstallStopHandler();

  const std::string envd = SiblingBinary("envd");
  if (envd.empty()) {
    std::fprintf(stderr, "bench_gvisor: build the envd target (it must sit next to this binary)\n");
    return 1;
  }
  auto tmp = TempDir::Make("hgvb-", "/var/tmp");
  if (!tmp.ok()) return 1;
  storage::TemplateStoreOptions so;
  so.root = tmp->path() + "/templates";
  auto store = storage::TemplateStore::Open(so);
  if (!store.ok()) return 1;
  auto tmpl = ImportMiniTemplate(*store, "mini", tmp->path() + "/scratch");
  if (!tmpl.ok()) {
    std::fprintf(stderr, "template: %s\n", tmpl.status().ToString().c_str());
    return 1;
  }
  bool have_fio = false;
  if (!fio_binary.empty()) {
    auto t = node::testing::ImportBusyboxTemplate(*store, tmp->path() + "/fio-scratch", "fio",
                                                  {fio_binary});
    if (!t.ok()) std::fprintf(stderr, "fio template: %s\n", t.status().ToString().c_str());
    have_fio = t.ok();
  }

  gvisor::GvisorDriverOptions o;
  o.data_dir = tmp->path() + "/d";
  o.templates = &*store;
  o.envd_path = envd;
  o.envd_args = {"--default-user", "root"};
  o.cgroup_root = fmt::format("hgvb{}", ::getpid());
  o.disk_pool.targets = {{64, 2}};
  // Removes this run's (empty) cgroup roots on every way out, after the drivers below are gone.
  struct RootsGuard {
    std::string root;
    ~RootsGuard() { RemoveCgroupRoots({root, root + "f"}); }
  } roots_guard{o.cgroup_root};
  auto driver = gvisor::NewGvisorDriver(o);
  if (!driver.ok()) {
    std::fprintf(stderr, "driver: %s\n", driver.status().ToString().c_str());
    return 1;
  }
  const std::vector<std::string> prefix = gvisor::GvisorRunscPrefix(**driver);
  std::printf("gVisor tier benchmark: platform %s, %s\n", gvisor::GvisorPlatform(**driver).c_str(),
              LoadLine().c_str());

  // The bare bundles: the same generator, the template copied once into a writable root (runsc
  // creates mount points in it), no disk.
  const std::string bare = tmp->path() + "/bare";
  const std::string bare_root = bare + "/rootfs";
  const std::string bare_run = bare + "/run";
  (void)MakeDirs(bare_run);
  if (auto cp = RunChecked({"cp", "-a", tmpl->rootfs, bare_root}); !cp.ok()) return 1;
  auto write_bundle = [&](const std::string& dir, const std::string& id,
                          std::vector<std::string> args) -> Status {
    HANGAR_TRY(MakeDirs(dir));
    gvisor::BundleSpec b;
    b.sandbox.id = id;
    b.sandbox.template_name = "mini";
    b.sandbox.resources.memory_mb = 512;
    b.rootfs = bare_root;
    b.init_host_path = envd;
    b.argv = std::move(args);
    b.socket_dir = bare_run;
    b.cgroups_path = fmt::format("/{}/{}", o.cgroup_root, id);
    HANGAR_ASSIGN_OR_RETURN(Json config, gvisor::MakeOciConfig(b));
    return WriteFile(dir + "/config.json", config.dump(1));
  };

  std::vector<double> hangar_ms, destroy_ms, bare_true_ms, bare_envd_ms;
  for (int i = 0; i < iterations && !StopRequested(); ++i) {
    node::SandboxSpec spec;
    spec.id = fmt::format("b{}", i);
    spec.template_name = "mini";
    spec.resources.disk_mb = 64;
    auto t0 = SteadyClock::now();
    auto sb = (*driver)->Create(spec);
    if (!sb.ok()) {
      std::fprintf(stderr, "create: %s\n", sb.status().ToString().c_str());
      return 1;
    }
    if (Status st = RunTrue((*sb)->Envd().unix_socket); !st.ok()) {
      std::fprintf(stderr, "first command: %s\n", st.ToString().c_str());
      return 1;
    }
    hangar_ms.push_back(MsSince(t0));
    t0 = SteadyClock::now();
    (void)(*sb)->Destroy();
    destroy_ms.push_back(MsSince(t0));

    const std::string tid = fmt::format("t{}", i);
    if (!write_bundle(bare + "/" + tid, tid, {"/bin/true"}).ok()) return 1;
    t0 = SteadyClock::now();
    Status bt_ok = RunQuiet(Concat(
        prefix, {"--network=none", "--host-uds=create", "run", "--bundle", bare + "/" + tid, tid}));
    bare_true_ms.push_back(MsSince(t0));
    if (!bt_ok.ok()) {
      std::fprintf(stderr, "bare runsc run: %s\n", bt_ok.ToString().c_str());
      return 1;
    }
    (void)RunCommand(Concat(prefix, {"delete", "--force", tid}));

    const std::string eid = fmt::format("e{}", i);
    if (!write_bundle(bare + "/" + eid, eid,
                      {gvisor::kInitPathInside, "--listen", "unix:/run/envd/envd.sock",
                       "--relay-from", "/run/hangar/envd.sock", "--default-user", "root"})
             .ok()) {
      return 1;
    }
    ::unlink((bare_run + "/envd.sock").c_str());
    t0 = SteadyClock::now();
    Status ok = RunQuiet(Concat(prefix, {"--network=none", "--host-uds=create", "run", "--detach",
                                         "--bundle", bare + "/" + eid, eid}));
    if (ok.ok()) ok = WaitHealthy(bare_run + "/envd.sock", 20s);
    if (ok.ok()) ok = RunTrue(bare_run + "/envd.sock");
    bare_envd_ms.push_back(MsSince(t0));
    (void)RunCommand(Concat(prefix, {"delete", "--force", eid}));
    if (!ok.ok()) {
      std::fprintf(stderr, "bare envd: %s\n", ok.ToString().c_str());
      return 1;
    }
  }
  Summary h = Summarize(hangar_ms), bt = Summarize(bare_true_ms), be = Summarize(bare_envd_ms);
  std::printf("\n== start: create -> first command (n=%d) ==\n", iterations);
  std::printf("hangar gvisor create+first cmd  %s\n", FormatSummary(h).c_str());
  std::printf("bare runsc run /bin/true        %s\n", FormatSummary(bt).c_str());
  std::printf("bare runsc run envd + first cmd %s\n", FormatSummary(be).c_str());
  std::printf("hangar destroy                  %s\n", FormatSummary(Summarize(destroy_ms)).c_str());
  std::printf("ratio hangar / bare /bin/true:  median %.2f  p99 %.2f\n", h.median / bt.median,
              h.p99 / bt.p99);
  std::printf("ratio hangar / bare envd+cmd:   median %.2f  p99 %.2f   (promise: <= 1.1)\n",
              h.median / be.median, h.p99 / be.p99);

  // Idle memory.
  std::vector<node::SandboxPtr> idle_sbs;
  for (int i = 0; i < idle && !StopRequested(); ++i) {
    node::SandboxSpec spec;
    spec.id = fmt::format("idle{}", i);
    spec.template_name = "mini";
    spec.resources.disk_mb = 64;
    auto sb = (*driver)->Create(spec);
    if (!sb.ok()) {
      std::fprintf(stderr, "idle create: %s\n", sb.status().ToString().c_str());
      break;
    }
    (void)RunTrue((*sb)->Envd().unix_socket);
    idle_sbs.push_back(std::move(*sb));
  }
  std::this_thread::sleep_for(2s);
  std::vector<double> rss, pss, cg, procs;
  for (auto& sb : idle_sbs) {
    uint64_t r = 0, p = 0;
    auto pids = CgroupPids(o.cgroup_root, sb->Info().id);
    for (pid_t pid : pids) {
      r += ProcKb(pid, "smaps_rollup", "Rss");
      p += ProcKb(pid, "smaps_rollup", "Pss");
    }
    rss.push_back(static_cast<double>(r) / 1024);
    pss.push_back(static_cast<double>(p) / 1024);
    procs.push_back(static_cast<double>(pids.size()));
    auto u = sb->GetUsage();
    cg.push_back(u.ok() ? static_cast<double>(u->memory_bytes) / (1 << 20) : 0);
  }
  std::printf("\n== host memory per idle sandbox (n=%zu) ==\n", idle_sbs.size());
  std::printf("RSS  %s\n", FormatSummary(Summarize(rss), "MiB").c_str());
  std::printf("PSS  %s\n", FormatSummary(Summarize(pss), "MiB").c_str());
  std::printf("cgroup memory usage %s\n", FormatSummary(Summarize(cg), "MiB").c_str());
  std::printf("host processes per sandbox %s\n", FormatSummary(Summarize(procs), "").c_str());
  for (auto& sb : idle_sbs) (void)sb->Destroy();

  // IOPS accuracy.
  if (have_fio) {
    constexpr int kLimit = 200;
    std::printf("\n== IOPS limit accuracy (fio --direct=1, 4k, psync, %d s, limit %d) ==\n",
                fio_seconds, kLimit);
    // Completed reads / writes of a block device (fields 1 and 5 of its stat).
    auto device_ops = [](const std::string& dev, bool read) -> uint64_t {
      auto text = ReadFile("/sys/dev/block/" + dev + "/stat");
      if (!text.ok()) return 0;
      unsigned long long f[5] = {0, 0, 0, 0, 0};
      std::sscanf(text->c_str(), "%llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3], &f[4]);
      return read ? f[0] : f[4];
    };
    auto run = [](const node::Sandbox& sb, std::vector<std::string> args, std::string* out) {
      auto c = envd::Client::Create({.unix_socket = sb.Envd().unix_socket}, {.timeout = 600s});
      if (!c.ok()) return c.status();
      std::string err;
      auto done = c->Run({.cmd = args[0],
                          .args = std::vector<std::string>(args.begin() + 1, args.end()),
                          .user = "root"},
                         {.on_stdout = [&](std::string_view s) { *out += s; },
                          .on_stderr = [&](std::string_view s) { err += s; }});
      if (!done.ok()) return done.status();
      if (done->exit_code != 0) return Status::Internal(args[0] + " failed: " + err);
      return Status::Ok();
    };
    for (bool read : {true, false}) {
      node::SandboxSpec spec;
      spec.id = read ? "fior" : "fiow";
      spec.template_name = "fio";
      spec.resources.disk_mb = 1024;
      spec.resources.memory_mb = 512;
      (read ? spec.resources.read_iops : spec.resources.write_iops) = kLimit;
      auto sb = (*driver)->Create(spec);
      if (!sb.ok()) {
        std::fprintf(stderr, "fio create: %s\n", sb.status().ToString().c_str());
        break;
      }
      const std::string dev = (*sb)->Info().disk_device;
      std::string out;
      // The file first (sequential 1 MiB writes, flushed), then the host's caches dropped so
      // that reads start cold on the host.
      Status st = run(**sb,
                      {"/usr/bin/fio", "--name=lay", "--filename=/root/f", "--size=256M",
                       "--rw=write", "--bs=1M", "--end_fsync=1", "--thread"},
                      &out);
      (void)RunChecked({"/bin/sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"});
      out.clear();
      const uint64_t before = device_ops(dev, read);
      const auto t0 = SteadyClock::now();
      // Evidence for O_DIRECT: 3 s into the run, the host-side open files of the sandbox's
      // processes (sentry, gofer) that name the test file, and whether their flags have O_DIRECT.
      std::string probe = "no host process had the file open";
      std::thread prober([&] {
        std::this_thread::sleep_for(std::chrono::seconds(std::min(3, fio_seconds / 2)));
        std::vector<std::string> seen;
        for (pid_t pid : CgroupPids(o.cgroup_root, spec.id)) {
          std::error_code ec;
          for (const auto& fd :
               std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), ec)) {
            std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
            if (ec || target.size() < 7 || target.substr(target.size() - 7) != "/root/f") {
              continue;
            }
            auto info =
                ReadFile(fmt::format("/proc/{}/fdinfo/{}", pid, fd.path().filename().string()));
            size_t at = info.ok() ? info->find("flags:") : std::string::npos;
            if (at == std::string::npos) continue;
            const unsigned long flags = std::strtoul(info->c_str() + at + 6, nullptr, 8);
            seen.push_back(fmt::format("pid {} fd {} flags 0{:o} O_DIRECT={}", pid,
                                       fd.path().filename().string(), flags,
                                       (flags & O_DIRECT) ? "yes" : "no"));
          }
        }
        if (!seen.empty()) {
          probe.clear();
          for (const auto& x : seen) probe += (probe.empty() ? "" : "; ") + x;
        }
      });
      if (st.ok()) {
        st = run(
            **sb,
            {"/usr/bin/fio", "--name=j", "--filename=/root/f", "--size=256M", "--direct=1",
             read ? "--rw=randread" : "--rw=randwrite", "--bs=4k", "--ioengine=psync", "--thread",
             "--time_based", fmt::format("--runtime={}", fio_seconds), "--output-format=json"},
            &out);
      }
      prober.join();
      std::string ignored;
      if (st.ok() && !read) {
        // The sandbox's sync reaches the gofer's files, whose dirty pages the host then writes
        // back to the loop device: a host sync too, so the window ends with the data on it.
        st = run(**sb, {"/bin/sh", "-c", "sync"}, &ignored);
        (void)RunChecked({"sync"}, std::chrono::minutes(10));
      }
      const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
      const uint64_t after = device_ops(dev, read);
      auto j = Json::parse(out.substr(std::min(out.find('{'), out.size())), nullptr, false);
      const char* rw = read ? "randread" : "randwrite";
      if (!st.ok() || j.is_discarded() || !j.contains("jobs")) {
        std::printf("%s: fio failed: %s %s\n", rw, st.ToString().c_str(),
                    out.substr(0, 400).c_str());
      } else {
        const double iops = j["jobs"][0][read ? "read" : "write"]["iops"].get<double>();
        const double dev_iops = static_cast<double>(after - before) / secs;
        // fio's own operation count against the device's (rates differ in their windows).
        const double fio_ops = j["jobs"][0][read ? "read" : "write"].value("total_ios", 0.0);
        const double dev_ops = static_cast<double>(after - before);
        std::printf("%-9s limit %d  fio (inside) %7.1f IOPS = %.2f x limit\n", rw, kLimit, iops,
                    iops / kLimit);
        std::printf("%-9s host fds of the file during the run: %s\n", rw, probe.c_str());
        std::printf(
            "%-9s limit %d  loop device %s (host) %llu %s in %.1f s = %6.1f ops/s = "
            "%.2f x limit\n",
            rw, kLimit, dev.c_str(), static_cast<unsigned long long>(after - before),
            read ? "reads" : "writes", secs, dev_iops, dev_iops / kLimit);
        if (std::abs(iops / kLimit - 1) <= 0.10) {
          std::printf(
              "%-9s fio's figure is within ±10 %% of the limit; the device saw %.2f of fio's "
              "operations%s\n",
              rw, fio_ops > 0 ? dev_ops / fio_ops : 0.0,
              read ? " (the host's page cache was dropped before the run and 4k random reads of "
                     "256 MiB rarely hit what earlier reads cached: each read reaches the device, "
                     "whether or not O_DIRECT does)"
                   : "");
        } else {
          std::printf(
              "%-9s NOT a ±10 %% figure: fio saw %.1fx the operations that reached the device; "
              "runsc's gofer does not open the sandbox's files with O_DIRECT, so fio's I/O is "
              "served by the sentry's and the host's page cache%s, and the limit governs only "
              "what reaches the loop device\n",
              rw, dev_ops > 0 ? fio_ops / dev_ops : 0.0,
              read ? "" : " and written back later (here forced by sync inside and on the host)");
        }
      }
      (void)(*sb)->Destroy();
    }
  }
  return 0;
}

}  // namespace
}  // namespace hangar::bench

int main(int argc, char** argv) { return hangar::bench::Main(argc, argv); }
