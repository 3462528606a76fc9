#include "bench_node_common.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/mount.h"
#include "hangar/storage/loop_device.h"

namespace hangar::bench {

namespace fs = std::filesystem;

Summary Summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(n)));
  s.p99 = v[std::clamp<size_t>(rank, 1, n) - 1];
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(n);
  s.min = v.front();
  s.max = v.back();
  return s;
}

std::string FormatSummary(const Summary& s, const char* unit) {
  return fmt::format("median {:8.2f} {}  p99 {:8.2f} {}  (n={})", s.median, unit, s.p99, unit, s.n);
}

namespace {
std::atomic<bool> g_stop{false};
void OnStop(int) { g_stop.store(true); }
std::atomic<uint32_t> g_node_counter{0};
}  // namespace

void InstallStopHandler() {
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
}

bool StopRequested() { return g_stop.load(); }

std::string TemplateCacheDir() { return storage::TemplateCacheDirFromEnv(); }

std::string SiblingBinary(const std::string& name) {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  std::string p = (self.parent_path() / name).string();
  return ::access(p.c_str(), X_OK) == 0 ? p : "";
}

// --- the mini template ----------------------------------------------------------------------

namespace {

// Paths ldd prints for a binary: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
// "/lib64/ld-linux-x86-64.so.2 (0x...)".
Result<std::vector<std::string>> SharedLibraries(const std::string& binary) {
  HANGAR_ASSIGN_OR_RETURN(std::string out, RunChecked({"ldd", binary}));
  std::vector<std::string> libs;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string w;
    while (words >> w) {
      if (!w.empty() && w[0] == '/') {
        libs.push_back(w);
        break;
      }
    }
  }
  return libs;
}

Status CopyFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::create_directories(fs::path(to).parent_path(), ec);
  fs::copy_file(fs::canonical(from, ec), to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Status::Internal(fmt::format("copy {} -> {}: {}", from, to, ec.message()));
  return Status::Ok();
}

}  // namespace

Result<storage::TemplateInfo> ImportMiniTemplate(storage::TemplateStore& store,
                                                 const std::string& name,
                                                 const std::string& scratch) {
  if (auto existing = store.Get(name); existing.ok()) return existing;
  if (::access("/bin/busybox", X_OK) != 0) {
    return Status::FailedPrecondition("needs /bin/busybox (apt-get install busybox-static)");
  }
  const std::string root = scratch + "/rootfs";
  for (const char* d : {"/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/etc", "/home/user",
                        "/tmp", "/proc", "/dev", "/sys", "/root", "/var/tmp", "/run"}) {
    HANGAR_TRY(MakeDirs(root + d));
  }
  for (auto [link, target] : {std::pair{"/bin", "usr/bin"}, std::pair{"/sbin", "usr/bin"},
                              std::pair{"/lib", "usr/lib"}, std::pair{"/lib64", "usr/lib64"}}) {
    if (::symlink(target, (root + link).c_str()) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, fmt::format("symlink({})", link));
    }
  }
  HANGAR_TRY(CopyFile("/bin/busybox", root + "/usr/bin/busybox"));
  for (const char* applet : {"sh", "sleep", "cat", "echo", "ls", "id", "hostname", "env"}) {
    std::string l = root + "/usr/bin/" + applet;
    if (::symlink("busybox", l.c_str()) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, fmt::format("symlink({})", l));
    }
  }
  // The host's own dynamic /usr/bin/true and exactly the loader and libc it was linked with.
  HANGAR_TRY(CopyFile("/usr/bin/true", root + "/usr/bin/true"));
  HANGAR_ASSIGN_OR_RETURN(auto libs, SharedLibraries("/usr/bin/true"));
  for (const auto& lib : libs) HANGAR_TRY(CopyFile(lib, root + lib));
  ::chmod((root + "/tmp").c_str(), 01777);
  HANGAR_TRY(WriteFile(root + "/etc/passwd",
                       "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"));
  HANGAR_TRY(WriteFile(root + "/etc/group", "root:x:0:\ntty:x:5:\nuser:x:1000:\n"));
  if (::chown((root + "/home/user").c_str(), 1000, 1000) != 0) {
    return Status::FromErrno(errno, "chown(home/user)");
  }
  const std::string tar = scratch + "/mini.tar";
  HANGAR_TRY(RunChecked({"tar", "-C", root, "-cf", tar, "."}).status());
  return store.ImportTarball(name, tar);
}

