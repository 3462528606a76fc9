// envd: the daemon inside every Hangar sandbox (static binary; usually PID 1 of the sandbox).
//
//   envd --listen-fd 3                      serve on an inherited listening socket (the node's)
//   envd --listen unix:/run/envd.sock       or a Unix socket path
//   envd --listen tcp:127.0.0.1:49983       or TCP (tests, microVM port forwards)
//        [--relay-from /run/hangar/envd.sock]  also accept there, relayed to the unix --listen
//                                              socket (gVisor's host-backed sockets; relay.h)
//        [--root /] [--default-user user] [--access-token-file F]  (or $ENVD_ACCESS_TOKEN)
//        [--threads 1] [--blocking-threads 4]    HTTP I/O threads; threads for blocking calls
//                                                (at most; started on demand)
//        [--env-file F]   the sandbox's environment: NUL-separated NAME=VALUE (microVM guests)
//   envd [--grow-fs /] [--set-hostname NAME] [--set-clock-ns N] [--seed-rng HEX]
//        [--reload-token]                    one-shot guest set-up (see guest.h), then exit
//   envd --version
//
// Start-up order matters: signals are blocked before any thread exists (the reaper's signalfd
// and the SIGTERM wait depend on it), the access token is taken out of the environment before
// anything could pass it on, and "listening <endpoint>" is printed on stdout once requests are
// served. On SIGTERM/SIGINT envd forwards the signal to every process it started (and, as PID 1,
// to every process of the sandbox), gives them kShutdownGrace, then stops serving and exits 0.
// On SIGHUP envd re-reads --access-token-file (the microVM tier re-keys a VM restored from a
// snapshot this way; there is no HTTP route to change the token): requests already admitted
// run on, later ones need the new token; an unreadable or empty file keeps the old token and
// logs why.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "guest.h"
#include "hangar/api/server.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/envd/version.h"
#include "relay.h"
#include "service.h"

extern char** environ;

namespace hangar::envd {
namespace {

constexpr std::chrono::milliseconds kShutdownGrace{3000};
constexpr const char* kTokenEnv = "ENVD_ACCESS_TOKEN";

// Blocks the signals envd handles synchronously, in this (the only) thread, so every thread
// created later inherits the mask. A no-op handler is installed as well: as PID 1 of a pid
// namespace, envd receives from outside only signals it has a handler for.
void SetUpSignals() {
  struct sigaction noop {};
  noop.sa_handler = [](int) {};
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) ::sigaction(s, &noop, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

// Commands get stdio from envd's pipes; still, 0-2 must be open so no pipe lands there.
void EnsureStdio() {
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) ::open("/dev/null", O_RDWR);
  }
}

struct Flags {
  int listen_fd = -1;
  std::string listen;
  std::string root = "/";
  std::string default_user = "user";
  std::string token_file;
  std::string log_level = "info";
  std::string log_format = "text";
  bool access_log = false;
  // One event loop: envd serves one agent's sandbox; the work that takes time (spawning,
  // file transfers) runs on the blocking threads. Every thread is paid for at start (a cold
  // sandbox waits for /health: ~0.2-0.3 ms of clone and first-touched stack each here).
  int threads = 1;
  // Blocking calls (Connect RPCs, which return once their process is spawned; file transfers,
  // which hold one for their duration): at most this many, started on demand by the server
  // (api::ServerOptions::blocking_threads) — an idle envd has none.
  int blocking_threads = 4;
  std::string relay_from;
  bool version = false;
  std::string env_file;
  std::string grow_fs;
  std::string set_hostname;
  int64_t set_clock_ns = 0;
  std::string seed_rng;
  bool reload_token = false;
};

// The one-shot guest actions, in a fixed order; true if any was asked for.
Result<bool> GuestActions(const Flags& f) {
  if (!f.grow_fs.empty()) HANGAR_TRY(internal::GrowExt4ToDevice(f.grow_fs));
  if (!f.set_hostname.empty()) HANGAR_TRY(internal::SetHostname(f.set_hostname));
  if (f.set_clock_ns != 0) HANGAR_TRY(internal::SetClock(f.set_clock_ns));
  if (!f.seed_rng.empty()) HANGAR_TRY(internal::SeedKernelRng(f.seed_rng));
  if (f.reload_token) HANGAR_TRY(internal::SignalInitToReloadToken());
  return !f.grow_fs.empty() || !f.set_hostname.empty() || f.set_clock_ns != 0 ||
         !f.seed_rng.empty() || f.reload_token;
}

// Adds the env file's variables to envd's own environment (SandboxEnv reads it).
Status LoadEnvFile(const std::string& path) {
  HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  HANGAR_ASSIGN_OR_RETURN(auto env, internal::ParseEnvFile(text));
  for (const auto& [k, v] : env) {
    if (::setenv(k.c_str(), v.c_str(), 1) != 0)
      return Status::FromErrno(errno, "setenv(" + k + ")");
  }
  return Status::Ok();
}

Result<api::ServerOptions> ListenOptions(const Flags& f) {
  api::ServerOptions o;
  o.server_name = "envd";
  o.threads = f.threads;
  o.blocking_threads = f.blocking_threads;
  o.access_log = f.access_log;
  // Uploads of large files over a slow link must not hit the slowloris bound; envd is only
  // reachable through the node, which is trusted.
  o.read_timeout = std::chrono::minutes(10);
  o.write_timeout = std::chrono::minutes(2);
  o.idle_timeout = std::chrono::minutes(5);
  if (f.listen_fd >= 0) {
    if (!f.listen.empty()) return Status::InvalidArgument("use --listen-fd or --listen, not both");
    o.listen_fd = f.listen_fd;
    return o;
  }
  std::string_view l = f.listen;
  if (l.rfind("unix:", 0) == 0) {
    o.unix_path = std::string(l.substr(5));
    if (o.unix_path.empty()) return Status::InvalidArgument("--listen unix: needs a path");
    return o;
  }
  if (l.rfind("tcp:", 0) == 0) l.remove_prefix(4);
  size_t colon = l.rfind(':');
  if (l.empty() || colon == std::string_view::npos) {
    return Status::InvalidArgument("--listen must be unix:/path or tcp:host:port, got '" +
                                   f.listen + "'");
  }
  o.address = std::string(l.substr(0, colon));
  int port = std::atoi(std::string(l.substr(colon + 1)).c_str());
  if (port < 0 || port > 65535) return Status::InvalidArgument("bad port in --listen");
  o.port = static_cast<uint16_t>(port);
  return o;
}

// The token in `path`, trailing newlines removed; empty is an error.
Result<std::string> ReadTokenFile(const std::string& path) {
  HANGAR_ASSIGN_OR_RETURN(std::string token, ReadFile(path));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.empty()) return Status::InvalidArgument("access token file " + path + " is empty");
  return token;
}

