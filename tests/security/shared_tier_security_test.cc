// The shared tier's security battery: every isolation promise of the ns driver, attacked from
// inside a real sandbox. The attacker is hangar-probe (probe.cc), the sandbox's init; it
// reports each attempt as a JSON line and these tests decide whether the promise held. Each
// test also ends with the fixture's leak checks (cgroups, loop devices, mounts, uid ranges,
// processes). docs/security/shared-tier.md maps each guarantee to its test.
#include <fcntl.h>
#include <netinet/in.h>
#include <pty.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/node/caps.h"
#include "security_fixture.h"

namespace hangar::node::security {
namespace {

using namespace std::chrono_literals;
using ::testing::AnyOf;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;

// The attempt failed (with one of `errnos`, if given).
void ExpectDenied(const ProbeOutput& o, const std::string& name,
                  std::initializer_list<const char*> errnos = {}) {
  ASSERT_TRUE(o.Has(name)) << "probe " << name << " did not report; console:\n" << o.text;
  EXPECT_EQ(o.Result(name), "denied") << o.Get(name).dump();
  if (errnos.size() > 0) {
    std::set<std::string> ok(errnos.begin(), errnos.end());
    EXPECT_TRUE(ok.count(o.Errno(name))) << o.Get(name).dump();
  }
}

void ExpectAllowed(const ProbeOutput& o, const std::string& name) {
  ASSERT_TRUE(o.Has(name)) << "probe " << name << " did not report";
  EXPECT_EQ(o.Result(name), "allowed") << o.Get(name).dump();
}

std::vector<std::string> Lines(const std::string& t, char sep = '\n') {
  std::vector<std::string> v;
  size_t s = 0;
  while (s < t.size()) {
    size_t e = t.find(sep, s);
    if (e == std::string::npos) e = t.size();
    if (e > s) v.push_back(t.substr(s, e - s));
    s = e + 1;
  }
  return v;
}

uint64_t Hex(const std::string& s) { return s.empty() ? ~0ULL : std::stoull(s, nullptr, 16); }

// Capabilities no sandbox may hold, in any set.
constexpr int kForbiddenCaps[] = {21 /*SYS_ADMIN*/,
                                  19 /*SYS_PTRACE*/,
                                  16 /*SYS_MODULE*/,
                                  17 /*SYS_RAWIO*/,
                                  22 /*SYS_BOOT*/,
                                  25 /*SYS_TIME*/,
                                  12 /*NET_ADMIN*/,
                                  13 /*NET_RAW*/,
                                  39 /*BPF*/,
                                  38 /*PERFMON*/,
                                  2 /*DAC_READ_SEARCH*/,
                                  34 /*SYSLOG*/,
                                  33 /*MAC_ADMIN*/,
                                  32 /*MAC_OVERRIDE*/,
                                  24 /*SYS_RESOURCE*/,
                                  23 /*SYS_NICE*/,
                                  26 /*SYS_TTY_CONFIG*/,
                                  28 /*LEASE*/,
                                  35 /*WAKE_ALARM*/,
                                  36 /*BLOCK_SUSPEND*/,
                                  40 /*CHECKPOINT_RESTORE*/,
                                  20 /*SYS_PACCT*/,
                                  14 /*IPC_LOCK*/};

class SharedTierSecurityTest : public SecurityTest {
 protected:
  // One sandbox running the battery groups named (comma-separated; "none" = start state only).
  ProbeOutput RunBattery(const std::string& id, const std::string& groups,
                         std::map<std::string, std::string> env = {}) {
    env["PROBE_GROUPS"] = groups;
    Sandbox* sb = Create(Spec(id, "battery", std::move(env)));
    if (!sb) return {};
    return WaitForDone(id);
  }
};

// --- the first process ---------------------------------------------------------------------

TEST_F(SharedTierSecurityTest, InitStartsWithNothingOfTheNode) {
  ProbeOutput o = RunBattery("start1", "none");
  ASSERT_TRUE(o.done);
  SandboxInfo info = sandboxes_["start1"]->Info();

  // Descriptors: stdin, the console, envd's socket — nothing else of the node.
  EXPECT_EQ(o.Get("fds").value("fds", ""), "0,1,2,3") << o.Get("fds").dump();
  // PID 1 of its own pid namespace, root of its own user namespace mapped to its own range.
  EXPECT_EQ(o.Get("pid").value("pid", 0), 1);
  EXPECT_THAT(
      o.Get("uid_map").value("text", ""),
      ::testing::MatchesRegex("\\s*0\\s+" + std::to_string(info.uid_base) + "\\s+65536\\s*"));
  EXPECT_THAT(
      o.Get("gid_map").value("text", ""),
      ::testing::MatchesRegex("\\s*0\\s+" + std::to_string(info.uid_base) + "\\s+65536\\s*"));
  EXPECT_GE(info.uid_base, id_options_.base) << "never a host id below the allocator's base";

  // Capabilities: none of the dangerous ones in any set; at most the node's default set.
  Json caps = o.Get("caps");
  for (const char* set : {"CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"}) {
    uint64_t v = Hex(caps.value(set, ""));
    ASSERT_NE(v, ~0ULL) << set << " missing: " << caps.dump();
    for (int cap : kForbiddenCaps) {
      EXPECT_EQ(v & (1ULL << cap), 0u) << set << " holds " << CapabilityName(cap);
    }
    EXPECT_EQ(v & ~DefaultSandboxCapabilities(), 0u) << set << " = " << caps.value(set, "");
  }
  EXPECT_EQ(Hex(caps.value("CapInh", "")), 0u);
  EXPECT_EQ(Hex(caps.value("CapAmb", "")), 0u);
  EXPECT_EQ(caps.value("NoNewPrivs", ""), "1");
  EXPECT_EQ(caps.value("Seccomp", ""), "2") << "filter mode";

  // Its own session, no controlling terminal: /dev/tty leads nowhere.
  EXPECT_EQ(o.Get("ctty").value("tty_nr", ""), "0");
  EXPECT_EQ(o.Get("ctty").value("getsid", -1), 1) << "init leads its own session";
  ExpectDenied(o, "open:/dev/tty", {"ENXIO"});
}

// The sandbox must not inherit the node's terminal: hangard run from a shell (embedded mode)
// would otherwise hand the operator's keyboard and screen to every sandbox via /dev/tty.
TEST_F(SharedTierSecurityTest, NodeTerminalIsNotReachable) {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(master, 0);
  UniqueFd m(master);
  ASSERT_EQ(::grantpt(master), 0);
  ASSERT_EQ(::unlockpt(master), 0);
  std::string slave = ::ptsname(master);
  auto pipe = MakePipe();
  ASSERT_TRUE(pipe.ok());

  // The driver runs in a child that owns the terminal, like hangard in a foreground shell.
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    int code = [&]() -> int {
      if (::setsid() < 0) return 10;
      int s = ::open(slave.c_str(), O_RDWR);  // first terminal of a session leader: its ctty
      if (s < 0 || ::ioctl(s, TIOCSCTTY, 0) != 0) return 11;
      OpenDriver();
      if (!driver_) return 12;
      auto sb = driver_->Create(Spec("tty1", "tty"));
      if (!sb.ok()) return 13;
      std::string text;
      for (int i = 0; i < 500; ++i) {
        text = ReadFile(ConsolePath("tty1")).value_or("");
        if (text.find("\"done\":true") != std::string::npos) break;
        std::this_thread::sleep_for(20ms);
      }
      (void)WriteAll(pipe->write.get(), text);
      bool ok = (*sb)->Destroy().ok();
      driver_.reset();
      return ok ? 0 : 14;
    }();
    ::_exit(code);
  }
  pipe->write.Reset();
  // What the operator types; a sandbox holding the terminal could read it.
  ASSERT_TRUE(WriteAll(master, "operator-secret\n").ok());
  std::string console;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe->read.get(), buf, sizeof buf)) > 0) console.append(buf, n);
  int st = 0;
  ASSERT_EQ(::waitpid(agent, &st, 0), agent);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "agent child failed: " << st;

  // Whatever reached the terminal's screen.
  ::fcntl(master, F_SETFL, O_NONBLOCK);
  std::string screen;
  while ((n = ::read(master, buf, sizeof buf)) > 0) screen.append(buf, n);
  EXPECT_THAT(screen, Not(HasSubstr("HANGAR-SANDBOX-WROTE-HERE")));
  ProbeOutput o = ParseProbeOutput(console);
  ASSERT_TRUE(o.done) << console;
  EXPECT_EQ(o.Get("ctty").value("tty_nr", ""), "0") << o.Get("ctty").dump();
  ExpectDenied(o, "tty:host_terminal", {"ENXIO"});
  EXPECT_THAT(console, Not(HasSubstr("operator-secret")));
}

