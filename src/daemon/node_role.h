// NodeRole: the node agent inside hangard — builds the shared-tier runtime (cgroup backend,
// uid ranges, templates, seccomp, the ns driver, the supervisor) from the configuration and
// serves the node API (/node/v1/...), which the control plane and `hangar node` use.
//
// The node API is authenticated with a bearer token (node.token, or a random one written to
// <data_dir>/node.token, mode 0600) and listens where hangard listens (loopback by default).
#pragma once

#include <memory>
#include <string>

#include "hangar/api/router.h"
#include "hangar/base/clock.h"
#include "hangar/base/config.h"
#include "hangar/base/status.h"

namespace hangar::daemon {

class NodeRole {
 public:
  // Recovers what a previous run left, then starts the supervisor. Fails with the reason when
  // the host cannot run sandboxes (not root, no user namespaces, unsupported cgroup layout).
  static Result<std::unique_ptr<NodeRole>> Start(const Config& config, const std::string& data_dir,
                                                 Clock& clock);
  ~NodeRole();

  Status AddRoutes(api::Router& router);
  // Reports to the control plane every node.heartbeat_ms from a thread of its own (stopped by
  // the destructor): identity, capacity, templates and sandboxes.
  void StartHeartbeats(const std::string& control_url, const std::string& join_token,
                       const std::string& advertise_url);
  const std::string& token() const;

  struct State;

 private:
  explicit NodeRole(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

// Adds the node role's options to a schema (keys node.*).
void AddNodeOptions(ConfigSchema& schema);

}  // namespace hangar::daemon
