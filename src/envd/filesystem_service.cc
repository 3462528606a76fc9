// filesystem.Filesystem: Connect handlers over Root, entry.h and Watcher.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <random>

#include "entry.h"
#include "hangar/base/log.h"
#include "protocol.h"
#include "service.h"

namespace hangar::envd::internal {

Result<std::string> Service::UserPath(const User& user, const nlohmann::json& msg,
                                      std::string_view field) {
  HANGAR_ASSIGN_OR_RETURN(std::string path, GetString(msg, field));
  return Root::Resolve(path, user.home);
}

Result<nlohmann::json> Service::Stat(const api::Request& req, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(User user, CallUser(req));
  HANGAR_ASSIGN_OR_RETURN(std::string path, UserPath(user, msg, "path"));
  auto entry = EntryJson(root_, users_, path);
  if (!entry.ok() && entry.status().code() == Code::kNotFound) {
    return Status::NotFound("file not found: " + path);
  }
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json e, std::move(entry));
  return nlohmann::json{{"entry", e}};
}

Result<nlohmann::json> Service::MakeDir(const api::Request& req, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(User user, CallUser(req));
  HANGAR_ASSIGN_OR_RETURN(std::string path, UserPath(user, msg, "path"));
  if (auto st = root_.Stat(path); st.ok()) {
    if (S_ISDIR(st->st_mode)) return Status::AlreadyExists("directory already exists: " + path);
    return Status::InvalidArgument("path already exists but it is not a directory: " + path);
  } else if (st.status().code() != Code::kNotFound) {
    return st.status();
  }
  HANGAR_TRY(root_.MakeDirs(path, user.uid, user.gid));
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json e, EntryJson(root_, users_, path));
  return nlohmann::json{{"entry", e}};
}

Result<nlohmann::json> Service::Move(const api::Request& req, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(User user, CallUser(req));
  HANGAR_ASSIGN_OR_RETURN(std::string source, UserPath(user, msg, "source"));
  HANGAR_ASSIGN_OR_RETURN(std::string destination, UserPath(user, msg, "destination"));
  if (destination != "/") {
    std::string parent = destination.substr(0, destination.rfind('/'));
    HANGAR_TRY(root_.MakeDirs(parent.empty() ? "/" : parent, user.uid, user.gid));
  }
  Status st = root_.Rename(source, destination);
  if (st.code() == Code::kNotFound) return Status::NotFound("source file not found: " + source);
  HANGAR_TRY(st);
  HANGAR_ASSIGN_OR_RETURN(nlohmann::json e, EntryJson(root_, users_, destination));
  return nlohmann::json{{"entry", e}};
}

namespace {

// Go's filepath.WalkDir order (lexical, depth first), limited to `depth` levels, not following
// symlinks. `dir` is resolved (symlink-free); `shown` is what the client asked for.
Status Walk(const Root& root, UserDb& users, const std::string& dir, const std::string& shown,
            int depth, std::vector<nlohmann::json>& out) {
  auto fd = root.OpenAt(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd.ok()) {
    // Removed or replaced meanwhile: like Go's walk, skip what vanished.
    return fd.status().code() == Code::kNotFound ? Status::Ok() : fd.status();
  }
  DIR* d = ::fdopendir(fd->Release());
  if (d == nullptr) return Status::FromErrno(errno, "fdopendir(" + dir + ")");
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string real = dir == "/" ? "/" + name : dir + "/" + name;
    std::string path = shown == "/" ? "/" + name : shown + "/" + name;
    auto entry = EntryJson(root, users, real);
    if (!entry.ok()) {
      if (entry.status().code() == Code::kNotFound) continue;
      return entry.status();
    }
    (*entry)["path"] = path;
    out.push_back(std::move(*entry));
    if (depth > 1) {
      auto st = root.Lstat(real);
      if (st.ok() && S_ISDIR(st->st_mode))
        HANGAR_TRY(Walk(root, users, real, path, depth - 1, out));
    }
  }
  return Status::Ok();
}

}  // namespace

