#include "watch.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "entry.h"

namespace hangar::envd::internal {

namespace {

constexpr uint32_t kMask = IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                           IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

bool IsNetworkFs(long type) {
  switch (static_cast<unsigned long>(type)) {
    case 0x6969:      // NFS
    case 0xFF534D42:  // CIFS
    case 0x517B:      // SMB
    case 0xFE534D42:  // SMB2
    case 0x65735546:  // FUSE
      return true;
    default:
      return false;
  }
}

// envd's temporary file of an atomic write (files.cc): "." + name + ".envd-" + 16 hex digits.
bool IsEnvdTempFile(std::string_view leaf) {
  constexpr std::string_view kMark = ".envd-";
  if (leaf.size() < 1 + 1 + kMark.size() + 16 || leaf[0] != '.') return false;
  std::string_view hex = leaf.substr(leaf.size() - 16);
  if (leaf.substr(leaf.size() - 16 - kMark.size(), kMark.size()) != kMark) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

Watcher::Watcher(const Root* root, UserDb* users, WatchOptions o)
    : root_(root), users_(users), o_(std::move(o)) {}

Result<std::unique_ptr<Watcher>> Watcher::Open(const Root* root, UserDb* users, WatchOptions o) {
  auto st = root->Stat(o.path);
  if (!st.ok()) {
    if (st.status().code() == Code::kNotFound) {
      return Status::NotFound("path " + o.path + " not found");
    }
    return st.status();
  }
  if (!S_ISDIR(st->st_mode))
    return Status::InvalidArgument("path " + o.path + " is not a directory");
  if (!o.allow_network_mounts) {
    HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, root->OpenAt(o.path, O_PATH | O_DIRECTORY));
    struct statfs sfs {};
    if (::fstatfs(fd.get(), &sfs) == 0 && IsNetworkFs(sfs.f_type)) {
      return Status::InvalidArgument("cannot watch path on network filesystem: " + o.path);
    }
  }
  std::unique_ptr<Watcher> w(new Watcher(root, users, std::move(o)));
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (in < 0) return Status::FromErrno(errno, "inotify_init1()");
  w->inotify_.Reset(in);
  int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) return Status::FromErrno(errno, "eventfd()");
  w->wake_.Reset(wake);
  HANGAR_TRY(w->o_.recursive ? w->AddTree("") : w->AddDir(""));
  return w;
}

std::string Watcher::SandboxPath(const std::string& rel) const {
  if (rel.empty()) return o_.path;
  return o_.path == "/" ? "/" + rel : o_.path + "/" + rel;
}

Status Watcher::AddDir(const std::string& rel) {
  std::string path = SandboxPath(rel);
  // The watched directory itself may be reached through a symlink; the ones below may not.
  int nofollow = rel.empty() ? 0 : O_NOFOLLOW;
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, root_->OpenAt(path, O_PATH | O_DIRECTORY | nofollow));
  // inotify takes a path; the descriptor's /proc link names exactly the confined directory.
  std::string link = "/proc/self/fd/" + std::to_string(fd.get());
  int wd = ::inotify_add_watch(inotify_.get(), link.c_str(), kMask);
  if (wd < 0) return Status::FromErrno(errno, "inotify_add_watch(" + path + ")");
  dirs_[wd] = rel;
  return Status::Ok();
}

Status Watcher::AddTree(const std::string& rel) {
  Status st = AddDir(rel);
  if (!st.ok()) {
    // A subdirectory that vanished or became a symlink meanwhile is not an error.
    return rel.empty() ? st : Status::Ok();
  }
  auto fd =
      root_->OpenAt(SandboxPath(rel), O_RDONLY | O_DIRECTORY | (rel.empty() ? 0 : O_NOFOLLOW));
  if (!fd.ok()) return rel.empty() ? fd.status() : Status::Ok();
  DIR* d = ::fdopendir(fd->Release());
  if (d == nullptr) return Status::FromErrno(errno, "fdopendir(" + SandboxPath(rel) + ")");
  std::vector<std::string> subdirs;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == ".." || e->d_type != DT_DIR) continue;
    subdirs.push_back(rel.empty() ? std::string(name) : rel + "/" + std::string(name));
  }
  ::closedir(d);
  for (const auto& s : subdirs) HANGAR_TRY(AddTree(s));
  return Status::Ok();
}

