// Root: every file path envd touches, resolved inside the sandbox's root directory.
//
// Why: envd runs as root (of the sandbox's user namespace) and serves paths chosen by clients.
// A path — or a symlink planted by a process in the sandbox — must never reach a file outside
// the root, whatever tier runs envd. Every lookup therefore goes through openat2(2) relative to
// a descriptor of the root with RESOLVE_IN_ROOT (absolute symlinks and ".." are clamped to the
// root, as if the root were "/") and RESOLVE_NO_MAGICLINKS (no /proc/<pid>/fd jumps out). Steps
// that must not follow the last component (lstat, unlink, rename, mkdir) open the parent that
// way and act on the bare name with the *at() call.
//
// Without openat2 (ENOSYS: gVisor's kernel in Debian 12's runsc) a Root can still be opened on
// "/" — the process's own root, where ordinary resolution of an absolute path cannot leave it
// ("/.." is "/"); magic links then reach only what the sandbox's own processes hold. Any other
// directory still fails at Open: there is no safe fallback for a root below "/".
//
// Paths given to Root are sandbox paths: absolute, already lexically clean (see Clean). Relative
// client paths are joined to the user's home first (Resolve).
//
// Thread safety: a Root is immutable after Open; all methods may be called from any thread.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <string_view>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::envd::internal {

class Root {
 public:
  Root() = default;
  Root(Root&&) noexcept = default;
  Root& operator=(Root&&) noexcept = default;

  // `dir` is a host directory ("/" inside a sandbox; a temp dir in tests).
  static Result<Root> Open(const std::string& dir);

  // Lexical part of resolving a client path: "~" and "~/x" expand to `home`, a relative path is
  // joined to `home`, then "." and ".." are removed ("/.." is "/"). Empty means `home`.
  // invalid_argument for "~otheruser" and paths containing NUL.
  static Result<std::string> Resolve(std::string_view path, std::string_view home);
  // Lexical cleaning of an absolute path (what Resolve does after joining).
  static std::string Clean(std::string_view abs);

  // openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS); O_CLOEXEC is added.
  // (openat(2) of the absolute path when the kernel has no openat2 and the root is "/".)
  Result<UniqueFd> OpenAt(const std::string& path, int flags, mode_t mode = 0) const;

  // The directory holding `path`, opened O_PATH, and the last component. invalid_argument for
  // "/" (it has no parent).
  struct Parent {
    UniqueFd dir;
    std::string name;
  };
  Result<Parent> OpenParent(const std::string& path) const;

  Result<struct stat> Lstat(const std::string& path) const;  // the last component itself
  Result<struct stat> Stat(const std::string& path) const;   // symlinks followed, inside root
  // The sandbox path `path` resolves to (symlinks followed inside the root).
  Result<std::string> RealPath(const std::string& path) const;
  // The sandbox path of an open descriptor (from /proc/self/fd), relative to this root.
  Result<std::string> PathOf(int fd) const;

  // mkdir -p: creates each missing directory with `mode`, owned by uid:gid. ok if the whole
  // path already is a directory; failed_precondition naming the component that is a file.
  Status MakeDirs(const std::string& path, uid_t uid, gid_t gid, mode_t mode = 0755) const;
  // rm -rf without following symlinks; ok if `path` does not exist; refuses "/".
  Status RemoveAll(const std::string& path) const;
  // rename(2) of the entries themselves (a symlink is moved, not its target).
  Status Rename(const std::string& from, const std::string& to) const;

  int fd() const { return fd_.get(); }
  const std::string& host_path() const { return host_path_; }

 private:
  UniqueFd fd_;
  std::string host_path_;  // the root's real host path, without a trailing '/'; "" for "/"
  bool plain_ = false;     // no openat2 and the root is "/": plain openat of absolute paths
};

}  // namespace hangar::envd::internal
