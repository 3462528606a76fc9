// Users: the sandbox's accounts, read from its own /etc/passwd and /etc/group.
//
// envd is a static binary running inside arbitrary templates, so it cannot use NSS (getpwnam
// would load the template's libnss modules, or the host's, or none). It parses the two files
// itself, through the confined Root, and re-reads them when they change (a command may run
// useradd). Lookups that fail on a missing file fall back to root = uid 0, home /root, so a
// template without /etc/passwd still works as root.
//
// Thread safety: all methods may be called from any thread (an internal mutex guards the cache).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/status.h"
#include "root.h"

namespace hangar::envd::internal {

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
  std::vector<gid_t> groups;  // supplementary groups, from /etc/group (primary not repeated)
};

struct PasswdEntry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
};
struct GroupEntry {
  std::string name;
  gid_t gid = 0;
  std::vector<std::string> members;
};

// Line parsers: malformed lines (wrong field count, non-numeric ids) and comments are skipped,
// as libc does.
std::vector<PasswdEntry> ParsePasswd(std::string_view text);
std::vector<GroupEntry> ParseGroup(std::string_view text);

class UserDb {
 public:
  explicit UserDb(const Root* root) : root_(root) {}

  // not_found naming the user if the sandbox has no such account.
  Result<User> Lookup(std::string_view name);
  // Names for ownership display; the number as text when unknown (as E2B's envd does).
  std::string UserName(uid_t uid);
  std::string GroupName(gid_t gid);

 private:
  // Re-reads the files if they changed. Name lookups (`throttled`) check at most once a second:
  // a directory listing asks for hundreds of names.
  void RefreshLocked(bool throttled);

  const Root* root_;
  std::mutex mu_;
  struct FileStamp {
    bool exists = false;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileStamp&) const = default;
  };
  bool loaded_ = false;
  std::chrono::steady_clock::time_point last_check_;
  FileStamp passwd_stamp_, group_stamp_;
  std::vector<PasswdEntry> passwd_;
  std::vector<GroupEntry> groups_;
};

}  // namespace hangar::envd::internal
