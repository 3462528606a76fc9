#include "hangar/node/caps.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

#include "file_util.h"
#include "hangar/base/fd.h"

namespace hangar::node {
namespace {

constexpr const char* kNames[] = {"CAP_CHOWN",
                                  "CAP_DAC_OVERRIDE",
                                  "CAP_DAC_READ_SEARCH",
                                  "CAP_FOWNER",
                                  "CAP_FSETID",
                                  "CAP_KILL",
                                  "CAP_SETGID",
                                  "CAP_SETUID",
                                  "CAP_SETPCAP",
                                  "CAP_LINUX_IMMUTABLE",
                                  "CAP_NET_BIND_SERVICE",
                                  "CAP_NET_BROADCAST",
                                  "CAP_NET_ADMIN",
                                  "CAP_NET_RAW",
                                  "CAP_IPC_LOCK",
                                  "CAP_IPC_OWNER",
                                  "CAP_SYS_MODULE",
                                  "CAP_SYS_RAWIO",
                                  "CAP_SYS_CHROOT",
                                  "CAP_SYS_PTRACE",
                                  "CAP_SYS_PACCT",
                                  "CAP_SYS_ADMIN",
                                  "CAP_SYS_BOOT",
                                  "CAP_SYS_NICE",
                                  "CAP_SYS_RESOURCE",
                                  "CAP_SYS_TIME",
                                  "CAP_SYS_TTY_CONFIG",
                                  "CAP_MKNOD",
                                  "CAP_LEASE",
                                  "CAP_AUDIT_WRITE",
                                  "CAP_AUDIT_CONTROL",
                                  "CAP_SETFCAP",
                                  "CAP_MAC_OVERRIDE",
                                  "CAP_MAC_ADMIN",
                                  "CAP_SYSLOG",
                                  "CAP_WAKE_ALARM",
                                  "CAP_BLOCK_SUSPEND",
                                  "CAP_AUDIT_READ",
                                  "CAP_PERFMON",
                                  "CAP_BPF",
                                  "CAP_CHECKPOINT_RESTORE"};

constexpr CapMask Bit(int cap) { return CapMask{1} << cap; }

// Records which step failed and returns the plain errno.
int Fail(int step, int* failed_step) {
  int err = errno;
  if (failed_step) *failed_step = step;
  return err;
}

Result<CapMask> ParseHex(std::string_view s) {
  CapMask v = 0;
  if (s.empty() || s.size() > 16) return Status::InvalidArgument("bad capability mask");
  for (char c : s) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return Status::InvalidArgument("bad capability mask \"" + std::string(s) + "\"");
    v = (v << 4) | static_cast<CapMask>(d);
  }
  return v;
}

}  // namespace

CapMask DefaultSandboxCapabilities() {
  return Bit(CAP_CHOWN) | Bit(CAP_DAC_OVERRIDE) | Bit(CAP_FOWNER) | Bit(CAP_FSETID) |
         Bit(CAP_KILL) | Bit(CAP_SETGID) | Bit(CAP_SETUID) | Bit(CAP_SETPCAP) |
         Bit(CAP_NET_BIND_SERVICE) | Bit(CAP_SYS_CHROOT) | Bit(CAP_MKNOD) | Bit(CAP_AUDIT_WRITE) |
         Bit(CAP_SETFCAP);
}

std::string CapabilityName(int cap) {
  if (cap >= 0 && cap < static_cast<int>(std::size(kNames))) return kNames[cap];
  return "CAP_" + std::to_string(cap);
}

std::string CapabilityNames(CapMask mask) {
  std::string out;
  for (int c = 0; c < 64; ++c) {
    if (mask & Bit(c)) out += (out.empty() ? "" : ",") + CapabilityName(c);
  }
  return out;
}

Result<int> LastCapability() {
  HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile("/proc/sys/kernel/cap_last_cap"));
  HANGAR_ASSIGN_OR_RETURN(uint64_t v, ParseUint64(text));
  if (v > 63) return Status::Internal("cap_last_cap out of range: " + text);
  return static_cast<int>(v);
}

