#include "e2e_fixture.h"

#include <algorithm>
#include <iostream>

#include <fmt/format.h>

namespace hangar::integration {

void E2ETest::SetUp() {
  if (std::string why = SkipReason(); !why.empty()) GTEST_SKIP() << why;
  auto t = TempDir::Make("hangar-it-");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  tmp_ = std::move(*t);
}

void E2ETest::TearDown() {
  // Whatever a failed test left behind goes through the node API, then the daemons stop.
  for (auto& d : daemons_) {
    if (d->node.cgroup_root.empty() || !d->proc.running()) continue;
    for (const auto& id : NodeSandboxes(*d)) {
      (void)d->node_api.Call("DELETE", "/node/v1/sandboxes/" + id);
    }
  }
  for (auto& d : daemons_) {
    if (d->proc.running()) {
      auto st = d->proc.Stop();
      EXPECT_TRUE(st.ok() && st->success())
          << d->name
          << " did not exit 0 on SIGTERM: " << (st.ok() ? st->ToString() : st.status().ToString())
          << "\n"
          << d->proc.LogTail();
    }
  }
  for (auto& d : daemons_) {
    if (!d->node.cgroup_root.empty()) RemoveCgroupRoot(d->node.cgroup_root);
  }
  if (HasFailure()) {
    for (auto& d : daemons_) {
      std::cerr << "--- " << d->name << " log tail (" << d->log_path << ")\n"
                << d->proc.LogTail(3000) << "\n";
    }
  }
  daemons_.clear();
}

nlohmann::json E2ETest::SmallSpec(nlohmann::json extra) {
  nlohmann::json j = {{"template", "base"},
                      {"resources", {{"cpu_millis", 100}, {"memory_mb", 64}, {"disk_mb", 64}}},
                      {"timeout_s", 600}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

Daemon* E2ETest::Launch(std::unique_ptr<Daemon> d) {
  d->log_path = tmp_.path() + "/" + d->name + ".log";
  auto p = Hangard::Start(d->role, d->data_dir, d->flags, d->log_path);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return nullptr;
  d->proc = std::move(*p);
  ++d->starts;
  if (d->role != "node") {
    d->user = Api(d->proc.url(), ReadToken(d->data_dir + "/api.key"));
    d->admin = Api(d->proc.url(), ReadToken(d->data_dir + "/admin.token"));
  }
  if (d->role != "control") {
    d->node_api = Api(d->proc.url(), ReadToken(d->data_dir + "/node.token"));
  }
  daemons_.push_back(std::move(d));
  Daemon* out = daemons_.back().get();
  if (out->role == "embedded") WaitForOwnNode(out);
  return out;
}

void E2ETest::WaitForOwnNode(Daemon* d) {
  // The control plane knows where its node is once the node's first heartbeat (after a restart:
  // with the new port) arrived; until then creates queue and exec/files reach the old address.
  bool seen = WaitUntil(
      [&] {
        auto r = d->user.Call("GET", "/v1/nodes");
        if (!r.ok() || r->status != 200) return false;
        for (const auto& n : r->body["nodes"]) {
          if (n["url"] == d->proc.url() && n["status"] == "ready") return true;
        }
        return false;
      },
      std::chrono::seconds(15));
  EXPECT_TRUE(seen) << d->name << ": its node did not report within 15 s";
}

namespace {

std::vector<std::string> NodeFlags(const NodeIdentity& id, const std::string& node_id,
                                   std::vector<std::string> extra) {
  std::vector<std::string> f = {"--node-base-template", "", "--node-disk-pool", "64:0",
                                "--node-cgroup-root", id.cgroup_root, "--node-uid-base",
                                std::to_string(id.uid_base), "--node-uid-slots", "256",
                                "--node-heartbeat-ms", "200", "--node-id", node_id,
                                // The shared tier only: the hardened and isolated pools have no
                                // node, so tasks routed there wait (the demo of the issue).
                                "--node-drivers", "ns"};
  // A flag the caller gives replaces the default above (each flag is given once).
  for (size_t i = 0; i + 1 < extra.size(); i += 2) {
    auto it = std::find(f.begin(), f.end(), extra[i]);
    if (it != f.end()) {
      *(it + 1) = extra[i + 1];
    } else {
      f.push_back(extra[i]);
      f.push_back(extra[i + 1]);
    }
  }
  return f;
}

}  // namespace

Daemon* E2ETest::StartEmbedded(std::vector<std::string> flags) {
  auto d = std::make_unique<Daemon>();
  d->name = fmt::format("embedded{}", next_slot_);
  d->role = "embedded";
  d->data_dir = tmp_.path() + "/" + d->name;
  d->node = UniqueNodeIdentity(next_slot_++);
  Status st = ImportTemplate(d->data_dir);
  EXPECT_TRUE(st.ok()) << st.ToString();
  if (!st.ok()) return nullptr;
  d->flags = NodeFlags(d->node, "it-" + d->name, std::move(flags));
  return Launch(std::move(d));
}

Daemon* E2ETest::StartControl(std::vector<std::string> flags) {
  auto d = std::make_unique<Daemon>();
  d->name = fmt::format("control{}", next_slot_++);
  d->role = "control";
  d->data_dir = tmp_.path() + "/" + d->name;
  d->flags = std::move(flags);
  return Launch(std::move(d));
}

Daemon* E2ETest::StartNode(const Daemon& control, const std::string& node_id,
                           std::vector<std::string> flags) {
  auto d = std::make_unique<Daemon>();
  d->name = fmt::format("node{}", next_slot_);
  d->role = "node";
  d->data_dir = tmp_.path() + "/" + d->name;
  d->node = UniqueNodeIdentity(next_slot_++);
  Status st = ImportTemplate(d->data_dir);
  EXPECT_TRUE(st.ok()) << st.ToString();
  if (!st.ok()) return nullptr;
  flags.insert(flags.begin(), {"--node-control-url", control.proc.url(), "--node-join-token",
                               ReadToken(control.data_dir + "/join.token")});
  d->flags = NodeFlags(d->node, node_id, std::move(flags));
  return Launch(std::move(d));
}

void E2ETest::Kill(Daemon* d) {
  Status st = d->proc.Kill();
  EXPECT_TRUE(st.ok()) << st.ToString();
}

void E2ETest::Restart(Daemon* d) {
  ASSERT_FALSE(d->proc.running());
  auto p = Hangard::Start(d->role, d->data_dir, d->flags, d->log_path);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  d->proc = std::move(*p);
  ++d->starts;
  d->user = Api(d->proc.url(), d->user.bearer());
  d->admin = Api(d->proc.url(), d->admin.bearer());
  d->node_api = Api(d->proc.url(), d->node_api.bearer());
  if (d->role == "embedded") WaitForOwnNode(d);
}

nlohmann::json E2ETest::WaitFor(const Api& api, const std::string& id,
                                const std::function<bool(const nlohmann::json&)>& pred,
                                std::chrono::milliseconds limit) {
  nlohmann::json last;
  WaitUntil(
      [&] {
        auto r = api.Call("GET", "/v1/sandboxes/" + id);
        if (!r.ok() || r->status != 200) return false;
        last = r->body;
        return pred(last);
      },
      limit);
  return last;
}

std::vector<std::string> E2ETest::NodeSandboxes(const Daemon& node) {
  std::vector<std::string> out;
  auto r = node.node_api.Call("GET", "/node/v1/sandboxes");
  if (!r.ok() || r->status != 200) {
    ADD_FAILURE() << "node list: " << (r.ok() ? r->Describe() : r.status().ToString());
    return out;
  }
  for (const auto& s : r->body["sandboxes"]) out.push_back(s.value("id", ""));
  std::sort(out.begin(), out.end());
  return out;
}

void E2ETest::ExpectNoLeaks(Daemon* node, int pool_spares) {
  ASSERT_NE(node, nullptr);
  if (node->proc.running()) {
    EXPECT_TRUE(NodeSandboxes(*node).empty()) << "sandboxes left on " << node->name;
  }
  Leaks l = CountLeaks(node->data_dir, node->node.cgroup_root);
  EXPECT_EQ(l.mounts, 0) << l.Describe();
  EXPECT_EQ(l.loops, 0) << l.Describe();
  EXPECT_EQ(l.cgroups, 0) << l.Describe();
  EXPECT_LE(l.pool_loops, pool_spares) << l.Describe();
  EXPECT_LE(l.pool_mounts, pool_spares) << l.Describe();
}

}  // namespace hangar::integration
