#include "hangar/node/userns.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "file_util.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/cgroup.h"  // ValidateCgroupName: the same name rules for owners

namespace hangar::node {
namespace {

constexpr std::string_view kSlotPrefix = "slot-";
constexpr std::string_view kRecoveredOwner = "recovered";

// The ids of one /proc/<pid>/status: Uid and Gid lines, 4 values each.
std::vector<uint64_t> IdsOf(std::string_view status) {
  std::vector<uint64_t> ids;
  for (std::string_view line : SplitLines(status)) {
    if (line.substr(0, 4) != "Uid:" && line.substr(0, 4) != "Gid:") continue;
    line.remove_prefix(4);
    size_t i = 0;
    while (i < line.size()) {
      size_t start = line.find_first_not_of(" \t", i);
      if (start == std::string_view::npos) break;
      size_t end = line.find_first_of(" \t", start);
      if (end == std::string_view::npos) end = line.size();
      auto v = ParseUint64(line.substr(start, end - start));
      if (v.ok()) ids.push_back(*v);
      i = end;
    }
  }
  return ids;
}

// pid → ids, for every process in proc_root. Processes that exit mid-scan are skipped.
Result<std::map<pid_t, std::vector<uint64_t>>> ScanProcesses(const std::string& proc_root) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(proc_root.c_str()), &::closedir);
  if (!dir) return Status::FromErrno(errno, "opendir(" + proc_root + ")");
  std::map<pid_t, std::vector<uint64_t>> out;
  while (dirent* e = ::readdir(dir.get())) {
    auto pid = ParseUint64(e->d_name);
    if (!pid.ok()) continue;
    auto status = ReadFile(proc_root + "/" + e->d_name + "/status");
    if (!status.ok()) continue;  // exited meanwhile
    // A zombie (killed, not yet reaped by whoever is its parent now) can no longer act with
    // its ids: it must not keep a range leased.
    if (status->find("\nState:\tZ") != std::string::npos ||
        status->find("\nState:\tX") != std::string::npos) {
      continue;
    }
    out[static_cast<pid_t>(*pid)] = IdsOf(*status);
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<IdRangeAllocator>> IdRangeAllocator::Open(IdAllocatorOptions o) {
  if (o.state_dir.empty()) return Status::InvalidArgument("id allocator: state_dir is empty");
  // Host system users and groups live below 65536 on every distribution; never map them.
  if (o.base < 65536 || o.size == 0 || o.slots == 0) {
    return Status::InvalidArgument("id allocator: need base >= 65536, size > 0, slots > 0");
  }
  // uid 4294967295 is (uid_t)-1, "no id": the last range must end below it.
  if (uint64_t{o.base} + uint64_t{o.size} * o.slots > 0xffffffffull) {
    return Status::InvalidArgument("id allocator: base + size * slots exceeds the 32-bit id space");
  }
  HANGAR_TRY(MakeDirs(o.state_dir));
  return std::unique_ptr<IdRangeAllocator>(new IdRangeAllocator(std::move(o)));
}

std::string IdRangeAllocator::SlotPath(uint32_t slot) const {
  return options_.state_dir + "/" + std::string(kSlotPrefix) + std::to_string(slot);
}

IdRange IdRangeAllocator::RangeOf(uint32_t slot) const {
  return {slot, options_.base + slot * options_.size, options_.size};
}

Status IdRangeAllocator::Lease(uint32_t slot, std::string_view owner) {
  std::string path = SlotPath(slot);
  int raw = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (raw < 0) return Status::FromErrno(errno, "open(" + path + ", O_CREAT|O_EXCL)");
  UniqueFd fd(raw);
  // No fsync (see the contract): the lease must outlive the agent, not the machine.
  Status written = WriteAll(fd.get(), owner);
  if (!written.ok()) {
    ::unlink(path.c_str());  // an unwritten lease is no lease
    return written;
  }
  return Status::Ok();
}

Result<IdRange> IdRangeAllocator::Allocate(std::string_view owner) {
  HANGAR_TRY(ValidateCgroupName(owner).With("id range owner"));
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t slot = 0; slot < options_.slots; ++slot) {
    Status s = Lease(slot, owner);
    if (s.ok()) return RangeOf(slot);
    if (s.code() != Code::kAlreadyExists) return s;
  }
  return Status::ResourceExhausted("id allocator: all " + std::to_string(options_.slots) +
                                   " ranges are leased (" + options_.state_dir + ")");
}

Status IdRangeAllocator::Release(uint32_t slot) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string path = SlotPath(slot);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "unlink(" + path + ")");
  }
  return Status::Ok();
}

