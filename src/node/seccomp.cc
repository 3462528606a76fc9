#include "hangar/node/seccomp.h"

#include <errno.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <yaml-cpp/yaml.h>

#include "hangar/base/fd.h"

namespace hangar::node {

extern const char kEmbeddedSeccompPolicyYaml[];  // generated from seccomp/policy.yaml

namespace {

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

// The symbols a policy may use for argument values: the complete, reviewed vocabulary.
const std::map<std::string, uint64_t>& Symbols() {
  static const std::map<std::string, uint64_t> kSymbols = {
      {"CLONE_NEWNS", CLONE_NEWNS},
      {"CLONE_NEWCGROUP", CLONE_NEWCGROUP},
      {"CLONE_NEWUTS", CLONE_NEWUTS},
      {"CLONE_NEWIPC", CLONE_NEWIPC},
      {"CLONE_NEWUSER", CLONE_NEWUSER},
      {"CLONE_NEWPID", CLONE_NEWPID},
      {"CLONE_NEWNET", CLONE_NEWNET},
      {"CLONE_NEWTIME", CLONE_NEWTIME},
      {"TIOCSTI", TIOCSTI},
      {"TIOCLINUX", TIOCLINUX},
  };
  return kSymbols;
}

const std::map<std::string, int>& ErrnoNames() {
  static const std::map<std::string, int> kErrno = {
      {"EPERM", EPERM}, {"EACCES", EACCES}, {"ENOSYS", ENOSYS}, {"EINVAL", EINVAL}};
  return kErrno;
}

Status Bad(const std::string& where, const std::string& what) {
  return Status::InvalidArgument("seccomp policy: " + where + ": " + what);
}

// A number ("0x20008", "4294967295") or a symbol ("CLONE_NEWUSER").
Result<uint64_t> ParseValue(const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar()) return Bad(where, "expected a number or symbol");
  const std::string s = n.Scalar();
  if (auto it = Symbols().find(s); it != Symbols().end()) return it->second;
  if (s.empty() || !(s[0] >= '0' && s[0] <= '9')) return Bad(where, "unknown symbol " + s);
  size_t used = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(s, &used, 0);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size()) return Bad(where, "not a number: " + s);
  return v;
}

Result<int> ParseErrno(const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar() || !ErrnoNames().count(n.Scalar())) {
    return Bad(where, "errno must be one of EPERM, EACCES, ENOSYS, EINVAL");
  }
  return ErrnoNames().at(n.Scalar());
}

Status CheckKeys(const YAML::Node& map, const std::set<std::string>& allowed,
                 const std::string& where) {
  if (!map.IsMap()) return Bad(where, "expected a mapping");
  for (const auto& kv : map) {
    std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) return Bad(where, "unknown key \"" + key + "\"");
  }
  return Status::Ok();
}

Result<std::vector<uint64_t>> ParseValues(const YAML::Node& n, const std::string& where) {
  if (!n.IsSequence() || n.size() == 0) return Bad(where, "expected a non-empty list");
  std::vector<uint64_t> out;
  for (const auto& v : n) {
    HANGAR_ASSIGN_OR_RETURN(uint64_t x, ParseValue(v, where));
    out.push_back(x);
  }
  return out;
}

Status ParseCondition(const YAML::Node& when, SeccompRule& rule, const std::string& where) {
  HANGAR_TRY(CheckKeys(when, {"arg", "any_bits", "equals32", "bits_within", "except"}, where));
  if (!when["arg"]) return Bad(where, "condition needs arg");
  HANGAR_ASSIGN_OR_RETURN(uint64_t arg, ParseValue(when["arg"], where));
  if (arg > 5) return Bad(where, "arg must be 0..5");
  rule.arg = static_cast<unsigned>(arg);
  int kinds =
      (when["any_bits"] ? 1 : 0) + (when["equals32"] ? 1 : 0) + (when["bits_within"] ? 1 : 0);
  if (kinds != 1) return Bad(where, "exactly one of any_bits, equals32, bits_within");
  if (when["except"] && !when["bits_within"]) return Bad(where, "except needs bits_within");
  if (when["any_bits"]) {
    rule.condition = SeccompRule::Condition::kAnyBits;
    HANGAR_ASSIGN_OR_RETURN(rule.values, ParseValues(when["any_bits"], where));
    for (uint64_t v : rule.values) {
      if (v == 0 || (v & (v - 1)) != 0) return Bad(where, "any_bits entries must be single bits");
    }
  } else if (when["equals32"]) {
    rule.condition = SeccompRule::Condition::kEquals32;
    HANGAR_ASSIGN_OR_RETURN(rule.values, ParseValues(when["equals32"], where));
    for (uint64_t v : rule.values) {
      if (v > 0xffffffffu) return Bad(where, "equals32 values must fit in 32 bits");
    }
  } else {
    rule.condition = SeccompRule::Condition::kBitsWithin;
    HANGAR_ASSIGN_OR_RETURN(rule.mask, ParseValue(when["bits_within"], where));
    if (rule.mask > 0x7fffffffu) return Bad(where, "bits_within mask must leave bit 31 clear");
    if (when["except"]) {
      HANGAR_ASSIGN_OR_RETURN(rule.except_values, ParseValues(when["except"], where));
      if (rule.except_values != std::vector<uint64_t>{0xffffffffu}) {
        return Bad(where, "except supports exactly [0xffffffff]");
      }
    }
  }
  return Status::Ok();
}

