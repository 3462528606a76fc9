#include "runsc.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "hangar/base/child.h"
#include "hangar/base/fd.h"

extern char** environ;

namespace hangar::gvisor::internal {

namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ' ';
    out += s;
  }
  return out;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// The last `max` bytes of a file, for error messages.
std::string Tail(const std::string& path, size_t max = 600) {
  auto text = ReadFile(path);
  if (!text.ok()) return "";
  std::string t = Trim(*text);
  return t.size() > max ? "..." + t.substr(t.size() - max) : t;
}

bool NoSuchContainer(const std::string& err) {
  return err.find("does not exist") != std::string::npos ||
         err.find("no such file") != std::string::npos;
}

ContainerState ParseState(const nlohmann::json& j) {
  ContainerState s;
  s.id = j.value("id", "");
  s.status = j.value("status", "");
  s.pid = j.value("pid", -1);
  return s;
}

}  // namespace

std::vector<std::string> Runsc::Argv(std::vector<std::string> command) const {
  std::vector<std::string> argv = {o_.binary, "--root", o_.root};
  if (!o_.platform.empty()) argv.push_back("--platform=" + o_.platform);
  for (const auto& f : o_.extra_flags) argv.push_back(f);
  for (auto& c : command) argv.push_back(std::move(c));
  return argv;
}

Result<std::string> Runsc::Call(std::vector<std::string> command) const {
  const std::vector<std::string> argv = Argv(std::move(command));
  HANGAR_ASSIGN_OR_RETURN(CommandOutput out, RunCommand(argv, o_.timeout));
  if (!out.status.success()) {
    std::string err = Trim(out.err.empty() ? out.out : out.err);
    if (NoSuchContainer(err)) return Status::NotFound(fmt::format("runsc: {}", err));
    return Status::Internal(
        fmt::format("{} failed ({}): {}", Join(argv), out.status.ToString(), err));
  }
  return out.out;
}

Result<pid_t> Runsc::Run(const std::string& id, const std::string& bundle, int console_fd,
                         const std::string& console_path) const {
  // The sandbox's own flags: no network stack at all, and envd may create (never connect to)
  // host Unix sockets — its listening socket in the bind-mounted socket directory.
  const std::string pid_file = bundle + "/sandbox.pid";
  const std::vector<std::string> argv =
      Argv({"--network=none", "--host-uds=create", "run", "--detach", "--bundle", bundle,
            "--pid-file", pid_file, id});
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, console_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, console_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Status::FromErrno(rc, fmt::format("posix_spawn({})", argv[0]));
  Child child = Child::Adopt(pid);
  HANGAR_ASSIGN_OR_RETURN(ExitStatus st, child.WaitFor(o_.timeout));
  if (!st.success()) {
    return Status::Internal(
        fmt::format("runsc run {} failed ({}): {}", id, st.ToString(), Tail(console_path)));
  }
  HANGAR_ASSIGN_OR_RETURN(std::string pid_text, ReadFile(pid_file));
  const long sandbox_pid = std::strtol(pid_text.c_str(), nullptr, 10);
  if (sandbox_pid <= 0) {
    return Status::Internal(fmt::format("runsc run {}: bad pid file '{}'", id, Trim(pid_text)));
  }
  return static_cast<pid_t>(sandbox_pid);
}

Result<ContainerState> Runsc::State(const std::string& id) const {
  HANGAR_ASSIGN_OR_RETURN(std::string out, Call({"state", id}));
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Internal(fmt::format("runsc state {}: unparsable output '{}'", id, out));
  }
  return ParseState(j);
}

Result<std::vector<ContainerState>> Runsc::List() const {
  HANGAR_ASSIGN_OR_RETURN(std::string out, Call({"list", "--format=json"}));
  auto j = nlohmann::json::parse(out, nullptr, false);
  std::vector<ContainerState> v;
  if (j.is_null()) return v;  // runsc prints "null" for none
  if (j.is_discarded() || !j.is_array()) {
    return Status::Internal(fmt::format("runsc list: unparsable output '{}'", out));
  }
  for (const auto& e : j) v.push_back(ParseState(e));
  return v;
}

Status Runsc::Kill(const std::string& id, const std::string& signal, bool all) const {
  std::vector<std::string> cmd = {"kill"};
  if (all) cmd.push_back("--all");
  cmd.push_back(id);
  cmd.push_back(signal);
  return Call(std::move(cmd)).status();
}

Status Runsc::Pause(const std::string& id) const { return Call({"pause", id}).status(); }
Status Runsc::Resume(const std::string& id) const { return Call({"resume", id}).status(); }

Status Runsc::Delete(const std::string& id) const {
  Status st = Call({"delete", "--force", id}).status();
  if (st.code() == Code::kNotFound) return Status::Ok();
  return st;
}

Result<std::vector<std::string>> KnownPlatforms(const std::string& binary) {
  HANGAR_ASSIGN_OR_RETURN(CommandOutput out, RunCommand({binary, "flags"}));
  // `runsc flags` prints to stderr (flag package usage); look at both.
  const std::string text = out.out + out.err;
  size_t at = text.find("-platform string");
  if (at == std::string::npos) {
    return Status::FailedPrecondition(fmt::format("{} flags: no -platform flag listed", binary));
  }
  size_t end = text.find("\n  -", at + 1);
  const std::string desc = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
  std::vector<std::string> known;
  for (const char* p : {"systrap", "ptrace", "kvm"}) {
    if (desc.find(p) != std::string::npos) known.emplace_back(p);
  }
  return known;
}

}  // namespace hangar::gvisor::internal