Status IdRangeAllocator::Rename(uint32_t slot, std::string_view owner) {
  HANGAR_TRY(ValidateCgroupName(owner).With("id range owner"));
  std::lock_guard<std::mutex> lock(mu_);
  std::string path = SlotPath(slot);
  if (::access(path.c_str(), F_OK) != 0) return Status::FromErrno(errno, "access(" + path + ")");
  return WriteFileReplace(path, owner, 0600);
}

Result<std::map<uint32_t, std::string>> IdRangeAllocator::Leases() {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(options_.state_dir.c_str()), &::closedir);
  if (!dir) return Status::FromErrno(errno, "opendir(" + options_.state_dir + ")");
  std::map<uint32_t, std::string> out;
  while (dirent* e = ::readdir(dir.get())) {
    std::string_view name = e->d_name;
    if (name.substr(0, kSlotPrefix.size()) != kSlotPrefix) continue;
    auto slot = ParseUint64(name.substr(kSlotPrefix.size()));
    if (!slot.ok() || *slot >= options_.slots) continue;  // not ours (or from a larger config)
    HANGAR_ASSIGN_OR_RETURN(std::string owner, ReadFile(options_.state_dir + "/" + e->d_name));
    out[static_cast<uint32_t>(*slot)] = owner;
  }
  return out;
}

Result<IdReconcileReport> IdRangeAllocator::Reconcile(const std::set<std::string>& live_owners,
                                                      const std::string& proc_root) {
  HANGAR_ASSIGN_OR_RETURN(auto procs, ScanProcesses(proc_root));
  std::set<uint32_t> in_use;
  const uint64_t end = uint64_t{options_.base} + uint64_t{options_.size} * options_.slots;
  for (const auto& [pid, ids] : procs) {
    for (uint64_t id : ids) {
      if (id >= options_.base && id < end) {
        in_use.insert(static_cast<uint32_t>((id - options_.base) / options_.size));
      }
    }
  }
  HANGAR_ASSIGN_OR_RETURN(auto leases, Leases());
  IdReconcileReport report;
  for (const auto& [slot, owner] : leases) {
    if (live_owners.count(owner)) continue;
    if (in_use.count(slot)) {
      report.busy.push_back(slot);
    } else {
      HANGAR_TRY(Release(slot));
      report.released.push_back(slot);
    }
  }
  for (uint32_t slot : in_use) {
    if (leases.count(slot)) continue;
    std::lock_guard<std::mutex> lock(mu_);
    Status s = Lease(slot, kRecoveredOwner);
    if (!s.ok() && s.code() != Code::kAlreadyExists) return s;
    report.recovered.push_back(slot);
  }
  return report;
}

Result<std::vector<pid_t>> ProcessesUsingRange(const IdRange& range, const std::string& proc_root) {
  HANGAR_ASSIGN_OR_RETURN(auto procs, ScanProcesses(proc_root));
  std::vector<pid_t> out;
  for (const auto& [pid, ids] : procs) {
    for (uint64_t id : ids) {
      if (id >= range.first && id < uint64_t{range.first} + range.count) {
        out.push_back(pid);
        break;
      }
    }
  }
  return out;
}

Status WriteIdMaps(pid_t pid, const IdRange& range, SetgroupsPolicy setgroups) {
  if (range.count == 0) return Status::InvalidArgument("empty id range");
  std::string proc = "/proc/" + std::to_string(pid);
  std::string map = "0 " + std::to_string(range.first) + " " + std::to_string(range.count) + "\n";
  // setgroups must be settled before gid_map is written.
  if (setgroups == SetgroupsPolicy::kDeny) {
    HANGAR_TRY(WriteExistingFile(proc + "/setgroups", "deny"));
  }
  HANGAR_TRY(WriteExistingFile(proc + "/uid_map", map));
  return WriteExistingFile(proc + "/gid_map", map);
}

int BecomeNamespaceRootRaw(int* failed_step) noexcept {
  auto fail = [failed_step](int step, int err) {
    if (failed_step) *failed_step = step;
    return err;
  };
  // gid first: after setresuid the process may no longer change its gids.
  if (::setresgid(0, 0, 0) != 0) return fail(1, errno);
  if (::setgroups(0, nullptr) != 0) {
    // Denied by /proc/<pid>/setgroups: acceptable only if no groups are left to shed.
    int err = errno;
    if (::getgroups(0, nullptr) != 0) return fail(2, err);
  }
  if (::setresuid(0, 0, 0) != 0) return fail(3, errno);
  return 0;
}

Status BecomeNamespaceRoot() {
  int step = 0;
  int err = BecomeNamespaceRootRaw(&step);
  if (err == 0) return Status::Ok();
  const char* calls[] = {"", "setresgid(0, 0, 0)",
                         "setgroups(0, NULL) with supplementary groups left", "setresuid(0, 0, 0)"};
  return Status::FromErrno(err, calls[step]);
}

}  // namespace hangar::node
