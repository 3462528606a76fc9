// Supervisor: the node agent's registry of live sandboxes, over any number of drivers (tiers).
//
// It owns every Sandbox a driver created or recovered, serializes operations per sandbox,
// enforces each sandbox's timeout (a sandbox whose deadline passes is destroyed, with the
// reason recorded), and answers lookups for the node API. It holds no isolation logic: that
// is the drivers'. All time comes from the injected Clock, so tests drive timeouts with a
// FakeClock and Tick().
//
// Thread safety: every method may be called from any thread. Operations on one sandbox are
// serialized; operations on different sandboxes run concurrently (a slow Create does not block
// a Get of another sandbox).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/node/sandbox.h"

namespace hangar::node {

struct SupervisedInfo {
  SandboxInfo sandbox;
  std::string template_name;
  Resources resources;
  std::map<std::string, std::string> labels;
  std::optional<Clock::WallTime> deadline;  // when the timeout will destroy it
};

struct SupervisorOptions {
  // Driver name → driver (not owned). Create picks by name.
  std::map<std::string, Driver*> drivers;
  Clock* clock = nullptr;  // nullptr: SystemClock
  // At most this many sandboxes on the node at once (resource_exhausted beyond).
  size_t max_sandboxes = 1000;
  // A background thread calls Tick() this often; 0 disables it (tests call Tick()).
  std::chrono::milliseconds tick_interval{1000};
};

class Supervisor {
 public:
  // Takes over whatever each driver recovered after a restart (with no deadline: the control
  // plane re-asserts timeouts on reconcile).
  static Result<std::unique_ptr<Supervisor>> Start(SupervisorOptions options);
  ~Supervisor();  // stops the ticker; sandboxes stay running (they outlive the agent)

  Result<SupervisedInfo> Create(const std::string& driver, const SandboxSpec& spec);
  Result<SupervisedInfo> Get(const std::string& id) const;
  std::vector<SupervisedInfo> List() const;
  Result<Usage> GetUsage(const std::string& id);
  Result<EnvdEndpoint> Envd(const std::string& id) const;
  Status Pause(const std::string& id);
  Status Resume(const std::string& id);
  Status Stop(const std::string& id, std::chrono::milliseconds grace);
  // Destroys and forgets the sandbox. not_found if unknown.
  Status Destroy(const std::string& id);
  // New timeout from now (0 = none).
  Status SetTimeout(const std::string& id, std::chrono::seconds timeout);
  // Destroys every sandbox whose deadline has passed; returns their ids.
  std::vector<std::string> Tick();
  // Drivers by name with their availability (for GET /node/v1/info).
  std::map<std::string, Status> DriverStatus() const;

 private:
  struct Entry;
  explicit Supervisor(SupervisorOptions options);
  std::shared_ptr<Entry> Find(const std::string& id) const;
  SupervisedInfo Describe(const Entry& e) const;

  SupervisorOptions o_;
  Clock* clock_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> sandboxes_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread ticker_;
};

}  // namespace hangar::node
