// End to end: envd as the init of a real shared-tier sandbox (hangar::node::NewNsDriver —
// user/pid/mount/net namespaces, id-mapped overlay on a loop disk, cgroups, seccomp, dropped
// capabilities), reached through the node's Unix socket by hangar::envd::Client.
#include <sys/prctl.h>

#include <algorithm>
#include <filesystem>

#include "envd_testing.h"
#include "hangar/node/ns_driver.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"

namespace hangar::envd {
namespace {

using namespace std::chrono_literals;

class EnvdSandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, mounts, cgroups, loop devices)";
    if (!node::testing::HaveBusybox()) GTEST_SKIP() << "needs busybox-static";
    auto t = TempDir::Make("hangar-envd-sb-", "/var/tmp");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
    data_ = tmp_.path() + "/data";
    ASSERT_TRUE(MakeDirs(data_).ok());
    ASSERT_NO_FATAL_FAILURE(BuildTemplate());
    auto layout = node::DetectCgroupLayout();
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    node::CgroupOptions co;
    co.root = "hangar-envd-test-" + std::to_string(::getpid());
    auto cg = node::MakeCgroupBackend(*layout, co);
    ASSERT_TRUE(cg.ok()) << cg.status().ToString();
    cgroups_ = std::move(*cg);
    node::IdAllocatorOptions io;
    io.state_dir = data_ + "/ids";
    io.base = 1'000'000;
    io.slots = 16;
    auto ids = node::IdRangeAllocator::Open(io);
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    ids_ = std::move(*ids);
    auto policy = node::DefaultSeccompPolicy();
    ASSERT_TRUE(policy.ok());
    auto prog = node::CompileSeccompPolicy(*policy);
    ASSERT_TRUE(prog.ok());
    seccomp_ = std::move(*prog);

    node::NsDriverOptions o;
    o.data_dir = data_;
    o.templates = &*store_;
    o.cgroups = cgroups_.get();
    o.ids = ids_.get();
    o.seccomp = &seccomp_;
    o.init_path = ENVD_BINARY;
    o.init_args = {"--listen-fd", "3", "--log-level", "warn"};
    o.wait_for_envd = true;
    o.disk_pool.targets = {{64, 1}};
    auto d = node::NewNsDriver(o);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    driver_ = std::move(*d);
  }

  void TearDown() override {
    driver_.reset();
    if (cgroups_) {
      EXPECT_TRUE(cgroups_->List().ok() && cgroups_->List()->empty()) << "leaked cgroups";
      (void)cgroups_->RemoveRoot();
    }
    tmp_ = TempDir();
  }

  // busybox, with root and `user` (1000) accounts (the fixture shared with the ns driver's tests).
  void BuildTemplate() {
    storage::TemplateStoreOptions so;
    so.root = data_ + "/templates";
    auto store = storage::TemplateStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_.emplace(std::move(*store));
    auto info = node::testing::ImportBusyboxTemplate(*store_, tmp_.path());
    ASSERT_TRUE(info.ok()) << info.status().ToString();
  }

  node::SandboxSpec Spec(std::string id) {
    node::SandboxSpec s;
    s.id = std::move(id);
    s.template_name = "busybox";
    s.resources.disk_mb = 64;
    s.resources.memory_mb = 256;
    s.resources.pids = 128;
    s.env = {{"SANDBOX_VAR", "from-spec"}};
    return s;
  }

  TempDir tmp_;
  std::string data_;
  std::optional<storage::TemplateStore> store_;
  node::CgroupBackendPtr cgroups_;
  std::unique_ptr<node::IdRangeAllocator> ids_;
  node::SeccompProgram seccomp_;
  node::DriverPtr driver_;
};

