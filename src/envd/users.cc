#include "users.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>

namespace hangar::envd::internal {

namespace {

std::vector<std::string_view> Split(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  size_t i = 0;
  for (;;) {
    size_t j = line.find(sep, i);
    if (j == std::string_view::npos) {
      out.push_back(line.substr(i));
      return out;
    }
    out.push_back(line.substr(i, j - i));
    i = j + 1;
  }
}

bool ParseId(std::string_view s, uint32_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

template <typename F>
void ForEachLine(std::string_view text, F f) {
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find('\n', i);
    if (j == std::string_view::npos) j = text.size();
    std::string_view line = text.substr(i, j - i);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    i = j + 1;
    if (line.empty() || line[0] == '#') continue;
    f(line);
  }
}

// Reads a small file inside the root; nullopt-like empty result with exists=false if absent.
std::string ReadSmall(const Root& root, const std::string& path, bool* exists) {
  *exists = false;
  auto fd = root.OpenAt(path, O_RDONLY);
  if (!fd.ok()) return {};
  *exists = true;
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (16 << 20)) break;  // a 16 MiB passwd is not a passwd
  }
  return out;
}

}  // namespace

std::vector<PasswdEntry> ParsePasswd(std::string_view text) {
  std::vector<PasswdEntry> out;
  ForEachLine(text, [&](std::string_view line) {
    auto f = Split(line, ':');
    if (f.size() != 7) return;
    PasswdEntry e;
    uint32_t uid, gid;
    if (f[0].empty() || !ParseId(f[2], uid) || !ParseId(f[3], gid)) return;
    e.name = std::string(f[0]);
    e.uid = uid;
    e.gid = gid;
    e.home = std::string(f[5]);
    e.shell = std::string(f[6]);
    out.push_back(std::move(e));
  });
  return out;
}

std::vector<GroupEntry> ParseGroup(std::string_view text) {
  std::vector<GroupEntry> out;
  ForEachLine(text, [&](std::string_view line) {
    auto f = Split(line, ':');
    if (f.size() != 4) return;
    GroupEntry g;
    uint32_t gid;
    if (f[0].empty() || !ParseId(f[2], gid)) return;
    g.name = std::string(f[0]);
    g.gid = gid;
    if (!f[3].empty()) {
      for (std::string_view m : Split(f[3], ',')) {
        if (!m.empty()) g.members.emplace_back(m);
      }
    }
    out.push_back(std::move(g));
  });
  return out;
}

void UserDb::RefreshLocked(bool throttled) {
  auto now = std::chrono::steady_clock::now();
  if (throttled && loaded_ && now - last_check_ < std::chrono::seconds(1)) return;
  last_check_ = now;
  auto stamp = [&](const char* path) {
    FileStamp s;
    auto st = root_->Stat(path);
    if (!st.ok()) return s;
    s.exists = true;
    s.ino = st->st_ino;
    s.size = st->st_size;
    s.mtime_ns = static_cast<int64_t>(st->st_mtim.tv_sec) * 1'000'000'000 + st->st_mtim.tv_nsec;
    return s;
  };
  FileStamp p = stamp("/etc/passwd");
  FileStamp g = stamp("/etc/group");
  if (loaded_ && p == passwd_stamp_ && g == group_stamp_) return;
  bool exists;
  passwd_ = ParsePasswd(ReadSmall(*root_, "/etc/passwd", &exists));
  groups_ = ParseGroup(ReadSmall(*root_, "/etc/group", &exists));
  passwd_stamp_ = p;
  group_stamp_ = g;
  loaded_ = true;
}

Result<User> UserDb::Lookup(std::string_view name) {
  std::lock_guard lock(mu_);
  RefreshLocked(false);
  const PasswdEntry* found = nullptr;
  for (const auto& e : passwd_) {
    if (e.name == name) {
      found = &e;
      break;
    }
  }
  User u;
  if (found == nullptr) {
    if (name != "root") {
      return Status::NotFound("user '" + std::string(name) + "' does not exist in the sandbox");
    }
    u.name = "root";
    u.home = "/root";
    u.shell = "/bin/sh";
    return u;
  }
  u.name = found->name;
  u.uid = found->uid;
  u.gid = found->gid;
  u.home = found->home.empty() ? "/" : found->home;
  u.shell = found->shell;
  for (const auto& g : groups_) {
    if (g.gid == u.gid) continue;
    for (const auto& m : g.members) {
      if (m == u.name) {
        u.groups.push_back(g.gid);
        break;
      }
    }
  }
  return u;
}

std::string UserDb::UserName(uid_t uid) {
  std::lock_guard lock(mu_);
  RefreshLocked(true);
  for (const auto& e : passwd_) {
    if (e.uid == uid) return e.name;
  }
  if (uid == 0) return "root";
  return std::to_string(uid);
}

std::string UserDb::GroupName(gid_t gid) {
  std::lock_guard lock(mu_);
  RefreshLocked(true);
  for (const auto& g : groups_) {
    if (g.gid == gid) return g.name;
  }
  if (gid == 0) return "root";
  return std::to_string(gid);
}

}  // namespace hangar::envd::internal