Result<std::string> AccessToken(const Flags& f) {
  std::string token;
  if (const char* env = std::getenv(kTokenEnv)) token = env;
  // Out of the environment before any command could inherit it.
  ::unsetenv(kTokenEnv);
  if (!f.token_file.empty()) {
    HANGAR_ASSIGN_OR_RETURN(token, ReadTokenFile(f.token_file));
  }
  return token;
}

// SIGHUP: the token file again. Anything wrong keeps the token in force (never an open envd).
void ReloadAccessToken(const Flags& f, internal::Service& service) {
  if (f.token_file.empty()) {
    log::Warn("SIGHUP ignored: envd has no --access-token-file to reload");
    return;
  }
  auto token = ReadTokenFile(f.token_file);
  if (!token.ok()) {
    log::Warn("access token not reloaded; the old one stays in force",
              {{"file", f.token_file}, {"error", token.status().ToString()}});
    return;
  }
  service.SetAccessToken(std::move(*token));
  log::Info("access token reloaded", {{"file", f.token_file}});
}

// The sandbox's environment for commands: envd's own, minus envd's settings.
std::map<std::string, std::string> SandboxEnv() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv = *e;
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    std::string name(kv.substr(0, eq));
    if (name.rfind("ENVD_", 0) == 0) continue;
    env[name] = std::string(kv.substr(eq + 1));
  }
  return env;
}

// Until SIGTERM or SIGINT; every SIGHUP meanwhile reloads the access token.
int WaitForStopSignal(const Flags& f, internal::Service& service) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  for (;;) {
    siginfo_t info;
    int sig = ::sigwaitinfo(&set, &info);
    if (sig == SIGHUP) {
      ReloadAccessToken(f, service);
    } else if (sig > 0) {
      return sig;
    }
  }
}

