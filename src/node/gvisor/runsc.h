// Runsc: the runsc command line, one call per method (internal to the gVisor driver).
//
// Every call runs `runsc --root <root> [--platform ...] <global flags> <command> ...` and waits
// for it (bounded by `timeout`); a non-zero exit is an error carrying runsc's stderr. Start()
// is the exception: its stdout/stderr — inherited by the container's init — go to `console_fd`,
// and the error message is then the tail of that file.
// Thread safety: stateless apart from its options; callable from any thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::gvisor::internal {

struct RunscOptions {
  std::string binary;    // absolute path
  std::string root;      // --root: runsc's state directory
  std::string platform;  // ptrace | systrap | kvm
  std::vector<std::string> extra_flags;
  std::chrono::milliseconds timeout{60'000};
};

struct ContainerState {
  std::string id;
  std::string status;  // created | running | paused | stopped
  pid_t pid = -1;      // the sandbox process (runsc-sandbox) on the host
};

class Runsc {
 public:
  explicit Runsc(RunscOptions o) : o_(std::move(o)) {}

  // `runsc run --detach --bundle <bundle> --pid-file <bundle>/sandbox.pid <id>`: stdin
  // /dev/null, stdout/stderr console_fd. Returns the sandbox process's host pid.
  Result<pid_t> Run(const std::string& id, const std::string& bundle, int console_fd,
                    const std::string& console_path) const;
  // not_found when runsc has no such container.
  Result<ContainerState> State(const std::string& id) const;
  Result<std::vector<ContainerState>> List() const;
  Status Kill(const std::string& id, const std::string& signal, bool all) const;
  Status Pause(const std::string& id) const;
  Status Resume(const std::string& id) const;
  // `delete --force`; ok when runsc has no such container.
  Status Delete(const std::string& id) const;

  const RunscOptions& options() const { return o_; }
  std::vector<std::string> Argv(std::vector<std::string> command) const;

 private:
  Result<std::string> Call(std::vector<std::string> command) const;
  RunscOptions o_;
};

// The platforms `binary` knows (from `runsc flags`: "ptrace", "kvm", "systrap" as listed).
Result<std::vector<std::string>> KnownPlatforms(const std::string& binary);

}  // namespace hangar::gvisor::internal
