// seccomp: the shared tier's syscall filter — reviewed policy data, compiled once per node,
// loaded per sandbox.
//
// Contract:
//  - The policy is data (src/node/seccomp/policy.yaml, embedded at build time; every entry
//    carries a one-line reason). ParseSeccompPolicy validates it completely: unknown keys,
//    unknown symbols, unknown errno names and missing reasons are InvalidArgument.
//  - CompileSeccompPolicy runs libseccomp once and keeps the resulting classic-BPF program in
//    memory. Syscall names libseccomp does not know for x86_64 are an error unless the entry
//    gives `nr`; names that exist only on other architectures (vm86) are recorded in
//    `skipped` and have no effect (the arch check already kills those ABIs).
//  - The program kills the process (SIGSYS) for any non-x86_64 ABI (i386 int 0x80, x32).
//  - InstallSeccompProgram sets no_new_privs and loads the program into the calling thread
//    (SECCOMP_FILTER_FLAG_TSYNC: all threads). It does not allocate, so it may run between
//    fork and exec of a multi-threaded parent (the Raw form returns an errno instead of a
//    Status, which would allocate). It must be the last isolation step before exec: the
//    filter denies mount, unshare etc., which the earlier steps need.
// Thread safety: a compiled SeccompProgram is immutable and may be shared by all threads.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::node {

// One denied syscall (or one denied argument pattern of it).
struct SeccompRule {
  enum class Condition {
    kAlways,
    kAnyBits,     // deny if (arg & v) != 0 for any v in values (one bit each)
    kEquals32,    // deny if (arg & 0xffffffff) == v for any v in values
    kBitsWithin,  // deny if (arg & 0xffffffff) has a bit outside mask, unless in except_values
  };
  std::string syscall;
  int nr = -1;          // explicit x86_64 number, for syscalls newer than libseccomp
  int errno_value = 0;  // 0: the policy's default_errno
  std::string why;
  Condition condition = Condition::kAlways;
  unsigned arg = 0;
  std::vector<uint64_t> values;
  uint64_t mask = 0;
  std::vector<uint64_t> except_values;
};

struct SeccompPolicy {
  int default_errno = 0;
  int last_reviewed_nr = 0;  // numbers above it (up to kSeccompMaxNativeNr) are refused
  int unreviewed_errno = 0;
  std::vector<SeccompRule> deny;
};

// The highest x86_64 syscall number the unreviewed range covers (512+ is x32 numbering).
inline constexpr int kSeccompMaxNativeNr = 511;

Result<SeccompPolicy> ParseSeccompPolicy(std::string_view yaml);
// The policy compiled into this binary.
std::string_view DefaultSeccompPolicyYaml();
Result<SeccompPolicy> DefaultSeccompPolicy();

// A compiled filter: classic BPF instructions, ready to load.
struct SeccompProgram {
  std::vector<sock_filter> instructions;
  // What the program denies, resolved to numbers: for tests, audits and `hangar doctor`.
  struct Denied {
    std::string syscall;
    int nr;
    int errno_value;
    bool conditional;
  };
  std::vector<Denied> denied;
  std::vector<std::string> skipped;  // names with no x86_64 syscall
  size_t libseccomp_rules = 0;       // rules handed to libseccomp (after expanding conditions)
};

Result<SeccompProgram> CompileSeccompPolicy(const SeccompPolicy& policy);

// Child side: PR_SET_NO_NEW_PRIVS, then seccomp(SECCOMP_SET_MODE_FILTER, TSYNC). No allocation.
// Returns 0 or an errno.
int InstallSeccompProgramRaw(const SeccompProgram& program) noexcept;
// The same, with the failing call named (allocates only on failure).
Status InstallSeccompProgram(const SeccompProgram& program);

}  // namespace hangar::node
