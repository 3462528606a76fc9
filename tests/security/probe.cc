// hangar-probe: the attacker inside a shared-tier sandbox.
//
// It is the sandbox's init (PID 1, root of the sandbox's user namespace), executed by the
// driver from a descriptor opened on the host. It tries to break each isolation promise and
// prints one JSON line per attempt to stdout (the sandbox's console log):
//   {"probe":"mount:tmpfs","result":"denied","errno":"EPERM"}
// The probe only reports what happened; shared_tier_security_test.cc decides what is a hole.
// Results: "denied" (the call failed, errno given), "allowed" (it succeeded), "killed" (a
// child running the attempt died of `signal`), "exited" (such a child exited, `code`), "info"
// (facts for the test: texts, numbers).
//
// Mode and parameters come from argv[1] or, when absent, from the environment (the driver
// passes one init argv per node, but each sandbox gets its own environment):
//   PROBE_MODE   battery (PROBE_GROUPS selects groups) | marker | neighbour | forkbomb |
//                membomb | diskfill | consolefill | exec (PROBE_EXEC as uid 1000) | tty | idle
//   PROBE_*      per-mode parameters (see each mode)
//   PROBE_EXIT=1 end after {"done":true} instead of serving (for runs as a command through
//                envd, in the tiers whose init is envd: there is no descriptor 3 to serve on)
// After its probes a mode prints {"done":true} and serves on fd 3 (the envd socket the node
// made) so the test can check that the sandbox still answers: "ping" → "pong", "fork" → a
// child is created and reaped ("fork ok" or "fork errno=EAGAIN").
//
// Plain syscalls and libc only: it is linked -static and must not depend on the template.
// Dangerous calls are made with arguments that would be harmless even if the defence failed
// (write back the value just read, a sysrq write only into /dev/null, zero/NULL arguments).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// ---- output ------------------------------------------------------------------------------

// One JSON object, written with a single write(2) so lines of concurrent processes never mix
// (the console is opened O_APPEND).
class Line {
 public:
  explicit Line(const std::string& probe) { s_ = "{\"probe\":" + Quote(probe); }
  Line& Str(const char* key, const std::string& v) {
    s_ += ",\"" + std::string(key) + "\":" + Quote(v);
    return *this;
  }
  Line& Int(const char* key, long long v) {
    s_ += ",\"" + std::string(key) + "\":" + std::to_string(v);
    return *this;
  }
  Line& Bool(const char* key, bool v) {
    s_ += ",\"" + std::string(key) + "\":" + (v ? "true" : "false");
    return *this;
  }
  void Emit() {
    s_ += "}\n";
    size_t off = 0;
    while (off < s_.size()) {
      ssize_t n = ::write(1, s_.data() + off, s_.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  static std::string Quote(const std::string& v) {
    std::string out = "\"";
    for (unsigned char c : v) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c < 0x20 || c >= 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    }
    return out + "\"";
  }

 private:
  std::string s_;
};

std::string ErrnoName(int e) {
  const char* n = ::strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

std::string SignalName(int sig) {
  const char* n = ::sigabbrev_np(sig);
  return n ? std::string("SIG") + n : "SIG" + std::to_string(sig);
}

// rc < 0 with errno `err`: denied; otherwise allowed (with the value).
void Report(const std::string& probe, long rc, int err) {
  Line l(probe);
  if (rc < 0) {
    l.Str("result", "denied").Str("errno", ErrnoName(err));
  } else {
    l.Str("result", "allowed").Int("value", rc);
  }
  l.Emit();
}

// Runs `call`, reports it, and closes the result if it is a descriptor the call created.
template <typename F>
void Try(const std::string& probe, F call, bool returns_fd = false) {
  errno = 0;
  long rc = call();
  int err = errno;
  Report(probe, rc, err);
  if (returns_fd && rc >= 0) ::close(static_cast<int>(rc));
}

void Info(const std::string& probe, const char* key, const std::string& value) {
  Line(probe).Str("result", "info").Str(key, value).Emit();
}

void Done() {
  static const char kDone[] = "{\"done\":true}\n";
  (void)!::write(1, kDone, sizeof kDone - 1);
}

// ---- small helpers -----------------------------------------------------------------------

pid_t g_exec_pid = -1;  // the program RunAsUser started; Serve reports its end

std::string Env(const char* name, const char* fallback = "") {
  const char* v = ::getenv(name);
  return v ? v : fallback;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Reads up to `limit` bytes of a file; errno-describing string on failure (and *err set).
std::string ReadSome(const char* path, size_t limit, int* err = nullptr) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (err) *err = errno;
    return "";
  }
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (err) *err = 0;
  if (out.size() > limit) out.resize(limit);
  return out;
}

// The value of "Key:\t..." in /proc/self/status.
std::string StatusField(const std::string& status, const std::string& key) {
  size_t p = status.find(key + ":");
  if (p == std::string::npos) return "";
  p += key.size() + 1;
  while (p < status.size() && (status[p] == '\t' || status[p] == ' ')) ++p;
  size_t e = status.find('\n', p);
  return status.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

// Runs fn() in a forked child and reports how the child ended: exited with fn's value, or
// killed by a signal. For attempts that may kill the caller (x32, int 0x80).
template <typename F>
void InChild(const std::string& probe, F fn) {
  pid_t pid = ::fork();
  if (pid < 0) {
    Report(probe + ":fork", -1, errno);
    return;
  }
  if (pid == 0) ::_exit(fn());
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  Line l(probe);
  if (WIFSIGNALED(st)) {
    l.Str("result", "killed").Str("signal", SignalName(WTERMSIG(st)));
  } else {
    l.Str("result", "exited").Int("code", WEXITSTATUS(st));
  }
  l.Emit();
}

// A child running fn() whose result line the child prints itself (for attempts that must be
// made by another process or identity). Returns the child's wait status.
template <typename F>
int RunChild(F fn) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    fn();
    ::_exit(0);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

pid_t ForkPauser() {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (;;) ::pause();
  }
  return pid;
}

void KillAndReap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

bool BecomeUser(uid_t uid) {
  return ::setgroups(0, nullptr) == 0 && ::setresgid(uid, uid, uid) == 0 &&
         ::setresuid(uid, uid, uid) == 0;
}

// Walks the tree below `dir` (not /proc, /sys, /dev) and collects paths whose name contains
// `needle`.
void FindNames(const std::string& dir, const std::string& needle, std::vector<std::string>& hits,
               int depth = 0) {
  if (depth > 24) return;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = (dir == "/" ? "" : dir) + "/" + name;
    if (depth == 0 && (name == "proc" || name == "sys" || name == "dev")) continue;
    if (name.find(needle) != std::string::npos) hits.push_back(path);
    if (e->d_type == DT_DIR) FindNames(path, needle, hits, depth + 1);
  }
  ::closedir(d);
}

std::string Join(const std::vector<std::string>& v, const char* sep = ",") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Pids visible in this /proc (the sandbox's pid namespace).
std::vector<int> VisiblePids() {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long v = std::strtol(e->d_name, &end, 10);
    if (end && *end == '\0' && v > 0) out.push_back(static_cast<int>(v));
  }
  ::closedir(d);
  return out;
}

// ---- raw syscalls --------------------------------------------------------------------------

long RawClone(unsigned long flags) { return ::syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0); }