// --- mounts and namespaces -------------------------------------------------------------------

TEST_F(SharedTierSecurityTest, MountsCannotBeChanged) {
  ProbeOutput o = RunBattery("mount1", "mounts");
  for (const char* p : {"mount:tmpfs",
                        "mount:proc",
                        "mount:sysfs",
                        "mount:cgroup_v1_memory",
                        "mount:cgroup2",
                        "mount:bind_root",
                        "mount:remount_proc_sys_rw",
                        "mount:make_shared",
                        "umount:/proc/kcore",
                        "umount:/proc/sys",
                        "umount:/",
                        "pivot_root",
                        "open_tree",
                        "move_mount",
                        "fsopen",
                        "fsconfig",
                        "fsmount",
                        "fspick",
                        "mount_setattr",
                        "open_tree_attr"}) {
    ExpectDenied(o, p, {"EPERM"});
  }
}

TEST_F(SharedTierSecurityTest, NamespacesCannotBeCreatedOrJoined) {
  ProbeOutput o = RunBattery("ns1", "namespaces");
  for (const char* f : {"CLONE_NEWNS", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC",
                        "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWTIME"}) {
    ExpectDenied(o, std::string("unshare:") + f, {"EPERM"});
    if (std::string(f) != "CLONE_NEWTIME") ExpectDenied(o, std::string("clone:") + f, {"EPERM"});
  }
  ExpectAllowed(o, "unshare:CLONE_FILES");  // control: the filter looks at the flags
  // clone3's flags live in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
  ExpectDenied(o, "clone3:plain", {"ENOSYS"});
  ExpectDenied(o, "clone3:CLONE_NEWUSER", {"ENOSYS"});
  for (const char* ns : {"mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time"}) {
    ExpectDenied(o, std::string("setns:") + ns, {"EPERM"});
  }
  ExpectDenied(o, "sethostname", {"EPERM"});
  ExpectDenied(o, "setdomainname", {"EPERM"});
}

// --- the syscall filter ----------------------------------------------------------------------

