#include "security_fixture.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/mount.h"

namespace hangar::node::security {

using namespace std::chrono_literals;

Json ProbeOutput::Get(const std::string& name) const {
  auto it = by_name.find(name);
  return it == by_name.end() ? Json::object() : it->second;
}

std::string ProbeOutput::Result(const std::string& name) const {
  return Get(name).value("result", "");
}

std::string ProbeOutput::Errno(const std::string& name) const {
  return Get(name).value("errno", "");
}

ProbeOutput ParseProbeOutput(const std::string& console) {
  ProbeOutput out;
  out.text = console;
  std::istringstream in(console);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.value("done", false)) out.done = true;
    if (j.contains("probe") && j["probe"].is_string()) {
      out.by_name[j["probe"].get<std::string>()] = j;
    }
    out.lines.push_back(std::move(j));
  }
  return out;
}

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

std::vector<pid_t> ChildrenOfSelf() {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::istringstream in(ReadFile((t.path() / "children").string()).value_or(""));
    pid_t pid;
    while (in >> pid) out.push_back(pid);
  }
  return out;
}

std::string ErrnoName(int e) {
  const char* n = ::strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

void SecurityTest::SetUp() {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root (user/pid/mount namespaces, cgroups, loop devices)";
  }
  probe_bin_ = HANGAR_PROBE_BIN;
  ASSERT_EQ(::access(probe_bin_.c_str(), X_OK), 0) << probe_bin_;
  // Orphans of the sandboxes (if the kernel ever handed us any) come here to be counted.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  ASSERT_TRUE(ChildrenOfSelf().empty()) << "a previous test left a child process";
  auto t = TempDir::Make("hangar-sec-test-", "/var/tmp");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  tmp_ = std::move(*t);
  data_ = tmp_.path() + "/data";
  ASSERT_TRUE(MakeDirs(data_).ok());

  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  CgroupOptions co;
  co.root = "hangar-sec-" + std::to_string(::getpid());
  auto cg = MakeCgroupBackend(*layout, co);
  ASSERT_TRUE(cg.ok()) << cg.status().ToString();
  cgroups_ = std::move(*cg);

  id_options_.state_dir = data_ + "/ids";
  // Away from the ranges other suites use (1'000'000 + 16 slots), and per process, so test
  // processes running in parallel (ctest -j) never share a range: the leak check looks for any
  // process in the ranges this test used.
  id_options_.slots = 16;
  id_options_.base =
      3'000'000 + static_cast<uint32_t>(::getpid() % 1024) * id_options_.slots * id_options_.size;
  auto ids = IdRangeAllocator::Open(id_options_);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  ids_ = std::move(*ids);

  auto policy = DefaultSeccompPolicy();
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  auto prog = CompileSeccompPolicy(*policy);
  ASSERT_TRUE(prog.ok()) << prog.status().ToString();
  seccomp_ = std::move(*prog);

  storage::TemplateStoreOptions so;
  so.root = data_ + "/templates";
  auto store = storage::TemplateStore::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  store_.emplace(std::move(*store));
  ASSERT_NO_FATAL_FAILURE(BuildTemplate("probe"));
}