long I386Syscall(long nr) {
  long ret;
  asm volatile("int $0x80" : "=a"(ret) : "a"(nr) : "memory", "r8", "r9", "r10", "r11");
  return ret;
}

struct NsFlag {
  const char* name;
  unsigned long flag;
};
constexpr NsFlag kNsFlags[] = {
    {"CLONE_NEWNS", CLONE_NEWNS},     {"CLONE_NEWCGROUP", CLONE_NEWCGROUP},
    {"CLONE_NEWUTS", CLONE_NEWUTS},   {"CLONE_NEWIPC", CLONE_NEWIPC},
    {"CLONE_NEWUSER", CLONE_NEWUSER}, {"CLONE_NEWPID", CLONE_NEWPID},
    {"CLONE_NEWNET", CLONE_NEWNET},   {"CLONE_NEWTIME", 0x00000080},
};

// ---- probes: the view of the system -------------------------------------------------------

void ProbeStartState() {
  // Descriptors inherited from the node: exactly 0-3 are expected.
  std::vector<std::string> fds;
  std::string targets;
  DIR* d = ::opendir("/proc/self/fd");
  int own = d ? ::dirfd(d) : -1;
  while (d && true) {
    dirent* e = ::readdir(d);
    if (!e) break;
    if (e->d_name[0] == '.') continue;
    if (std::atoi(e->d_name) == own) continue;
    fds.push_back(e->d_name);
    char buf[512];
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    targets += std::string(e->d_name) + "=" + (n > 0 ? std::string(buf, n) : "?") + "\n";
  }
  if (d) ::closedir(d);
  Line("fds").Str("result", "info").Str("fds", Join(fds)).Str("targets", targets).Emit();

  std::string status = ReadSome("/proc/self/status", 65536);
  Line l("caps");
  l.Str("result", "info");
  for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
                        "Seccomp_filters", "Uid", "Gid", "Groups"}) {
    l.Str(k, StatusField(status, k));
  }
  l.Emit();
  Info("uid_map", "text", ReadSome("/proc/self/uid_map", 4096));
  Info("gid_map", "text", ReadSome("/proc/self/gid_map", 4096));
  Line("pid").Str("result", "info").Int("pid", ::getpid()).Int("ppid", ::getppid()).Emit();

  // Controlling terminal: the sandbox must not share the node's session or terminal.
  std::string stat = ReadSome("/proc/self/stat", 4096);
  size_t rp = stat.rfind(')');
  std::vector<std::string> f = Split(rp == std::string::npos ? "" : stat.substr(rp + 2), ' ');
  // Fields after "(comm) ": state ppid pgrp session tty_nr ...
  Line("ctty")
      .Str("result", "info")
      .Str("session", f.size() > 3 ? f[3] : "?")
      .Str("tty_nr", f.size() > 4 ? f[4] : "?")
      .Int("getsid", ::getsid(0))
      .Emit();
  Try(
      "open:/dev/tty", [] { return ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC); }, true);
}

void ProbeProc() {
  struct stat root {
  }, proc_root{};
  int e1 = ::stat("/", &root) == 0 ? 0 : errno;
  int e2 = ::stat("/proc/1/root", &proc_root) == 0 ? 0 : errno;
  char link[512] = {};
  ssize_t n = ::readlink("/proc/1/root", link, sizeof link - 1);
  Line("proc:1_root")
      .Str("result", "info")
      .Str("link", n > 0 ? std::string(link, n) : ErrnoName(errno))
      .Bool("same_as_root", e1 == 0 && e2 == 0 && root.st_dev == proc_root.st_dev &&
                                root.st_ino == proc_root.st_ino)
      .Emit();
  // Walking up from /proc/1/root cannot leave the root either.
  struct stat up {};
  bool same = ::stat("/proc/1/root/../../../..", &up) == 0 && up.st_dev == root.st_dev &&
              up.st_ino == root.st_ino;
  Line("proc:1_root_dotdot").Str("result", "info").Bool("same_as_root", same).Emit();

  Info("proc:mountinfo", "text", ReadSome("/proc/self/mountinfo", 60000));
  Info("proc:mounts", "text", ReadSome("/proc/self/mounts", 60000));
  Info("proc:1_mountinfo", "text", ReadSome("/proc/1/mountinfo", 60000));
  Info("proc:cgroup", "text", ReadSome("/proc/self/cgroup", 4096));

  // Masked kernel files: bound to /dev/null, so they read empty.
  for (const char* p : {"/proc/kcore", "/proc/kallsyms", "/proc/keys", "/proc/timer_list",
                        "/proc/sched_debug", "/proc/latency_stats", "/proc/sysrq-trigger"}) {
    int err = 0;
    std::string text = ReadSome(p, 4096, &err);
    struct stat st {};
    bool have = ::stat(p, &st) == 0;
    Line l(std::string("proc_read:") + p);
    l.Str("result", "info");
    if (err) l.Str("errno", ErrnoName(err));
    l.Int("bytes", static_cast<long long>(text.size()))
        .Str("head", text.substr(0, 120))
        .Str(
            "rdev",
            have ? std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev)) : "")
        .Bool("is_char_dev", have && S_ISCHR(st.st_mode))
        .Emit();
  }

  // Writable kernel settings: open for writing; if that works, write back what was there.
  for (const char* p :
       {"/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/ns_last_pid",
        "/proc/sys/fs/file-max"}) {
    std::string old = ReadSome(p, 4096);
    int fd = ::open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      Report(std::string("proc_write:") + p, -1, errno);
      continue;
    }
    // drop_caches reads as EACCES/empty; "0" is refused by the kernel (EINVAL), harmless.
    std::string value = old.empty() ? "0" : old;
    ssize_t w = ::write(fd, value.data(), value.size());
    int err = errno;
    ::close(fd);
    Line l(std::string("proc_write:") + p);
    l.Str("result", w >= 0 ? "allowed" : "open_only");
    if (w < 0) l.Str("errno", ErrnoName(err));
    l.Emit();
  }
  // sysrq-trigger: only ever written when it is /dev/null (the mask).
  {
    int fd = ::open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      Report("proc_write:/proc/sysrq-trigger", -1, errno);
    } else {
      struct stat st {};
      ::fstat(fd, &st);
      bool is_null = S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
      if (is_null) (void)!::write(fd, "h", 1);
      ::close(fd);
      Line("proc_write:/proc/sysrq-trigger").Str("result", is_null ? "masked" : "allowed").Emit();
    }
  }
  // A lower oom_score_adj would make the sandbox the last thing the host OOM killer picks.
  {
    int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    long rc = -1;
    int err = errno;
    if (fd >= 0) {
      rc = ::write(fd, "-1000", 5);
      err = errno;
      ::close(fd);
    }
    Report("proc:oom_score_adj_-1000", rc, err);
  }
  // runc CVE-2019-5736: the init binary is a host file; /proc/self/exe must not be writable.
  {
    char buf[512];
    ssize_t len = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    Info("proc:exe_link", "link", len > 0 ? std::string(buf, len) : ErrnoName(errno));
    Try(
        "proc:exe_open_write", [] { return ::open("/proc/self/exe", O_WRONLY | O_CLOEXEC); }, true);
    Try(
        "proc:1_exe_open_rdwr", [] { return ::open("/proc/1/exe", O_RDWR | O_CLOEXEC); }, true);
  }
  // The console log is a host file: writable through fd 1, but not reopenable or chmod-able.
  Try(
      "proc:fd1_reopen_rdwr", [] { return ::open("/proc/self/fd/1", O_RDWR | O_CLOEXEC); }, true);
  Try("fchmod:console", [] { return static_cast<long>(::fchmod(1, 0666)); });
  Try("fchown:console", [] { return static_cast<long>(::fchown(1, 0, 0)); });
}

