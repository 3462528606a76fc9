// The shared tier's probe, run through envd: how the security battery reaches the tiers whose
// init is envd (gvisor: hardened, microvm: isolated) and not the probe.
//
// What it offers:
//  - BuildProbeTemplate: a template holding busybox-static (its applets as links in /bin), the
//    static hangar-probe at /bin/hangar-probe and a setuid-root copy at /bin/hangar-probe-suid
//    (for the no_new_privs check), root and `user` (1000) accounts, /tmp 1777.
//  - RunProbe: runs `/bin/hangar-probe <args>` as a command through envd (as `user`: "root" or
//    "user"), with PROBE_EXIT=1 (the probe ends after its {"done":true} line instead of serving
//    on a descriptor it does not have here) and collects its JSON lines from stdout.
//  - Sh: a busybox shell command through envd.
//  - Host-side checks the leak checks and the host-consequence assertions use.
// Expects root (the drivers need it) and a sandbox whose envd is reachable (Sandbox::Envd()).
// Thread safety: the functions are independent; one Sandbox per thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "hangar/base/status.h"
#include "hangar/node/sandbox.h"
#include "hangar/node/testing/host_checks.h"
#include "hangar/storage/template_store.h"
#include "security_fixture.h"

namespace hangar::node::security {

// Imports the probe template as `name`; `work` is a scratch directory of the test.
Result<storage::TemplateInfo> BuildProbeTemplate(storage::TemplateStore& store,
                                                 const std::string& work,
                                                 const std::string& probe_bin,
                                                 const std::string& name = "probe");

struct ShellRun {
  int code = -1;  // -1: killed, or the call failed (see err)
  std::string out, err;
};

// `script` under /bin/sh -c through envd.
ShellRun Sh(const Sandbox& sb, const std::string& script, const std::string& user = "root",
            std::chrono::seconds timeout = std::chrono::seconds(60));

// `/bin/hangar-probe args...` through envd; stdout parsed into verdicts. A call that fails or
// a probe that never prints {"done":true} leaves ProbeOutput::done false and the error in text.
ProbeOutput RunProbe(const Sandbox& sb, const std::vector<std::string>& args,
                     std::map<std::string, std::string> env = {}, const std::string& user = "root",
                     std::chrono::seconds timeout = std::chrono::seconds(120));

// The battery's groups (comma-separated, "none" = start state only) in one probe process.
ProbeOutput RunGroups(const Sandbox& sb, const std::string& groups,
                      std::map<std::string, std::string> env = {},
                      const std::string& user = "root");

// Verdict checks shared by the tier tests.
void ExpectDenied(const ProbeOutput& o, const std::string& name,
                  std::initializer_list<const char*> errnos = {});
void ExpectAllowed(const ProbeOutput& o, const std::string& name);

// Host processes whose command line contains `needle`; cgroup directories below `root` in
// every hierarchy (v1 or v2).
using node::testing::CgroupDirsOf;
using node::testing::ProcessesMentioning;
// The host's mount table (/proc/self/mountinfo) for before/after checks: its real file trees
// only (not /proc, /sys, /dev, /run, /tmp, /var/tmp, /mnt, which others on a shared host change).
std::vector<std::string> HostMountPoints();
// A TCP listener on 127.0.0.1 (port 0) of the host; its port.
struct HostListener {
  int fd = -1;
  uint16_t port = 0;
  ~HostListener();
  bool Accepted() const;  // whether any connection arrived (non-blocking)
};
void ListenOnHostLoopback(HostListener& l, bool any_address = false);

}  // namespace hangar::node::security
