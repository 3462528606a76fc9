// The E2B drop-in end to end: the stock `e2b` SDK (npm, pinned in tests/e2e/package-lock.json)
// drives a real embedded hangard through E2B_API_URL / E2B_SANDBOX_URL and two teams' API keys.
// This driver prepares the daemon and runs tests/e2e/*.test.mjs with `node --test`:
//  - templates imported before hangard starts: `base` (busybox + the host's /usr/bin/bash, which
//    the SDK's commands.run needs) and `nobash` (plain busybox: create must refuse it);
//  - hangard embedded on 127.0.0.1:0 with its own data dir, cgroup root and uid range, a warm
//    pool of `base`, no Debian template build;
//  - a second team (and key) made through /v1/admin, so the suite can check isolation;
//  - after the suite: no sandbox left on the node, hangard exits 0 on SIGTERM, and the kernel
//    holds nothing for the data dir (mounts, loop devices, cgroups).
// Needs root (the node role), busybox-static, bash, Node.js >= 20.18 and tests/e2e/node_modules
// (scripts/install-deps.sh runs `npm ci` there).
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"
#include "harness.h"

extern char** environ;

namespace hangar::integration {
namespace {

using std::chrono::seconds;

Status ImportTemplates(const std::string& data_dir) {
  HANGAR_TRY(MakeDirs(data_dir));
  storage::TemplateStoreOptions o;
  o.root = data_dir + "/templates";
  HANGAR_ASSIGN_OR_RETURN(auto store, storage::TemplateStore::Open(o));
  HANGAR_ASSIGN_OR_RETURN(TempDir with_bash, TempDir::Make("hangar-e2b-tmpl-"));
  HANGAR_TRY(
      node::testing::ImportBusyboxTemplate(store, with_bash.path(), "base", {"/usr/bin/bash"})
          .status());
  HANGAR_ASSIGN_OR_RETURN(TempDir plain, TempDir::Make("hangar-e2b-tmpl-"));
  return node::testing::ImportBusyboxTemplate(store, plain.path(), "nobash").status();
}

std::vector<std::string> SuiteFiles(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    const std::string suffix = ".test.mjs";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(dir + "/" + name);
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(E2bSdk, StockSdkFlowsAgainstHangard) {
  if (std::string why = SkipReason(); !why.empty()) GTEST_SKIP() << why;
  if (::access("/usr/bin/bash", X_OK) != 0) GTEST_SKIP() << "needs /usr/bin/bash";
  const std::string suite_dir = E2E_SOURCE_DIR;
  ASSERT_EQ(::access(NODE_BIN, X_OK), 0)
      << "Node.js (>= 20.18) not found at configure time ('" << NODE_BIN << "')";
  ASSERT_EQ(::access((suite_dir + "/node_modules/e2b/package.json").c_str(), R_OK), 0)
      << "the pinned e2b SDK is not installed: run scripts/install-deps.sh (npm ci --prefix "
      << suite_dir << ")";
  const auto files = SuiteFiles(suite_dir);
  ASSERT_FALSE(files.empty()) << "no *.test.mjs in " << suite_dir;

  auto tmp = TempDir::Make("hangar-e2b-");
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();
  const std::string data_dir = tmp->path() + "/data";
  Status imported = ImportTemplates(data_dir);
  ASSERT_TRUE(imported.ok()) << imported.ToString();

  const NodeIdentity id = UniqueNodeIdentity(0);
  const std::string log_path = tmp->path() + "/hangard.log";
  const char* warm = std::getenv("HANGAR_E2E_WARM_POOL");
  auto started = Hangard::Start(
      "embedded", data_dir,
      {"--node-base-template", "", "--node-drivers", "ns", "--node-cgroup-root", id.cgroup_root,
       "--node-uid-base", std::to_string(id.uid_base), "--node-uid-slots", "256",
       "--node-heartbeat-ms", "200", "--node-id", "e2b-e2e", "--node-warm-pool",
       warm != nullptr ? warm : "base:2", "--node-disk-pool", "1024:1",
       // E2B sandboxes are 1 core each (LifecycleOptions): room for 8 on these 2 cores.
       "--control-overcommit-cpu-percent", "400", "--log-level", "info"},
      log_path);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  Hangard hangard = std::move(*started);
  auto dump_log = [&] {
    std::cerr << "--- hangard log tail (" << log_path << ")\n" << hangard.LogTail(6000) << "\n";
  };

  const Api team_a(hangard.url(), ReadToken(data_dir + "/api.key"));
  const Api admin(hangard.url(), ReadToken(data_dir + "/admin.token"));
  const Api node_api(hangard.url(), ReadToken(data_dir + "/node.token"));
  // An assertion that ends the test early still destroys the node's sandboxes and stops the
  // daemon, so a failed run leaves nothing in the kernel for the next one.
  struct Guard {
    std::function<void()> fn;
    ~Guard() { fn(); }
  } guard{[&] {
    if (!hangard.running()) return;
    auto r = node_api.Call("GET", "/node/v1/sandboxes");
    for (const auto& s : r.ok() ? r->body["sandboxes"] : nlohmann::json::array()) {
      (void)node_api.Call("DELETE", "/node/v1/sandboxes/" + s.value("id", ""));
    }
    (void)hangard.Stop();
    RemoveCgroupRoot(id.cgroup_root);
  }};
  // Creates queue until the node's first heartbeat: wait for it like the other e2e tests.
  bool ready = WaitUntil(
      [&] {
        auto r = team_a.Call("GET", "/v1/nodes");
        if (!r.ok() || r->status != 200) return false;
        for (const auto& n : r->body["nodes"]) {
          if (n["status"] == "ready") return true;
        }
        return false;
      },
      seconds(20));
  ASSERT_TRUE(ready) << "the embedded node never reported ready";
  auto team_b = admin.Call("POST", "/v1/admin/teams", {{"name", "e2b-team-b"}});
  ASSERT_TRUE(team_b.ok()) << team_b.status().ToString();
  ASSERT_EQ(team_b->status, 201) << team_b->Describe();

  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  env["E2B_API_URL"] = hangard.url();
  env["E2B_SANDBOX_URL"] = hangard.url();
  env["E2B_API_KEY"] = team_a.bearer();
  env["E2B_API_KEY_2"] = team_b->body.value("api_key", "");
  env["HANGAR_URL"] = hangard.url();
  env["HANGAR_NODE_TOKEN"] = node_api.bearer();
  env["HANGAR_DATA_DIR"] = data_dir;
  env.erase("E2B_DEBUG");
  env.erase("E2B_DOMAIN");

  std::vector<std::string> argv = {NODE_BIN, "--test", "--test-reporter=spec"};
  argv.insert(argv.end(), files.begin(), files.end());
  SpawnOptions so;
  so.env = env;
  so.cwd = suite_dir;
  so.death_signal = SIGKILL;
  auto node = Child::Spawn(argv, so);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto done = node->WaitFor(std::chrono::minutes(12));
  if (!done.ok()) {
    (void)node->Signal(SIGKILL);
    (void)node->Wait();
  }
  ASSERT_TRUE(done.ok()) << "node --test did not finish in 12 minutes: "
                         << done.status().ToString();
  EXPECT_TRUE(done->success()) << "node --test: " << done->ToString()
                               << " (the failing SDK flows are listed above)";
  if (!done->success()) dump_log();

  // Whatever the suite made is gone: the node runs none of it (warm spares are not listed).
  bool empty = WaitUntil(
      [&] {
        auto r = node_api.Call("GET", "/node/v1/sandboxes");
        return r.ok() && r->status == 200 && r->body["sandboxes"].empty();
      },
      seconds(30));
  if (!empty) {
    auto r = node_api.Call("GET", "/node/v1/sandboxes");
    ADD_FAILURE() << "sandboxes left on the node: " << (r.ok() ? r->Describe() : "?");
    for (const auto& s : r.ok() ? r->body["sandboxes"] : nlohmann::json::array()) {
      (void)node_api.Call("DELETE", "/node/v1/sandboxes/" + s.value("id", ""));
    }
  }
  auto stopped = hangard.Stop();
  EXPECT_TRUE(stopped.ok() && stopped->success())
      << "hangard did not exit 0 on SIGTERM: "
      << (stopped.ok() ? stopped->ToString() : stopped.status().ToString());
  Leaks l = CountLeaks(data_dir, id.cgroup_root);
  EXPECT_EQ(l.mounts, 0) << l.Describe();
  EXPECT_EQ(l.loops, 0) << l.Describe();
  EXPECT_EQ(l.cgroups, 0) << l.Describe();
  EXPECT_EQ(l.pool_mounts, 0) << l.Describe();
  EXPECT_EQ(l.pool_loops, 0) << l.Describe();
  RemoveCgroupRoot(id.cgroup_root);
  if (HasFailure() && done->success()) dump_log();
}

}  // namespace
}  // namespace hangar::integration
