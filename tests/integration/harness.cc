#include "harness.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"

namespace hangar::integration {

std::string SkipReason() {
  if (::geteuid() != 0) return "needs root (the node role makes namespaces, mounts, cgroups)";
  if (!node::testing::HaveBusybox()) return "needs /bin/busybox (busybox-static)";
  return "";
}

Status ImportTemplate(const std::string& data_dir, const std::string& name) {
  HANGAR_TRY(MakeDirs(data_dir));
  storage::TemplateStoreOptions o;
  o.root = data_dir + "/templates";
  HANGAR_ASSIGN_OR_RETURN(auto store, storage::TemplateStore::Open(o));
  if (store.Get(name).ok()) return Status::Ok();
  HANGAR_ASSIGN_OR_RETURN(TempDir work, TempDir::Make("hangar-it-tmpl-"));
  return node::testing::ImportBusyboxTemplate(store, work.path(), name).status();
}

NodeIdentity UniqueNodeIdentity(int slot) {
  NodeIdentity id;
  id.cgroup_root = fmt::format("hangar-it-{}-{}", ::getpid(), slot);
  // 2^30 .. 2^31 holds 64 ranges of 256 slots × 65536 ids; far from the default (100000).
  int64_t index = (static_cast<int64_t>(::getpid()) * 8 + slot) % 60;
  id.uid_base = (int64_t{1} << 30) + index * 256 * 65536;
  return id;
}

// --- Hangard ----------------------------------------------------------------------------------

Hangard::~Hangard() {
  if (child_.running()) (void)Kill();
}

Result<Hangard> Hangard::Start(const std::string& role, const std::string& data_dir,
                               const std::vector<std::string>& flags, const std::string& log_path) {
  // sh only redirects stderr and execs: the Child's pid is hangard's.
  std::vector<std::string> argv = {"/bin/sh",    "-c",        "exec \"$@\" 2>>\"$0\"",
                                   log_path,     HANGARD_BIN, "--role",
                                   role,         "--listen",  "127.0.0.1:0",
                                   "--data-dir", data_dir,    "--http-access-log",
                                   "false"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  SpawnOptions opt;
  opt.capture_stdout = true;
  opt.death_signal = SIGKILL;
  Hangard h;
  h.log_path_ = log_path;
  HANGAR_ASSIGN_OR_RETURN(h.child_, Child::Spawn(argv, opt));
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status::DeadlineExceeded("hangard did not say 'listening on' within 90 s: " +
                                      h.LogTail());
    }
    pollfd p{h.child_.stdout_fd().get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char ch;
    ssize_t n = ::read(h.child_.stdout_fd().get(), &ch, 1);
    if (n <= 0) {
      return Status::Internal(
          fmt::format("hangard exited before listening ({}): {}",
                      h.child_.WaitFor(std::chrono::seconds(5)).value_or(ExitStatus{}).ToString(),
                      h.LogTail()));
    }
    if (ch == '\n') break;
    line += ch;
  }
  auto pos = line.find("http://");
  if (pos == std::string::npos) return Status::Internal("unexpected first line: " + line);
  h.url_ = line.substr(pos);
  return h;
}

Status Hangard::Kill() {
  if (!child_.running()) return Status::Ok();
  HANGAR_TRY(child_.Signal(SIGKILL));
  return child_.Wait().status();
}

Result<ExitStatus> Hangard::Stop(std::chrono::milliseconds grace) {
  if (!child_.running()) return Status::FailedPrecondition("hangard is not running");
  HANGAR_TRY(child_.Signal(SIGTERM));
  return child_.WaitFor(grace);
}

std::string Hangard::LogTail(size_t bytes) const {
  auto text = ReadFile(log_path_);
  if (!text.ok()) return "(no log)";
  return text->size() > bytes ? text->substr(text->size() - bytes) : *text;
}

// --- Api --------------------------------------------------------------------------------------

std::string Reply::Describe() const { return fmt::format("{} {}", status, raw.substr(0, 600)); }

Result<Reply> Api::Raw(std::string_view method, std::string_view path, std::string body,
                       std::string content_type,
                       std::vector<std::pair<std::string, std::string>> headers,
                       std::chrono::milliseconds timeout) const {
  api::ClientOptions o;
  o.timeout = timeout;
  if (!bearer_.empty()) o.headers.emplace_back("Authorization", "Bearer " + bearer_);
  HANGAR_ASSIGN_OR_RETURN(api::HttpClient client, api::HttpClient::Create(url_, o));
  api::RequestOptions ro;
  ro.content_type = std::move(content_type);
  ro.headers = std::move(headers);
  HANGAR_ASSIGN_OR_RETURN(api::ClientResponse r, client.Send(method, path, std::move(body), ro));
  Reply out;
  out.status = r.status;
  out.raw = std::move(r.body);
  for (auto& [k, v] : r.headers) {
    std::string lower = k;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[lower] = v;
  }
  out.body = nlohmann::json::parse(out.raw, nullptr, false);
  if (out.body.is_discarded()) out.body = nullptr;
  return out;
}

Result<Reply> Api::Call(std::string_view method, std::string_view path, const nlohmann::json& body,
                        std::vector<std::pair<std::string, std::string>> headers,
                        std::chrono::milliseconds timeout) const {
  bool has_body = !body.is_null();
  return Raw(method, path, has_body ? body.dump() : std::string(),
             has_body || method == "POST" ? "application/json" : "", std::move(headers), timeout);
}

Api::ExecResult Api::Exec(const std::string& path, const nlohmann::json& command) const {
  ExecResult out;
  auto r = Call("POST", path, command);
  if (!r.ok()) {
    out.error = r.status().ToString();
    return out;
  }
  out.http_status = r->status;
  if (r->status != 200) {
    out.error = r->raw;
    return out;
  }
  std::istringstream in(r->raw);
  std::string line;
  while (std::getline(in, line)) {
    auto ev = nlohmann::json::parse(line, nullptr, false);
    if (ev.is_discarded()) {
      out.error = "malformed event: " + line;
      continue;
    }
    out.events.push_back(ev);
    std::string kind = ev.value("event", "");
    if (kind == "stdout") out.out += Base64Decode(ev.value("data", ""));
    if (kind == "stderr") out.err += Base64Decode(ev.value("data", ""));
    if (kind == "exit") out.exit_code = ev.value("exit_code", -1);
    if (kind == "error") out.error = ev.value("message", "error");
  }
  return out;
}

Result<std::vector<nlohmann::json>> Api::StreamLines(const std::string& path,
                                                     std::chrono::milliseconds timeout) const {
  HANGAR_ASSIGN_OR_RETURN(Reply r, Call("GET", path, nullptr, {}, timeout));
  if (r.status != 200) return Status::Internal("GET " + path + ": " + r.Describe());
  std::vector<nlohmann::json> out;
  std::istringstream in(r.raw);
  std::string line;
  while (std::getline(in, line)) {
    auto ev = nlohmann::json::parse(line, nullptr, false);
    if (ev.is_discarded()) return Status::Internal("malformed NDJSON line: " + line);
    out.push_back(ev);
  }
  return out;
}

std::string Base64Decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0) continue;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string ReadToken(const std::string& path) {
  auto t = ReadFile(path);
  if (!t.ok()) return "";
  std::string s = *t;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// --- leaks ------------------------------------------------------------------------------------

namespace {

bool Under(const std::string& path, const std::string& dir) {
  return path == dir || path.rfind(dir + "/", 0) == 0;
}

std::vector<std::string> CgroupHierarchies() {
  std::vector<std::string> out;
  DIR* d = ::opendir("/sys/fs/cgroup");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string p = "/sys/fs/cgroup/" + name;
    struct stat st;
    // Skip the symlinks (cpu -> cpu,cpuacct): each hierarchy once.
    if (::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) out.push_back(p);
  }
  ::closedir(d);
  out.push_back("/sys/fs/cgroup");  // cgroup v2 unified at the top
  return out;
}

}  // namespace