void ProbeHostFiles() {
  for (const char* p : {"/work", "/var/lib", "/var/tmp", "/etc/shadow", "/root/.bashrc",
                        "/home/user/../../work", "/sys", "/sys/fs/cgroup", "/dev/kmsg", "/dev/mem",
                        "/dev/vda", "/dev/loop0", "/dev/loop-control"}) {
    struct stat st {};
    Try(std::string("stat:") + p, [&] { return static_cast<long>(::stat(p, &st)); });
  }
  std::string marker = Env("PROBE_HOST_MARKER");
  if (!marker.empty()) {
    struct stat st {};
    Try("stat:host_marker", [&] { return static_cast<long>(::stat(marker.c_str(), &st)); });
    std::string name = marker.substr(marker.rfind('/') + 1);
    std::vector<std::string> hits;
    FindNames("/", name, hits);
    Line("fs_scan:host_marker")
        .Str("result", "info")
        .Int("found", static_cast<long long>(hits.size()))
        .Str("paths", Join(hits))
        .Emit();
  }
  std::vector<std::string> dev;
  if (DIR* d = ::opendir("/dev")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') dev.push_back(e->d_name);
    }
    ::closedir(d);
  }
  Info("dev:listing", "names", Join(dev));
  std::vector<std::string> sys;
  if (DIR* d = ::opendir("/sys")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') sys.push_back(e->d_name);
    }
    ::closedir(d);
  }
  Info("sys:listing", "names", Join(sys));
  Try(
      "sys:create",
      [] { return static_cast<long>(::open("/sys/hangar", O_WRONLY | O_CREAT | O_CLOEXEC, 0600)); },
      true);
  // A chroot inside cannot climb above the sandbox's root (the old root is detached).
  InChild("chroot_escape", [] {
    struct stat before {
    }, after{};
    if (::stat("/", &before) != 0) return 10;
    ::mkdir("/tmp/jail", 0700);
    if (::chroot("/tmp/jail") != 0) return 11;
    for (int i = 0; i < 64; ++i) (void)!::chdir("..");
    if (::chroot(".") != 0) return 12;
    if (::stat("/", &after) != 0) return 13;
    struct stat w {};
    if (::stat("/work", &w) == 0) return 2;  // reached the host's root
    return (after.st_dev == before.st_dev && after.st_ino == before.st_ino) ? 0 : 3;
  });
}

// ---- probes: mounts and namespaces --------------------------------------------------------

void ProbeMounts() {
  ::mkdir("/tmp/m", 0755);
  Try("mount:tmpfs", [] { return static_cast<long>(::mount("t", "/tmp/m", "tmpfs", 0, "")); });
  Try("mount:proc", [] { return static_cast<long>(::mount("p", "/tmp/m", "proc", 0, "")); });
  Try("mount:sysfs", [] { return static_cast<long>(::mount("s", "/tmp/m", "sysfs", 0, "")); });
  Try("mount:cgroup_v1_memory",
      [] { return static_cast<long>(::mount("c", "/tmp/m", "cgroup", 0, "memory")); });
  Try("mount:cgroup2", [] { return static_cast<long>(::mount("c", "/tmp/m", "cgroup2", 0, "")); });
  Try("mount:bind_root",
      [] { return static_cast<long>(::mount("/", "/tmp/m", nullptr, MS_BIND | MS_REC, nullptr)); });
  Try("mount:remount_proc_sys_rw", [] {
    return static_cast<long>(::mount(nullptr, "/proc/sys", nullptr, MS_REMOUNT | MS_BIND, nullptr));
  });
  Try("mount:make_shared", [] {
    return static_cast<long>(::mount(nullptr, "/", nullptr, MS_REC | MS_SHARED, nullptr));
  });
  Try("umount:/proc/kcore", [] { return static_cast<long>(::umount2("/proc/kcore", MNT_DETACH)); });
  Try("umount:/proc/sys", [] { return static_cast<long>(::umount2("/proc/sys", MNT_DETACH)); });
  Try("umount:/", [] { return static_cast<long>(::umount2("/", MNT_DETACH)); });
  Try("pivot_root", [] { return ::syscall(SYS_pivot_root, "/tmp", "/tmp/m"); });
  // The new mount API: the same power by other doors.
  Try(
      "open_tree", [] { return ::syscall(SYS_open_tree, AT_FDCWD, "/", 1 /*OPEN_TREE_CLONE*/); },
      true);
  Try("move_mount",
      [] { return ::syscall(SYS_move_mount, AT_FDCWD, "/proc/kcore", AT_FDCWD, "/tmp/m", 0); });
  Try(
      "fsopen", [] { return ::syscall(SYS_fsopen, "tmpfs", 0); }, true);
  Try("fsconfig", [] { return ::syscall(SYS_fsconfig, 0, 6 /*FSCONFIG_CMD_CREATE*/, 0, 0, 0); });
  Try(
      "fsmount", [] { return ::syscall(SYS_fsmount, 0, 0, 0); }, true);
  Try(
      "fspick", [] { return ::syscall(SYS_fspick, AT_FDCWD, "/", 0); }, true);
  Try("mount_setattr", [] { return ::syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, nullptr, 0); });
  Try(
      "open_tree_attr", [] { return ::syscall(467, AT_FDCWD, "/", 1, nullptr, 0); }, true);
}

void ProbeNamespaces() {
  for (const NsFlag& f : kNsFlags) {
    Try(std::string("unshare:") + f.name, [&] { return static_cast<long>(::unshare(f.flag)); });
  }
  // unshare without namespace flags stays allowed (a control: the filter is not blanket).
  Try("unshare:CLONE_FILES", [] { return static_cast<long>(::unshare(CLONE_FILES)); });
  for (const NsFlag& f : kNsFlags) {
    if (f.flag == 0x80) continue;  // in clone(2) 0x80 is part of the exit signal
    errno = 0;
    long rc = RawClone(f.flag);
    if (rc == 0) ::_exit(0);  // the child of an allowed clone
    int err = errno;
    if (rc > 0) ::waitpid(static_cast<pid_t>(rc), nullptr, 0);
    Report(std::string("clone:") + f.name, rc, err);
  }
  for (unsigned long flags : {0UL, static_cast<unsigned long>(CLONE_NEWUSER)}) {
    clone_args args{};
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    errno = 0;
    long rc = ::syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) ::_exit(0);
    int err = errno;
    if (rc > 0) ::waitpid(static_cast<pid_t>(rc), nullptr, 0);
    Report(flags ? "clone3:CLONE_NEWUSER" : "clone3:plain", rc, err);
  }
  for (const char* ns : {"mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time"}) {
    std::string path = std::string("/proc/1/ns/") + ns;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      Line(std::string("setns:") + ns)
          .Str("result", "denied")
          .Str("errno", ErrnoName(errno))
          .Str("step", "open")
          .Emit();
      continue;
    }
    Try(std::string("setns:") + ns, [&] { return static_cast<long>(::setns(fd, 0)); });
    ::close(fd);
  }
  Try("sethostname", [] { return static_cast<long>(::sethostname("pwned", 5)); });
  Try("setdomainname", [] { return static_cast<long>(::setdomainname("pwned", 5)); });
}

