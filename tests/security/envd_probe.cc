#include "envd_probe.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/envd/client.h"

namespace hangar::node::security {

Result<storage::TemplateInfo> BuildProbeTemplate(storage::TemplateStore& store,
                                                 const std::string& work,
                                                 const std::string& probe_bin,
                                                 const std::string& name) {
  const std::string root = work + "/tmpl-" + name;
  for (const char* d : {"/bin", "/etc", "/home/user", "/tmp", "/proc", "/dev", "/root", "/sys"}) {
    HANGAR_TRY(MakeDirs(root + d));
  }
  HANGAR_TRY(RunChecked({"cp", "/bin/busybox", root + "/bin/busybox"}).status());
  for (const char* a :
       {"sh",   "cat", "echo",  "ls",    "id",   "hostname", "mount",  "dd",    "sync",  "sleep",
        "true", "tr",  "awk",   "wc",    "df",   "grep",     "head",   "tail",  "mkdir", "rm",
        "nc",   "ip",  "uname", "chmod", "stat", "setsid",   "umount", "mknod", "dmesg"}) {
    const std::string link = root + "/bin/" + a;
    if (::symlink("busybox", link.c_str()) != 0) return Status::FromErrno(errno, "symlink");
  }
  HANGAR_TRY(RunChecked({"cp", probe_bin, root + "/bin/hangar-probe"}).status());
  HANGAR_TRY(RunChecked({"cp", probe_bin, root + "/bin/hangar-probe-suid"}).status());
  const std::string suid = root + "/bin/hangar-probe-suid";
  if (::chown(suid.c_str(), 0, 0) != 0 || ::chmod(suid.c_str(), 04755) != 0) {
    return Status::FromErrno(errno, "chmod(hangar-probe-suid)");
  }
  HANGAR_TRY(WriteFile(root + "/etc/passwd",
                       "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"));
  HANGAR_TRY(WriteFile(root + "/etc/group", "root:x:0:\ntty:x:5:\nuser:x:1000:\n"));
  if (::chmod((root + "/tmp").c_str(), 01777) != 0 ||
      ::chown((root + "/home/user").c_str(), 1000, 1000) != 0) {
    return Status::FromErrno(errno, "chmod/chown in the template");
  }
  const std::string tar = root + ".tar";
  HANGAR_TRY(RunChecked({"tar", "-C", root, "-cf", tar, "."}).status());
  return store.ImportTarball(name, tar);
}

namespace {

Result<envd::Client> ClientFor(const Sandbox& sb, std::chrono::seconds timeout) {
  EnvdEndpoint ep = sb.Envd();
  return envd::Client::Create({ep.unix_socket, ep.tcp, ep.access_token},
                              {.timeout = std::chrono::milliseconds(timeout)});
}

}  // namespace

ShellRun Sh(const Sandbox& sb, const std::string& script, const std::string& user,
            std::chrono::seconds timeout) {
  ShellRun r;
  auto c = ClientFor(sb, timeout);
  if (!c.ok()) {
    r.err = c.status().ToString();
    return r;
  }
  envd::Command cmd{.cmd = "/bin/sh", .args = {"-c", script}, .user = user};
  cmd.timeout = timeout;
  auto done = c->Run(cmd, {.on_stdout = [&r](std::string_view s) { r.out += s; },
                           .on_stderr = [&r](std::string_view s) { r.err += s; }});
  if (!done.ok()) {
    r.err += done.status().ToString();
    return r;
  }
  r.code = done->exit_code;
  return r;
}

ProbeOutput RunProbe(const Sandbox& sb, const std::vector<std::string>& args,
                     std::map<std::string, std::string> env, const std::string& user,
                     std::chrono::seconds timeout) {
  env["PROBE_EXIT"] = "1";
  std::string out, err;
  std::string failure;
  auto c = ClientFor(sb, timeout);
  if (!c.ok()) {
    failure = c.status().ToString();
  } else {
    envd::Command cmd{.cmd = "/bin/hangar-probe", .args = args, .env = env, .user = user};
    cmd.timeout = timeout;
    auto done = c->Run(cmd, {.on_stdout = [&out](std::string_view s) { out += s; },
                             .on_stderr = [&err](std::string_view s) { err += s; }});
    if (!done.ok()) failure = done.status().ToString();
  }
  ProbeOutput o = ParseProbeOutput(out);
  if (!failure.empty() || !err.empty()) {
    o.text += "\n[envd: " + failure + "]\n[stderr: " + err.substr(0, 2000) + "]";
  }
  if (const char* v = std::getenv("HANGAR_SECURITY_VERBOSE"); v && std::string(v) == "1") {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    std::printf("--- hangar-probe %s(as %s) ---\n%s\n", joined.c_str(), user.c_str(),
                o.text.c_str());
  }
  return o;
}

ProbeOutput RunGroups(const Sandbox& sb, const std::string& groups,
                      std::map<std::string, std::string> env, const std::string& user) {
  env["PROBE_GROUPS"] = groups;
  ProbeOutput o = RunProbe(sb, {"battery"}, std::move(env), user);
  EXPECT_TRUE(o.done) << "probe groups " << groups << " as " << user << " did not finish:\n"
                      << o.text;
  return o;
}

void ExpectDenied(const ProbeOutput& o, const std::string& name,
                  std::initializer_list<const char*> errnos) {
  ASSERT_TRUE(o.Has(name)) << "probe " << name << " did not report; output:\n" << o.text;
  EXPECT_EQ(o.Result(name), "denied") << o.Get(name).dump();
  if (errnos.size() > 0) {
    std::set<std::string> ok(errnos.begin(), errnos.end());
    EXPECT_TRUE(ok.count(o.Errno(name))) << o.Get(name).dump();
  }
}

void ExpectAllowed(const ProbeOutput& o, const std::string& name) {
  ASSERT_TRUE(o.Has(name)) << "probe " << name << " did not report; output:\n" << o.text;
  EXPECT_EQ(o.Result(name), "allowed") << o.Get(name).dump();
}

std::vector<std::string> HostMountPoints() {
  std::vector<std::string> out;
  std::istringstream in(ReadFile("/proc/self/mountinfo").value_or(""));
  std::string line;
  while (std::getline(in, line)) {
    // "id parent major:minor root mountpoint ...": the mount point and its source root.
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    // Pseudo and scratch filesystems come and go with whatever else runs on a shared host
    // (other tests, the machine's own tooling): only the host's real file trees are compared.
    bool scratch = false;
    for (const char* p : {"/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/mnt"}) {
      const size_t n = std::strlen(p);
      if (point.compare(0, n, p) == 0 && (point.size() == n || point[n] == '/')) scratch = true;
    }
    if (!scratch) out.push_back(dev + " " + root + " " + point);
  }
  std::sort(out.begin(), out.end());
  return out;
}

HostListener::~HostListener() {
  if (fd >= 0) ::close(fd);
}

bool HostListener::Accepted() const {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

void ListenOnHostLoopback(HostListener& l, bool any_address) {
  l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  ASSERT_GE(l.fd, 0);
  int one = 1;
  ::setsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(any_address ? INADDR_ANY : INADDR_LOOPBACK);
  ASSERT_EQ(::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l.fd, 8), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  l.port = ntohs(a.sin_port);
}

}  // namespace hangar::node::security
