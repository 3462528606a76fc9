// Watcher: filesystem.FilesystemEvent from inotify, for WatchDir and the polled watchers.
//
// Events mirror fsnotify, which E2B's envd uses: IN_CREATE/IN_MOVED_TO → CREATE, IN_MODIFY →
// WRITE, IN_DELETE/IN_DELETE_SELF → REMOVE, IN_MOVED_FROM/IN_MOVE_SELF → RENAME, IN_ATTRIB →
// CHMOD; one inotify event with several of these yields one FilesystemEvent each, in the order
// CREATE, RENAME, CHMOD, WRITE, REMOVE. `name` is relative to the watched directory ("." for
// the directory itself). Recursive watchers add every subdirectory, and new ones as they appear.
// With include_entry, CREATE/WRITE/CHMOD events carry the entry's EntryInfo when it still exists.
//
// The directory is opened through the confined Root and watched via its descriptor, so a
// symlink cannot point a watch outside the sandbox.
//
// Thread safety: Poll is called by one thread at a time; Wake from any thread.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"
#include "root.h"
#include "users.h"

namespace hangar::envd::internal {

struct WatchOptions {
  std::string path;  // sandbox path of a directory
  bool recursive = false;
  bool include_entry = false;
  bool allow_network_mounts = false;  // else NFS/CIFS/SMB/FUSE are refused (events unreliable)
};

class Watcher {
 public:
  // not_found / invalid_argument (not a directory, a network mount) as E2B's envd answers.
  static Result<std::unique_ptr<Watcher>> Open(const Root* root, UserDb* users, WatchOptions o);
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Waits up to timeout_ms (-1: forever) for events and returns those that arrived (possibly
  // none: timeout or Wake). resource_exhausted if the kernel queue overflowed.
  Result<std::vector<nlohmann::json>> Poll(int timeout_ms);
  // Makes a blocked Poll return early.
  void Wake();

 private:
  Watcher(const Root* root, UserDb* users, WatchOptions o);
  Status AddTree(const std::string& rel);
  Status AddDir(const std::string& rel);
  std::string SandboxPath(const std::string& rel) const;

  const Root* root_;
  UserDb* users_;
  WatchOptions o_;
  UniqueFd inotify_;
  UniqueFd wake_;
  std::map<int, std::string> dirs_;  // watch descriptor → path relative to the watched dir
  // Cookies of renames out of envd's own temporary upload files (".<name>.envd-<hex>"): the
  // rename that ends an atomic write is reported as the write of its target, and the temporary
  // file itself is never reported (as E2B's envd, which writes in place).
  std::set<uint32_t> temp_cookies_;
};

}  // namespace hangar::envd::internal