std::string Leaks::Describe() const {
  std::string s = fmt::format("mounts={} loops={} cgroups={} (pool: mounts={} loops={})", mounts,
                              loops, cgroups, pool_mounts, pool_loops);
  for (const auto& d : details) s += "\n  " + d;
  return s;
}

Leaks CountLeaks(const std::string& data_dir, const std::string& cgroup_root) {
  Leaks l;
  const std::string pool_dir = data_dir + "/disks";
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    std::istringstream f(line);
    std::string id, parent, devno, root, mount_point;
    f >> id >> parent >> devno >> root >> mount_point;
    if (!Under(mount_point, data_dir)) continue;
    if (Under(mount_point, pool_dir)) {
      ++l.pool_mounts;
    } else {
      ++l.mounts;
      l.details.push_back("mount " + mount_point);
    }
  }
  auto loops = RunCommand({"losetup", "-a"});
  if (loops.ok()) {
    std::istringstream in(loops->out);
    while (std::getline(in, line)) {
      if (line.find(data_dir + "/") == std::string::npos) continue;
      if (line.find(pool_dir + "/") != std::string::npos) {
        ++l.pool_loops;
      } else {
        ++l.loops;
        l.details.push_back("loop " + line);
      }
    }
  }
  for (const auto& h : CgroupHierarchies()) {
    std::string root = h + "/" + cgroup_root;
    DIR* d = ::opendir(root.c_str());
    if (d == nullptr) continue;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      if (e->d_type == DT_DIR) {
        ++l.cgroups;
        l.details.push_back("cgroup " + root + "/" + name);
      }
    }
    ::closedir(d);
  }
  return l;
}

void RemoveCgroupRoot(const std::string& cgroup_root) {
  for (const auto& h : CgroupHierarchies()) {
    std::string root = h + "/" + cgroup_root;
    ::rmdir(root.c_str());
  }
}

Result<CommandOutput> RunCli(const std::vector<std::string>& args,
                             std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {HANGAR_CLI_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout);
}

}  // namespace hangar::integration