void SecurityTest::TearDown() {
  if (IsSkipped() || tmp_.path().empty()) return;
  for (auto& [id, sb] : sandboxes_) {
    EXPECT_TRUE(sb->Destroy().ok()) << id;
  }
  sandboxes_.clear();
  // Host processes a test forked (without exec) go before the driver: one may hold a copy of a
  // pipe the disk pool's refill thread is draining, and the driver's destructor joins that thread.
  for (pid_t pid : extra_children_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  extra_children_.clear();
  driver_.reset();  // stops the disk pool's refill thread and releases pooled disks

  // Leak checks: cgroups, loop devices, mounts, uid leases and ranges, processes.
  if (cgroups_) {
    auto left = cgroups_->List();
    ASSERT_TRUE(left.ok()) << left.status().ToString();
    EXPECT_TRUE(left->empty()) << "leaked cgroups: " << left->size();
    EXPECT_TRUE(cgroups_->RemoveRoot().ok());
  }
  EXPECT_EQ(CountLoopDevicesUnder(data_), 0) << "leaked loop devices";
  auto mounts = MountsUnder(tmp_.path());
  ASSERT_TRUE(mounts.ok());
  for (const auto& m : *mounts) ADD_FAILURE() << "leaked mount " << m;
  if (ids_) {
    auto leases = ids_->Leases();
    EXPECT_TRUE(leases.ok() && leases->empty()) << "leaked uid leases";
  }
  for (const IdRange& r : ranges_used_) {
    auto procs = ProcessesUsingRange(r);
    EXPECT_TRUE(procs.ok() && procs->empty()) << "processes left in uid range " << r.first;
  }
  // Zombies first (a sandbox's init is reaped by Destroy; anything else is a leak).
  std::vector<pid_t> children = ChildrenOfSelf();
  EXPECT_TRUE(children.empty()) << "leftover child processes: " << children.size()
                                << (children.empty() ? 0 : children[0]);
  for (pid_t pid : children) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  tmp_ = TempDir();
}

void SecurityTest::BuildTemplate(const std::string& name,
                                 const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string root = tmp_.path() + "/tmpl-" + name;
  for (const char* d : {"/bin", "/etc", "/home/user", "/tmp", "/proc", "/dev", "/root", "/usr"}) {
    ASSERT_TRUE(MakeDirs(root + d).ok());
  }
  ASSERT_TRUE(RunChecked({"cp", probe_bin_, root + "/bin/hangar-probe"}).ok());
  ASSERT_TRUE(RunChecked({"cp", probe_bin_, root + "/bin/hangar-probe-suid"}).ok());
  ASSERT_EQ(::chown((root + "/bin/hangar-probe-suid").c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod((root + "/bin/hangar-probe-suid").c_str(), 04755), 0);
  for (const auto& [host, inside] : extra) {
    std::string dest = root + inside;
    ASSERT_TRUE(MakeDirs(std::filesystem::path(dest).parent_path().string()).ok());
    ASSERT_TRUE(RunChecked({"cp", "-L", "--preserve=mode", host, dest}).ok()) << host;
  }
  ASSERT_TRUE(WriteFile(root + "/etc/passwd",
                        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
                  .ok());
  ASSERT_TRUE(WriteFile(root + "/etc/group", "root:x:0:\ntty:x:5:\nuser:x:1000:\n").ok());
  ASSERT_EQ(::chmod((root + "/tmp").c_str(), 01777), 0);
  ASSERT_EQ(::chown((root + "/home/user").c_str(), 1000, 1000), 0);
  std::string tar = root + ".tar";
  ASSERT_TRUE(RunChecked({"tar", "-C", root, "-cf", tar, "."}).ok());
  auto info = store_->ImportTarball(name, tar);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_GE(info->setuid_files, 1u);
}

void SecurityTest::OpenDriver(std::optional<size_t> userns_pool) {
  NsDriverOptions o;
  if (userns_pool) o.userns_pool = *userns_pool;
  o.data_dir = data_;
  o.templates = &*store_;
  o.cgroups = cgroups_.get();
  o.ids = ids_.get();
  o.seccomp = &seccomp_;
  o.init_path = probe_bin_;
  o.wait_for_envd = false;
  o.disk_pool.targets = {{64, 1}};
  auto d = NewNsDriver(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  driver_ = std::move(*d);
}

SandboxSpec SecurityTest::Spec(const std::string& id, const std::string& mode,
                               std::map<std::string, std::string> env) {
  SandboxSpec s;
  s.id = id;
  s.template_name = "probe";
  s.resources.disk_mb = 64;
  s.resources.memory_mb = 256;
  s.resources.pids = 128;
  s.resources.cpu_millis = 1000;
  s.env = std::move(env);
  s.env["PROBE_MODE"] = mode;
  return s;
}

Sandbox* SecurityTest::Create(const SandboxSpec& spec) {
  if (!driver_) {
    OpenDriver();
    if (!driver_) return nullptr;
  }
  auto sb = driver_->Create(spec);
  EXPECT_TRUE(sb.ok()) << sb.status().ToString();
  if (!sb.ok()) return nullptr;
  SandboxInfo info = (*sb)->Info();
  ranges_used_.push_back(IdRange{0, info.uid_base, id_options_.size});
  Sandbox* raw = sb->get();
  sandboxes_[spec.id] = std::move(*sb);
  return raw;
}

void SecurityTest::DestroySandbox(const std::string& id) {
  auto it = sandboxes_.find(id);
  ASSERT_NE(it, sandboxes_.end()) << id;
  EXPECT_TRUE(it->second->Destroy().ok()) << id;
  sandboxes_.erase(it);
}

std::string SecurityTest::ConsolePath(const std::string& id) const {
  return data_ + "/sandboxes/" + id + "/console.log";
}

ProbeOutput SecurityTest::WaitForDone(const std::string& id, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  ProbeOutput out;
  for (;;) {
    out = ParseProbeOutput(ReadFile(ConsolePath(id)).value_or(""));
    if (out.done || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(out.done) << "probe in " << id << " did not finish; console:\n" << out.text;
  // HANGAR_SECURITY_VERBOSE=1 prints every verdict (for reviews and debugging).
  if (const char* v = std::getenv("HANGAR_SECURITY_VERBOSE"); v && std::string(v) == "1") {
    std::printf("--- console of %s ---\n%s", id.c_str(), out.text.c_str());
  }
  return out;
}

std::string SecurityTest::Ask(const std::string& id, const std::string& command,
                              std::chrono::milliseconds timeout) {
  std::string path = data_ + "/sandboxes/" + id + "/envd.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "error: socket";
  UniqueFd s(fd);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof addr.sun_path - 1));
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return "error: connect: " + ErrnoName(errno);
  }
  std::string line = command + "\n";
  if (!WriteAll(fd, line).ok()) return "error: write";
  char buf[128];
  ssize_t n = ::read(fd, buf, sizeof buf);
  if (n <= 0) return "error: no reply (" + (n < 0 ? ErrnoName(errno) : std::string("eof")) + ")";
  std::string reply(buf, static_cast<size_t>(n));
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  return reply;
}

}  // namespace hangar::node::security
