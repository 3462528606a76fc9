// Store backend conformance suite: the behaviour store.h promises, written once as
// value-parameterised tests that every backend's test binary instantiates with a factory:
//
//   StoreBackendFactory SqliteFactory() { ... }
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformanceTest,
//                            ::testing::Values(SqliteFactory()), StoreBackendName);
//
// Contract for a factory: `make()` gives a fresh, empty database for one test; its Open() may be
// called again after the previous Store was destroyed and must see everything committed
// before (the suite checks persistence and the durable queue across a "restart"). Several
// Store objects from one backend may be open at once.
// Thread safety: gtest fixtures; the concurrency tests share one Store between threads.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "hangar/base/status.h"
#include "hangar/control/store.h"

namespace hangar::control::testing {

// One test's database.
class StoreBackend {
 public:
  virtual ~StoreBackend() = default;
  virtual Result<std::unique_ptr<Store>> Open() = 0;
};

struct StoreBackendFactory {
  std::string name;  // a gtest-safe identifier: letters, digits, '_'
  std::function<Result<std::unique_ptr<StoreBackend>>()> make;
};

// gtest prints the parameter by name, not as bytes.
void PrintTo(const StoreBackendFactory& factory, std::ostream* os);
std::string StoreBackendName(const ::testing::TestParamInfo<StoreBackendFactory>& info);

// A task with every field set to something distinctive (so a column mix-up shows).
Task FullTask(const std::string& id, const std::string& team_id, int64_t created_ms);
// A minimal pending task.
Task SimpleTask(const std::string& id, const std::string& team_id, int64_t created_ms,
                int priority = 0);
RoutingDecision DecisionFor(const Task& task);
// Every field equal (Task has no operator==: json and optional members are compared here).
void ExpectSameTask(const Task& want, const Task& got);

class StoreConformanceTest : public ::testing::TestWithParam<StoreBackendFactory> {
 protected:
  void SetUp() override;
  // Closes the store and opens the same database again (a daemon restart).
  void Reopen();
  // Creates and checks success.
  Task MustCreate(const Task& task);

  std::unique_ptr<StoreBackend> backend_;
  std::unique_ptr<Store> store_;
};

}  // namespace hangar::control::testing