// --- BenchNode ---------------------------------------------------------------------------------

std::string Leaks::ToString() const {
  return fmt::format("loops={} mounts={} cgroups={} uid_leases={} sandbox_dirs={}", loops, mounts,
                     cgroups, leases, sandbox_dirs);
}

Result<std::unique_ptr<BenchNode>> BenchNode::Open(BenchNodeOptions options) {
  if (!options.templates || !options.seccomp) {
    return Status::InvalidArgument("BenchNode needs templates and seccomp");
  }
  std::unique_ptr<BenchNode> n(new BenchNode());
  n->o_ = std::move(options);
  uint32_t k = g_node_counter.fetch_add(1);
  HANGAR_ASSIGN_OR_RETURN(n->tmp_,
                          TempDir::Make(fmt::format("hangar-bench-{}-", n->o_.tag), "/var/tmp"));
  n->data_ = n->tmp_.path() + "/data";
  HANGAR_TRY(MakeDirs(n->data_));

  HANGAR_ASSIGN_OR_RETURN(node::CgroupLayout layout, node::DetectCgroupLayout());
  node::CgroupOptions co;
  co.root = fmt::format("hangar-bench-{}-{}", n->o_.tag, ::getpid());
  HANGAR_ASSIGN_OR_RETURN(n->cgroups_, node::MakeCgroupBackend(layout, co));

  node::IdAllocatorOptions io;
  io.state_dir = n->data_ + "/ids";
  // Host ids far above the tests' ranges (1'000'000+), 80 M ids per node of this process.
  io.base = n->o_.id_base ? n->o_.id_base : 2'100'000'000u + (k % 24) * 80'000'000u;
  io.slots = std::min<uint32_t>(n->o_.id_slots, 1200);
  HANGAR_ASSIGN_OR_RETURN(n->ids_, node::IdRangeAllocator::Open(io));

  node::NsDriverOptions d;
  d.data_dir = n->data_;
  d.templates = n->o_.templates;
  d.cgroups = n->cgroups_.get();
  d.ids = n->ids_.get();
  d.seccomp = n->o_.seccomp;
  d.init_path = n->o_.init_path;
  d.init_args = n->o_.init_args;
  d.wait_for_envd = n->o_.wait_for_envd;
  d.disk_pool.targets = n->o_.disk_pool;
  d.warm_pool = n->o_.warm_pool;
  d.default_write_bps = n->o_.default_write_bps;
  d.default_write_iops = n->o_.default_write_iops;
  if (n->o_.netns_pool >= 0) d.netns_pool = static_cast<size_t>(n->o_.netns_pool);
  if (n->o_.userns_pool >= 0) d.userns_pool = static_cast<size_t>(n->o_.userns_pool);
  HANGAR_ASSIGN_OR_RETURN(n->driver_, node::NewNsDriver(d));
  return n;
}

BenchNode::~BenchNode() {
  (void)Close();
  tmp_ = TempDir();  // removes the data directory (detaching anything still mounted below)
}

Leaks BenchNode::Close() {
  if (closed_) return *closed_;
  if (Status s = DestroyAll(2); !s.ok()) {
    std::fprintf(stderr, "bench node %s: destroy: %s\n", o_.tag.c_str(), s.ToString().c_str());
  }
  driver_.reset();  // stops the pool's refill thread and destroys its disks
  Leaks l;
  if (cgroups_ && ids_) l = CheckLeaks();
  if (l.any()) {
    std::fprintf(stderr, "bench node %s: LEFT AFTER TEARDOWN: %s\n", o_.tag.c_str(),
                 l.ToString().c_str());
  }
  if (cgroups_) {
    if (Status s = cgroups_->RemoveRoot(); !s.ok()) {
      std::fprintf(stderr, "bench node %s: cgroup root: %s\n", o_.tag.c_str(),
                   s.ToString().c_str());
    }
  }
  closed_ = l;
  return l;
}

