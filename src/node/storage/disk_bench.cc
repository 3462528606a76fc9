// storage_disk_bench: what a sandbox start pays for its disk, cold vs pooled, against the
// shell-tool path (truncate + mkfs.ext4 defaults + losetup + mount) measured in the same run.
// Needs root. Usage: storage_disk_bench [size_mb=1024] [iterations=20] [dir=/var/tmp]
// Benchmarks are not tests: this prints numbers and asserts nothing.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "hangar/base/child.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/disk.h"
#include "hangar/storage/disk_pool.h"
#include "hangar/storage/recovery.h"

using namespace hangar;
using namespace hangar::storage;
using Clock = std::chrono::steady_clock;

namespace {

struct Series {
  std::string name;
  std::vector<double> ms;
  double Median() const {
    auto v = ms;
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
  }
  double P99() const {
    auto v = ms;
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[std::min(v.size() - 1, (v.size() * 99) / 100)];
  }
};

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void Print(const Series& s, double floor_ms) {
  std::printf("%-44s median %8.3f ms  p99 %8.3f ms  (%5.1fx fork+exec)\n", s.name.c_str(),
              s.Median(), s.P99(), s.Median() / floor_ms);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "needs root\n");
    return 2;
  }
  const uint64_t size_mb = argc > 1 ? std::stoull(argv[1]) : 1024;
  const int n = argc > 2 ? std::stoi(argv[2]) : 20;
  const std::string parent = argc > 3 ? argv[3] : "/var/tmp";
  auto tmp = TempDir::Make("hangar-disk-bench-", parent);
  if (!tmp.ok()) return Fail(tmp.status());
  const std::string disks = DisksDir(tmp->path());
  const std::string mnt = tmp->path() + "/mnt";
  if (auto s = MakeDirs(disks); !s.ok()) return Fail(s);
  if (auto s = MakeDirs(mnt); !s.ok()) return Fail(s);

  Series floor{"fork+exec /bin/true (floor)", {}};
  Series create{"Disk::Create (sparse + mkfs.ext4)", {}},
      attach{"Disk::Attach (LOOP_CONFIGURE)", {}},
      attach_legacy{"Disk::Attach (LOOP_SET_FD legacy)", {}}, mount{"Disk::Mount", {}},
      destroy{"Disk::Destroy (umount + detach + unlink)", {}},
      cold{"cold: create+attach+mount+destroy", {}}, pooled{"pooled: Take + Mount", {}},
      shell{"shell: truncate+mkfs+losetup+mount+umount+losetup -d", {}};

  for (int i = 0; i < n; ++i) {
    auto a = Clock::now();
    (void)RunCommand({"/bin/true"});
    floor.ms.push_back(Ms(a, Clock::now()));
  }
  for (int i = 0; i < n; ++i) {
    const std::string img = fmt::format("{}/b{}.img", disks, i);
    auto t0 = Clock::now();
    auto d = Disk::Create(img, size_mb);
    if (!d.ok()) return Fail(d.status());
    auto t1 = Clock::now();
    if (auto s = d->Attach({.force_legacy = (i % 2 == 1)}); !s.ok()) return Fail(s);
    auto t2 = Clock::now();
    if (auto s = d->Mount(mnt); !s.ok()) return Fail(s);
    auto t3 = Clock::now();
    if (auto s = d->Destroy(); !s.ok()) return Fail(s);
    auto t4 = Clock::now();
    create.ms.push_back(Ms(t0, t1));
    (i % 2 == 1 ? attach_legacy : attach).ms.push_back(Ms(t1, t2));
    mount.ms.push_back(Ms(t2, t3));
    destroy.ms.push_back(Ms(t3, t4));
    cold.ms.push_back(Ms(t0, t4));
  }
  for (int i = 0; i < n; ++i) {
    const std::string img = fmt::format("{}/s{}.img", disks, i);
    auto t0 = Clock::now();
    auto run = [](const std::vector<std::string>& cmd) {
      auto r = RunChecked(cmd);
      if (!r.ok()) std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return r.ok() ? *r : std::string();
    };
    run({"truncate", "-s", fmt::format("{}M", size_mb), img});
    run({"mkfs.ext4", "-F", "-q", img});
    std::string dev = run({"losetup", "--direct-io=on", "-f", "--show", img});
    while (!dev.empty() && dev.back() == '\n') dev.pop_back();
    run({"mount", "-o", "nodev,nosuid", dev, mnt});
    run({"umount", mnt});
    run({"losetup", "-d", dev});
    ::unlink(img.c_str());
    shell.ms.push_back(Ms(t0, Clock::now()));
  }
  {
    auto pool = DiskPool::Create({.data_dir = tmp->path(), .targets = {{size_mb, size_t(n)}}});
    if (!pool.ok()) return Fail(pool.status());
    if (auto r = (*pool)->Refill(); !r.ok()) return Fail(r.status());
    for (int i = 0; i < n; ++i) {
      auto t0 = Clock::now();
      auto d = (*pool)->Take(size_mb);
      if (!d.ok()) return Fail(d.status());
      if (auto s = d->Mount(mnt); !s.ok()) return Fail(s);
      pooled.ms.push_back(Ms(t0, Clock::now()));
      (void)d->Destroy();
    }
  }
  std::printf("disk size %llu MiB, %d iterations, images in %s\n",
              static_cast<unsigned long long>(size_mb), n, parent.c_str());
  const double f = floor.Median();
  for (const Series* s :
       {&floor, &create, &attach, &attach_legacy, &mount, &destroy, &cold, &shell, &pooled}) {
    Print(*s, f);
  }
  std::printf("ratio cold / pooled: %.0fx; shell / cold: %.2fx\n", cold.Median() / pooled.Median(),
              shell.Median() / cold.Median());
  return 0;
}