Result<SeccompPolicy> ParseYaml(const YAML::Node& root) {
  HANGAR_TRY(CheckKeys(root,
                       {"version", "arch", "default_errno", "last_reviewed_nr", "unreviewed_errno",
                        "deny", "reviewed_new_syscalls"},
                       "top level"));
  if (!root["version"] || root["version"].as<int>() != 1) return Bad("version", "must be 1");
  if (!root["arch"] || root["arch"].as<std::string>() != "x86_64") {
    return Bad("arch", "only x86_64 is supported");
  }
  SeccompPolicy p;
  HANGAR_ASSIGN_OR_RETURN(p.default_errno, ParseErrno(root["default_errno"], "default_errno"));
  HANGAR_ASSIGN_OR_RETURN(p.unreviewed_errno,
                          ParseErrno(root["unreviewed_errno"], "unreviewed_errno"));
  HANGAR_ASSIGN_OR_RETURN(uint64_t last, ParseValue(root["last_reviewed_nr"], "last_reviewed_nr"));
  if (last < 400 || last >= static_cast<uint64_t>(kSeccompMaxNativeNr)) {
    return Bad("last_reviewed_nr", "must be in [400, 511)");
  }
  p.last_reviewed_nr = static_cast<int>(last);
  const YAML::Node deny = root["deny"];
  if (!deny || !deny.IsSequence() || deny.size() == 0) return Bad("deny", "expected a list");
  for (size_t i = 0; i < deny.size(); ++i) {
    const YAML::Node e = deny[i];
    std::string where = "deny[" + std::to_string(i) + "]";
    HANGAR_TRY(CheckKeys(e, {"syscall", "nr", "errno", "why", "when"}, where));
    SeccompRule r;
    if (!e["syscall"]) return Bad(where, "missing syscall");
    r.syscall = e["syscall"].as<std::string>();
    where += " (" + r.syscall + ")";
    if (!e["why"] || e["why"].as<std::string>().size() < 10) {
      return Bad(where, "every entry needs a reason (why)");
    }
    r.why = e["why"].as<std::string>();
    if (e["nr"]) {
      HANGAR_ASSIGN_OR_RETURN(uint64_t nr, ParseValue(e["nr"], where));
      if (nr > static_cast<uint64_t>(p.last_reviewed_nr)) {
        return Bad(where, "nr above last_reviewed_nr");
      }
      r.nr = static_cast<int>(nr);
    }
    if (e["errno"]) {
      HANGAR_ASSIGN_OR_RETURN(r.errno_value, ParseErrno(e["errno"], where));
    }
    if (e["when"]) HANGAR_TRY(ParseCondition(e["when"], r, where));
    p.deny.push_back(std::move(r));
  }
  return p;
}

// libseccomp reports failures as negative errno values.
Status FromLibseccomp(int rc, const std::string& call) { return Status::FromErrno(-rc, call); }

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

// Expands one policy rule into libseccomp rules (each a conjunction of comparisons).
std::vector<std::vector<scmp_arg_cmp>> Expand(const SeccompRule& r) {
  using C = SeccompRule::Condition;
  std::vector<std::vector<scmp_arg_cmp>> out;
  auto masked = [&](uint64_t mask, uint64_t value) {
    return scmp_arg_cmp{r.arg, SCMP_CMP_MASKED_EQ, mask, value};
  };
  switch (r.condition) {
    case C::kAlways:
      out.push_back({});
      break;
    case C::kAnyBits:
      for (uint64_t bit : r.values) out.push_back({masked(bit, bit)});
      break;
    case C::kEquals32:
      for (uint64_t v : r.values) out.push_back({masked(0xffffffffu, v)});
      break;
    case C::kBitsWithin: {
      // libseccomp cannot AND two comparisons of one argument, so "a bit outside the mask is
      // set, and the value is not 0xffffffff" is spelled out bit by bit:
      //  - bit b (outside the mask, b < 31) set while bit 31 is clear, or
      //  - bit 31 set while some bit c < 31 is clear (so not all ones).
      constexpr uint64_t kBit31 = 1u << 31;
      bool except_all_ones = !r.except_values.empty();
      for (int b = 0; b < 31; ++b) {
        uint64_t bit = uint64_t{1} << b;
        if (r.mask & bit) continue;
        out.push_back({except_all_ones ? masked(bit | kBit31, bit) : masked(bit, bit)});
      }
      if (except_all_ones) {
        for (int c = 0; c < 31; ++c) out.push_back({masked(kBit31 | (uint64_t{1} << c), kBit31)});
      } else {
        out.push_back({masked(kBit31, kBit31)});
      }
      break;
    }
  }
  return out;
}

}  // namespace