Result<nlohmann::json> Service::ListDir(const api::Request& req, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(User user, CallUser(req));
  HANGAR_ASSIGN_OR_RETURN(std::string path, UserPath(user, msg, "path"));
  HANGAR_ASSIGN_OR_RETURN(int64_t depth, GetInt(msg, "depth", {}, 1));
  if (depth <= 0) depth = 1;  // proto3 zero: the directory itself
  if (depth > 64) depth = 64;
  auto real = root_.RealPath(path);
  if (!real.ok()) {
    if (real.status().code() == Code::kNotFound) return Status::NotFound("path not found: " + path);
    if (real.status().sys_errno() == ELOOP) {
      return Status::FailedPrecondition("cyclic symlink or chain of too many links at " + path);
    }
    return real.status();
  }
  HANGAR_ASSIGN_OR_RETURN(struct stat st, root_.Stat(*real));
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument("path is not a directory: " + path);
  std::vector<nlohmann::json> entries;
  HANGAR_TRY(Walk(root_, users_, *real, path, static_cast<int>(depth), entries));
  return nlohmann::json{{"entries", entries}};
}

Result<nlohmann::json> Service::Remove(const api::Request& req, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(User user, CallUser(req));
  HANGAR_ASSIGN_OR_RETURN(std::string path, UserPath(user, msg, "path"));
  HANGAR_TRY(root_.RemoveAll(path));
  return nlohmann::json::object();
}

namespace {
Result<WatchOptions> ParseWatch(const nlohmann::json& msg, const std::string& path) {
  WatchOptions o;
  o.path = path;
  HANGAR_ASSIGN_OR_RETURN(o.recursive, GetBool(msg, "recursive"));
  HANGAR_ASSIGN_OR_RETURN(o.include_entry, GetBool(msg, "includeEntry", "include_entry"));
  HANGAR_ASSIGN_OR_RETURN(o.allow_network_mounts,
                          GetBool(msg, "allowNetworkMounts", "allow_network_mounts"));
  return o;
}
}  // namespace