Result<node::Sandbox*> BenchNode::Create(const node::SandboxSpec& spec) {
  HANGAR_ASSIGN_OR_RETURN(node::SandboxPtr sb, driver_->Create(spec));
  node::Sandbox* raw = sb.get();
  std::lock_guard lock(mu_);
  sandboxes_[spec.id] = std::move(sb);
  return raw;
}

Status BenchNode::Destroy(const std::string& id) {
  node::SandboxPtr sb;
  {
    std::lock_guard lock(mu_);
    auto it = sandboxes_.find(id);
    if (it == sandboxes_.end()) return Status::NotFound(id);
    sb = std::move(it->second);
    sandboxes_.erase(it);
  }
  return sb->Destroy();
}

Status BenchNode::DestroyAll(int threads) {
  std::vector<node::SandboxPtr> all;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, sb] : sandboxes_) all.push_back(std::move(sb));
    sandboxes_.clear();
  }
  std::mutex err_mu;
  Status first;
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < all.size(); i = next++) {
      Status s = all[i]->Destroy();
      if (!s.ok()) {
        std::lock_guard lock(err_mu);
        if (first.ok()) first = s;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::max(1, threads); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  return first;
}

size_t BenchNode::live() const {
  std::lock_guard lock(mu_);
  return sandboxes_.size();
}

Leaks BenchNode::CheckLeaks() {
  Leaks l;
  if (auto loops = storage::ListAttachedLoopsUnder(data_); loops.ok()) l.loops = loops->size();
  if (auto m = MountsUnder(data_); m.ok()) l.mounts = m->size();
  if (auto g = cgroups_->List(); g.ok()) l.cgroups = g->size();
  if (auto leases = ids_->Leases(); leases.ok()) l.leases = leases->size();
  std::error_code ec;
  for (auto it = fs::directory_iterator(data_ + "/sandboxes", ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    ++l.sandbox_dirs;
  }
  return l;
}

size_t BenchNode::PooledDisks() {
  auto loops = storage::ListAttachedLoopsUnder(data_ + "/disks");
  if (!loops.ok()) return 0;
  size_t n = loops->size(), l = live();
  return n > l ? n - l : 0;
}

bool BenchNode::WaitForPool(size_t n, std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline && !StopRequested()) {
    if (PooledDisks() >= n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return PooledDisks() >= n;
}

// --- small system readings ---------------------------------------------------------------------

bool WaitForExit(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  UniqueFd pidfd(fd);
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() < 0 || StopRequested()) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
    if (r > 0) return true;
  }
}

std::map<std::string, int64_t> ReadMeminfo() {
  std::map<std::string, int64_t> m;
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t v;
  std::string unit;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream w(line);
    if (w >> key >> v) {
      if (!key.empty() && key.back() == ':') key.pop_back();
      m[key] = v;
    }
  }
  return m;
}

size_t CountLoopDevices(bool bound_only) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/sys/block", ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::string name = it->path().filename();
    if (name.rfind("loop", 0) != 0) continue;
    if (bound_only && !fs::exists(it->path() / "loop" / "backing_file")) continue;
    ++n;
  }
  return n;
}

std::string LoadLine() {
  std::string load = ReadFile("/proc/loadavg").value_or("?");
  std::istringstream w(load);
  std::string a, b, c;
  w >> a >> b >> c;
  std::string psi = ReadFile("/proc/pressure/cpu").value_or("");
  std::string avg60 = "?";
  if (auto p = psi.find("avg60="); p != std::string::npos) {
    avg60 = psi.substr(p + 6, psi.find(' ', p) - p - 6);
  }
  return fmt::format("load {} {} {} on {} cpus, cpu pressure (some, avg60) {}%", a, b, c,
                     std::thread::hardware_concurrency(), avg60);
}

}  // namespace hangar::bench