int Run(int argc, char** argv) {
  SetUpSignals();
  EnsureStdio();
  Flags f;
  CLI::App app{"envd: the in-sandbox daemon (E2B envd protocol " + std::string(kEnvdVersion) + ")"};
  app.add_option("--listen-fd", f.listen_fd, "serve on this inherited listening socket");
  app.add_option("--listen", f.listen, "unix:/path or tcp:host:port");
  app.add_option("--root", f.root, "directory file operations are confined to");
  app.add_option("--default-user", f.default_user, "user of calls that name none");
  app.add_option("--access-token-file", f.token_file,
                 "file holding the access token (else $ENVD_ACCESS_TOKEN; none: open)");
  app.add_option("--log-level", f.log_level, "debug|info|warn|error");
  app.add_option("--log-format", f.log_format, "text|json");
  app.add_flag("--access-log", f.access_log, "log every request");
  app.add_option("--threads", f.threads, "HTTP I/O threads");
  app.add_option("--blocking-threads", f.blocking_threads,
                 "threads for blocking calls (RPCs, file transfers)")
      ->check(CLI::Range(1, 256));
  app.add_option("--relay-from", f.relay_from,
                 "also accept on this Unix socket path, relayed to the unix: --listen socket");
  app.add_flag("--version", f.version, "print the envd protocol version and exit");
  app.add_option("--env-file", f.env_file, "NUL-separated NAME=VALUE: the sandbox's environment");
  app.add_option("--grow-fs", f.grow_fs, "grow the ext4 mounted here to its device, then exit");
  app.add_option("--set-hostname", f.set_hostname, "set the hostname, then exit");
  app.add_option("--set-clock-ns", f.set_clock_ns, "set CLOCK_REALTIME (ns since 1970), then exit");
  app.add_option("--seed-rng", f.seed_rng,
                 "hex bytes: mix into the kernel's RNG and reseed it at once, then exit");
  app.add_flag("--reload-token", f.reload_token,
               "make the serving envd (PID 1) re-read its access token file, then exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (f.version) {
    std::cout << kEnvdVersion << std::endl;
    return 0;
  }
  auto level = log::ParseLevel(f.log_level);
  auto format = log::ParseFormat(f.log_format);
  if (!level.ok() || !format.ok()) {
    std::cerr << "envd: " << (level.ok() ? format.status() : level.status()).ToString() << "\n";
    return 2;
  }
  log::Init(*format, *level);
  if (f.listen_fd < 0 && f.listen.empty()) {
    auto acted = GuestActions(f);
    if (!acted.ok()) {
      std::cerr << "envd: " << acted.status().ToString() << "\n";
      return 1;
    }
    if (*acted) return 0;
  }
  if (!f.env_file.empty()) {
    if (Status s = LoadEnvFile(f.env_file); !s.ok()) {
      std::cerr << "envd: " << s.ToString() << "\n";
      return 2;
    }
  }
  if (f.listen_fd < 0 && f.listen.empty()) {
    std::cerr << "envd: one of --listen-fd or --listen is required\n";
    return 2;
  }
  auto server_options = ListenOptions(f);
  auto token = AccessToken(f);
  if (!server_options.ok() || !token.ok()) {
    std::cerr << "envd: "
              << (server_options.ok() ? token.status() : server_options.status()).ToString()
              << "\n";
    return 2;
  }
  bool pid1 = ::getpid() == 1;
  // Outside a pid namespace envd still adopts its orphans, so nothing it starts turns zombie.
  if (!pid1) ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (::chdir("/") != 0) {
    // Not fatal: commands get their own working directory.
  }

  internal::ServiceOptions so;
  so.root = f.root;
  so.default_user = f.default_user;
  so.access_token = *token;
  so.env = SandboxEnv();
  auto service = internal::Service::Create(so);
  if (!service.ok()) {
    log::Error("envd failed to start", {{"error", service.status().ToString()}});
    return 1;
  }
  api::Router router;
  if (Status s = (*service)->Register(router); !s.ok()) {
    log::Error("envd failed to register routes", {{"error", s.ToString()}});
    return 1;
  }
  api::Server server(*server_options, std::move(router));
  if (Status s = server.Start(); !s.ok()) {
    log::Error("envd failed to listen", {{"error", s.ToString()}});
    return 1;
  }
  std::unique_ptr<internal::HostSocketRelay> relay;
  if (!f.relay_from.empty()) {
    Result<std::unique_ptr<internal::HostSocketRelay>> r =
        Status::InvalidArgument("--relay-from needs --listen unix:PATH");
    if (f.listen.rfind("unix:", 0) == 0) {
      r = internal::HostSocketRelay::Start(f.relay_from, f.listen.substr(5));
    }
    if (!r.ok()) {
      log::Error("envd failed to start its relay", {{"error", r.status().ToString()}});
      return 1;
    }
    relay = std::move(*r);
  }
  log::Info("envd serving", {{"version", kEnvdVersion},
                             {"endpoint", server.endpoint()},
                             {"root", f.root},
                             {"pid1", pid1},
                             {"access_token", !token->empty()}});
  std::printf("listening %s\n", server.endpoint().c_str());
  std::fflush(stdout);

  int sig = WaitForStopSignal(f, **service);
  log::Info("envd stopping", {{"signal", sig}});
  if (pid1) ::kill(-1, SIGTERM);  // everything in the sandbox, orphans included
  if (!(*service)->processes().SignalAllAndWait(SIGTERM, kShutdownGrace)) {
    (*service)->processes().SignalAllAndWait(SIGKILL, std::chrono::milliseconds(500));
  }
  relay.reset();
  (void)server.Shutdown(std::chrono::milliseconds(500));
  service->reset();
  return 0;
}

}  // namespace
}  // namespace hangar::envd

int main(int argc, char** argv) { return hangar::envd::Run(argc, argv); }
