// The shared-tier driver end to end, with a real kernel: namespaces, id-mapped overlay on a
// loop disk, cgroup limits, seccomp. The sandbox's init here is busybox (static) running a
// script, whose output lands in the console log; envd-based exec is tested with envd.
#include <dirent.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/ns_driver.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"

namespace hangar::node {
namespace {

using namespace std::chrono_literals;

// Loop devices backed by files below `dir` (other tests may attach their own meanwhile).
int CountLoopDevicesUnder(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::string name = e.path().filename();
    if (name.rfind("loop", 0) != 0) continue;
    auto backing = ReadFile((e.path() / "loop" / "backing_file").string());
    if (backing.ok() && backing->rfind(dir, 0) == 0) ++n;
  }
  return n;
}

// The network namespaces (nsfs inode numbers) process `pid`'s descriptors refer to, other than
// the one it is in.
std::set<ino_t> NetnsHeldByFds(const std::string& pid) {
  std::set<ino_t> out;
  struct stat own;
  const bool have_own = ::stat(("/proc/" + pid + "/ns/net").c_str(), &own) == 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + pid + "/fd", ec)) {
    std::error_code ec2;
    std::string target = std::filesystem::read_symlink(e.path(), ec2).string();
    if (target.rfind("net:[", 0) == 0) out.insert(std::stoull(target.substr(5)));
  }
  // The namespace the process is in (the pool thread keeps a descriptor of it to return to).
  if (have_own) out.erase(own.st_ino);
  return out;
}

// Whether any process (a task's namespace or a descriptor) or mount refers to network
// namespace `ino`: a namespace nothing refers to is gone.
bool NetnsReferenced(ino_t ino) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    std::string pid = e.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (NetnsHeldByFds(pid).count(ino)) return true;
    std::error_code ec2;
    for (const auto& t : std::filesystem::directory_iterator(e.path() / "task", ec2)) {
      struct stat st;
      if (::stat((t.path() / "ns/net").c_str(), &st) == 0 && st.st_ino == ino) return true;
    }
  }
  std::string mounts = ReadFile("/proc/self/mountinfo").value_or("");
  return mounts.find("net:[" + std::to_string(ino) + "]") != std::string::npos;
}

// The inode of the user namespace owning the namespace file `path` (0 on error).
ino_t OwnerUserns(const std::string& path) {
  UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return 0;
  UniqueFd owner(::ioctl(ns.get(), NS_GET_USERNS));
  struct stat st;
  return owner.valid() && ::fstat(owner.get(), &st) == 0 ? st.st_ino : 0;
}

ino_t NsInode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

class NsDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, mounts, cgroups, loop devices)";
    if (!testing::HaveBusybox()) GTEST_SKIP() << "needs busybox-static";
    auto t = TempDir::Make("hangar-ns-test-", "/var/tmp");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
    data_ = tmp_.path() + "/data";
    ASSERT_TRUE(MakeDirs(data_).ok());
    ASSERT_NO_FATAL_FAILURE(BuildTemplate());
    auto layout = DetectCgroupLayout();
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    CgroupOptions co;
    co.root = "hangar-test-" + std::to_string(::getpid());
    auto cg = MakeCgroupBackend(*layout, co);
    ASSERT_TRUE(cg.ok()) << cg.status().ToString();
    cgroups_ = std::move(*cg);
    IdAllocatorOptions io;
    io.state_dir = data_ + "/ids";
    io.base = 1'000'000;
    io.slots = 16;
    auto ids = IdRangeAllocator::Open(io);
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    ids_ = std::move(*ids);
    auto policy = DefaultSeccompPolicy();
    ASSERT_TRUE(policy.ok());
    auto prog = CompileSeccompPolicy(*policy);
    ASSERT_TRUE(prog.ok());
    seccomp_ = std::move(*prog);
  }

  void TearDown() override {
    driver_.reset();
    if (!data_.empty()) {
      EXPECT_EQ(CountLoopDevicesUnder(data_), 0) << "leaked loop devices";
    }
    if (cgroups_) {
      EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty()) << "leaked cgroups";
      (void)cgroups_->RemoveRoot();
    }
    // Only this test's directory: other tests may run in parallel with mounts of their own.
    if (!IsSkipped() && !tmp_.path().empty()) {
      auto mounts = MountsUnder(tmp_.path());
      ASSERT_TRUE(mounts.ok());
      EXPECT_TRUE(mounts->empty()) << "leaked mount: " << mounts->front();
    }
    tmp_ = TempDir();
  }

  void BuildTemplate() {
    storage::TemplateStoreOptions so;
    so.root = data_ + "/templates";
    auto store = storage::TemplateStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_.emplace(std::move(*store));
    auto info = testing::ImportBusyboxTemplate(*store_, tmp_.path());
    ASSERT_TRUE(info.ok()) << info.status().ToString();
  }

  void OpenDriver(std::vector<std::string> init_args, WarmPoolOptions warm = {},
                  std::string init_path = "/bin/busybox") {
    NsDriverOptions o;
    o.warm_pool = std::move(warm);
    o.data_dir = data_;
    o.templates = &*store_;
    o.cgroups = cgroups_.get();
    o.ids = ids_.get();
    o.seccomp = &seccomp_;
    o.init_path = std::move(init_path);
    o.init_args = std::move(init_args);
    o.wait_for_envd = false;
    o.disk_pool.targets = {{64, 1}};
    if (tweak_) tweak_(o);
    auto d = NewNsDriver(o);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    driver_ = std::move(*d);
  }

  SandboxSpec Spec(std::string id) {
    SandboxSpec s;
    s.id = std::move(id);
    s.template_name = "busybox";
    s.resources.disk_mb = 64;
    s.resources.memory_mb = 128;
    s.resources.pids = 64;
    return s;
  }

  // Waits until the init's console log contains `marker`.
  std::string WaitForConsole(const std::string& id, const std::string& marker,
                             std::chrono::milliseconds timeout = 10s) {
    std::string path = data_ + "/sandboxes/" + id + "/console.log";
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string text;
    while (std::chrono::steady_clock::now() < deadline) {
      text = ReadFile(path).value_or("");
      if (text.find(marker) != std::string::npos) break;
      std::this_thread::sleep_for(10ms);
    }
    return text;
  }

  // Reads a cgroup file of sandbox `id` from whichever hierarchy has it ("" if none does).
  std::string CgroupFile(const std::string& id, const std::string& file) {
    for (const std::string& dir : cgroups_->Paths(id)) {
      auto text = ReadFile(dir + "/" + file);
      if (text.ok()) return text->substr(0, text->find('\n'));
    }
    return "";
  }

  // The lines between ENV-BEGIN and ENV-END of a console log.
  static std::string EnvBlock(const std::string& console) {
    size_t b = console.find("ENV-BEGIN\n"), e = console.find("ENV-END");
    if (b == std::string::npos || e == std::string::npos) return "";
    return console.substr(b, e - b);
  }

  // Everything a sandbox can hold on the host, counted.
  struct Counts {
    int mounts = 0, loops = 0, cgroups = 0, root_io_rules = 0, processes = 0, leases = 0;
    int netns_fds = 0;  // network namespaces this process (the driver's) holds descriptors of
    friend bool operator==(const Counts&, const Counts&) = default;
  };
  Counts Count() {
    Counts c;
    auto mounts = MountsUnder(tmp_.path());
    c.mounts = mounts.ok() ? static_cast<int>(mounts->size()) : -1;
    c.loops = CountLoopDevicesUnder(data_);
    auto groups = cgroups_->List();
    c.cgroups = groups.ok() ? static_cast<int>(groups->size()) : -1;
    // Rules on loop devices: only sandboxes make those (the test's pool disks are loops).
    if (auto rules = cgroups_->RootDeviceLimits(); rules.ok()) {
      for (const auto& r : *rules) c.root_io_rules += r.major == 7 ? 1 : 0;
    }
    for (uint32_t slot = 0; slot < 16; ++slot) {
      auto p = ProcessesUsingRange(ids_->RangeOf(slot));
      c.processes += p.ok() ? static_cast<int>(p->size()) : 0;
    }
    auto leases = ids_->Leases();
    c.leases = leases.ok() ? static_cast<int>(leases->size()) : -1;
    c.netns_fds = static_cast<int>(NetnsHeldByFds(std::to_string(::getpid())).size());
    return c;
  }
  // Leases of sandboxes (and warm pool slots), not of the namespace pool's user namespaces.
  size_t SandboxLeases() {
    auto leases = ids_->Leases();
    EXPECT_TRUE(leases.ok());
    size_t n = 0;
    if (leases.ok()) {
      for (const auto& [slot, owner] : *leases) n += owner.rfind("nspool-", 0) == 0 ? 0 : 1;
    }
    return n;
  }
  static std::string Show(const Counts& c) {
    return "mounts=" + std::to_string(c.mounts) + " loops=" + std::to_string(c.loops) +
           " cgroups=" + std::to_string(c.cgroups) +
           " root_io_rules=" + std::to_string(c.root_io_rules) +
           " processes=" + std::to_string(c.processes) + " leases=" + std::to_string(c.leases) +
           " netns_fds=" + std::to_string(c.netns_fds);
  }

  TempDir tmp_;
  std::string data_;
  std::optional<storage::TemplateStore> store_;
  CgroupBackendPtr cgroups_;
  std::unique_ptr<IdRangeAllocator> ids_;
  SeccompProgram seccomp_;
  std::function<void(NsDriverOptions&)> tweak_;  // applied by OpenDriver
  DriverPtr driver_;
};

