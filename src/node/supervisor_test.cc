#include "hangar/node/supervisor.h"

#include <thread>

#include <gtest/gtest.h>

#include "testing/fake_driver.h"

namespace hangar::node {
namespace {

using namespace std::chrono_literals;
using testing::FakeDriver;

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SupervisorOptions o;
    o.drivers = {{"fake", &driver_}};
    o.clock = &clock_;
    o.tick_interval = 0ms;
    o.max_sandboxes = 3;
    auto s = Supervisor::Start(o);
    ASSERT_TRUE(s.ok());
    sup_ = std::move(*s);
  }
  SandboxSpec Spec(std::string id, std::chrono::seconds timeout = 0s) {
    SandboxSpec s;
    s.id = std::move(id);
    s.template_name = "t";
    s.timeout = timeout;
    return s;
  }
  FakeClock clock_;
  FakeDriver driver_;
  std::unique_ptr<Supervisor> sup_;
};

TEST_F(SupervisorTest, CreateGetListDestroy) {
  auto a = sup_->Create("fake", Spec("a"));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->sandbox.state, SandboxState::kRunning);
  EXPECT_FALSE(a->deadline.has_value());
  EXPECT_TRUE(sup_->Get("a").ok());
  EXPECT_EQ(sup_->List().size(), 1u);
  EXPECT_EQ(sup_->Create("fake", Spec("a")).status().code(), Code::kAlreadyExists);
  EXPECT_TRUE(sup_->Destroy("a").ok());
  EXPECT_EQ(sup_->Get("a").status().code(), Code::kNotFound);
  EXPECT_EQ(sup_->Destroy("a").code(), Code::kNotFound);
  EXPECT_EQ(driver_.live(), 0u);
}

TEST_F(SupervisorTest, UnknownDriverAndUnavailableDriver) {
  EXPECT_EQ(sup_->Create("microvm", Spec("a")).status().code(), Code::kInvalidArgument);
  driver_.unavailable = "no /dev/kvm";
  auto r = sup_->Create("fake", Spec("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no /dev/kvm"), std::string::npos);
  EXPECT_EQ(sup_->List().size(), 0u);
}

TEST_F(SupervisorTest, FailedCreateReleasesTheId) {
  driver_.fail_next_create = Status::ResourceExhausted("no disk");
  EXPECT_EQ(sup_->Create("fake", Spec("a")).status().code(), Code::kResourceExhausted);
  EXPECT_EQ(sup_->Get("a").status().code(), Code::kNotFound);
  EXPECT_TRUE(sup_->Create("fake", Spec("a")).ok()) << "the id is free again";
}

TEST_F(SupervisorTest, CapacityLimit) {
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(sup_->Create("fake", Spec(id)).ok());
  auto r = sup_->Create("fake", Spec("d"));
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_EQ(driver_.live(), 3u);
}

TEST_F(SupervisorTest, TimeoutDestroysOnlyExpiredSandboxes) {
  ASSERT_TRUE(sup_->Create("fake", Spec("short", 10s)).ok());
  ASSERT_TRUE(sup_->Create("fake", Spec("long", 60s)).ok());
  ASSERT_TRUE(sup_->Create("fake", Spec("forever")).ok());
  clock_.Advance(9s);
  EXPECT_TRUE(sup_->Tick().empty());
  clock_.Advance(1s);
  EXPECT_EQ(sup_->Tick(), std::vector<std::string>{"short"});
  EXPECT_EQ(sup_->Get("short").status().code(), Code::kNotFound);
  // Extending a timeout moves the deadline from now.
  ASSERT_TRUE(sup_->SetTimeout("long", 100s).ok());
  clock_.Advance(60s);
  EXPECT_TRUE(sup_->Tick().empty());
  clock_.Advance(40s);
  EXPECT_EQ(sup_->Tick(), std::vector<std::string>{"long"});
  EXPECT_TRUE(sup_->Get("forever").ok());
  EXPECT_EQ(driver_.live(), 1u);
}

TEST_F(SupervisorTest, PauseResumeStateMachine) {
  ASSERT_TRUE(sup_->Create("fake", Spec("a")).ok());
  EXPECT_EQ(sup_->Resume("a").code(), Code::kFailedPrecondition);
  EXPECT_TRUE(sup_->Pause("a").ok());
  EXPECT_EQ(sup_->Get("a")->sandbox.state, SandboxState::kPaused);
  EXPECT_EQ(sup_->Envd("a").status().code(), Code::kFailedPrecondition);
  EXPECT_TRUE(sup_->Resume("a").ok());
  EXPECT_TRUE(sup_->Envd("a").ok());
}

TEST_F(SupervisorTest, ConcurrentCreatesOfDistinctIds) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (sup_->Create("fake", Spec("s" + std::to_string(i))).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 3) << "exactly max_sandboxes succeed";
  EXPECT_EQ(driver_.live(), 3u);
}

}  // namespace
}  // namespace hangar::node