// Whether this kernel runs int 0x80 at all (IA32 emulation); without it the kernel answers
// SIGSEGV before seccomp sees the call.
bool I386AbiPresent() {
  pid_t pid = ::fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    long ret;
    asm volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
    ::_exit(ret == ::getpid() ? 0 : 1);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

TEST_F(SharedTierSecurityTest, EveryDeniedSyscallFailsAndOtherAbisAreKilled) {
  // The compiled program's own list: a new policy entry is probed without touching this test.
  std::string deny;
  std::vector<SeccompProgram::Denied> unconditional;
  std::set<std::string> conditional;
  for (const auto& d : seccomp_.denied) {
    if (d.conditional) {
      conditional.insert(d.syscall);
      continue;
    }
    unconditional.push_back(d);
    deny += (deny.empty() ? "" : ",") + d.syscall + ":" + std::to_string(d.nr);
  }
  ASSERT_GE(unconditional.size(), 60u);
  // Conditional rules have hand-written probes with the arguments that matter; a new one needs
  // a probe too.
  EXPECT_EQ(conditional, (std::set<std::string>{"clone", "ioctl", "personality", "unshare"}));

  ProbeOutput o = RunBattery("deny1", "denylist", {{"PROBE_DENY", deny}});
  ASSERT_TRUE(o.done);
  for (const auto& d : unconditional) {
    SCOPED_TRACE(d.syscall);
    ExpectDenied(o, "deny:" + d.syscall, {ErrnoName(d.errno_value).c_str()});
    // The x32 ABI (nr | 0x40000000) is killed by the filter's arch check.
    EXPECT_EQ(o.Result("x32:" + d.syscall), "killed") << o.Get("x32:" + d.syscall).dump();
    EXPECT_EQ(o.Get("x32:" + d.syscall).value("signal", ""), "SIGSYS");
  }
  EXPECT_EQ(o.Get("x32:getpid").value("signal", ""), "SIGSYS") << o.Get("x32:getpid").dump();
  bool i386 = I386AbiPresent();
  RecordProperty("i386_abi", i386 ? "present" : "absent");
  for (const char* s : {"getpid", "mount", "ptrace", "unshare", "setns", "bpf", "keyctl"}) {
    std::string name = std::string("i386:") + s;
    EXPECT_EQ(o.Result(name), "killed") << o.Get(name).dump();
    std::string sig = o.Get(name).value("signal", "");
    if (i386) {
      EXPECT_EQ(sig, "SIGSYS") << name;
    } else {
      EXPECT_THAT(sig, AnyOf(Eq("SIGSYS"), Eq("SIGSEGV"))) << name;
    }
  }
}

// The kernel interfaces attackers reach for, with the arguments they would use.
void ExpectKernelInterfacesDenied(const ProbeOutput& o, const std::string& prefix) {
  for (const char* p : {"keyctl",
                        "add_key",
                        "request_key",
                        "bpf",
                        "perf_event_open",
                        "userfaultfd",
                        "io_uring_setup",
                        "kexec_load",
                        "kexec_file_load",
                        "init_module",
                        "finit_module",
                        "delete_module",
                        "open_by_handle_at",
                        "name_to_handle_at",
                        "settimeofday",
                        "clock_settime",
                        "adjtimex",
                        "swapon",
                        "swapoff",
                        "reboot",
                        "acct",
                        "quotactl",
                        "iopl",
                        "ioperm",
                        "syslog",
                        "modify_ldt",
                        "vhangup"}) {
    ExpectDenied(o, prefix + p, {"EPERM"});
  }
  // personality: Docker's safe values pass, mitigation-weakening flags do not (also with the
  // high half of the argument set: the kernel truncates it).
  for (const char* p : {"query", "PER_LINUX", "PER_LINUX32"}) {
    ExpectAllowed(o, prefix + "personality:" + p);
  }
  for (const char* p :
       {"ADDR_NO_RANDOMIZE", "READ_IMPLIES_EXEC", "MMAP_PAGE_ZERO", "ADDR_NO_RANDOMIZE_hi"}) {
    ExpectDenied(o, prefix + "personality:" + p, {"EPERM"});
  }
}

TEST_F(SharedTierSecurityTest, KernelInterfacesAreRefused) {
  ProbeOutput o = RunBattery("kernel1", "kernel");
  ExpectKernelInterfacesDenied(o, "");
}

TEST_F(SharedTierSecurityTest, TerminalInputCannotBeInjected) {
  ProbeOutput o = RunBattery("tty2", "tty");
  for (const char* p :
       {"tty:TIOCSTI", "tty:TIOCSTI_high_bits", "tty:TIOCSTI_master", "tty:TIOCLINUX"}) {
    ExpectDenied(o, p, {"EPERM"});
  }
}

// --- the host's files and kernel settings -----------------------------------------------------

// Host path prefixes that must not appear in anything the sandbox can read about its mounts.
std::vector<std::string> HostPaths(const std::string& tmp) {
  return {tmp, "/work", "/var/", "/root", "/home/", "/srv", "/opt", "/etc/"};
}

TEST_F(SharedTierSecurityTest, ProcShowsOnlyTheSandbox) {
  ProbeOutput o = RunBattery("proc1", "proc");
  ASSERT_TRUE(o.done);
  EXPECT_TRUE(o.Get("proc:1_root").value("same_as_root", false)) << o.Get("proc:1_root").dump();
  EXPECT_EQ(o.Get("proc:1_root").value("link", ""), "/");
  EXPECT_TRUE(o.Get("proc:1_root_dotdot").value("same_as_root", false));
  for (const char* f : {"proc:mountinfo", "proc:mounts", "proc:1_mountinfo"}) {
    std::string text = o.Get(f).value("text", "");
    ASSERT_FALSE(text.empty()) << f;
    for (const std::string& host : HostPaths(tmp_.path())) {
      EXPECT_THAT(text, Not(HasSubstr(host))) << f << " shows a host path:\n" << text;
    }
    // No cgroup filesystem (its release_agent and limits) and no sysfs with content.
    EXPECT_THAT(text, Not(HasSubstr(" cgroup "))) << text;
    EXPECT_THAT(text, Not(HasSubstr(" cgroup2 "))) << text;
  }
  // Its cgroup namespace is rooted at its own group: every hierarchy reads "/".
  for (const std::string& line : Lines(o.Get("proc:cgroup").value("text", ""))) {
    EXPECT_TRUE(line.size() >= 2 && line.substr(line.size() - 2) == ":/") << line;
  }
  // Kernel memory, symbols, keys, timers: absent on this kernel or masked with /dev/null.
  for (const char* f : {"/proc/kcore", "/proc/kallsyms", "/proc/keys", "/proc/timer_list",
                        "/proc/sched_debug", "/proc/latency_stats", "/proc/sysrq-trigger"}) {
    Json j = o.Get(std::string("proc_read:") + f);
    EXPECT_EQ(j.value("bytes", -1), 0) << j.dump();
    bool host_has = ::access(f, F_OK) == 0;
    if (host_has) {
      EXPECT_EQ(j.value("rdev", ""), "1:3") << f << " must be masked: " << j.dump();
    } else {
      EXPECT_EQ(j.value("errno", ""), "ENOENT") << j.dump();
    }
  }
  // Kernel settings are read-only (or, for ones this kernel lacks, absent).
  for (const char* f :
       {"/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/ns_last_pid",
        "/proc/sys/fs/file-max"}) {
    std::string name = std::string("proc_write:") + f;
    if (::access(f, F_OK) == 0) {
      ExpectDenied(o, name, {"EROFS", "EACCES", "EPERM"});
    } else {
      ExpectDenied(o, name, {"ENOENT"});
    }
  }
  std::string sysrq = o.Result("proc_write:/proc/sysrq-trigger");
  EXPECT_TRUE(sysrq == "masked" || sysrq == "denied") << o.Get("proc_write:/proc/sysrq-trigger");
  ExpectDenied(o, "proc:oom_score_adj_-1000", {"EACCES", "EPERM"});
  // runc CVE-2019-5736: the init binary is a host file and must not be writable from inside.
  ExpectDenied(o, "proc:exe_open_write", {"EACCES", "ETXTBSY", "EPERM"});
  ExpectDenied(o, "proc:1_exe_open_rdwr", {"EACCES", "ETXTBSY", "EPERM"});
  // The console log is a host file: usable through fd 1 only, never reopened or re-owned.
  ExpectDenied(o, "proc:fd1_reopen_rdwr", {"EACCES"});
  ExpectDenied(o, "fchmod:console", {"EPERM"});
  ExpectDenied(o, "fchown:console", {"EPERM"});
}

TEST_F(SharedTierSecurityTest, HostFilesystemIsUnreachable) {
  std::string marker = tmp_.path() + "/host-secret-" + std::to_string(::getpid());
  ASSERT_TRUE(WriteFile(marker, "secret").ok());
  ProbeOutput o = RunBattery("files1", "hostfiles", {{"PROBE_HOST_MARKER", marker}});
  ASSERT_TRUE(o.done);
  for (const char* p :
       {"stat:/work", "stat:/var/lib", "stat:/var/tmp", "stat:/etc/shadow", "stat:/root/.bashrc",
        "stat:/home/user/../../work", "stat:/sys/fs/cgroup", "stat:/dev/kmsg", "stat:/dev/mem",
        "stat:/dev/vda", "stat:/dev/loop0", "stat:/dev/loop-control", "stat:host_marker"}) {
    ExpectDenied(o, p, {"ENOENT"});
  }
  // Not by its path and not anywhere else in the tree.
  EXPECT_EQ(o.Get("fs_scan:host_marker").value("found", -1), 0) << o.Get("fs_scan:host_marker");
  // /sys: absent or an empty read-only directory (no cgroupfs, no devices, no firmware).
  EXPECT_EQ(o.Get("sys:listing").value("names", "?"), "") << o.Get("sys:listing").dump();
  ExpectDenied(o, "sys:create");
  // /dev: only harmless character devices and the private pty instance.
  std::set<std::string> allowed = {"null", "zero", "full", "random", "urandom", "tty",   "pts",
                                   "ptmx", "shm",  "fd",   "stdin",  "stdout",  "stderr"};
  for (const std::string& n : Lines(o.Get("dev:listing").value("names", ""), ',')) {
    EXPECT_TRUE(allowed.count(n)) << "/dev/" << n << " should not exist in a sandbox";
  }
  // The classic chroot escape only reaches the sandbox's own root (the old root is detached).
  EXPECT_EQ(o.Result("chroot_escape"), "exited") << o.Get("chroot_escape").dump();
  EXPECT_EQ(o.Get("chroot_escape").value("code", -1), 0) << o.Get("chroot_escape").dump();
}

TEST_F(SharedTierSecurityTest, DeviceNodesCannotBeCreated) {
  ProbeOutput o = RunBattery("dev1", "devices");
  for (const char* dir : {"/tmp", "/", "/dev/shm", "/home/user"}) {
    ExpectDenied(o, std::string("mknod:block:") + dir, {"EPERM"});
    ExpectDenied(o, std::string("mknod:char:") + dir, {"EPERM"});
  }
  ExpectAllowed(o, "mknod:fifo");  // control: mknod works, device nodes do not
}

// --- network ---------------------------------------------------------------------------------

TEST_F(SharedTierSecurityTest, NetworkIsLoopbackOnlyAndHostServicesAreUnreachable) {
  // Host services the sandbox must not reach: TCP on the host's 127.0.0.1, an abstract Unix
  // socket, a SysV shared-memory segment.
  int tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  ASSERT_GE(tcp, 0);
  UniqueFd tcp_fd(tcp);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ASSERT_EQ(::bind(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(tcp, 8), 0);
  ASSERT_EQ(::getsockname(tcp, reinterpret_cast<sockaddr*>(&a), &alen), 0);
  std::string abstract = "hangar-sec-host-" + std::to_string(::getpid());
  int ab = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  UniqueFd ab_fd(ab);
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::memcpy(u.sun_path + 1, abstract.data(), abstract.size());
  socklen_t ulen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract.size());
  ASSERT_EQ(::bind(ab, reinterpret_cast<sockaddr*>(&u), ulen), 0);
  ASSERT_EQ(::listen(ab, 8), 0);
  key_t key = static_cast<key_t>(0x48530000 | (::getpid() & 0xffff));
  int shm = ::shmget(key, 4096, IPC_CREAT | 0666);
  ASSERT_GE(shm, 0);

  ProbeOutput o = RunBattery("net1", "network",
                             {{"PROBE_HOST_TCP_PORT", std::to_string(ntohs(a.sin_port))},
                              {"PROBE_HOST_ABSTRACT", abstract},
                              {"PROBE_HOST_SHM_KEY", std::to_string(key)}});
  ::shmctl(shm, IPC_RMID, nullptr);
  ASSERT_TRUE(o.done);

  for (const char* p : {"socket:AF_PACKET_RAW", "socket:AF_INET_RAW", "socket:AF_INET6_RAW"}) {
    ExpectDenied(o, p, {"EPERM"});
  }
  ExpectDenied(o, "socket:icmp_dgram", {"EACCES", "EPERM"});
  EXPECT_EQ(o.Get("net:interfaces").value("names", ""), "lo");
  // /proc/net/route: its header line and no route.
  EXPECT_LE(Lines(o.Get("net:route").value("text", "")).size(), 1u) << o.Get("net:route").dump();
  EXPECT_TRUE(o.Get("net:lo").value("up", false)) << "the sandbox's own loopback works";
  ExpectAllowed(o, "net:loopback_self");
  ExpectDenied(o, "net:set_lo_down", {"EPERM"});
  // The host's 127.0.0.1 is another network namespace: nothing listens on that port here.
  ExpectDenied(o, "connect:host_loopback_tcp", {"ECONNREFUSED"});
  ExpectDenied(o, "connect:host_loopback_tcp6",
               {"ECONNREFUSED", "EADDRNOTAVAIL", "ENETUNREACH", "EAFNOSUPPORT"});
  // No route anywhere: refused at once, nothing leaves the sandbox.
  for (const char* p : {"connect:10.0.0.1", "connect:169.254.169.254", "connect:udp_8.8.8.8"}) {
    ExpectDenied(o, p, {"ENETUNREACH"});
  }
  ExpectDenied(o, "connect:2001:4860:4860::8888", {"ENETUNREACH", "EADDRNOTAVAIL", "EAFNOSUPPORT"});
  ExpectDenied(o, "connect:host_abstract_unix", {"ECONNREFUSED"});
  ExpectDenied(o, "ipc:host_shm", {"ENOENT"});
  // And the host side saw nothing arrive.
  EXPECT_LT(::accept4(tcp, nullptr, nullptr, SOCK_CLOEXEC), 0);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_LT(::accept4(ab, nullptr, nullptr, SOCK_CLOEXEC), 0);
  EXPECT_EQ(errno, EAGAIN);
}

// --- processes -------------------------------------------------------------------------------

TEST_F(SharedTierSecurityTest, HostProcessesAreInvisibleAndUnreachable) {
  // A host process with the very uid the sandbox's root has on the host: only the pid
  // namespace stands between them.
  // The driver opens (and reconciles uid ranges) before the canary exists; a range found in
  // use at that point would never be handed out. Without the user-namespace pool the first
  // sandbox gets the lowest range, so the canary can take its uid before the sandbox exists
  // (with the pool the range is one leased ahead: the same isolation, just not predictable).
  ASSERT_NO_FATAL_FAILURE(OpenDriver(/*userns_pool=*/0));
  uid_t sandbox_root = ids_->RangeOf(0).first;
  pid_t canary = ::fork();
  ASSERT_GE(canary, 0);
  if (canary == 0) {
    // This process is multithreaded (the driver's disk pool refills in the background) and the
    // canary never execs: drop every inherited descriptor at once. Otherwise a pipe another
    // thread was setting up at fork time (mkfs's stdout/stderr, Child::Spawn's exec report)
    // stays open here, that thread never sees EOF, and TearDown's join of it hangs.
    ::close_range(3, ~0U, 0);
    if (::setresgid(sandbox_root, sandbox_root, sandbox_root) != 0 ||
        ::setresuid(sandbox_root, sandbox_root, sandbox_root) != 0) {
      ::_exit(1);
    }
    for (;;) ::pause();
  }
  extra_children_.push_back(canary);

  ProbeOutput o =
      RunBattery("proc2", "processes,killall", {{"PROBE_CANARY_PID", std::to_string(canary)}});
  ASSERT_TRUE(o.done);
  ASSERT_EQ(sandboxes_["proc2"]->Info().uid_base, sandbox_root);
  EXPECT_EQ(o.Get("proc:visible_pids").value("count", -1), 1) << "only itself";
  ExpectDenied(o, "kill:host_canary", {"ESRCH"});
  ExpectDenied(o, "pidfd_open:host_canary", {"ESRCH"});
  ExpectDenied(o, "stat:/proc/host_canary", {"ENOENT"});
  for (const char* p : {"ptrace:attach_child", "ptrace:seize_child", "process_vm_readv:child",
                        "kcmp:child", "pidfd_getfd:child"}) {
    ExpectDenied(o, p, {"EPERM"});
  }
  ExpectDenied(o, "rlimit:raise_nofile", {"EPERM"});
  // kill(-1, SIGKILL) from PID 1 killed its own child and nothing outside.
  ExpectAllowed(o, "kill:-1");
  EXPECT_TRUE(o.Get("kill:-1").value("victim_killed", false)) << o.Get("kill:-1").dump();
  EXPECT_EQ(::waitpid(canary, nullptr, WNOHANG), 0) << "the host canary was killed";
  EXPECT_EQ(::kill(canary, 0), 0);
}

TEST_F(SharedTierSecurityTest, UnprivilegedUserIsHeldToo) {
  ProbeOutput o = RunBattery("user1", "user");
  ASSERT_TRUE(o.done);
  Json caps = o.Get("user:caps");
  EXPECT_THAT(caps.value("Uid", ""), HasSubstr("1000")) << caps.dump();
  EXPECT_EQ(Hex(caps.value("CapEff", "")), 0u) << caps.dump();
  EXPECT_EQ(Hex(caps.value("CapPrm", "")), 0u) << caps.dump();
  EXPECT_EQ(Hex(caps.value("CapAmb", "")), 0u) << caps.dump();
  EXPECT_EQ(caps.value("NoNewPrivs", ""), "1");
  for (const char* f : {"CLONE_NEWNS", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC",
                        "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWTIME"}) {
    ExpectDenied(o, std::string("user:unshare:") + f, {"EPERM"});
  }
  ExpectDenied(o, "user:mount:tmpfs", {"EPERM"});
  ExpectDenied(o, "user:ptrace:attach_pid1", {"EPERM"});
  ExpectDenied(o, "user:kill:pid1", {"EPERM"});
  ExpectDenied(o, "user:open:/proc/1/environ", {"EACCES"});
  ExpectDenied(o, "user:open:/proc/1/mem", {"EACCES"});
  ExpectDenied(o, "user:readlink:/proc/1/exe", {"EACCES"});
  ExpectDenied(o, "user:setuid0", {"EPERM"});
  ExpectDenied(o, "user:proc_write:core_pattern", {"EACCES", "EROFS"});
  ExpectDenied(o, "user:socket:AF_PACKET_RAW", {"EPERM"});
  ExpectDenied(o, "user:rlimit:raise_nofile", {"EPERM"});
  ExpectKernelInterfacesDenied(o, "user:");
  for (const char* p : {"user:tty:TIOCSTI", "user:tty:TIOCSTI_high_bits", "user:tty:TIOCSTI_master",
                        "user:tty:TIOCLINUX"}) {
    ExpectDenied(o, p, {"EPERM"});
  }
  // no_new_privs: the template's setuid-root binary runs with the caller's ids.
  Json nnp = o.Get("user:nnp_setuid_exec");
  EXPECT_EQ(nnp.value("result", ""), "info") << nnp.dump();
  EXPECT_EQ(nnp.value("euid", -1), 1000) << nnp.dump();
  EXPECT_EQ(Hex(nnp.value("CapEff", "")), 0u) << nnp.dump();
}

// --- exhaustion ------------------------------------------------------------------------------

TEST_F(SharedTierSecurityTest, FdExhaustionStopsAtTheRlimit) {
  ProbeOutput o = RunBattery("fd1", "fd");
  ASSERT_TRUE(o.done);
  Json fd = o.Get("exhaust:fd");
  EXPECT_EQ(fd.value("errno", ""), "EMFILE") << fd.dump();
  ResourceLimits defaults;
  EXPECT_LE(fd.value("opened", 0), static_cast<int>(defaults.nofile)) << fd.dump();
  EXPECT_GE(fd.value("opened", 0), static_cast<int>(defaults.nofile) - 16) << fd.dump();
  EXPECT_EQ(Ask("fd1", "ping"), "pong");
}

TEST_F(SharedTierSecurityTest, ForkBombStopsAtThePidsLimitAndSparesNeighbours) {
  ASSERT_NE(Create(Spec("calm1", "idle")), nullptr);
  WaitForDone("calm1");
  SandboxSpec bomb = Spec("bomb1", "forkbomb");
  bomb.resources.pids = 32;
  bomb.resources.cpu_millis = 500;
  ASSERT_NE(Create(bomb), nullptr);
  ProbeOutput o = WaitForDone("bomb1");
  Json j = o.Get("forkbomb");
  EXPECT_EQ(j.value("result", ""), "contained") << j.dump();
  EXPECT_EQ(j.value("errno", ""), "EAGAIN") << j.dump();
  EXPECT_LE(j.value("tasks", 1000), 32) << j.dump();
  ExpectDenied(o, "forkbomb:pid1_fork", {"EAGAIN"});
  auto usage = sandboxes_["bomb1"]->GetUsage();
  ASSERT_TRUE(usage.ok());
  EXPECT_LE(usage->pids, 32u);
  EXPECT_GE(usage->pids, 30u) << "the bomb is still holding every slot";

  // While it holds every slot: the bombed sandbox's init still answers (and cannot fork), the
  // neighbour answers and forks, the host forks.
  EXPECT_EQ(Ask("bomb1", "ping"), "pong");
  EXPECT_EQ(Ask("bomb1", "fork"), "fork errno=EAGAIN");
  EXPECT_EQ(Ask("calm1", "ping"), "pong");
  EXPECT_EQ(Ask("calm1", "fork"), "fork ok");
  auto r = RunCommand({"/bin/true"});
  EXPECT_TRUE(r.ok() && r->status.success());

  // A spinning, forking tree is destroyed completely (freeze, kill, remove).
  auto t0 = std::chrono::steady_clock::now();
  DestroySandbox("bomb1");
  auto took = std::chrono::steady_clock::now() - t0;
  RecordProperty(
      "forkbomb_destroy_ms",
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  EXPECT_LT(took, 10s);
  EXPECT_EQ(Ask("calm1", "ping"), "pong");
}

TEST_F(SharedTierSecurityTest, MemoryBombIsKilledInsideOnly) {
  ASSERT_NE(Create(Spec("calm2", "idle")), nullptr);
  WaitForDone("calm2");
  SandboxSpec bomb = Spec("mem1", "membomb");
  bomb.resources.memory_mb = 64;
  ASSERT_NE(Create(bomb), nullptr);
  ProbeOutput o = WaitForDone("mem1", 60s);
  Json j = o.Get("membomb");
  EXPECT_EQ(j.value("result", ""), "killed") << j.dump();
  EXPECT_EQ(j.value("signal", ""), "SIGKILL") << "the OOM killer, inside the group: " << j.dump();
  EXPECT_LE(j.value("mb_touched", 1000), 64) << j.dump();
  EXPECT_GE(j.value("mb_touched", 0), 16) << "it really allocated: " << j.dump();
  auto usage = sandboxes_["mem1"]->GetUsage();
  ASSERT_TRUE(usage.ok());
  EXPECT_LE(usage->memory_peak_bytes, 64u << 20);
  // The sandbox's init survived its child's OOM; the neighbour and the host are untouched.
  EXPECT_EQ(Ask("mem1", "ping"), "pong");
  EXPECT_EQ(Ask("calm2", "ping"), "pong");
  EXPECT_EQ(Ask("calm2", "fork"), "fork ok");
  {
    size_t n = 256u << 20;
    void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    std::memset(m, 1, n);
    ::munmap(m, n);
  }
}

TEST_F(SharedTierSecurityTest, DiskAndInodeExhaustionStopAtTheQuota) {
  SandboxSpec spec = Spec("disk1", "diskfill");
  spec.resources.disk_mb = 64;
  spec.resources.memory_mb = 256;  // /tmp is memory_mb / 2; /dev/shm 64 MiB
  ASSERT_NE(Create(spec), nullptr);
  ProbeOutput o = WaitForDone("disk1", 60s);
  ASSERT_TRUE(o.done);
  Json root = o.Get("diskfill:rootfs");
  EXPECT_EQ(root.value("errno", ""), "ENOSPC") << root.dump();
  EXPECT_LE(root.value("bytes", int64_t{1} << 40), int64_t{64} << 20) << root.dump();
  EXPECT_GE(root.value("bytes", int64_t{0}), int64_t{32} << 20) << root.dump();
  Json tmp = o.Get("diskfill:tmp");
  EXPECT_EQ(tmp.value("errno", ""), "ENOSPC") << tmp.dump();
  EXPECT_LE(tmp.value("bytes", int64_t{1} << 40), int64_t{128} << 20) << tmp.dump();
  Json shm = o.Get("diskfill:shm");
  EXPECT_EQ(shm.value("errno", ""), "ENOSPC") << shm.dump();
  EXPECT_LE(shm.value("bytes", int64_t{1} << 40), int64_t{64} << 20) << shm.dump();
  Json inodes = o.Get("diskfill:inodes");
  EXPECT_EQ(inodes.value("errno", ""), "ENOSPC") << inodes.dump();
  auto usage = sandboxes_["disk1"]->GetUsage();
  ASSERT_TRUE(usage.ok());
  EXPECT_GT(inodes.value("files", 0), 1000) << inodes.dump();
  EXPECT_LE(inodes.value("files", int64_t{1} << 40), static_cast<int64_t>(usage->disk_inodes_total))
      << inodes.dump();
  EXPECT_EQ(Ask("disk1", "ping"), "pong");
  // On the host, the sandbox's writes occupy at most its disk image's size.
  std::string dev = sandboxes_["disk1"]->Info().disk_device;
  auto backing = ReadFile("/sys/dev/block/" + dev + "/loop/backing_file");
  ASSERT_TRUE(backing.ok()) << dev;
  while (!backing->empty() && backing->back() == '\n') backing->pop_back();
  struct stat st {};
  ASSERT_EQ(::stat(backing->c_str(), &st), 0) << *backing;
  EXPECT_LE(static_cast<int64_t>(st.st_blocks) * 512, int64_t{64} << 20) << *backing;
}

// stdout and stderr of the sandbox go to its console log, a file the node keeps: it must not
// be a way to write more than the disk quota onto the node's disk.
TEST_F(SharedTierSecurityTest, ConsoleOutputCountsAgainstTheDiskQuota) {
  SandboxSpec spec = Spec("cons1", "consolefill", {{"PROBE_CONSOLE_MB", "128"}});
  spec.resources.disk_mb = 64;
  ASSERT_NE(Create(spec), nullptr);
  auto deadline = std::chrono::steady_clock::now() + 60s;
  std::string text;
  while (std::chrono::steady_clock::now() < deadline) {
    // Only the tail: the log itself is up to the quota in size.
    UniqueFd fd(::open(ConsolePath("cons1").c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (fd.valid() && ::fstat(fd.get(), &st) == 0 && st.st_size > 0) {
      char buf[4096];
      off_t off = st.st_size > 4096 ? st.st_size - 4096 : 0;
      ssize_t n = ::pread(fd.get(), buf, sizeof buf, off);
      text.assign(buf, n > 0 ? static_cast<size_t>(n) : 0);
      if (text.find("\"done\":true") != std::string::npos) break;
    }
    std::this_thread::sleep_for(50ms);
  }
  ProbeOutput o = ParseProbeOutput(text);
  ASSERT_TRUE(o.done) << text.substr(text.size() > 500 ? text.size() - 500 : 0);
  Json j = o.Get("consolefill");
  EXPECT_EQ(j.value("errno", ""), "ENOSPC") << j.dump();
  EXPECT_LE(j.value("bytes", int64_t{1} << 40), int64_t{64} << 20) << j.dump();
  struct stat st {};
  ASSERT_EQ(::stat(ConsolePath("cons1").c_str(), &st), 0);
  EXPECT_LE(static_cast<int64_t>(st.st_blocks) * 512, int64_t{64} << 20);
}

// --- neighbours ------------------------------------------------------------------------------

TEST_F(SharedTierSecurityTest, NeighbourSandboxIsInvisibleAndUnreachable) {
  std::string token = "t" + std::to_string(::getpid()) + "x" + std::to_string(::time(nullptr));
  std::string key = std::to_string(0x48540000 | (::getpid() & 0xffff));
  ASSERT_NE(Create(Spec("seena", "marker", {{"PROBE_TOKEN", token}, {"PROBE_SHM_KEY", key}})),
            nullptr);
  ProbeOutput a = WaitForDone("seena");
  ASSERT_TRUE(a.done);
  EXPECT_TRUE(a.Get("marker").value("shm", false)) << a.Get("marker").dump();
  EXPECT_TRUE(a.Get("marker").value("abstract", false)) << a.Get("marker").dump();
  // Positive controls from the host: A's marker process and file exist.
  std::this_thread::sleep_for(100ms);  // the marker child's exec
  auto pids = cgroups_->Pids("seena");
  ASSERT_TRUE(pids.ok());
  ASSERT_GE(pids->size(), 2u);
  bool host_sees_marker = false;
  std::string peer_pids;
  for (pid_t pid : *pids) {
    std::string cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline").value_or("");
    if (cmdline.find(token) != std::string::npos) host_sees_marker = true;
    peer_pids += (peer_pids.empty() ? "" : ",") + std::to_string(pid);
  }
  EXPECT_TRUE(host_sees_marker);
  EXPECT_TRUE(std::filesystem::exists(data_ + "/sandboxes/seena/disk/upper/marker-" + token));

  ASSERT_NE(Create(Spec(
                "seeb", "neighbour",
                {{"PROBE_TOKEN", token}, {"PROBE_SHM_KEY", key}, {"PROBE_PEER_PIDS", peer_pids}})),
            nullptr);
  ProbeOutput b = WaitForDone("seeb");
  ASSERT_TRUE(b.done);
  EXPECT_EQ(b.Get("neighbour:proc_scan").value("matches", -1), 0) << b.Get("neighbour:proc_scan");
  EXPECT_EQ(b.Get("neighbour:proc_scan").value("visible", -1), 1);
  EXPECT_EQ(b.Get("neighbour:fs_scan").value("found", -1), 0) << b.Get("neighbour:fs_scan");
  for (pid_t pid : *pids) {
    ExpectDenied(b, "neighbour:kill:" + std::to_string(pid), {"ESRCH"});
    ExpectDenied(b, "neighbour:pidfd_open:" + std::to_string(pid), {"ESRCH"});
  }
  ExpectDenied(b, "neighbour:shm", {"ENOENT"});
  ExpectDenied(b, "neighbour:abstract_unix", {"ECONNREFUSED"});
  // Different host id ranges, so not even a shared file could be reached through ownership.
  uint32_t ua = sandboxes_["seena"]->Info().uid_base, ub = sandboxes_["seeb"]->Info().uid_base;
  EXPECT_GE(ua > ub ? ua - ub : ub - ua, id_options_.size);
  EXPECT_THAT(b.Get("neighbour:uid_map").value("text", ""), HasSubstr(std::to_string(ub)));
  // A is whole afterwards: its processes live and its init answers.
  auto after = cgroups_->Pids("seena");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *pids);
  EXPECT_EQ(Ask("seena", "ping"), "pong");
}

}  // namespace
}  // namespace hangar::node::security
