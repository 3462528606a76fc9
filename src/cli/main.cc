// hangar: the command-line client of hangard.
//
//   hangar [--server URL] [--json] status
//   hangar run|ls|get|exec|logs|kill|nodes|pools|route ...                  (fleet API, /v1)
//   hangar node info|ls|create|get|exec|put|cat|pause|resume|stop|rm ...   (node API)
//
// The server comes from --server, else $HANGAR_SERVER, else http://127.0.0.1:7070.
// Exit codes: 0 success, 1 the call failed (daemon unreachable or answered an error),
// 2 bad usage.
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "hangar/api/query.h"
#include "hangar/base/fd.h"

#include "commands.h"

int main(int argc, char** argv) {
  using namespace hangar::cli;
  GlobalOptions g;
  if (const char* env = std::getenv("HANGAR_SERVER"); env && *env) g.server = env;

  CLI::App app{"hangar — command-line client of the Hangar daemon", "hangar"};
  app.set_version_flag("--version", HANGAR_VERSION);
  app.require_subcommand(1);
  app.add_option("--server", g.server, "hangard URL [env HANGAR_SERVER]")->capture_default_str();
  app.add_flag("--json", g.json, "print machine-readable JSON instead of text");
  app.add_option("--timeout-ms", g.timeout_ms, "per-request timeout")->capture_default_str();

  auto* status = app.add_subcommand("status", "check that hangard is up and show what it is");
  int rc = 0;
  status->callback([&] { rc = RunStatus(g, std::cout, std::cerr); });

  // --- the fleet: run, ls, get, kill, logs, exec, nodes, pools, route ---
  FleetOptions fleet;
  AddFleetCommands(app, g, fleet, rc);

  // --- hangar node ---
  NodeOptions n;
  auto* node =
      app.add_subcommand("node", "drive one node agent directly (node API, no control plane)");
  node->require_subcommand(1);
  node->add_option("--node-token", n.token,
                   "node API token [env HANGAR_NODE_TOKEN; default: $HANGAR_DATA_DIR/node.token]");
  auto sb_path = [](const std::string& id, std::string_view rest = "") {
    return fmt::format("/node/v1/sandboxes/{}{}", hangar::api::PercentEncode(id), rest);
  };

  node->add_subcommand("info", "drivers, cgroup mode, capacity")->callback([&] {
    rc = RunNodeJson(g, n, "GET", "/node/v1/info", nullptr, std::cout, std::cerr, nullptr);
  });
  node->add_subcommand("ls", "list the node's sandboxes")->callback([&] {
    rc = RunNodeJson(g, n, "GET", "/node/v1/sandboxes", nullptr, std::cout, std::cerr,
                     [](const nlohmann::json& j) { PrintSandboxTable(j["sandboxes"], std::cout); });
  });
  node->add_subcommand("templates", "list the node's templates")->callback([&] {
    rc = RunNodeJson(g, n, "GET", "/node/v1/templates", nullptr, std::cout, std::cerr,
                     [](const nlohmann::json& j) {
                       for (const auto& t : j["templates"]) {
                         std::cout << fmt::format("{:<24} {:>8} MB  {}\n", t.value("name", ""),
                                                  t.value("size_bytes", uint64_t{0}) >> 20,
                                                  t.value("source", ""));
                       }
                     });
  });

  struct CreateArgs {
    std::string id, tmpl = "base", driver = "ns";
    int64_t cpu = 1000, memory = 512, disk = 1024, riops = 0, wiops = 0, rbps = 0, wbps = 0;
    int64_t timeout = 0;
    std::vector<std::string> env;
  } c;
  auto* create = node->add_subcommand("create", "create a sandbox; prints its id");
  create->add_option("--id", c.id, "sandbox id ([a-z0-9]{1,40}); default: generated");
  create->add_option("--template", c.tmpl, "template name")->capture_default_str();
  create->add_option("--driver", c.driver, "isolation driver")->capture_default_str();
  create->add_option("--cpu", c.cpu, "CPU in millicores")->capture_default_str();
  create->add_option("--memory", c.memory, "memory limit in MiB")->capture_default_str();
  create->add_option("--disk", c.disk, "disk size in MiB")->capture_default_str();
  create->add_option("--read-iops", c.riops, "read IOPS limit (0 = none)");
  create->add_option("--write-iops", c.wiops, "write IOPS limit (0 = none)");
  create->add_option("--read-bps", c.rbps, "read bytes/s limit (0 = none)");
  create->add_option("--write-bps", c.wbps, "write bytes/s limit (0 = none)");
  create->add_option("--timeout", c.timeout, "seconds until it is destroyed (0 = never)");
  create->add_option("--env", c.env, "KEY=VALUE, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  create->callback([&] {
    nlohmann::json body = {{"template", c.tmpl},
                           {"driver", c.driver},
                           {"resources",
                            {{"cpu_millis", c.cpu},
                             {"memory_mb", c.memory},
                             {"disk_mb", c.disk},
                             {"read_iops", c.riops},
                             {"write_iops", c.wiops},
                             {"read_bps", c.rbps},
                             {"write_bps", c.wbps}}},
                           {"timeout_s", c.timeout}};
    if (!c.id.empty()) body["id"] = c.id;
    for (const auto& kv : c.env) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "hangar: error: --env '" << kv << "' must be KEY=VALUE\n";
        rc = 2;
        return;
      }
      body["env"][kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    GlobalOptions slow = g;
    slow.timeout_ms = std::max(g.timeout_ms, 120'000);  // a cold disk or template can take a while
    rc = RunNodeJson(slow, n, "POST", "/node/v1/sandboxes", body, std::cout, std::cerr,
                     [](const nlohmann::json& j) { std::cout << j.value("id", "") << "\n"; });
  });

  std::string id;
  auto* get = node->add_subcommand("get", "show one sandbox with its usage");
  get->add_option("id", id, "sandbox id")->required();
  get->callback([&] {
    rc = RunNodeJson(g, n, "GET", sb_path(id), nullptr, std::cout, std::cerr, nullptr);
    if (rc == 0)
      rc = RunNodeJson(g, n, "GET", sb_path(id, "/usage"), nullptr, std::cout, std::cerr, nullptr);
  });
  for (const char* verb : {"pause", "resume", "stop"}) {
    auto* sub = node->add_subcommand(verb, fmt::format("{} a sandbox", verb));
    sub->add_option("id", id, "sandbox id")->required();
    sub->callback([&, v = std::string(verb)] {
      rc = RunNodeJson(g, n, "POST", sb_path(id, "/" + v), nlohmann::json::object(), std::cout,
                       std::cerr, [](const nlohmann::json& j) {
                         std::cout << j.value("id", "") << " " << j.value("state", "") << "\n";
                       });
    });
  }
  auto* rm = node->add_subcommand("rm", "destroy a sandbox and everything it holds");
  rm->add_option("id", id, "sandbox id")->required();
  rm->callback([&] {
    rc = RunNodeJson(g, n, "DELETE", sb_path(id), nullptr, std::cout, std::cerr,
                     [](const nlohmann::json&) {});
  });

  struct ExecArgs {
    std::string user, cwd;
    int64_t timeout_ms = 0;
    std::vector<std::string> env, argv;
  } ex;
  auto* exec = node->add_subcommand("exec", "run a command in a sandbox; exits with its code");
  exec->add_option("id", id, "sandbox id")->required();
  exec->add_option("--user", ex.user, "user inside (default: the template's default user)");
  exec->add_option("--cwd", ex.cwd, "working directory (default: the user's home)");
  exec->add_option("--timeout-ms", ex.timeout_ms, "kill the command after this long");
  exec->add_option("--env", ex.env, "KEY=VALUE, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  exec->add_option("command", ex.argv, "command and arguments (after --)");
  exec->callback([&] {
    ex.argv.insert(ex.argv.end(), g.trailing.begin(), g.trailing.end());
    if (ex.argv.empty()) {
      std::cerr << "hangar: error: exec needs a command (hangar node exec ID -- cmd args...)\n";
      rc = 2;
      return;
    }
    nlohmann::json body = {{"cmd", ex.argv[0]},
                           {"args", std::vector<std::string>(ex.argv.begin() + 1, ex.argv.end())},
                           {"user", ex.user},
                           {"cwd", ex.cwd},
                           {"timeout_ms", ex.timeout_ms}};
    for (const auto& kv : ex.env) {
      auto eq = kv.find('=');
      if (eq != std::string::npos && eq > 0) body["env"][kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    rc = RunNodeExec(g, n, id, body, std::cerr);
  });

  std::string file_path;
  auto* cat = node->add_subcommand("cat", "print a file of a sandbox");
  cat->add_option("id", id, "sandbox id")->required();
  cat->add_option("path", file_path, "path inside the sandbox")->required();
  cat->callback([&] { rc = RunNodeGetFile(g, n, id, file_path, std::cerr); });
  auto* put = node->add_subcommand("put", "write stdin to a file of a sandbox");
  put->add_option("id", id, "sandbox id")->required();
  put->add_option("path", file_path, "path inside the sandbox")->required();
  put->callback([&] {
    std::string data((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    rc = RunNodePutFile(g, n, id, file_path, std::move(data), std::cout, std::cerr);
  });

  // A command to run goes after `--`; CLI11 (2.1) would otherwise read its flags as ours once a
  // repeatable option came first. Split it off before parsing.
  int parsed = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--") {
      parsed = i;
      g.trailing.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  try {
    app.parse(parsed, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "hangar: error: " << e.what() << " (see hangar --help)\n";
    return 2;
  }
  return rc;
}
