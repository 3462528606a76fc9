#include "hangar/control/model.h"

#include <array>
#include <utility>

#include <fmt/format.h>

namespace hangar::control {
namespace {

template <typename E, size_t N>
Result<E> ParseName(std::string_view what, std::string_view name,
                    const std::array<std::pair<E, std::string_view>, N>& names) {
  std::string valid;
  for (const auto& [value, text] : names) {
    if (text == name) return value;
    valid += valid.empty() ? "" : ", ";
    valid += text;
  }
  return Status::InvalidArgument(fmt::format("unknown {} '{}' (valid: {})", what, name, valid));
}

template <typename E, size_t N>
std::string_view NameOf(E value, const std::array<std::pair<E, std::string_view>, N>& names) {
  for (const auto& [v, text] : names) {
    if (v == value) return text;
  }
  return "unknown";
}

constexpr std::array<std::pair<Tier, std::string_view>, 3> kTiers{{
    {Tier::kShared, "shared"},
    {Tier::kHardened, "hardened"},
    {Tier::kIsolated, "isolated"},
}};
constexpr std::array<std::pair<TaskState, std::string_view>, 8> kStates{{
    {TaskState::kPending, "pending"},
    {TaskState::kStarting, "starting"},
    {TaskState::kRunning, "running"},
    {TaskState::kPaused, "paused"},
    {TaskState::kExited, "exited"},
    {TaskState::kFailed, "failed"},
    {TaskState::kKilled, "killed"},
    {TaskState::kTimedOut, "timed_out"},
}};
constexpr std::array<std::pair<NodeStatus, std::string_view>, 3> kNodeStatuses{{
    {NodeStatus::kReady, "ready"},
    {NodeStatus::kLost, "lost"},
    {NodeStatus::kDraining, "draining"},
}};

}  // namespace

std::string_view TierName(Tier tier) { return NameOf(tier, kTiers); }
Result<Tier> ParseTier(std::string_view name) { return ParseName("tier", name, kTiers); }
std::string_view TaskStateName(TaskState state) { return NameOf(state, kStates); }
Result<TaskState> ParseTaskState(std::string_view name) {
  return ParseName("state", name, kStates);
}
bool IsTerminal(TaskState state) {
  return state == TaskState::kExited || state == TaskState::kFailed ||
         state == TaskState::kKilled || state == TaskState::kTimedOut;
}
std::string_view NodeStatusName(NodeStatus status) { return NameOf(status, kNodeStatuses); }
Result<NodeStatus> ParseNodeStatus(std::string_view name) {
  return ParseName("node status", name, kNodeStatuses);
}

}  // namespace hangar::control