// ---- probes: the seccomp deny list and other ABIs ----------------------------------------

void ProbeDenyList() {
  // PROBE_DENY: name:nr,... — the compiled policy's unconditional entries. Zero arguments:
  // harmless even where a call got through.
  std::vector<std::string> entries = Split(Env("PROBE_DENY"), ',');
  for (const std::string& e : entries) {
    size_t c = e.find(':');
    if (c == std::string::npos) continue;
    std::string name = e.substr(0, c);
    long nr = std::atol(e.c_str() + c + 1);
    // ptrace(0) would be PTRACE_TRACEME (the node as tracer): attach to no process instead.
    long a0 = name == "ptrace" ? PTRACE_ATTACH : 0;
    long a1 = name == "ptrace" ? 0x3fffffff : 0;
    errno = 0;
    long rc = ::syscall(nr, a0, a1, 0, 0, 0, 0);
    int err = errno;
    Report("deny:" + name, rc, err);
    if (rc > 0 && (name == "userfaultfd" || name == "io_uring_setup" || name == "fanotify_init" ||
                   name == "perf_event_open" || name == "bpf" || name == "open_tree" ||
                   name == "fsopen" || name == "fspick" || name == "fsmount")) {
      ::close(static_cast<int>(rc));
    }
    // The same call through the x32 ABI: the filter kills the process. Where nothing kills
    // it, the exit code says what the call did: 0 = ENOSYS (no such ABI), 1 = another error,
    // 2 = it succeeded.
    InChild("x32:" + name, [nr] {
      long r = ::syscall(nr | 0x40000000L, 0, 0, 0, 0, 0, 0);
      return r >= 0 ? 2 : errno == ENOSYS ? 0 : 1;
    });
  }
  InChild("x32:getpid", [] {
    ::syscall(0x40000000L | SYS_getpid);
    return 0;
  });
  // i386 numbers: getpid 20, mount 21, ptrace 26, unshare 310, setns 346, bpf 357, keyctl 288.
  struct {
    const char* name;
    long nr;
  } i386[] = {{"getpid", 20}, {"mount", 21}, {"ptrace", 26}, {"unshare", 310},
              {"setns", 346}, {"bpf", 357},  {"keyctl", 288}};
  for (const auto& s : i386) {
    InChild(std::string("i386:") + s.name, [nr = s.nr] {
      rlimit no_core{0, 0};
      ::setrlimit(RLIMIT_CORE, &no_core);
      I386Syscall(nr);
      return 0;
    });
  }
}

// The denied syscalls again, with arguments an attacker would use (each still harmless).
void ProbeKernelInterfaces(const std::string& prefix) {
  auto P = [&](const char* n) { return prefix + n; };
  Try(P("keyctl"),
      [] { return ::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0); });
  Try(P("add_key"),
      [] { return ::syscall(SYS_add_key, "user", "hangar", "x", 1, KEY_SPEC_PROCESS_KEYRING); });
  Try(P("request_key"), [] {
    return ::syscall(SYS_request_key, "user", "hangar", nullptr, KEY_SPEC_PROCESS_KEYRING);
  });
  Try(
      P("bpf"),
      [] {
        bpf_attr a{};
        a.map_type = BPF_MAP_TYPE_ARRAY;
        a.key_size = 4;
        a.value_size = 4;
        a.max_entries = 1;
        return ::syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a);
      },
      true);
  Try(
      P("perf_event_open"),
      [] {
        perf_event_attr a{};
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_CPU_CLOCK;
        a.exclude_kernel = 1;
        return ::syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
      },
      true);
  Try(
      P("userfaultfd"),
      [] { return ::syscall(SYS_userfaultfd, O_CLOEXEC | 1 /*UFFD_USER_MODE_ONLY*/); }, true);
  Try(
      P("io_uring_setup"),
      [] {
        io_uring_params p{};
        return ::syscall(SYS_io_uring_setup, 4, &p);
      },
      true);
  Try(P("kexec_load"), [] { return ::syscall(SYS_kexec_load, 0, 0, nullptr, 0); });
  Try(P("kexec_file_load"), [] { return ::syscall(SYS_kexec_file_load, -1, -1, 0, "", 0); });
  Try(P("init_module"), [] { return ::syscall(SYS_init_module, nullptr, 0, ""); });
  Try(P("finit_module"), [] {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    long rc = ::syscall(SYS_finit_module, fd, "", 0);
    int e = errno;
    ::close(fd);
    errno = e;
    return rc;
  });
  Try(P("delete_module"), [] { return ::syscall(SYS_delete_module, "hangar_none", O_NONBLOCK); });
  Try(P("open_by_handle_at"), [] {
    // "shocker": the root inode of an ext4 filesystem by handle, relative to any fd on it.
    struct {
      unsigned int handle_bytes;
      int handle_type;
      unsigned char f_handle[8];
    } h{8, 1, {2, 0, 0, 0, 0, 0, 0, 0}};
    int dfd = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long rc = ::syscall(SYS_open_by_handle_at, dfd, &h, O_RDONLY);
    int e = errno;
    ::close(dfd);
    if (rc >= 0) ::close(static_cast<int>(rc));
    errno = e;
    return rc;
  });
  Try(P("name_to_handle_at"), [] {
    struct {
      unsigned int handle_bytes;
      int handle_type;
      unsigned char f_handle[128];
    } h{128, 0, {}};
    int mount_id = 0;
    return ::syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &h, &mount_id, 0);
  });
  Try(P("settimeofday"), [] { return ::syscall(SYS_settimeofday, nullptr, nullptr); });
  Try(P("clock_settime"), [] {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);  // the current time: harmless if it got through
    return ::syscall(SYS_clock_settime, CLOCK_REALTIME, &now);
  });
  Try(P("adjtimex"), [] {
    struct {
      unsigned modes;
      long pad[40];
    } t{};  // modes 0: a pure read if it got through
    return ::syscall(SYS_adjtimex, &t);
  });
  Try(P("swapon"), [] { return ::syscall(SYS_swapon, "/tmp/swap", 0); });
  Try(P("swapoff"), [] { return ::syscall(SYS_swapoff, "/tmp/swap"); });
  Try(P("reboot"), [] {
    // CAD_OFF: not one of the commands that end a pid namespace; refused before anything.
    return ::syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF,
                     nullptr);
  });
  Try(P("acct"), [] { return ::syscall(SYS_acct, "/tmp/acct"); });
  Try(P("quotactl"), [] {
    char buf[128];
    return ::syscall(SYS_quotactl, 0x800007 /*QCMD(Q_GETQUOTA, USRQUOTA)*/, "/", 0, buf);
  });
  Try(P("iopl"), [] { return ::syscall(SYS_iopl, 3); });
  Try(P("ioperm"), [] { return ::syscall(SYS_ioperm, 0x80, 1, 1); });
  Try(P("syslog"), [] {
    static char buf[4096];
    return ::syscall(SYS_syslog, 3 /*SYSLOG_ACTION_READ_ALL*/, buf, sizeof buf);
  });
  Try(P("modify_ldt"), [] {
    static char buf[64];
    return ::syscall(SYS_modify_ldt, 0, buf, sizeof buf);
  });
  Try(P("vhangup"), [] { return ::syscall(SYS_vhangup); });
  // personality: Docker's safe values pass; mitigation-weakening flags do not. In a child so
  // an accepted value cannot change this process.
  struct {
    const char* name;
    unsigned long value;
  } pers[] = {{"query", 0xffffffffUL},
              {"PER_LINUX", 0},
              {"PER_LINUX32", 0x0008},
              {"ADDR_NO_RANDOMIZE", 0x0040000},
              {"READ_IMPLIES_EXEC", 0x0400000},
              {"MMAP_PAGE_ZERO", 0x0100000},
              {"ADDR_NO_RANDOMIZE_hi", 0x100000000UL | 0x0040000}};
  for (const auto& p : pers) {
    std::string name = P("personality:") + p.name;
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) continue;
    pid_t pid = ::fork();
    if (pid == 0) {
      errno = 0;
      long rc = ::syscall(SYS_personality, p.value);
      int res[2] = {static_cast<int>(rc < 0 ? -1 : 0), errno};
      (void)!::write(pipefd[1], res, sizeof res);
      ::_exit(0);
    }
    ::close(pipefd[1]);
    int res[2] = {0, 0};
    ssize_t n = ::read(pipefd[0], res, sizeof res);
    ::close(pipefd[0]);
    ::waitpid(pid, nullptr, 0);
    if (n == sizeof res) Report(name, res[0], res[1]);
  }
}

