// SecurityTest: real shared-tier sandboxes whose init is hangar-probe, and the leak checks
// every security test ends with.
//
// Each test gets its own temp dir (under /var/tmp), data dir, cgroup root
// ("hangar-sec-<pid>"), uid-range allocator and a busybox-free template holding two copies of
// the probe (/bin/hangar-probe, and /bin/hangar-probe-suid: setuid root, for the
// no_new_privs check). TearDown destroys what the test left and then asserts that nothing
// leaked: no cgroup under the test's root, no loop device backed by a file in the data dir, no
// mount under the temp dir, no uid lease, no process in a used uid range, no child process
// (the test process is a subreaper, so orphans of the sandboxes would come to it).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hangar/base/tempdir.h"
#include "hangar/node/ns_driver.h"
#include "hangar/storage/template_store.h"

namespace hangar::node::security {

using Json = nlohmann::json;

// The probe's JSON lines, by probe name (a repeated name keeps its last line).
struct ProbeOutput {
  std::map<std::string, Json> by_name;
  std::vector<Json> lines;
  bool done = false;
  std::string text;  // the whole console, for failure messages

  bool Has(const std::string& name) const { return by_name.count(name) > 0; }
  // The line of `name`, or an empty object (so a missing probe fails the comparisons).
  Json Get(const std::string& name) const;
  std::string Result(const std::string& name) const;  // "" if missing
  std::string Errno(const std::string& name) const;
};
ProbeOutput ParseProbeOutput(const std::string& console);

// Loop devices whose backing file lies below `dir`.
int CountLoopDevicesUnder(const std::string& dir);
// Host pids of this process's children (all threads), zombies included.
std::vector<pid_t> ChildrenOfSelf();
// "EPERM" for EPERM.
std::string ErrnoName(int e);

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A template with the probe; `extra` maps host files to paths inside (copied, mode kept).
  void BuildTemplate(const std::string& name,
                     const std::vector<std::pair<std::string, std::string>>& extra = {});
  // `userns_pool`: the driver's pool of user namespaces (its default; 0 when a test must know
  // the sandbox's uid range before the sandbox exists).
  void OpenDriver(std::optional<size_t> userns_pool = std::nullopt);

  SandboxSpec Spec(const std::string& id, const std::string& mode,
                   std::map<std::string, std::string> env = {});
  // Creates and records the sandbox (TearDown destroys it if the test did not).
  Sandbox* Create(const SandboxSpec& spec);
  void DestroySandbox(const std::string& id);

  std::string ConsolePath(const std::string& id) const;
  // Waits for the probe's {"done":true} line (or the timeout) and parses the console.
  ProbeOutput WaitForDone(const std::string& id,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Sends a command to the probe's serve loop on the sandbox's envd socket; the reply or
  // "error: ...".
  std::string Ask(const std::string& id, const std::string& command,
                  std::chrono::milliseconds timeout = std::chrono::seconds(5));

  std::string probe_bin_;
  TempDir tmp_;
  std::string data_;
  std::optional<storage::TemplateStore> store_;
  CgroupBackendPtr cgroups_;
  std::unique_ptr<IdRangeAllocator> ids_;
  IdAllocatorOptions id_options_;
  SeccompProgram seccomp_;
  DriverPtr driver_;
  std::map<std::string, SandboxPtr> sandboxes_;
  std::vector<IdRange> ranges_used_;
  std::vector<pid_t> extra_children_;  // host helpers the test started (killed in TearDown)
};

}  // namespace hangar::node::security