Result<SeccompPolicy> ParseSeccompPolicy(std::string_view yaml) {
  try {
    return ParseYaml(YAML::Load(std::string(yaml)));
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(std::string("seccomp policy: ") + e.what());
  }
}

std::string_view DefaultSeccompPolicyYaml() { return kEmbeddedSeccompPolicyYaml; }

Result<SeccompPolicy> DefaultSeccompPolicy() {
  return ParseSeccompPolicy(DefaultSeccompPolicyYaml());
}

Result<SeccompProgram> CompileSeccompPolicy(const SeccompPolicy& policy) {
  if (seccomp_arch_native() != SCMP_ARCH_X86_64) {
    return Status::Unimplemented("seccomp policy is written for x86_64 only");
  }
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Status::Internal("seccomp_init(SCMP_ACT_ALLOW) failed");
  // Any ABI other than native x86_64 (i386, and x32's nr | 0x40000000) kills the process.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) {
    return FromLibseccomp(rc, "seccomp_attr_set(SCMP_FLTATR_ACT_BADARCH, KILL_PROCESS)");
  }
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2)) {
    return FromLibseccomp(rc, "seccomp_attr_set(SCMP_FLTATR_CTL_OPTIMIZE, 2)");
  }

  SeccompProgram prog;
  for (const SeccompRule& r : policy.deny) {
    int nr = seccomp_syscall_resolve_name(r.syscall.c_str());
    if (nr == __NR_SCMP_ERROR) {
      if (r.nr < 0) {
        return Status::InvalidArgument("seccomp policy: libseccomp does not know syscall " +
                                       r.syscall + "; give its x86_64 number as nr");
      }
      nr = r.nr;
    } else if (r.nr >= 0 && r.nr != nr) {
      return Status::InvalidArgument("seccomp policy: " + r.syscall + " has nr " +
                                     std::to_string(nr) + ", not " + std::to_string(r.nr));
    }
    if (nr < 0) {  // a syscall of another architecture only (libseccomp pseudo-number)
      prog.skipped.push_back(r.syscall);
      continue;
    }
    int err = r.errno_value ? r.errno_value : policy.default_errno;
    for (const std::vector<scmp_arg_cmp>& cmps : Expand(r)) {
      int rc = seccomp_rule_add_exact_array(ctx.get(), SCMP_ACT_ERRNO(err), nr,
                                            static_cast<unsigned>(cmps.size()), cmps.data());
      if (rc != 0) {
        return FromLibseccomp(rc, "seccomp_rule_add_exact_array(" + r.syscall + ")");
      }
      ++prog.libseccomp_rules;
    }
    prog.denied.push_back({r.syscall, nr, err, r.condition != SeccompRule::Condition::kAlways});
  }
  for (int nr = policy.last_reviewed_nr + 1; nr <= kSeccompMaxNativeNr; ++nr) {
    int rc = seccomp_rule_add_exact(ctx.get(), SCMP_ACT_ERRNO(policy.unreviewed_errno), nr, 0);
    if (rc != 0) {
      return FromLibseccomp(rc, "seccomp_rule_add_exact(" + std::to_string(nr) + ")");
    }
    ++prog.libseccomp_rules;
  }

  // libseccomp 2.5 exports only to a file descriptor: use an in-memory file.
  UniqueFd fd(::memfd_create("hangar-seccomp-bpf", MFD_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "memfd_create(hangar-seccomp-bpf, MFD_CLOEXEC)");
  if (int rc = seccomp_export_bpf(ctx.get(), fd.get())) {
    return FromLibseccomp(rc, "seccomp_export_bpf(memfd)");
  }
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return Status::FromErrno(errno, "lseek(memfd, 0, SEEK_END)");
  if (size == 0 || size % sizeof(sock_filter) != 0 || size / sizeof(sock_filter) > BPF_MAXINSNS) {
    return Status::Internal("seccomp_export_bpf produced " + std::to_string(size) + " bytes");
  }
  prog.instructions.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  ssize_t n = ::pread(fd.get(), prog.instructions.data(), static_cast<size_t>(size), 0);
  if (n != size) return Status::FromErrno(n < 0 ? errno : EIO, "pread(memfd)");
  return prog;
}

int InstallSeccompProgramRaw(const SeccompProgram& program) noexcept {
  // Required to load a filter without CAP_SYS_ADMIN, and keeps setuid binaries from gaining
  // what the sandbox dropped.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(program.instructions.size());
  fprog.filter = const_cast<sock_filter*>(program.instructions.data());
  long rc = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
  if (rc < 0) return errno;
  if (rc > 0) return EBUSY;  // TSYNC: thread `rc` could not be synchronised
  return 0;
}

Status InstallSeccompProgram(const SeccompProgram& program) {
  if (program.instructions.empty()) {
    return Status::InvalidArgument("empty seccomp program");
  }
  int err = InstallSeccompProgramRaw(program);
  if (err == 0) return Status::Ok();
  return Status::FromErrno(err, "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC, " +
                                    std::to_string(program.instructions.size()) +
                                    " insns) after prctl(PR_SET_NO_NEW_PRIVS)");
}

}  // namespace hangar::node
