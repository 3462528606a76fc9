// Test fixture: a tiny sandbox template — static busybox with its applets as symlinks, root and
// `user` (1000) accounts, the usual top-level directories — imported into a TemplateStore.
// Shared by the ns driver's tests and envd's sandbox tests. Needs /bin/busybox (the
// busybox-static package); callers skip when it is missing (HaveBusybox()). Test-only.
// `host_programs` adds dynamically linked programs of this host (e.g. /usr/bin/bash for the e2b
// SDK, /usr/bin/fio for I/O benchmarks) at the same paths, with the shared libraries `ldd` names
// and a /bin/<name> link to each.
// Thread safety: stateless.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/status.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/template_store.h"

namespace hangar::node::testing {

inline bool HaveBusybox() { return ::access("/bin/busybox", X_OK) == 0; }

// The applets linked in /bin (what the tests' scripts use).
inline const std::vector<std::string>& BusyboxApplets() {
  static const std::vector<std::string> kApplets = {
      "sh", "cat", "id", "ls",  "echo", "hostname", "mount", "sleep", "true", "tr",  "awk",
      "wc", "pwd", "df", "env", "sort", "tail",     "grep",  "touch", "rm",   "head"};
  return kApplets;
}

// Copies `program` (an absolute path on this host) and the libraries it loads into `root`.
inline Status AddHostProgram(const std::string& root, const std::string& program) {
  if (program.empty() || program[0] != '/') {
    return Status::InvalidArgument("host program '" + program + "': want an absolute path");
  }
  HANGAR_ASSIGN_OR_RETURN(std::string libs, RunChecked({"ldd", program}));
  std::vector<std::string> files = {program};
  size_t at = 0;
  while (at < libs.size()) {
    size_t end = libs.find('\n', at);
    if (end == std::string::npos) end = libs.size();
    std::string line = libs.substr(at, end - at);
    at = end + 1;
    // "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "\t/lib64/ld-linux... (0x...)"
    size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    size_t stop = line.find(' ', slash);
    files.push_back(line.substr(slash, stop == std::string::npos ? std::string::npos : stop - slash));
  }
  for (const std::string& f : files) {
    std::string dst = root + f;
    HANGAR_TRY(MakeDirs(dst.substr(0, dst.rfind('/'))));
    HANGAR_TRY(RunChecked({"cp", "-L", f, dst}).status());
  }
  std::string link = root + "/bin/" + program.substr(program.rfind('/') + 1);
  if (::access(link.c_str(), F_OK) != 0 && ::symlink(program.c_str(), link.c_str()) != 0) {
    return Status::FromErrno(errno, "symlink(" + link + ")");
  }
  return Status::Ok();
}

// Builds the tree under <work_dir>/tmpl, packs it and imports it into `store` as `name`.
inline Result<storage::TemplateInfo> ImportBusyboxTemplate(
    storage::TemplateStore& store, const std::string& work_dir,
    const std::string& name = "busybox", const std::vector<std::string>& host_programs = {}) {
  const std::string root = work_dir + "/tmpl";
  for (const char* d : {"/bin", "/etc", "/home/user", "/tmp", "/proc", "/dev", "/root"}) {
    HANGAR_TRY(MakeDirs(root + d));
  }
  HANGAR_TRY(RunChecked({"cp", "/bin/busybox", root + "/bin/busybox"}).status());
  for (const std::string& applet : BusyboxApplets()) {
    const std::string link = root + "/bin/" + applet;
    if (::symlink("busybox", link.c_str()) != 0) {
      return Status::FromErrno(errno, "symlink(" + link + ")");
    }
  }
  for (const std::string& program : host_programs) HANGAR_TRY(AddHostProgram(root, program));
  HANGAR_TRY(WriteFile(root + "/etc/passwd",
                       "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"));
  HANGAR_TRY(WriteFile(root + "/etc/group", "root:x:0:\ntty:x:5:\nuser:x:1000:\n"));
  if (::chown((root + "/home/user").c_str(), 1000, 1000) != 0) {
    return Status::FromErrno(errno, "chown(" + root + "/home/user)");
  }
  const std::string tar = work_dir + "/tmpl.tar";
  HANGAR_TRY(RunChecked({"tar", "-C", root, "-cf", tar, "."}).status());
  return store.ImportTarball(name, tar);
}

}  // namespace hangar::node::testing