TEST_F(NsDriverTest, InitRunsContainedAsMappedRoot) {
  ASSERT_NO_FATAL_FAILURE(
      OpenDriver({"sh", "-c",
                  "echo uid=$(id -u) host=$(hostname); cat /proc/self/uid_map; ls /; "
                  "echo pid1=$(cat /proc/1/comm); cat /proc/self/status | grep -E "
                  "'^(CapBnd|NoNewPrivs|Seccomp):'; "
                  "echo DONE; sleep 100"}));
  auto sb = driver_->Create(Spec("smoke1"));
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  std::string out = WaitForConsole("smoke1", "DONE");
  EXPECT_NE(out.find("uid=0 host=smoke1"), std::string::npos) << out;
  SandboxInfo info = (*sb)->Info();
  EXPECT_NE(out.find("0    " + std::to_string(info.uid_base)), std::string::npos)
      << "root inside is the range's first id outside: " << out;
  EXPECT_GE(info.uid_base, 1'000'000u);
  EXPECT_NE(out.find("NoNewPrivs:\t1"), std::string::npos) << out;
  EXPECT_NE(out.find("Seccomp:\t2"), std::string::npos) << out;
  EXPECT_NE(out.find("CapBnd:\t00000000a80405fb"), std::string::npos)
      << "Docker's default set minus NET_RAW: " << out;
  EXPECT_EQ(info.state, SandboxState::kRunning);
  EXPECT_FALSE(info.disk_device.empty());

  auto usage = (*sb)->GetUsage();
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  EXPECT_GT(usage->memory_bytes, 0u);
  EXPECT_GE(usage->pids, 1u);
  EXPECT_GT(usage->disk_total_bytes, 40u << 20);

  EXPECT_TRUE((*sb)->Pause().ok());
  EXPECT_EQ((*sb)->Info().state, SandboxState::kPaused);
  EXPECT_TRUE((*sb)->Resume().ok());
  EXPECT_TRUE((*sb)->Stop(100ms).ok());
  EXPECT_TRUE((*sb)->Destroy().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/smoke1"));
}

TEST_F(NsDriverTest, BadSpecsCreateNothing) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 100"}));
  auto spec = Spec("bad1");
  spec.resources.memory_mb = 1;
  auto r = driver_->Create(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("memory_mb"), std::string::npos);

  spec = Spec("Bad/../id");
  EXPECT_EQ(driver_->Create(spec).status().code(), Code::kInvalidArgument);

  spec = Spec("bad2");
  spec.template_name = "nope";
  r = driver_->Create(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("nope"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/bad1"));
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/bad2"));
  EXPECT_TRUE(SandboxLeases() == 0);
}

TEST_F(NsDriverTest, FailedInitCleansUpEverything) {
  // The init's argv names a busybox applet that does not exist: busybox exits at once. With
  // wait_for_envd the driver must notice and release everything.
  NsDriverOptions o;
  ASSERT_NO_FATAL_FAILURE(OpenDriver({"no-such-applet"}));
  // Re-open with waiting on, using a short timeout.
  driver_.reset();
  o.data_dir = data_;
  o.templates = &*store_;
  o.cgroups = cgroups_.get();
  o.ids = ids_.get();
  o.seccomp = &seccomp_;
  o.init_path = "/bin/busybox";
  o.init_args = {"no-such-applet"};
  o.wait_for_envd = true;
  o.envd_ready_timeout = 2s;
  o.disk_pool.targets = {{64, 1}};
  auto d = NewNsDriver(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  driver_ = std::move(*d);
  auto sb = driver_->Create(Spec("dies1"));
  ASSERT_FALSE(sb.ok());
  EXPECT_NE(sb.status().message().find("init exited"), std::string::npos) << sb.status().message();
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/dies1"));
  EXPECT_TRUE(SandboxLeases() == 0);
  EXPECT_TRUE(cgroups_->List()->empty());
}

TEST_F(NsDriverTest, RestartAdoptsLiveAndCleansDead) {
  // A real crash: a forked child runs the driver, creates two sandboxes and is SIGKILLed, so
  // its descriptors close the way a dying hangard's do. Orphaned inits come to this process
  // (a subreaper) so the test can reap them.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    OpenDriver({"sh", "-c", "echo READY; sleep 1000"});
    auto a = driver_->Create(Spec("live1"));
    auto b = driver_->Create(Spec("dead1"));
    int pids[2] = {a.ok() ? (*a)->Info().init_pid : -1, b.ok() ? (*b)->Info().init_pid : -1};
    (void)!::write(pipe->write.get(), pids, sizeof pids);
    ::pause();
    ::_exit(0);
  }
  pipe->write.Reset();
  int pids[2] = {-1, -1};
  ASSERT_EQ(::read(pipe->read.get(), pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
  ASSERT_GT(pids[0], 0);
  ASSERT_GT(pids[1], 0);
  WaitForConsole("live1", "READY");
  ASSERT_EQ(::kill(agent, SIGKILL), 0);
  ASSERT_EQ(::waitpid(agent, nullptr, 0), agent);
  // One sandbox dies while no agent runs.
  ASSERT_EQ(::kill(pids[1], SIGKILL), 0);
  ASSERT_EQ(::waitpid(pids[1], nullptr, 0), pids[1]);

  ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 1000"}));
  auto rec = driver_->Recover();
  ASSERT_TRUE(rec.ok());
  auto& [report, adopted] = *rec;
  EXPECT_EQ(report.adopted, std::vector<std::string>{"live1"});
  EXPECT_EQ(report.destroyed, std::vector<std::string>{"dead1"});
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0]->Info().init_pid, pids[0]);
  EXPECT_TRUE(adopted[0]->GetUsage().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/dead1"));
  EXPECT_EQ(SandboxLeases(), 1u);
  EXPECT_TRUE(adopted[0]->Destroy().ok());
  EXPECT_EQ(::waitpid(pids[0], nullptr, 0), pids[0]);
  EXPECT_TRUE(SandboxLeases() == 0);
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/live1"));
}

// The init of the warm pool tests: prints its environment once, then its hostname and the size
// of /tmp (KiB) every 20 ms, so a claim's changes show up in the console as the agent would
// see them.
const std::vector<std::string> kObserverInit = {
    "sh", "-c",
    "echo ENV-BEGIN; env | sort; echo ENV-END; "
    "while :; do echo \"H=$(hostname) T=$(df -k /tmp | tail -1 | awk '{print $2}')\"; "
    "sleep 0.02; done"};

WarmPoolOptions Warm(size_t size) {
  WarmPoolOptions w;
  WarmPoolEntry e;
  e.template_name = "busybox";
  e.size = size;
  e.disk_mb = 64;
  e.env = {{"POOLVAR", "x"}};
  w.entries.push_back(e);
  w.retry_after = 100ms;
  return w;
}

TEST_F(NsDriverTest, WarmPoolClaimIsIndistinguishableFromCold) {
  ASSERT_NO_FATAL_FAILURE(OpenDriver(kObserverInit, Warm(2)));
  ASSERT_TRUE(WaitForWarmPool(*driver_, 60s));
  EXPECT_EQ(GetWarmPoolStats(*driver_).ready, 2u);

  auto spec = Spec("pooleda");
  spec.env = {{"POOLVAR", "x"}};
  spec.resources.cpu_millis = 500;
  spec.resources.memory_mb = 96;
  spec.resources.pids = 48;
  spec.resources.write_bps = 8 << 20;
  auto a = driver_->Create(spec);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(GetWarmPoolStats(*driver_).claimed, 1u);
  SandboxInfo ia = (*a)->Info();
  EXPECT_EQ(ia.id, "pooleda");
  EXPECT_EQ(ia.state, SandboxState::kRunning);
  EXPECT_EQ((*a)->Envd().unix_socket, data_ + "/sandboxes/pooleda/envd.sock");
  // What the inside sees: the id as hostname, /tmp at half the claimed memory (48 MiB).
  std::string out = WaitForConsole("pooleda", "H=pooleda T=49152");
  EXPECT_NE(out.find("H=pooleda T=49152"), std::string::npos) << out;
  // The limits, under the public id.
  EXPECT_EQ(CgroupFile("pooleda", "memory.limit_in_bytes"), std::to_string(96 << 20));
  EXPECT_EQ(CgroupFile("pooleda", "pids.max"), "48");
  EXPECT_EQ(CgroupFile("pooleda", "cpu.cfs_quota_us"), "50000");
  if (cgroups_->mode() == CgroupMode::kV1) {
    auto rules = cgroups_->RootDeviceLimits();
    ASSERT_TRUE(rules.ok());
    bool found = false;
    for (const auto& r : *rules) {
      if (std::to_string(r.major) + ":" + std::to_string(r.minor) == ia.disk_device) {
        found = true;
        EXPECT_EQ(r.wbps, 8u << 20);
      }
    }
    EXPECT_TRUE(found) << "no root blkio rule for " << ia.disk_device;
  }
  auto state = ReadFile(data_ + "/sandboxes/pooleda/state.json");
  ASSERT_TRUE(state.ok());
  EXPECT_NE(state->find("\"id\": \"pooleda\""), std::string::npos) << *state;
  bool leased = false;
  auto leases = ids_->Leases();
  ASSERT_TRUE(leases.ok());
  for (const auto& [slot, owner] : *leases) leased = leased || owner == "pooleda";
  EXPECT_TRUE(leased) << "the uid lease is the public id's";

  // A file one pooled sandbox writes is not in the next one.
  ASSERT_TRUE(WriteFile(data_ + "/sandboxes/pooleda/rootfs/root/secret", "mine").ok());
  auto b = driver_->Create([&] {
    auto s2 = Spec("pooledb");
    s2.env = {{"POOLVAR", "x"}};
    return s2;
  }());
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(GetWarmPoolStats(*driver_).claimed, 2u);
  out = WaitForConsole("pooledb", "H=pooledb T=65536");
  EXPECT_NE(out.find("H=pooledb T=65536"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/pooledb/rootfs/root/secret"));
  EXPECT_TRUE(std::filesystem::exists(data_ + "/sandboxes/pooleda/rootfs/root/secret"));
  EXPECT_NE((*b)->Info().disk_device, ia.disk_device);

  // A cold sandbox (another disk size: a miss) sees the same environment as the pooled ones.
  auto cs = Spec("colda");
  cs.env = {{"POOLVAR", "x"}};
  cs.resources.disk_mb = 80;
  auto c = driver_->Create(cs);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(GetWarmPoolStats(*driver_).misses, 1u);
  std::string cold = WaitForConsole("colda", "H=colda");
  std::string env_cold = EnvBlock(cold),
              env_pooled = EnvBlock(WaitForConsole("pooleda", "ENV-END"));
  EXPECT_FALSE(env_cold.empty()) << cold;
  EXPECT_EQ(env_pooled, env_cold);
  EXPECT_NE(env_cold.find("POOLVAR=x"), std::string::npos) << env_cold;

  for (auto* sb : {&*a, &*b, &*c}) EXPECT_TRUE((*sb)->Destroy().ok());
  // The pool refills in the background; the driver destroys unclaimed slots when it goes.
  EXPECT_TRUE(WaitForWarmPool(*driver_, 60s));
  driver_.reset();
  EXPECT_TRUE(ids_->Leases()->empty());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/pooleda"));
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_empty(data_ + "/sandboxes", ec)) << ec.message();
}

// The network namespace a sandbox gets — pre-made by the namespace pool or made by the clone —
// is owned by the host's user namespace, so root inside cannot reconfigure it: no link down,
// no address, no new interface. Each sandbox has its own, and a pooled one is never reused.
TEST_F(NsDriverTest, NetworkNamespaceIsTheSandboxsAloneAndNotReconfigurable) {
  const std::string script =
      "ip link set lo down; echo down=$?; ip addr add 10.9.9.9/32 dev lo; echo addr=$?; "
      "ip link add d0 type dummy; echo add=$?; ip -o link show lo; ip -o addr show lo; "
      "echo DONE; sleep 1000";
  const ino_t host_userns = NsInode("/proc/self/ns/user");
  const ino_t host_netns = NsInode("/proc/self/ns/net");
  ASSERT_NE(host_userns, 0u);
  for (size_t pool : {size_t{4}, size_t{0}}) {
    SCOPED_TRACE("netns_pool=" + std::to_string(pool));
    tweak_ = [pool](NsDriverOptions& o) { o.netns_pool = pool; };
    ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", script}));
    ASSERT_TRUE(WaitForNamespacePool(*driver_, 30s));
    const std::set<ino_t> pooled = NetnsHeldByFds(std::to_string(::getpid()));
    EXPECT_EQ(pooled.size(), pool) << "the pool keeps its namespaces by descriptor";
    std::set<ino_t> seen;
    for (int i = 0; i < 2; ++i) {
      const std::string id = "net" + std::to_string(pool) + std::to_string(i);
      auto sb = driver_->Create(Spec(id));
      ASSERT_TRUE(sb.ok()) << sb.status().ToString();
      std::string out = WaitForConsole(id, "DONE");
      const std::string proc = "/proc/" + std::to_string((*sb)->Info().init_pid);
      const ino_t netns = NsInode(proc + "/ns/net");
      ASSERT_NE(netns, 0u);
      EXPECT_NE(netns, host_netns);
      EXPECT_TRUE(seen.insert(netns).second) << "two sandboxes share a network namespace";
      if (pool > 0) {
        EXPECT_TRUE(pooled.count(netns)) << "a cold start with a full pool takes a pooled one";
        EXPECT_FALSE(NetnsHeldByFds(std::to_string(::getpid())).count(netns))
            << "a taken namespace is not kept by the pool";
      }
      // Owned by the host's user namespace, not the sandbox's.
      EXPECT_EQ(OwnerUserns(proc + "/ns/net"), host_userns);
      EXPECT_NE(NsInode(proc + "/ns/user"), host_userns);
      // Root inside cannot change it.
      EXPECT_EQ(out.find("down=0"), std::string::npos) << out;
      EXPECT_EQ(out.find("addr=0"), std::string::npos) << out;
      EXPECT_EQ(out.find("add=0"), std::string::npos) << out;
      EXPECT_NE(out.find("<LOOPBACK,UP,LOWER_UP>"), std::string::npos) << "lo is up: " << out;
      EXPECT_NE(out.find("inet 127.0.0.1/8"), std::string::npos) << out;
      EXPECT_EQ(out.find("10.9.9.9"), std::string::npos) << out;
      EXPECT_EQ(out.find("d0"), std::string::npos) << out;
      EXPECT_TRUE((*sb)->Destroy().ok());
      EXPECT_FALSE(NetnsReferenced(netns)) << "a destroyed sandbox's namespace is gone";
    }
    driver_.reset();
    for (ino_t ino : pooled) EXPECT_FALSE(NetnsReferenced(ino)) << "pooled namespace left";
  }
}

TEST_F(NsDriverTest, NothingLeaksOnAnyPath) {
  const Counts before = Count();
  auto io_spec = [&](const std::string& id) {
    auto s2 = Spec(id);
    s2.env = {{"POOLVAR", "x"}};
    s2.resources.write_bps = 4 << 20;
    s2.resources.read_iops = 300;
    return s2;
  };
  {
    // Cold success, with a root blkio rule.
    ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 1000"}));
    auto sb = driver_->Create(io_spec("leak1"));
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    EXPECT_GT(Count().root_io_rules, before.root_io_rules);
    EXPECT_TRUE((*sb)->Destroy().ok());
    driver_.reset();
    EXPECT_EQ(Count(), before) << "cold create+destroy: " << Show(Count());
  }
  {
    // Failure after everything was set up: the init cannot be executed.
    ASSERT_NO_FATAL_FAILURE(OpenDriver({}, {}, "/etc/passwd"));
    auto sb = driver_->Create(io_spec("leak2"));
    ASSERT_FALSE(sb.ok());
    EXPECT_NE(sb.status().message().find("execveat"), std::string::npos) << sb.status().message();
    driver_.reset();
    EXPECT_EQ(Count(), before) << "failed create: " << Show(Count());
  }
  {
    // Warm pool: claim, destroy, refill, then the driver goes while refilling.
    ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 1000"}, Warm(2)));
    ASSERT_TRUE(WaitForWarmPool(*driver_, 60s));
    auto sb = driver_->Create(io_spec("leak3"));
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    EXPECT_EQ(GetWarmPoolStats(*driver_).claimed, 1u);
    EXPECT_TRUE((*sb)->Destroy().ok());
    ASSERT_TRUE(WaitForWarmPool(*driver_, 60s));
    auto sb2 = driver_->Create(io_spec("leak4"));
    ASSERT_TRUE(sb2.ok()) << sb2.status().ToString();
    EXPECT_TRUE((*sb2)->Destroy().ok());
    driver_.reset();  // the refill of leak4's slot is under way
    EXPECT_EQ(Count(), before) << "warm pool: " << Show(Count());
  }
  {
    // A claim while the pool is empty falls back to the cold path.
    ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 1000"}, Warm(1)));
    auto sb = driver_->Create(io_spec("leak5"));
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    EXPECT_TRUE((*sb)->Destroy().ok());
    driver_.reset();
    EXPECT_EQ(Count(), before) << "miss while refilling: " << Show(Count());
  }
}

TEST_F(NsDriverTest, RestartDestroysPoolSlotsAndRefills) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    OpenDriver({"sh", "-c", "echo READY; sleep 1000"}, Warm(2));
    bool full = WaitForWarmPool(*driver_, 60s) && WaitForNamespacePool(*driver_, 60s);
    auto spec = Spec("keep1");
    spec.env = {{"POOLVAR", "x"}};
    spec.resources.write_iops = 100;
    auto a = full ? driver_->Create(spec) : Result<SandboxPtr>(Status::Internal("not full"));
    full = full && WaitForWarmPool(*driver_, 60s) && WaitForNamespacePool(*driver_, 60s);
    int pid = a.ok() && full ? (*a)->Info().init_pid : -1;
    (void)!::write(pipe->write.get(), &pid, sizeof pid);
    ::pause();
    ::_exit(0);
  }
  pipe->write.Reset();
  int pid = -1;
  ASSERT_EQ(::read(pipe->read.get(), &pid, sizeof pid), static_cast<ssize_t>(sizeof pid));
  ASSERT_GT(pid, 0);
  std::vector<std::string> old_slots;
  for (const auto& e : std::filesystem::directory_iterator(data_ + "/sandboxes")) {
    std::string name = e.path().filename();
    if (name.rfind("pool-", 0) == 0) old_slots.push_back(name);
  }
  EXPECT_EQ(old_slots.size(), 2u);
  // The agent's namespace pool: network namespaces held by its descriptors, user namespaces
  // with their ranges leased under "nspool-" names.
  const std::set<ino_t> pooled_netns = NetnsHeldByFds(std::to_string(agent));
  EXPECT_EQ(pooled_netns.size(), 4u);
  std::set<std::string> pooled_owners;
  auto old_leases = ids_->Leases();
  ASSERT_TRUE(old_leases.ok()) << old_leases.status().ToString();
  for (const auto& [slot, owner] : *old_leases) {
    if (owner.rfind("nspool-", 0) == 0) pooled_owners.insert(owner);
  }
  EXPECT_EQ(pooled_owners.size(), 2u);
  ASSERT_EQ(::kill(agent, SIGKILL), 0);
  ASSERT_EQ(::waitpid(agent, nullptr, 0), agent);
  // Held by descriptors only: they died with the agent.
  for (ino_t ino : pooled_netns) EXPECT_FALSE(NetnsReferenced(ino)) << "pooled netns survived";

  // Without a user-namespace pool of its own, every "nspool-" lease left is the old run's.
  tweak_ = [](NsDriverOptions& o) { o.userns_pool = 0; };
  ASSERT_NO_FATAL_FAILURE(OpenDriver({"sh", "-c", "sleep 1000"}, Warm(1)));
  auto rec = driver_->Recover();
  ASSERT_TRUE(rec.ok());
  auto& [report, adopted] = *rec;
  EXPECT_EQ(report.adopted, std::vector<std::string>{"keep1"});
  EXPECT_TRUE(report.destroyed.empty()) << "pool slots are not sandboxes: " << report.destroyed[0];
  for (const std::string& slot : old_slots) {
    EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/" + slot)) << slot;
    for (const std::string& dir : cgroups_->Paths(slot)) {
      EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
    }
  }
  // The adopted sandbox keeps its root blkio rule; everything else of the old run is gone.
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_TRUE(WaitForWarmPool(*driver_, 60s));
  size_t sandbox_leases = 0;
  auto new_leases = ids_->Leases();
  ASSERT_TRUE(new_leases.ok()) << new_leases.status().ToString();
  for (const auto& [slot, owner] : *new_leases) {
    EXPECT_NE(owner.rfind("nspool-", 0), 0u) << "recovery keeps the old pool's lease " << owner;
    sandbox_leases += owner.rfind("nspool-", 0) == 0 ? 0 : 1;
  }
  EXPECT_EQ(sandbox_leases, 2u) << "keep1 and the new slot";
  EXPECT_EQ(Count().root_io_rules, 1) << "keep1's rule only";
  EXPECT_TRUE(adopted[0]->Destroy().ok());
  EXPECT_EQ(::waitpid(pid, nullptr, 0), pid);
  driver_.reset();
  EXPECT_EQ(Count().root_io_rules, 0);
  EXPECT_TRUE(ids_->Leases()->empty());
  // The old run's slot inits were reparented here (subreaper): reap them.
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

}  // namespace
}  // namespace hangar::node