// ---- probes: devices, terminals, network -------------------------------------------------

void ProbeDevices() {
  for (const char* dir : {"/tmp", "/", "/dev/shm", "/home/user"}) {
    std::string b = std::string(dir == std::string("/") ? "" : dir) + "/blk-sda";
    std::string c = std::string(dir == std::string("/") ? "" : dir) + "/chr-mem";
    Try(std::string("mknod:block:") + dir,
        [&] { return static_cast<long>(::mknod(b.c_str(), S_IFBLK | 0600, makedev(8, 0))); });
    Try(std::string("mknod:char:") + dir,
        [&] { return static_cast<long>(::mknod(c.c_str(), S_IFCHR | 0600, makedev(1, 1))); });
    ::unlink(b.c_str());
    ::unlink(c.c_str());
  }
  // Control: mknod itself works (a FIFO), so the refusals above are about devices.
  Try("mknod:fifo", [] { return static_cast<long>(::mknod("/tmp/fifo", S_IFIFO | 0600, 0)); });
  ::unlink("/tmp/fifo");
}

void ProbeTty(const std::string& prefix) {
  int m = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) {
    Report(prefix + "tty:ptmx", -1, errno);
    return;
  }
  int unlock = 0;
  ::ioctl(m, TIOCSPTLCK, &unlock);
  int s = ::ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) {
    // Kernels without TIOCGPTPEER (gVisor's sentry): the slave by its number.
    unsigned int n = 0;
    if (::ioctl(m, TIOCGPTN, &n) == 0) {
      s = ::open(("/dev/pts/" + std::to_string(n)).c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    }
  }
  if (s < 0) {
    Report(prefix + "tty:pts", -1, errno);
    ::close(m);
    return;
  }
  char c = 'x';
  Try(prefix + "tty:TIOCSTI", [&] { return static_cast<long>(::ioctl(s, TIOCSTI, &c)); });
  // The kernel compares the low 32 bits of the request: a set high half must not get through.
  Try(prefix + "tty:TIOCSTI_high_bits",
      [&] { return ::syscall(SYS_ioctl, s, 0x100000000UL | TIOCSTI, &c); });
  Try(prefix + "tty:TIOCSTI_master", [&] { return static_cast<long>(::ioctl(m, TIOCSTI, &c)); });
  char sel = 2;  // TIOCL_PASTESEL
  Try(prefix + "tty:TIOCLINUX", [&] { return static_cast<long>(::ioctl(s, TIOCLINUX, &sel)); });
  ::close(s);
  ::close(m);
}

int ParseIp(const std::string& addr, sockaddr_storage& ss, uint16_t port) {
  std::memset(&ss, 0, sizeof ss);
  auto* in4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (::inet_pton(AF_INET, addr.c_str(), &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons(port);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET6, addr.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

// A non-blocking connect with a short wait: never more than one SYN leaves, and with no
// route nothing leaves at all.
void TryConnect(const std::string& probe, const std::string& addr, uint16_t port, int type) {
  sockaddr_storage ss;
  socklen_t len = static_cast<socklen_t>(ParseIp(addr, ss, port));
  int fd = ::socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    Report(probe, -1, errno);
    return;
  }
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  int err = errno;
  if (rc < 0 && err == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 1000) == 1) {
      socklen_t el = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
      rc = err == 0 ? 0 : -1;
    } else {
      err = ETIMEDOUT;
    }
  }
  if (rc == 0 && type == SOCK_DGRAM) {
    // UDP "connect" only picks a route; sending is the attempt.
    rc = static_cast<int>(::send(fd, "x", 1, 0));
    err = errno;
  }
  ::close(fd);
  Report(probe, rc, err);
}

void ProbeNetwork() {
  Try(
      "socket:AF_PACKET_RAW",
      [] { return static_cast<long>(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(3))); },
      true);
  Try(
      "socket:AF_INET_RAW",
      [] { return static_cast<long>(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW)); },
      true);
  Try(
      "socket:AF_INET6_RAW",
      [] { return static_cast<long>(::socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW)); },
      true);
  Try(
      "socket:icmp_dgram",
      [] { return static_cast<long>(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_ICMP)); },
      true);
  // Interfaces: names from /proc/net/dev (the sandbox's own network namespace).
  std::string dev = ReadSome("/proc/net/dev", 65536);
  std::vector<std::string> names;
  for (const std::string& line : Split(dev, '\n')) {
    size_t c = line.find(':');
    if (c == std::string::npos) continue;
    std::string n = line.substr(0, c);
    n.erase(0, n.find_first_not_of(' '));
    names.push_back(n);
  }
  Info("net:interfaces", "names", Join(names));
  Info("net:route", "text", ReadSome("/proc/net/route", 8192));
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (s >= 0 && ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    Line("net:lo").Str("result", "info").Bool("up", (ifr.ifr_flags & IFF_UP) != 0).Emit();
    // Configuring the namespace's interfaces needs CAP_NET_ADMIN over it (owned by the host).
    ifreq down = ifr;
    down.ifr_flags = static_cast<short>(down.ifr_flags & ~IFF_UP);
    Try("net:set_lo_down", [&] { return static_cast<long>(::ioctl(s, SIOCSIFFLAGS, &down)); });
    // Where it went through (root of a microVM guest owns its interfaces), put it back: the
    // probes below use the loopback, and a connect over a downed lo hangs.
    (void)::ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  if (s >= 0) ::close(s);
  // Control: the sandbox's own loopback works (a listener inside, reached from inside).
  {
    int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    long rc = -1;
    int err = 0;
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(l, 1) == 0 &&
        ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &alen) == 0) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      rc = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      err = errno;
      ::close(c);
    } else {
      err = errno;
    }
    ::close(l);
    Report("net:loopback_self", rc, err);
  }

  std::string port = Env("PROBE_HOST_TCP_PORT");
  if (!port.empty()) {
    uint16_t p = static_cast<uint16_t>(std::atoi(port.c_str()));
    TryConnect("connect:host_loopback_tcp", "127.0.0.1", p, SOCK_STREAM);
    TryConnect("connect:host_loopback_tcp6", "::1", p, SOCK_STREAM);
  }
  TryConnect("connect:10.0.0.1", "10.0.0.1", 80, SOCK_STREAM);
  TryConnect("connect:169.254.169.254", "169.254.169.254", 80, SOCK_STREAM);
  TryConnect("connect:udp_8.8.8.8", "8.8.8.8", 53, SOCK_DGRAM);
  TryConnect("connect:2001:4860:4860::8888", "2001:4860:4860::8888", 53, SOCK_STREAM);
  // Abstract Unix sockets belong to the network namespace: the host's are out of reach.
  std::string abstract = Env("PROBE_HOST_ABSTRACT");
  if (!abstract.empty()) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path + 1, abstract.data(), abstract.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + abstract.size());
    Try("connect:host_abstract_unix",
        [&] { return static_cast<long>(::connect(fd, reinterpret_cast<sockaddr*>(&a), len)); });
    ::close(fd);
  }
  // PROBE_CONNECT: more TCP targets, "addr:port,..." — the host as other tiers see it (a
  // microVM guest reaches its host, if at all, through the VMM's gateway address).
  for (const std::string& t : Split(Env("PROBE_CONNECT"), ',')) {
    size_t c = t.rfind(':');
    if (c == std::string::npos) continue;
    TryConnect("connect:to:" + t, t.substr(0, c),
               static_cast<uint16_t>(std::atoi(t.c_str() + c + 1)), SOCK_STREAM);
  }
  // SysV IPC belongs to the IPC namespace: a host segment's key finds nothing.
  std::string key = Env("PROBE_HOST_SHM_KEY");
  if (!key.empty()) {
    Try("ipc:host_shm", [&] {
      return static_cast<long>(::shmget(static_cast<key_t>(std::atol(key.c_str())), 0, 0));
    });
  }
}