void Service::WatchDir(const api::Request& req, const nlohmann::json& msg,
                       const std::shared_ptr<ConnectStream>& stream) {
  auto user = CallUser(req);
  if (!user.ok()) return stream->End(user.status());
  auto path = UserPath(*user, msg, "path");
  if (!path.ok()) return stream->End(path.status());
  auto opts = ParseWatch(msg, *path);
  if (!opts.ok()) return stream->End(opts.status());
  // Keepalive-Ping-Interval and Connect-Timeout-Ms as for processes.
  std::chrono::milliseconds keepalive{90'000}, deadline{0};
  if (auto k = req.header("Keepalive-Ping-Interval"); !k.empty()) {
    if (int s = std::atoi(std::string(k).c_str()); s > 0) keepalive = std::chrono::seconds(s);
  }
  if (auto t = req.header("Connect-Timeout-Ms"); !t.empty()) {
    deadline = std::chrono::milliseconds(std::atoll(std::string(t).c_str()));
  }
  auto watcher = Watcher::Open(&root_, &users_, *opts);
  if (!watcher.ok()) return stream->End(watcher.status());
  std::shared_ptr<Watcher> w = std::move(*watcher);
  stream->OnCancel([w] { w->Wake(); });
  if (!stream->Send({{"start", nlohmann::json::object()}}))
    return stream->End(Status::Cancelled("client gone"));
  ++stream_threads_;
  std::thread([this, w, stream, keepalive, deadline] {
    using Clock = std::chrono::steady_clock;
    auto end_at = deadline.count() > 0 ? Clock::now() + deadline : Clock::time_point::max();
    auto next_ping = Clock::now() + keepalive;
    Status result;
    while (!stream->cancelled()) {
      auto now = Clock::now();
      if (now >= end_at) {
        result = Status::DeadlineExceeded("the watch's deadline (Connect-Timeout-Ms) passed");
        break;
      }
      if (now >= next_ping) {
        if (!stream->Send({{"keepalive", nlohmann::json::object()}})) break;
        next_ping = now + keepalive;
      }
      auto wait = std::chrono::ceil<std::chrono::milliseconds>(std::min(end_at, next_ping) - now);
      auto events = w->Poll(static_cast<int>(std::clamp<int64_t>(wait.count(), 0, INT_MAX)));
      if (!events.ok()) {
        result = events.status();
        break;
      }
      bool sent = true;
      for (const auto& e : *events) {
        if (!(sent = stream->Send({{"filesystem", e}}))) break;
      }
      if (!sent) break;
      if (!events->empty()) next_ping = Clock::now() + keepalive;
    }
    stream->End(stream->cancelled() ? Status::Cancelled("client went away") : result);
    --stream_threads_;
  }).detach();
}

Result<nlohmann::json> Service::CreateWatcher(const api::Request& req, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(User user, CallUser(req));
  HANGAR_ASSIGN_OR_RETURN(std::string path, UserPath(user, msg, "path"));
  HANGAR_ASSIGN_OR_RETURN(WatchOptions opts, ParseWatch(msg, path));
  HANGAR_ASSIGN_OR_RETURN(std::unique_ptr<Watcher> watcher, Watcher::Open(&root_, &users_, opts));
  auto pw = std::make_shared<PolledWatcher>();
  pw->watcher = std::move(watcher);
  static std::mt19937_64 rng{std::random_device{}()};
  static std::mutex rng_mu;
  std::string id;
  {
    std::lock_guard lock(rng_mu);
    static constexpr char kDigits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    id = "w";
    for (int i = 0; i < 20; ++i) id += kDigits[rng() % 36];
  }
  // Bounded: a watcher nobody polls must not grow envd without limit.
  constexpr size_t kMaxBuffered = 100'000;
  pw->thread = std::thread([pw] {
    while (!pw->stop) {
      auto events = pw->watcher->Poll(-1);
      std::lock_guard lock(pw->mu);
      if (!events.ok()) {
        pw->error = events.status();
        return;
      }
      for (auto& e : *events) {
        if (pw->events.size() >= kMaxBuffered) {
          pw->error = Status::ResourceExhausted("more than " + std::to_string(kMaxBuffered) +
                                                " unread events; the watcher stopped");
          return;
        }
        pw->events.push_back(std::move(e));
      }
    }
  });
  std::lock_guard lock(watchers_mu_);
  watchers_[id] = pw;
  return nlohmann::json{{"watcherId", id}};
}

Result<nlohmann::json> Service::GetWatcherEvents(const api::Request&, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(std::string id, GetString(msg, "watcherId", "watcher_id"));
  std::shared_ptr<PolledWatcher> pw;
  {
    std::lock_guard lock(watchers_mu_);
    auto it = watchers_.find(id);
    if (it == watchers_.end()) return Status::NotFound("watcher with id " + id + " not found");
    pw = it->second;
  }
  std::lock_guard lock(pw->mu);
  if (!pw->error.ok()) return pw->error;
  nlohmann::json events = nlohmann::json::array();
  for (auto& e : pw->events) events.push_back(std::move(e));
  pw->events.clear();
  return nlohmann::json{{"events", events}};
}

Result<nlohmann::json> Service::RemoveWatcher(const api::Request&, const nlohmann::json& msg) {
  HANGAR_ASSIGN_OR_RETURN(std::string id, GetString(msg, "watcherId", "watcher_id"));
  std::shared_ptr<PolledWatcher> pw;
  {
    std::lock_guard lock(watchers_mu_);
    auto it = watchers_.find(id);
    if (it == watchers_.end()) return Status::NotFound("watcher with id " + id + " not found");
    pw = it->second;
    watchers_.erase(it);
  }
  pw->stop = true;
  pw->watcher->Wake();
  if (pw->thread.joinable()) pw->thread.join();
  return nlohmann::json::object();
}

}  // namespace hangar::envd::internal
