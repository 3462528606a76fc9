// trinity, the kernel syscall fuzzer, runs inside a shared-tier sandbox for a bounded time (60 s,
// HANGAR_TRINITY_SECONDS to change it) as the sandbox's unprivileged user (trinity refuses to
// run as root). Afterwards the host must be healthy — this process works, the kernel has not
// tainted itself (no oops, no warning), a neighbour sandbox still answers and forks — and
// destroying the fuzzed sandbox must leave nothing (the fixture's leak checks).
//
// Needs the Debian package `trinity` (apt-get install trinity); skips without it. The template
// is made from the host's trinity and the libraries ldd names, so no mirror is needed.
#include <unistd.h>

#include <regex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "security_fixture.h"

namespace hangar::node::security {
namespace {

using namespace std::chrono_literals;

constexpr char kTrinity[] = "/usr/bin/trinity";

// The shared libraries (and loader) a dynamic binary needs, from ldd.
std::vector<std::string> SharedLibraries(const std::string& binary) {
  std::vector<std::string> out;
  auto r = RunCommand({"ldd", binary});
  if (!r.ok()) return out;
  std::regex path_re(R"((/[^\s]+))");
  std::istringstream in(r->out);
  std::string line;
  while (std::getline(in, line)) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (...)"
    std::smatch m;
    if (std::regex_search(line, m, path_re)) out.push_back(m[1]);
  }
  return out;
}

std::string Tainted() { return ReadFile("/proc/sys/kernel/tainted").value_or("?"); }

class TrinityTest : public SecurityTest {};

TEST_F(TrinityTest, FuzzingInsideLeavesTheHostAndNeighboursHealthy) {
  if (::access(kTrinity, X_OK) != 0) {
    GTEST_SKIP() << "needs trinity (Debian package `trinity`: apt-get install trinity)";
  }
  std::vector<std::pair<std::string, std::string>> files = {{kTrinity, kTrinity}};
  for (const std::string& lib : SharedLibraries(kTrinity)) files.emplace_back(lib, lib);
  ASSERT_GE(files.size(), 2u) << "ldd found no libraries for " << kTrinity;
  ASSERT_NO_FATAL_FAILURE(BuildTemplate("trinity", files));
  int seconds = 60;
  if (const char* s = std::getenv("HANGAR_TRINITY_SECONDS")) seconds = std::max(5, std::atoi(s));
  const std::string tainted_before = Tainted();

  ASSERT_NE(Create(Spec("calm1", "idle")), nullptr);
  WaitForDone("calm1");
  // -a64: the other ABIs are killed by the filter (the battery checks that), so fuzzing them
  // only respawns children. Fd providers off: perf (every perf_event_open is refused and
  // trinity's setup retries forever), drm (no devices), sockets (trinity 2023.01 crashes while
  // building its socket cache when most address families are refused; socket(2) itself is
  // still fuzzed).
  SandboxSpec spec =
      Spec("fuzz1", "exec",
           {{"PROBE_EXEC",
             std::string(kTrinity) + " -qq -l off -a64 -C 4 --disable-fds=perf,drm,sockets"}});
  spec.template_name = "trinity";
  spec.resources.pids = 256;
  spec.resources.memory_mb = 512;
  spec.resources.disk_mb = 256;
  spec.resources.cpu_millis = 1000;
  ASSERT_NE(Create(spec), nullptr);
  ProbeOutput o = WaitForDone("fuzz1");
  ASSERT_EQ(o.Result("exec"), "started") << o.text;

  // Fuzz for the bounded time, checking the neighbour as it goes.
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  uint64_t max_pids = 0;
  int neighbour_failures = 0;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(2s);
    if (Ask("calm1", "ping") != "pong") ++neighbour_failures;
    if (auto u = sandboxes_["fuzz1"]->GetUsage(); u.ok()) max_pids = std::max(max_pids, u->pids);
  }
  RecordProperty("trinity_seconds", seconds);
  RecordProperty("trinity_max_tasks", std::to_string(max_pids));
  std::string console = ReadFile(ConsolePath("fuzz1")).value_or("");
  std::cout << "--- trinity console (tail) ---\n"
            << console.substr(console.size() > 3000 ? console.size() - 3000 : 0) << "\n";
  EXPECT_GT(max_pids, 2u) << "trinity never ran its children:\n" << console;
  // "[main] 70746 iterations. [F:54470 S:16154 HI:563]": how many syscalls it made.
  long iterations = 0;
  std::regex it_re(R"(\[main\] (\d+) iterations\.)");
  for (auto i = std::sregex_iterator(console.begin(), console.end(), it_re);
       i != std::sregex_iterator(); ++i) {
    iterations = std::max(iterations, std::stol((*i)[1]));
  }
  RecordProperty("trinity_iterations", std::to_string(iterations));
  EXPECT_GE(iterations, 1000) << "trinity barely fuzzed";

  // The host and the neighbour are healthy; the fuzzed sandbox's init still answers.
  EXPECT_EQ(neighbour_failures, 0);
  EXPECT_EQ(Ask("calm1", "ping"), "pong");
  EXPECT_EQ(Ask("calm1", "fork"), "fork ok");
  EXPECT_EQ(Ask("fuzz1", "ping"), "pong");
  auto r = RunCommand({"/bin/true"});
  EXPECT_TRUE(r.ok() && r->status.success());
  EXPECT_EQ(Tainted(), tainted_before) << "the kernel tainted itself (oops or warning): dmesg";

  // Everything trinity made goes with the sandbox (TearDown counts cgroups, mounts, loop
  // devices, uid ranges and processes).
  auto t0 = std::chrono::steady_clock::now();
  DestroySandbox("fuzz1");
  RecordProperty("destroy_ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - t0)
                                                  .count()));
  EXPECT_EQ(Ask("calm1", "ping"), "pong");
}

}  // namespace
}  // namespace hangar::node::security
