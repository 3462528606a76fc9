// The fleet commands of `hangar`, over the control plane's /v1 API:
//   run, ls, get, exec, logs, kill, nodes, pools, route explain|test.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "hangar/api/client.h"
#include "hangar/api/query.h"
#include "hangar/base/fd.h"
#include "hangar/control/policy.h"

namespace hangar::cli {
namespace {

using nlohmann::json;

std::string SbPath(const std::string& id, std::string_view rest = "") {
  return fmt::format("/v1/sandboxes/{}{}", api::PercentEncode(id), rest);
}

Status ParsePairs(const std::vector<std::string>& items, std::string_view flag, json& into) {
  for (const auto& kv : items) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Status::InvalidArgument(fmt::format("{} '{}' must be KEY=VALUE", flag, kv));
    }
    into[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return Status::Ok();
}

std::string Age(const std::string& rfc3339) {
  // Shown as given when it cannot be parsed; the server writes "YYYY-MM-DDTHH:MM:SS.mmmZ".
  std::tm tm{};
  if (rfc3339.size() < 19 || !strptime(rfc3339.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return "";
  time_t then = timegm(&tm);
  auto d = std::chrono::seconds(std::max<time_t>(0, std::time(nullptr) - then));
  return HumanDuration(std::chrono::duration_cast<std::chrono::milliseconds>(d));
}

void PrintTaskTable(const json& list, std::ostream& out) {
  out << fmt::format("{:<22} {:<10} {:<9} {:<24} {:<10} {:>8}  {}\n", "ID", "STATE", "TIER", "NODE",
                     "TEMPLATE", "AGE", "REASON");
  for (const auto& t : list) {
    std::string node = t.value("node", json()).is_string() ? t["node"].get<std::string>() : "-";
    out << fmt::format("{:<22} {:<10} {:<9} {:<24} {:<10} {:>8}  {}\n", t.value("id", ""),
                       t.value("state", ""), t.value("tier", ""), node, t.value("template", ""),
                       Age(t.value("created_at", "")), t.value("reason", ""));
  }
}

void PrintTask(const json& t, std::ostream& out) {
  out << fmt::format("{}  {} on tier {}{}\n", t.value("id", ""), t.value("state", ""),
                     t.value("tier", ""),
                     t["node"].is_string() ? " (node " + t["node"].get<std::string>() + ")" : "");
  if (!t.value("reason", "").empty()) out << "  reason: " << t.value("reason", "") << "\n";
  if (t["exit_code"].is_number()) out << "  exit code: " << t["exit_code"].get<int>() << "\n";
}

}  // namespace

Result<std::string> ApiKey(const FleetOptions& f) {
  return Credential(f.api_key, "HANGAR_API_KEY", "api.key", "API key", "--api-key");
}

Result<api::HttpClient> FleetClient(const GlobalOptions& g, const FleetOptions& f,
                                    std::chrono::milliseconds timeout) {
  HANGAR_ASSIGN_OR_RETURN(std::string key, ApiKey(f));
  return BearerClient(g.server, key, timeout);
}

int RunFleetJson(const GlobalOptions& g, const FleetOptions& f, std::string_view method,
                 const std::string& path, const json& body, std::ostream& out, std::ostream& err,
                 const std::function<void(const json&)>& human) {
  auto client = FleetClient(g, f, std::chrono::milliseconds(g.timeout_ms));
  if (!client.ok()) return Report(err, client.status());
  auto r = client->CallJson(method, path, body);
  if (!r.ok()) return Report(err, r.status());
  if (g.json || !human) {
    if (!r->is_null()) out << r->dump(2) << "\n";
  } else {
    human(*r);
  }
  return 0;
}

// Follows a task's log until it ends; returns the command's exit code (1 if it did not exit).
int FollowLogs(api::HttpClient& client, const std::string& id, std::ostream& err) {
  int exit_code = 1;
  bool exited = false;
  std::string pending;
  Status st = client.Stream("GET", SbPath(id, "/logs?follow=1"), "", [&](std::string_view data) {
    pending.append(data);
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      auto ev = json::parse(pending.substr(0, nl), nullptr, false);
      pending.erase(0, nl + 1);
      if (ev.is_discarded()) continue;
      std::string kind = ev.value("event", "");
      if (kind == "exit") exited = true;
      if (kind == "end") {
        if (ev["exit_code"].is_number()) {
          exit_code = ev["exit_code"].get<int>();
          exited = true;
        }
        if (!exited) {
          err << fmt::format("hangar: sandbox {} {}: {}\n", id, ev.value("state", ""),
                             ev.value("reason", ""));
        }
        continue;
      }
      HANGAR_TRY(PrintEvent(ev, exit_code, err));
    }
    return Status::Ok();
  });
  if (!st.ok()) return Report(err, st);
  return exit_code;
}

int RunRun(const GlobalOptions& g, const FleetOptions& f, const RunArgs& a, std::ostream& out,
           std::ostream& err) {
  json body = {{"template", a.tmpl}, {"timeout_s", a.timeout_s}};
  if (!a.argv.empty()) body["command"] = a.argv;
  json res = json::object();
  if (a.cpu > 0) res["cpu"] = a.cpu;
  if (a.memory_mb > 0) res["memory_mb"] = a.memory_mb;
  if (a.disk_mb > 0) res["disk_mb"] = a.disk_mb;
  if (a.iops > 0) res["iops"] = a.iops;
  if (!res.empty()) body["resources"] = res;
  if (!a.tier.empty()) body["tier"] = a.tier;
  if (!a.paths.empty()) body["paths"] = a.paths;
  if (!a.secrets.empty()) body["secrets"] = a.secrets;
  if (!a.egress.empty()) body["egress"] = a.egress;
  if (!a.repo.empty()) body["repo"] = a.repo;
  if (a.no_wait) body["wait_for_capacity"] = false;
  json labels = json::object(), env = json::object();
  if (Status s = ParsePairs(a.labels, "--label", labels); !s.ok()) return Report(err, s) + 1;
  if (Status s = ParsePairs(a.env, "--env", env); !s.ok()) return Report(err, s) + 1;
  if (!labels.empty()) body["labels"] = labels;
  if (!env.empty()) body["env"] = env;

  // The create waits while the sandbox starts; the stream after it lasts as long as the command.
  auto client = FleetClient(g, f, std::chrono::milliseconds(std::max(g.timeout_ms, 120'000)));
  if (!client.ok()) return Report(err, client.status());
  auto created = client->CallJson("POST", "/v1/sandboxes", body);
  if (!created.ok()) return Report(err, created.status());
  std::string id = created->value("id", "");
  if (a.detach || a.argv.empty()) {
    if (g.json) {
      out << created->dump(2) << "\n";
    } else {
      out << id << "\n";
      if (created->value("state", "") == "pending") {
        err << "hangar: pending: " << created->value("reason", "") << "\n";
      }
    }
    return 0;
  }
  // Pending: say why while waiting, on one refreshed line when stderr is a terminal.
  bool tty = ::isatty(STDERR_FILENO);
  const char* spin = "|/-\\";
  int frame = 0;
  std::string state = created->value("state", "");
  std::string last_reason;
  while (state == "pending" || state == "starting") {
    std::string reason = (*created).value("reason", "");
    if (tty) {
      err << fmt::format("\r{} {} {}: {}\x1b[K", spin[frame++ % 4], id, state, reason)
          << std::flush;
    } else if (reason != last_reason) {
      err << fmt::format("hangar: {} {}: {}\n", id, state, reason);
    }
    last_reason = reason;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    created = client->CallJson("GET", SbPath(id));
    if (!created.ok()) return Report(err, created.status());
    state = created->value("state", "");
  }
  if (tty) err << "\r\x1b[K" << std::flush;
  return FollowLogs(*client, id, err);
}

int RunLogs(const GlobalOptions& g, const FleetOptions& f, const std::string& id, bool follow,
            std::ostream& err) {
  auto client = FleetClient(g, f, std::chrono::milliseconds(g.timeout_ms));
  if (!client.ok()) return Report(err, client.status());
  if (follow) return FollowLogs(*client, id, err);
  auto r = client->Get(SbPath(id, "/logs"));
  if (!r.ok()) return Report(err, r.status());
  if (!r->ok()) return Report(err, r->ToStatus());
  int code = 0;
  size_t pos = 0;
  while (pos < r->body.size()) {
    size_t nl = r->body.find('\n', pos);
    if (nl == std::string::npos) nl = r->body.size();
    auto ev = json::parse(r->body.substr(pos, nl - pos), nullptr, false);
    pos = nl + 1;
    if (!ev.is_discarded()) (void)PrintEvent(ev, code, err);
  }
  return 0;
}

int RunRouteTest(const std::string& policy_path, const std::string& tasks_path, bool as_json,
                 std::ostream& out, std::ostream& err) {
  auto policy = control::Policy::LoadFile(policy_path);
  if (!policy.ok()) return Report(err, policy.status());
  std::ifstream in(tasks_path);
  if (!in) return Report(err, Status::NotFound(fmt::format("cannot open {}", tasks_path)));
  auto report = control::RouteTest(*policy, in);
  if (!report.ok()) return Report(err, report.status());
  if (as_json) {
    out << control::RouteTestJson(*report).dump(2) << "\n";
  } else {
    out << control::FormatRouteTest(*report);
  }
  return 0;
}

void AddFleetCommands(CLI::App& app, GlobalOptions& g, FleetOptions& f, int& rc) {
  app.add_option("--api-key", f.api_key,
                 "API key [env HANGAR_API_KEY; default: $HANGAR_DATA_DIR/api.key]");

  static RunArgs r;
  auto* run = app.add_subcommand(
      "run", "run a command in a new sandbox, stream its output, exit with its code");
  run->add_option("--template", r.tmpl, "template")->capture_default_str();
  run->add_option("--tier", r.tier, "ask for at least this tier (shared|hardened|isolated)");
  run->add_option("--label", r.labels, "KEY=VALUE, repeatable (routing input)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_option("--path", r.paths, "repository path the task touches, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_option("--secret", r.secrets, "secret the task needs, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_option("--egress", r.egress, "egress destination the task needs, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_option("--repo", r.repo, "repository the task works on");
  run->add_option("--cpu", r.cpu, "CPU cores (e.g. 0.5)");
  run->add_option("--memory", r.memory_mb, "memory in MiB");
  run->add_option("--disk", r.disk_mb, "disk in MiB");
  run->add_option("--iops", r.iops, "disk IOPS budget");
  run->add_option("--timeout", r.timeout_s, "seconds the sandbox may live")->capture_default_str();
  run->add_option("--env", r.env, "KEY=VALUE, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_flag("--no-wait", r.no_wait, "fail with 503 instead of queueing when no capacity");
  run->add_flag("-d,--detach", r.detach, "print the id and return without following");
  // After `--` (split off before parsing, see main.cc) the command's own flags never reach our
  // parser: `hangar run --label a=b -- bash -lc 'make test'`.
  run->add_option("command", r.argv, "command and arguments (after --); none: an idle sandbox");
  run->callback([&] {
    r.argv.insert(r.argv.end(), g.trailing.begin(), g.trailing.end());
    rc = RunRun(g, f, r, std::cout, std::cerr);
  });

  static std::string state, id;
  static std::vector<std::string> label_filter;
  auto* ls = app.add_subcommand("ls", "list your sandboxes");
  ls->add_option("--state", state, "comma-separated states, e.g. running,pending");
  ls->add_option("--label", label_filter, "KEY=VALUE filter, repeatable")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  ls->callback([&] {
    std::string path = "/v1/sandboxes?limit=1000";
    if (!state.empty()) path += "&state=" + api::PercentEncode(state);
    for (const auto& l : label_filter) path += "&label=" + api::PercentEncode(l);
    rc = RunFleetJson(g, f, "GET", path, nullptr, std::cout, std::cerr,
                      [](const json& j) { PrintTaskTable(j["sandboxes"], std::cout); });
  });
  auto* get = app.add_subcommand("get", "show one sandbox");
  get->add_option("id", id, "sandbox id")->required();
  get->callback([&] {
    rc = RunFleetJson(g, f, "GET", SbPath(id), nullptr, std::cout, std::cerr,
                      [](const json& j) { PrintTask(j, std::cout); });
  });
  auto* kill = app.add_subcommand("kill", "stop a sandbox and release what it holds");
  kill->add_option("id", id, "sandbox id")->required();
  kill->callback([&] {
    rc = RunFleetJson(g, f, "DELETE", SbPath(id), nullptr, std::cout, std::cerr,
                      [](const json& j) { PrintTask(j, std::cout); });
  });
  static bool follow = false;
  auto* logs = app.add_subcommand("logs", "print a sandbox's command output");
  logs->add_option("id", id, "sandbox id")->required();
  logs->add_flag("-f,--follow", follow, "keep printing until the sandbox ends");
  logs->callback([&] { rc = RunLogs(g, f, id, follow, std::cerr); });

  static std::vector<std::string> exec_argv;
  static std::string exec_user, exec_cwd;
  auto* exec = app.add_subcommand("exec", "run a command in a running sandbox");
  exec->add_option("id", id, "sandbox id")->required();
  exec->add_option("--user", exec_user, "user inside");
  exec->add_option("--cwd", exec_cwd, "working directory");
  exec->add_option("command", exec_argv, "command and arguments (after --)");
  exec->callback([&] {
    exec_argv.insert(exec_argv.end(), g.trailing.begin(), g.trailing.end());
    if (exec_argv.empty()) {
      std::cerr << "hangar: error: exec needs a command (hangar exec ID -- cmd args...)\n";
      rc = 2;
      return;
    }
    auto client = FleetClient(g, f, std::chrono::milliseconds(g.timeout_ms));
    if (!client.ok()) {
      rc = Report(std::cerr, client.status());
      return;
    }
    json body = {{"cmd", exec_argv[0]},
                 {"args", std::vector<std::string>(exec_argv.begin() + 1, exec_argv.end())}};
    if (!exec_user.empty()) body["user"] = exec_user;
    if (!exec_cwd.empty()) body["cwd"] = exec_cwd;
    rc = StreamExec(*client, SbPath(id, "/exec"), body, std::cerr);
  });

  app.add_subcommand("nodes", "list the fleet's nodes")->callback([&] {
    rc = RunFleetJson(g, f, "GET", "/v1/nodes", nullptr, std::cout, std::cerr, [](const json& j) {
      std::cout << fmt::format("{:<24} {:<9} {:<8} {:>7} {:>9} {:>9} {:>7}  {}\n", "ID", "POOL",
                               "STATUS", "CPU_M", "MEM_MB", "DISK_MB", "IOPS", "URL");
      for (const auto& n : j["nodes"]) {
        const auto& c = n["capacity"];
        std::cout << fmt::format("{:<24} {:<9} {:<8} {:>7} {:>9} {:>9} {:>7}  {}\n",
                                 n.value("id", ""), n.value("pool", ""), n.value("status", ""),
                                 c.value("cpu_millis", 0), c.value("memory_mb", 0),
                                 c.value("disk_mb", 0), c.value("iops", 0), n.value("url", ""));
      }
    });
  });
  app.add_subcommand("pools", "list the pools: tier, nodes, capacity, allocation, queue")
      ->callback([&] {
        rc = RunFleetJson(
            g, f, "GET", "/v1/pools", nullptr, std::cout, std::cerr, [](const json& j) {
              std::cout << fmt::format("{:<9} {:<9} {:<8} {:>6} {:>16} {:>18} {:>8}\n", "POOL",
                                       "TIER", "DRIVER", "NODES", "CPU_M used/cap",
                                       "MEM_MB used/cap", "PENDING");
              for (const auto& p : j["pools"]) {
                const auto &c = p["capacity"], &a = p["allocated"];
                std::cout << fmt::format(
                    "{:<9} {:<9} {:<8} {:>6} {:>16} {:>18} {:>8}\n", p.value("name", ""),
                    p.value("tier", ""), p.value("driver", ""),
                    fmt::format("{}/{}", p.value("nodes_ready", 0), p.value("nodes", 0)),
                    fmt::format("{}/{}", a.value("cpu_millis", 0), c.value("cpu_millis", 0)),
                    fmt::format("{}/{}", a.value("memory_mb", 0), c.value("memory_mb", 0)),
                    p.value("pending", 0));
              }
            });
      });

  auto* route = app.add_subcommand("route", "routing decisions: explain one, test a policy");
  route->require_subcommand(1);
  auto* explain = route->add_subcommand("explain", "why a sandbox got its tier");
  explain->add_option("id", id, "sandbox id")->required();
  explain->callback([&] {
    rc = RunFleetJson(
        g, f, "GET", SbPath(id, "/route"), nullptr, std::cout, std::cerr, [](const json& j) {
          std::cout << fmt::format("{}: tier {} by rule '{}' (policy {})\n  {}\n",
                                   j.value("sandbox", ""), j.value("tier", ""), j.value("rule", ""),
                                   j.value("policy_version", ""), j.value("explanation", ""));
        });
  });
  static std::string policy_file, tasks_file;
  auto* test = route->add_subcommand(
      "test", "evaluate a policy offline over tasks (JSON lines) and print the tier mix");
  test->add_option("policy", policy_file, "policy YAML")->required();
  test->add_option("tasks", tasks_file, "tasks, one JSON object per line")->required();
  test->callback([&] { rc = RunRouteTest(policy_file, tasks_file, g.json, std::cout, std::cerr); });
}

}  // namespace hangar::cli
