// FakeDriver: an in-memory Driver for tests of what sits above drivers (supervisor, node API,
// control plane, simulator). It isolates nothing. Faults are injected through fail_next_create
// and unavailable; every sandbox it made is counted, so tests can assert nothing leaked.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "hangar/node/sandbox.h"

namespace hangar::node::testing {

class FakeDriver final : public Driver {
 public:
  struct State {
    std::mutex mu;
    std::set<std::string> live;  // created and not destroyed
    int creates = 0;
    int destroys = 0;
  };

  explicit FakeDriver(std::string name = "fake") : name_(std::move(name)) {}

  std::string_view Name() const override { return name_; }
  Status Available() const override {
    return unavailable.empty() ? Status::Ok() : Status::FailedPrecondition(unavailable);
  }
  Result<SandboxPtr> Create(const SandboxSpec& spec) override {
    if (!fail_next_create.ok()) return std::exchange(fail_next_create, Status::Ok());
    std::lock_guard lock(state_->mu);
    if (state_->live.count(spec.id)) return Status::AlreadyExists(spec.id);
    state_->live.insert(spec.id);
    ++state_->creates;
    SandboxInfo info;
    info.id = spec.id;
    info.driver = name_;
    info.state = SandboxState::kRunning;
    return SandboxPtr(new FakeSandbox(state_, std::move(info)));
  }
  Result<std::pair<RecoveryReport, std::vector<SandboxPtr>>> Recover() override {
    return std::make_pair(RecoveryReport{}, std::vector<SandboxPtr>{});
  }

  State& state() { return *state_; }
  size_t live() {
    std::lock_guard lock(state_->mu);
    return state_->live.size();
  }

  Status fail_next_create;
  std::string unavailable;

 private:
  class FakeSandbox final : public Sandbox {
   public:
    FakeSandbox(std::shared_ptr<State> s, SandboxInfo info)
        : state_(std::move(s)), info_(std::move(info)) {}
    SandboxInfo Info() const override { return info_; }
    EnvdEndpoint Envd() const override { return {"/nonexistent/" + info_.id + ".sock", "", ""}; }
    Result<Usage> GetUsage() override { return Usage{.cpu_usec = 1}; }
    Status Pause() override {
      if (info_.state != SandboxState::kRunning) return Status::FailedPrecondition("not running");
      info_.state = SandboxState::kPaused;
      return Status::Ok();
    }
    Status Resume() override {
      if (info_.state != SandboxState::kPaused) return Status::FailedPrecondition("not paused");
      info_.state = SandboxState::kRunning;
      return Status::Ok();
    }
    Status Stop(std::chrono::milliseconds) override {
      info_.state = SandboxState::kStopped;
      return Status::Ok();
    }
    Status Destroy() override {
      std::lock_guard lock(state_->mu);
      if (state_->live.erase(info_.id)) ++state_->destroys;
      info_.state = SandboxState::kStopped;
      return Status::Ok();
    }

   private:
    std::shared_ptr<State> state_;
    SandboxInfo info_;
  };

  std::string name_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace hangar::node::testing
