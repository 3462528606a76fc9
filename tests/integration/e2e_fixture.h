// The gtest fixture of the control plane's end-to-end tests: starts hangard processes (embedded,
// control, node) on their own data directories under one TempDir, knows their credentials, and on
// TearDown destroys whatever sandbox a failed test left on a node (node API), stops the daemons
// and removes their cgroup roots, so a failing test does not leak into the next one.
// Skips (saying why) when not root or without busybox-static.
// Thread safety: the fixture from the test's thread; the Api values it hands out from any.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "hangar/base/tempdir.h"
#include "harness.h"

namespace hangar::integration {

// A running daemon with its directory and credentials.
struct Daemon {
  std::string name;
  std::string role;
  std::string data_dir;
  std::vector<std::string> flags;  // as started, for a restart on the same data dir
  NodeIdentity node;               // empty cgroup_root for the control role
  Hangard proc;
  Api user;      // the bootstrap team's key (control roles)
  Api admin;     // admin token (control roles)
  Api node_api;  // node token (node roles)
  std::string log_path;
  int starts = 0;
};

class E2ETest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A sandbox body the busybox node can run quickly: 0.1 core, 64 MiB, 64 MiB disk.
  static nlohmann::json SmallSpec(nlohmann::json extra = nlohmann::json::object());

  // Starts hangard (embedded: and waits for its node's first heartbeat). Node roles get the busybox
  // template as "base", no disk pool spares unless `flags` says otherwise, a heartbeat every 200 ms
  // and a unique cgroup root and uid range.
  Daemon* StartEmbedded(std::vector<std::string> flags = {});
  Daemon* StartControl(std::vector<std::string> flags = {});
  Daemon* StartNode(const Daemon& control, const std::string& node_id,
                    std::vector<std::string> flags = {});
  // SIGKILL / restart on the same data dir with the same flags (new port).
  // Restart waits, for an embedded daemon, until its node reported the new address.
  void Kill(Daemon* d);
  void Restart(Daemon* d);
  // Until the embedded daemon's control plane lists its node, ready, at its current URL.
  void WaitForOwnNode(Daemon* d);

  // GET /v1/sandboxes/{id} until `pred` holds (or `limit`); returns the last body.
  nlohmann::json WaitFor(const Api& api, const std::string& id,
                         const std::function<bool(const nlohmann::json&)>& pred,
                         std::chrono::milliseconds limit = std::chrono::seconds(30));
  // Ids of the sandboxes the node API lists.
  std::vector<std::string> NodeSandboxes(const Daemon& node);
  // Everything a test made is gone: no sandbox on the node, nothing left in the kernel.
  void ExpectNoLeaks(Daemon* node, int pool_spares = 0);

  TempDir tmp_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
  int next_slot_ = 0;

 private:
  Daemon* Launch(std::unique_ptr<Daemon> d);
};

}  // namespace hangar::integration