// ---- probes: other processes --------------------------------------------------------------

void ProbeProcesses() {
  Line("proc:visible_pids")
      .Str("result", "info")
      .Int("count", static_cast<long long>(VisiblePids().size()))
      .Emit();
  std::string canary = Env("PROBE_CANARY_PID");
  if (!canary.empty()) {
    pid_t pid = static_cast<pid_t>(std::atoi(canary.c_str()));
    Try("kill:host_canary", [&] { return static_cast<long>(::kill(pid, 0)); });
    Try(
        "pidfd_open:host_canary", [&] { return ::syscall(SYS_pidfd_open, pid, 0); }, true);
    std::string path = "/proc/" + canary;
    struct stat st {};
    Try("stat:/proc/host_canary", [&] { return static_cast<long>(::stat(path.c_str(), &st)); });
  }
  pid_t victim = ForkPauser();
  Try("ptrace:attach_child", [&] { return ::ptrace(PTRACE_ATTACH, victim, nullptr, nullptr); });
  Try("ptrace:seize_child", [&] { return ::ptrace(PTRACE_SEIZE, victim, nullptr, nullptr); });
  Try("process_vm_readv:child", [&] {
    char buf[16];
    iovec local{buf, sizeof buf};
    iovec remote{reinterpret_cast<void*>(&ProbeProcesses), sizeof buf};
    return static_cast<long>(::process_vm_readv(victim, &local, 1, &remote, 1, 0));
  });
  Try("kcmp:child", [&] { return ::syscall(SYS_kcmp, ::getpid(), victim, 0, 0, 0); });
  Try("pidfd_getfd:child", [&] {
    long pfd = ::syscall(SYS_pidfd_open, victim, 0);
    long rc = pfd < 0 ? -1 : ::syscall(SYS_pidfd_getfd, pfd, 1, 0);
    int e = errno;
    if (pfd >= 0) ::close(static_cast<int>(pfd));
    if (rc >= 0) ::close(static_cast<int>(rc));
    errno = e;
    return rc;
  });
  KillAndReap(victim);
  // The sandbox's root cannot raise its own limits.
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  Line("rlimit:nofile")
      .Str("result", "info")
      .Int("soft", static_cast<long long>(nofile.rlim_cur))
      .Int("hard", static_cast<long long>(nofile.rlim_max))
      .Emit();
  Try("rlimit:raise_nofile", [&] {
    rlimit more{nofile.rlim_max + 1, nofile.rlim_max + 1};
    return static_cast<long>(::setrlimit(RLIMIT_NOFILE, &more));
  });
}

// kill(-1) from PID 1 reaches every process of the sandbox and nothing else: the victim dies,
// the host canary (same uid as the sandbox's root) lives — the test checks the latter.
void ProbeKillAll() {
  pid_t victim = ForkPauser();
  ::usleep(10'000);
  long rc = ::kill(-1, SIGKILL);
  int err = errno;
  int st = 0;
  ::waitpid(victim, &st, 0);
  Line("kill:-1")
      .Str("result", rc == 0 ? "allowed" : "denied")
      .Str("errno", rc == 0 ? "" : ErrnoName(err))
      .Bool("victim_killed", WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
      .Emit();
}

void ProbeFdExhaustion() {
  std::vector<int> fds;
  int err = 0;
  for (;;) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      break;
    }
    fds.push_back(fd);
    if (fds.size() > 1'000'000) break;
  }
  Line("exhaust:fd")
      .Str("result", "denied")
      .Str("errno", ErrnoName(err))
      .Int("opened", static_cast<long long>(fds.size()))
      .Emit();
  for (int fd : fds) ::close(fd);
}

// ---- the unprivileged user (uid 1000 inside) ---------------------------------------------

void ProbeAsUser() {
  int st = RunChild([] {
    if (!BecomeUser(1000)) {
      Report("user:become", -1, errno);
      return;
    }
    std::string status = ReadSome("/proc/self/status", 65536);
    Line l("user:caps");
    l.Str("result", "info");
    for (const char* k :
         {"Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"}) {
      l.Str(k, StatusField(status, k));
    }
    l.Emit();
    for (const NsFlag& f : kNsFlags) {
      Try(std::string("user:unshare:") + f.name,
          [&] { return static_cast<long>(::unshare(f.flag)); });
    }
    Try("user:mount:tmpfs", [] { return static_cast<long>(::mount("t", "/tmp", "tmpfs", 0, "")); });
    Try("user:ptrace:attach_pid1", [] { return ::ptrace(PTRACE_ATTACH, 1, nullptr, nullptr); });
    Try("user:kill:pid1", [] { return static_cast<long>(::kill(1, 0)); });
    Try(
        "user:open:/proc/1/environ", [] { return ::open("/proc/1/environ", O_RDONLY | O_CLOEXEC); },
        true);
    Try(
        "user:open:/proc/1/mem", [] { return ::open("/proc/1/mem", O_RDONLY | O_CLOEXEC); }, true);
    Try("user:readlink:/proc/1/exe", [] {
      char b[256];
      return static_cast<long>(::readlink("/proc/1/exe", b, sizeof b));
    });
    Try("user:setuid0", [] { return static_cast<long>(::setuid(0)); });
    Try(
        "user:proc_write:core_pattern",
        [] { return ::open("/proc/sys/kernel/core_pattern", O_WRONLY | O_CLOEXEC); }, true);
    Try(
        "user:socket:AF_PACKET_RAW",
        [] { return static_cast<long>(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(3))); },
        true);
    Try("user:rlimit:raise_nofile", [] {
      rlimit cur{};
      ::getrlimit(RLIMIT_NOFILE, &cur);
      rlimit more{cur.rlim_max + 1, cur.rlim_max + 1};
      return static_cast<long>(::setrlimit(RLIMIT_NOFILE, &more));
    });
    ProbeKernelInterfaces("user:");
    ProbeTty("user:");
    // no_new_privs: a setuid-root binary of the template does not raise the euid.
    pid_t pid = ::fork();
    if (pid == 0) {
      char arg0[] = "hangar-probe-suid";
      char arg1[] = "whoami";
      char* argv[] = {arg0, arg1, nullptr};
      char* envp[] = {nullptr};
      ::execve("/bin/hangar-probe-suid", argv, envp);
      Report("user:nnp_setuid_exec", -1, errno);
      ::_exit(127);
    }
    ::waitpid(pid, nullptr, 0);
  });
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    Line("user:child").Str("result", "info").Int("status", st).Emit();
  }
}

