// ControlRole: the control plane inside hangard — opens the store (SQLite in the data directory
// unless configured), the routing policy, the operator and node tokens, bootstraps a first team
// and API key on a fresh store, starts the ControlService and serves /v1 and /internal/v1.
//
// Files it keeps in the data directory (mode 0600 for secrets):
//   hangar.db       the store (control.database)
//   policy.yaml     the routing policy (control.policy), written from the shipped example on
//                   first start; edits are picked up without a restart
//   admin.token     bearer token of /v1/admin (control.admin_token)
//   join.token      bearer token node agents present (control.join_token)
//   api.key         the first team's API key, written once when the store is created
#pragma once

#include <memory>
#include <string>

#include "hangar/api/router.h"
#include "hangar/base/clock.h"
#include "hangar/base/config.h"
#include "hangar/base/status.h"

namespace hangar::daemon {

class ControlRole {
 public:
  static Result<std::unique_ptr<ControlRole>> Start(const Config& config,
                                                    const std::string& data_dir, Clock& clock);
  ~ControlRole();

  Status AddRoutes(api::Router& router);
  const std::string& join_token() const;

  struct State;

 private:
  explicit ControlRole(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

void AddControlOptions(ConfigSchema& schema);

// The routing policy shipped in examples/policy.yaml, compiled in.
extern const char* const kExamplePolicy;

}  // namespace hangar::daemon