int DropCapabilitiesRaw(CapMask keep, int last_cap, int* failed_step) noexcept {
  // 1. Bounding set first: dropping from it needs CAP_SETPCAP in the effective set, which
  //    step 3 may remove.
  for (int cap = 0; cap <= last_cap; ++cap) {
    if (keep & Bit(cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return Fail(0, failed_step);
  }
  // 2. Ambient capabilities survive exec for non-root; none may.
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return Fail(1, failed_step);
  }
  // 3. effective = permitted = keep ∩ permitted; inheritable empty (Docker stopped setting it
  //    after CVE-2022-24769).
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return Fail(2, failed_step);
  for (int i = 0; i < 2; ++i) {
    uint32_t k = static_cast<uint32_t>(keep >> (32 * i));
    data[i].permitted &= k;
    data[i].effective = data[i].permitted;
    data[i].inheritable = 0;
  }
  if (::syscall(SYS_capset, &hdr, data) != 0) return Fail(3, failed_step);
  return 0;
}

Status DropCapabilities(CapMask keep, int last_cap) {
  int step = 0;
  int err = DropCapabilitiesRaw(keep, last_cap, &step);
  if (err == 0) return Status::Ok();
  const char* const steps[] = {"prctl(PR_CAPBSET_DROP) for capabilities outside the keep set",
                               "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)", "capget(v3)",
                               "capset(v3, keep set)"};
  return Status::FromErrno(err, steps[step]).With("keep " + CapabilityNames(keep));
}

int SetNoNewPrivsRaw() noexcept {
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : errno;
}

Status SetNoNewPrivs() {
  int err = SetNoNewPrivsRaw();
  return err == 0 ? Status::Ok() : Status::FromErrno(err, "prctl(PR_SET_NO_NEW_PRIVS, 1)");
}

int ApplyResourceLimitsRaw(const ResourceLimits& limits, int* failed_step) noexcept {
  const struct {
    int resource;
    uint64_t value;
  } steps[] = {
      {RLIMIT_NOFILE, limits.nofile}, {RLIMIT_FSIZE, limits.fsize}, {RLIMIT_CORE, limits.core}};
  for (int i = 0; i < 3; ++i) {
    rlim_t v = steps[i].value == UINT64_MAX ? RLIM_INFINITY : steps[i].value;
    rlimit rl{v, v};
    if (::setrlimit(steps[i].resource, &rl) != 0) return Fail(i, failed_step);
  }
  return 0;
}

Status ApplyResourceLimits(const ResourceLimits& limits) {
  int step = 0;
  int err = ApplyResourceLimitsRaw(limits, &step);
  if (err == 0) return Status::Ok();
  auto v = [](uint64_t x) {
    return x == UINT64_MAX ? std::string("unlimited") : std::to_string(x);
  };
  const std::string calls[] = {"setrlimit(RLIMIT_NOFILE, " + v(limits.nofile) + ")",
                               "setrlimit(RLIMIT_FSIZE, " + v(limits.fsize) + ")",
                               "setrlimit(RLIMIT_CORE, " + v(limits.core) + ")"};
  return Status::FromErrno(err, calls[step]);
}

Result<CapabilityState> ParseCapabilityState(std::string_view status) {
  CapabilityState st;
  int found = 0;
  for (std::string_view line : SplitLines(status)) {
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == '\t' || value.front() == ' ')) {
      value.remove_prefix(1);
    }
    CapMask* target = key == "CapEff"   ? &st.effective
                      : key == "CapPrm" ? &st.permitted
                      : key == "CapInh" ? &st.inheritable
                      : key == "CapBnd" ? &st.bounding
                      : key == "CapAmb" ? &st.ambient
                                        : nullptr;
    if (target) {
      HANGAR_ASSIGN_OR_RETURN(*target, ParseHex(value));
      ++found;
    } else if (key == "NoNewPrivs") {
      st.no_new_privs = value == "1";
      ++found;
    }
  }
  if (found != 6) return Status::InvalidArgument("status text lacks Cap*/NoNewPrivs lines");
  return st;
}

Result<CapabilityState> ReadCapabilityState(pid_t pid) {
  std::string path = pid == 0 ? "/proc/self/status" : "/proc/" + std::to_string(pid) + "/status";
  HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto st = ParseCapabilityState(text);
  if (!st.ok()) return st.status().With(path);
  return st;
}

}  // namespace hangar::node