TEST_F(EnvdSandboxTest, ExecAndFilesInsideTheHardenedSandbox) {
  auto created_at = std::chrono::steady_clock::now();
  auto sb = driver_->Create(Spec("envdsb1"));
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  auto create_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - created_at)
          .count();
  node::EnvdEndpoint ep = (*sb)->Envd();
  auto c = Client::Create(Endpoint{ep.unix_socket, ep.tcp, ep.access_token});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->Health().ok());

  auto sh = [&](const std::string& script, const std::string& user = "") {
    std::string out;
    auto r = c->Run(Command{.cmd = "/bin/sh", .args = {"-c", script}, .user = user},
                    {.on_stdout = [&](std::string_view s) { out.append(s); },
                     .on_stderr = [&](std::string_view s) { out.append(s); }});
    EXPECT_TRUE(r.ok()) << script << ": " << r.status().ToString();
    return out;
  };
  // Users inside, the sandbox's hostname, envd as PID 1, the spec's environment.
  EXPECT_EQ(sh("id -u; id -g"), "1000\n1000\n");
  EXPECT_EQ(sh("id -u", "root"), "0\n");
  EXPECT_EQ(sh("hostname"), "envdsb1\n");
  EXPECT_NE(sh("cat /proc/1/cmdline | tr '\\0' ' '").find("--listen-fd 3"), std::string::npos);
  EXPECT_EQ(sh("echo $SANDBOX_VAR $HOME $USER"), "from-spec /home/user user\n");
  EXPECT_EQ(sh("pwd"), "/home/user\n");

  // Host files are out of reach, both for commands and for envd's file API.
  std::string host_secret = tmp_.path() + "/host-secret";
  ASSERT_TRUE(WriteFile(host_secret, "host only").ok());
  EXPECT_NE(sh("cat " + host_secret + " 2>&1; echo rc=$?").find("rc=1"), std::string::npos);
  EXPECT_EQ(c->ReadFile(host_secret).status().code(), Code::kNotFound);

  // Files through envd, seen by commands, owned by the user inside.
  ASSERT_TRUE(c->WriteFile("hello.txt", "hi from the node").ok());
  EXPECT_EQ(sh("cat /home/user/hello.txt; ls -ln /home/user/hello.txt | awk '{print $3}'"),
            "hi from the node1000\n");
  auto st = c->Stat("/home/user/hello.txt");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->owner, "user");
  std::string big(2 << 20, 'b');
  ASSERT_TRUE(c->WriteFile("/tmp/big", big).ok());
  EXPECT_EQ(*c->ReadFile("/tmp/big"), big);
  auto list = c->ListDir("/");
  ASSERT_TRUE(list.ok());
  std::vector<std::string> names;
  for (const auto& e : *list) names.push_back(e.name);
  for (const char* n : {"bin", "etc", "home", "proc", "tmp"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  EXPECT_TRUE(c->MakeDir("a/b").ok());
  EXPECT_TRUE(c->Move("a", "/home/user/c/a2").ok());
  // /tmp is its own tmpfs: rename(2) cannot cross it, and says so (as E2B's envd does).
  auto across = c->Move("c", "/tmp/c");
  EXPECT_EQ(across.status().code(), Code::kInvalidArgument);
  EXPECT_NE(across.status().message().find("cross-device"), std::string::npos)
      << across.status().message();
  EXPECT_TRUE(c->Remove("c").ok());

  // As PID 1, envd reaps orphans: no zombies after a command leaves a child behind.
  sh("sleep 0.1 &");
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(sh("cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l"), "0\n");

  // Background process, killed through envd.
  auto pid = c->StartBackground(Command{.cmd = "sleep", .args = {"100"}});
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  EXPECT_EQ(c->List()->size(), 1u);
  EXPECT_TRUE(c->Kill(*pid).ok());
  auto killed = c->Attach(*pid);
  ASSERT_TRUE(killed.ok()) << killed.status().ToString();
  EXPECT_EQ(killed->status, "signal: killed");

  // Start → first stdout byte over the node's Unix socket (reported, not asserted).
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    double first = -1;
    auto r = c->Run(
        Command{.cmd = "/bin/echo", .args = {"x"}}, {.on_stdout = [&](std::string_view) {
          if (first < 0) {
            first = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count();
          }
        }});
    ASSERT_TRUE(r.ok());
    ms.push_back(first);
  }
  // The floor, in the same run: fork+exec of echo on the host, to its first byte on a pipe.
  std::vector<double> floor_ms;
  for (int i = 0; i < 20; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto child = Child::Spawn({"/bin/echo", "x"}, {.capture_stdout = true});
    ASSERT_TRUE(child.ok());
    char b;
    ASSERT_EQ(::read(child->stdout_fd().get(), &b, 1), 1);
    floor_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    (void)child->Wait();
  }
  std::sort(ms.begin(), ms.end());
  std::sort(floor_ms.begin(), floor_ms.end());
  double median = ms[ms.size() / 2], floor_median = floor_ms[floor_ms.size() / 2];
  std::printf(
      "sandbox create (with envd ready): %.1f ms; Start->first byte over the unix socket: "
      "median %.2f ms, max %.2f ms; host fork+exec floor median %.2f ms; ratio %.1fx "
      "(n=%zu)\n",
      create_ms, median, ms.back(), floor_median, median / floor_median, ms.size());

  // A graceful stop: SIGTERM reaches envd (PID 1), which exits; nothing is left.
  auto stop_t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE((*sb)->Stop(5s).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - stop_t0, 4s) << "envd did not exit on SIGTERM";
  EXPECT_TRUE((*sb)->Destroy().ok());
  EXPECT_FALSE(std::filesystem::exists(data_ + "/sandboxes/envdsb1"));
}

}  // namespace
}  // namespace hangar::envd