// Mode "whoami" (exec'd by the probe itself through a setuid-root copy).
int Whoami() {
  uid_t r, e, s;
  ::getresuid(&r, &e, &s);
  std::string status = ReadSome("/proc/self/status", 65536);
  Line("user:nnp_setuid_exec")
      .Str("result", "info")
      .Int("ruid", r)
      .Int("euid", e)
      .Int("suid", s)
      .Str("CapEff", StatusField(status, "CapEff"))
      .Emit();
  return 0;
}

// ---- modes -----------------------------------------------------------------------------

// PROBE_GROUPS (comma-separated) selects groups; empty runs them all. The start state (fds,
// capabilities, ids, terminal) is always reported, before anything else is opened.
void Battery() {
  std::vector<std::string> groups = Split(Env("PROBE_GROUPS"), ',');
  auto want = [&](const char* g) {
    if (groups.empty()) return true;
    for (const auto& x : groups) {
      if (x == g) return true;
    }
    return false;
  };
  ProbeStartState();
  if (want("proc")) ProbeProc();
  if (want("hostfiles")) ProbeHostFiles();
  if (want("mounts")) ProbeMounts();
  if (want("namespaces")) ProbeNamespaces();
  if (want("denylist")) ProbeDenyList();
  if (want("kernel")) ProbeKernelInterfaces("");
  if (want("devices")) ProbeDevices();
  if (want("tty")) ProbeTty("");
  if (want("network")) ProbeNetwork();
  if (want("processes")) ProbeProcesses();
  if (want("fd")) ProbeFdExhaustion();
  if (want("user")) ProbeAsUser();
  if (want("killall")) ProbeKillAll();
}

// Sandbox A of the neighbour test: leaves traces B must not find.
void Marker() {
  std::string tok = Env("PROBE_TOKEN", "tok");
  std::string name = "marker-" + tok;
  for (const char* dir : {"", "/tmp", "/dev/shm", "/home/user"}) {
    std::string p = std::string(dir) + "/" + name;
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      (void)!::write(fd, tok.data(), tok.size());
      ::close(fd);
    }
  }
  key_t key = static_cast<key_t>(std::atol(Env("PROBE_SHM_KEY", "0").c_str()));
  int shm = key ? ::shmget(key, 4096, IPC_CREAT | 0666) : -1;
  int ab = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  int bound = ::bind(ab, reinterpret_cast<sockaddr*>(&a), alen) == 0 && ::listen(ab, 4) == 0;
  // A process whose name and command line carry the marker.
  pid_t child = ::fork();
  if (child == 0) {
    ::prctl(PR_SET_NAME, ("mk-" + tok).substr(0, 15).c_str());
    std::string arg0 = name;
    char mode[] = "idle";
    char* argv[] = {arg0.data(), mode, nullptr};
    char* envp[] = {nullptr};
    ::execve("/bin/hangar-probe", argv, envp);  // only argv[0] and comm matter
    for (;;) ::pause();
  }
  Line("marker")
      .Str("result", "info")
      .Int("child_pid", child)
      .Bool("shm", shm >= 0)
      .Bool("abstract", bound != 0)
      .Emit();
}

// Sandbox B of the neighbour test: looks for A's traces and processes.
void Neighbour() {
  std::string tok = Env("PROBE_TOKEN", "tok");
  int matches = 0;
  std::vector<int> pids = VisiblePids();
  for (int pid : pids) {
    if (pid == ::getpid()) continue;  // its own environment carries the token
    for (const char* f : {"comm", "cmdline", "environ"}) {
      std::string text = ReadSome(("/proc/" + std::to_string(pid) + "/" + f).c_str(), 65536);
      if (text.find(tok) != std::string::npos) ++matches;
    }
  }
  Line("neighbour:proc_scan")
      .Str("result", "info")
      .Int("visible", static_cast<long long>(pids.size()))
      .Int("matches", matches)
      .Emit();
  std::vector<std::string> hits;
  FindNames("/", tok, hits);
  Line("neighbour:fs_scan")
      .Str("result", "info")
      .Int("found", static_cast<long long>(hits.size()))
      .Str("paths", Join(hits))
      .Emit();
  for (const std::string& p : Split(Env("PROBE_PEER_PIDS"), ',')) {
    pid_t pid = static_cast<pid_t>(std::atoi(p.c_str()));
    Try("neighbour:kill:" + p, [&] { return static_cast<long>(::kill(pid, SIGKILL)); });
    Try(
        "neighbour:pidfd_open:" + p, [&] { return ::syscall(SYS_pidfd_open, pid, 0); }, true);
  }
  key_t key = static_cast<key_t>(std::atol(Env("PROBE_SHM_KEY", "0").c_str()));
  Try("neighbour:shm", [&] { return static_cast<long>(::shmget(key, 0, 0)); });
  std::string name = "marker-" + tok;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  Try("neighbour:abstract_unix",
      [&] { return static_cast<long>(::connect(fd, reinterpret_cast<sockaddr*>(&a), alen)); });
  ::close(fd);
  Info("neighbour:uid_map", "text", ReadSome("/proc/self/uid_map", 4096));
}

// Every process keeps forking; the pids limit stops them. The first failure's errno is sent
// to PID 1 through a pipe.
void ForkBomb() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return;
  pid_t bomb = ::fork();
  if (bomb == 0) {
    ::close(p[0]);
    bool told = false;
    for (;;) {
      pid_t c = ::fork();
      if (c < 0 && !told) {
        int e = errno;
        (void)!::write(p[1], &e, sizeof e);
        told = true;
      }
    }
  }
  ::close(p[1]);
  int err = 0;
  pollfd pfd{p[0], POLLIN, 0};
  bool failed = ::poll(&pfd, 1, 10'000) == 1 && ::read(p[0], &err, sizeof err) == sizeof err;
  ::usleep(300'000);  // let the tree fill every slot
  Line("forkbomb")
      .Str("result", failed ? "contained" : "unbounded")
      .Str("errno", failed ? ErrnoName(err) : "")
      .Int("tasks", static_cast<long long>(VisiblePids().size()))
      .Emit();
  // PID 1 itself cannot fork now; it still answers on its socket (no new task needed).
  Try("forkbomb:pid1_fork", [] {
    pid_t c = ::fork();
    if (c == 0) ::_exit(0);
    if (c > 0) ::waitpid(c, nullptr, 0);
    return static_cast<long>(c);
  });
  ::close(p[0]);
}

// A child allocates and touches memory until the kernel stops it; PID 1 reports how.
void MemBomb() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return;
  pid_t bomb = ::fork();
  if (bomb == 0) {
    ::close(p[0]);
    for (int mb = 1;; ++mb) {
      void* m =
          ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) {
        int e = -errno;
        (void)!::write(p[1], &e, sizeof e);
        ::_exit(3);
      }
      std::memset(m, 0x5a, 1 << 20);
      (void)!::write(p[1], &mb, sizeof mb);
      if (mb > 4096) ::_exit(2);  // 4 GiB without a limit: report "unbounded"
    }
  }
  ::close(p[1]);
  int last = 0, v = 0;
  while (::read(p[0], &v, sizeof v) == sizeof v) last = v;
  ::close(p[0]);
  int st = 0;
  ::waitpid(bomb, &st, 0);
  Line l("membomb");
  if (WIFSIGNALED(st)) {
    l.Str("result", "killed").Str("signal", SignalName(WTERMSIG(st)));
  } else {
    l.Str("result", "exited").Int("code", WEXITSTATUS(st));
  }
  l.Int("mb_touched", last).Emit();
}