void Watcher::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

Result<std::vector<nlohmann::json>> Watcher::Poll(int timeout_ms) {
  std::vector<nlohmann::json> out;
  pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  int r = ::poll(fds, 2, timeout_ms);
  if (r < 0) {
    if (errno == EINTR) return out;
    return Status::FromErrno(errno, "poll(inotify)");
  }
  if (fds[1].revents) {
    uint64_t v;
    (void)!::read(wake_.get(), &v, sizeof v);
  }
  if (!(fds[0].revents & POLLIN)) return out;
  alignas(inotify_event) char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return Status::FromErrno(errno, "read(inotify)");
    }
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        return Status::ResourceExhausted("inotify queue overflowed; filesystem events were lost");
      }
      auto dir = dirs_.find(ev->wd);
      if (dir == dirs_.end()) continue;
      if (ev->mask & IN_IGNORED) {
        dirs_.erase(dir);
        continue;
      }
      const std::string& rel_dir = dir->second;
      bool self = (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0;
      // A subdirectory's own removal is reported by its parent already.
      if (self && !rel_dir.empty()) continue;
      std::string name;
      if (self) {
        name = ".";
      } else {
        std::string leaf = ev->len > 0 ? std::string(ev->name) : std::string();
        name = rel_dir.empty() ? leaf : rel_dir + "/" + leaf;
      }
      // An atomic write by envd: hide its temporary file; its final rename is the write (a
      // create and a write, as a write in place of a new file reports them).
      uint32_t mask = ev->mask;
      if (!self && !(mask & IN_ISDIR) && ev->len > 0 && IsEnvdTempFile(ev->name)) {
        if ((mask & IN_MOVED_FROM) && ev->cookie != 0) {
          if (temp_cookies_.size() > 1024) temp_cookies_.clear();  // bounded; pairs come together
          temp_cookies_.insert(ev->cookie);
        }
        continue;
      }
      if ((mask & IN_MOVED_TO) && temp_cookies_.erase(ev->cookie) > 0) {
        mask = (mask & ~IN_MOVED_TO) | IN_CREATE | IN_MODIFY;
      }
      if (o_.recursive && (mask & IN_ISDIR) && (mask & (IN_CREATE | IN_MOVED_TO))) {
        (void)AddTree(name);  // best effort: it may be gone again already
      }
      struct Op {
        uint32_t bits;
        const char* type;
        bool carries_entry;
      };
      static constexpr Op kOps[] = {
          {IN_CREATE | IN_MOVED_TO, "EVENT_TYPE_CREATE", true},
          {IN_MOVED_FROM | IN_MOVE_SELF, "EVENT_TYPE_RENAME", false},
          {IN_ATTRIB, "EVENT_TYPE_CHMOD", true},
          {IN_MODIFY, "EVENT_TYPE_WRITE", true},
          {IN_DELETE | IN_DELETE_SELF, "EVENT_TYPE_REMOVE", false},
      };
      for (const Op& op : kOps) {
        if (!(mask & op.bits)) continue;
        nlohmann::json e = {{"name", name}, {"type", op.type}};
        if (o_.include_entry && op.carries_entry) {
          std::string path = self ? o_.path : SandboxPath(name);
          if (auto entry = EntryJson(*root_, *users_, path); entry.ok()) e["entry"] = *entry;
        }
        out.push_back(std::move(e));
      }
    }
  }
  return out;
}

}  // namespace hangar::envd::internal