// Fills the sandbox disk (bytes, then inodes) and /tmp.
void DiskFill() {
  static char buf[1 << 20];
  std::memset(buf, 0xa5, sizeof buf);
  auto fill = [&](const char* probe, const char* path) {
    int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      Report(probe, -1, errno);
      return;
    }
    long long total = 0;
    int err = 0;
    for (;;) {
      ssize_t n = ::write(fd, buf, sizeof buf);
      if (n < 0) {
        err = errno;
        break;
      }
      total += n;
      if (total > (8LL << 30)) break;  // 8 GiB: no quota at all
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    ::close(fd);
    Line(probe)
        .Str("result", err ? "denied" : "allowed")
        .Str("errno", err ? ErrnoName(err) : "")
        .Int("bytes", total)
        .Emit();
    ::unlink(path);
  };
  fill("diskfill:rootfs", "/fill");
  fill("diskfill:tmp", "/tmp/fill");
  fill("diskfill:shm", "/dev/shm/fill");
  ::sync();
  // Inodes: empty files until the filesystem has none left.
  ::mkdir("/inodes", 0755);
  long long files = 0;
  int err = 0;
  char name[64];
  for (;;) {
    std::snprintf(name, sizeof name, "/inodes/%lld", files);
    int fd = ::open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      err = errno;
      break;
    }
    ::close(fd);
    if (++files > 5'000'000) break;
  }
  Line("diskfill:inodes")
      .Str("result", err ? "denied" : "allowed")
      .Str("errno", err ? ErrnoName(err) : "")
      .Int("files", files)
      .Emit();
}

// Writes PROBE_CONSOLE_MB MiB to stdout: the console log is the node's file, and must not be
// a way around the disk quota. Reported on stderr-free terms: the result line goes last.
void ConsoleFill() {
  static char buf[1 << 20];
  std::memset(buf, '.', sizeof buf);
  buf[sizeof buf - 1] = '\n';
  long long want = std::atoll(Env("PROBE_CONSOLE_MB", "128").c_str()) << 20;
  long long total = 0;
  int err = 0;
  while (total < want) {
    ssize_t n = ::write(1, buf, sizeof buf);
    if (n < 0) {
      err = errno;
      break;
    }
    total += n;
  }
  Line("consolefill")
      .Str("result", err ? "denied" : "allowed")
      .Str("errno", err ? ErrnoName(err) : "")
      .Int("bytes", total)
      .Emit();
}

// Runs a program as uid 1000 in a child (trinity refuses to run as root).
void RunAsUser() {
  std::vector<std::string> args = Split(Env("PROBE_EXEC"), ' ');
  if (args.empty()) return;
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir("/tmp") != 0 || !BecomeUser(1000)) ::_exit(126);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    char path[] = "PATH=/usr/bin:/bin";
    char home[] = "HOME=/tmp";
    char* envp[] = {path, home, nullptr};
    ::execve(argv[0], argv.data(), envp);
    ::_exit(127);
  }
  g_exec_pid = pid;
  Line("exec").Str("result", pid > 0 ? "started" : "failed").Int("pid", pid).Emit();
}

// Opens /dev/tty (the node's terminal if the sandbox shares its session), writes a marker and
// tries to read what the host types.
void TtyMode() {
  ProbeStartState();
  int fd = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    Report("tty:host_terminal", -1, errno);
    return;
  }
  ssize_t w = ::write(fd, "HANGAR-SANDBOX-WROTE-HERE\n", 26);
  Line("tty:host_terminal").Str("result", "allowed").Bool("wrote", w == 26).Emit();
  pollfd p{fd, POLLIN, 0};
  std::string got;
  if (::poll(&p, 1, 3000) == 1) {
    char buf[256];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) got.assign(buf, static_cast<size_t>(n));
  }
  Line("tty:host_input").Str("result", "info").Str("read", got).Emit();
  ::close(fd);
}

// Serves on fd 3 until killed: the node's way to see that the sandbox still answers.
[[noreturn]] void Serve() {
  for (;;) {
    int st = 0;
    pid_t reaped;
    while ((reaped = ::waitpid(-1, &st, WNOHANG)) > 0) {
      if (reaped != g_exec_pid) continue;
      Line l("exec:end");
      if (WIFSIGNALED(st)) {
        l.Str("result", "killed").Str("signal", SignalName(WTERMSIG(st)));
      } else {
        l.Str("result", "exited").Int("code", WEXITSTATUS(st));
      }
      l.Emit();
    }
    pollfd p{3, POLLIN, 0};
    if (::poll(&p, 1, 200) != 1) continue;
    int c = ::accept4(3, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    timeval tv{2, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64] = {};
    ssize_t n = ::read(c, buf, sizeof buf - 1);
    std::string cmd(buf, n > 0 ? static_cast<size_t>(n) : 0);
    std::string reply = "?\n";
    if (cmd.rfind("ping", 0) == 0) {
      reply = "pong\n";
    } else if (cmd.rfind("fork", 0) == 0) {
      pid_t pid = ::fork();
      if (pid == 0) ::_exit(0);
      if (pid < 0) {
        reply = "fork errno=" + ErrnoName(errno) + "\n";
      } else {
        ::waitpid(pid, nullptr, 0);
        reply = "fork ok\n";
      }
    }
    (void)!::write(c, reply.data(), reply.size());
    ::close(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : Env("PROBE_MODE", "battery");
  if (mode == "whoami") return Whoami();
  if (mode == "idle" && ::getpid() != 1) {
    for (;;) ::pause();  // the marker process of sandbox A
  }
  if (mode == "battery") {
    Battery();
  } else if (mode == "marker") {
    Marker();
  } else if (mode == "neighbour") {
    Neighbour();
  } else if (mode == "forkbomb") {
    ForkBomb();
  } else if (mode == "membomb") {
    MemBomb();
  } else if (mode == "diskfill") {
    DiskFill();
  } else if (mode == "consolefill") {
    ConsoleFill();
  } else if (mode == "exec") {
    RunAsUser();
  } else if (mode == "tty") {
    TtyMode();
  }
  Done();
  if (Env("PROBE_EXIT") == "1") return 0;
  Serve();
}
