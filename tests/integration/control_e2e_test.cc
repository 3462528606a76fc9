// The control plane end to end: real hangard processes (embedded, or control + node), real
// sandboxes from a busybox template, the `hangar` CLI and the /v1 API over HTTP. Each test has
// its own daemons, data directories, cgroup root and uid range, and checks that nothing is left
// in the kernel at the end (mounts, loop devices, cgroups).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "e2e_fixture.h"
#include "hangar/base/fd.h"

namespace hangar::integration {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool IsTerminal(const std::string& state) {
  return state == "exited" || state == "failed" || state == "killed" || state == "timed_out";
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// --- the embedded demo of the issue, through the CLI -----------------------------------------

TEST_F(E2ETest, CliRunRoutesAndQueuesLikeTheDemo) {
  Daemon* d = StartEmbedded();
  ASSERT_NE(d, nullptr);
  std::vector<std::string> cli = {"--server", d->proc.url(), "--api-key", d->user.bearer()};
  auto with = [&](std::vector<std::string> args) {
    std::vector<std::string> all = cli;
    all.insert(all.end(), args.begin(), args.end());
    return all;
  };
  const std::vector<std::string> small = {"--cpu", "0.1", "--memory", "64", "--disk", "64"};
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> all = with({"run"});
    all.insert(all.end(), small.begin(), small.end());
    all.insert(all.end(), args.begin(), args.end());
    return RunCli(all);
  };

  // A command: its output, then its exit code as hangar's.
  auto hi = run({"--", "sh", "-c", "echo hi; exit 3"});
  ASSERT_TRUE(hi.ok()) << hi.status().ToString();
  EXPECT_EQ(hi->status.code, 3) << hi->err;
  EXPECT_EQ(hi->out, "hi\n");

  // A routine task (documentation only) runs on the shared tier, now.
  auto routine = run({"-d", "--path", "docs/guide.md"});
  ASSERT_TRUE(routine.ok());
  ASSERT_EQ(routine->status.code, 0) << routine->err;
  std::string routine_id = Trimmed(routine->out);
  auto r = d->user.Call("GET", "/v1/sandboxes/" + routine_id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body["state"], "running") << r->Describe();
  EXPECT_EQ(r->body["tier"], "shared");
  EXPECT_EQ(r->body["node"], "it-" + d->name);
  auto why = d->user.Call("GET", "/v1/sandboxes/" + routine_id + "/route");
  ASSERT_TRUE(why.ok());
  EXPECT_EQ(why->body["rule"], "docs-only") << why->Describe();

  // Payments code must get its own kernel: no isolated node here, so it waits, saying why,
  // and is never moved down to shared.
  auto pay = run({"-d", "--path", "services/payments/x.go", "--", "sh", "-c", "echo ran"});
  ASSERT_TRUE(pay.ok());
  ASSERT_EQ(pay->status.code, 0) << pay->err;
  std::string pay_id = Trimmed(pay->out);
  EXPECT_TRUE(Contains(pay->err, "pending")) << pay->err;
  EXPECT_TRUE(Contains(pay->err, "isolated")) << pay->err;
  auto explain = RunCli(with({"route", "explain", pay_id}));
  ASSERT_TRUE(explain.ok());
  EXPECT_EQ(explain->status.code, 0) << explain->err;
  EXPECT_TRUE(Contains(explain->out, "tier isolated by rule 'payments-isolated'")) << explain->out;
  // Several scheduling passes later it is still pending and the node never saw it.
  std::this_thread::sleep_for(milliseconds(1500));
  auto p = d->user.Call("GET", "/v1/sandboxes/" + pay_id);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->body["state"], "pending") << p->Describe();
  EXPECT_EQ(p->body["tier"], "isolated");
  EXPECT_TRUE(p->body["node"].is_null());
  EXPECT_TRUE(Contains(p->body.value("reason", ""), "isolated")) << p->Describe();
  auto on_node = NodeSandboxes(*d);
  EXPECT_EQ(std::count(on_node.begin(), on_node.end(), pay_id), 0);
  EXPECT_EQ(std::count(on_node.begin(), on_node.end(), routine_id), 1);
  auto logs = d->user.Call("GET", "/v1/sandboxes/" + pay_id + "/logs");
  ASSERT_TRUE(logs.ok());
  EXPECT_EQ(logs->raw, "") << "a task that never ran has no output";

  auto ls = RunCli(with({"ls", "--state", "pending"}));
  ASSERT_TRUE(ls.ok());
  EXPECT_TRUE(Contains(ls->out, pay_id)) << ls->out;
  EXPECT_FALSE(Contains(ls->out, routine_id)) << ls->out;

  for (const auto& id : {routine_id, pay_id}) {
    auto k = RunCli(with({"kill", id}));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(k->status.code, 0) << k->err;
    EXPECT_TRUE(Contains(k->out, "killed")) << k->out;
  }
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d).empty(); }, seconds(10)));
  ExpectNoLeaks(d);
}

// --- exec, files, logs, timeout, kill through /v1 ----------------------------------------------

TEST_F(E2ETest, ExecFilesLogsAndKillThroughTheApi) {
  Daemon* d = StartEmbedded();
  ASSERT_NE(d, nullptr);
  auto c = d->user.Call("POST", "/v1/sandboxes", SmallSpec({{"labels", {{"job", "e2e"}}}}));
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->status, 201) << c->Describe();
  ASSERT_EQ(c->body["state"], "running");
  std::string id = c->body["id"];
  std::string sb = "/v1/sandboxes/" + id;

  auto put = d->user.Raw("PUT", sb + "/files?path=/tmp/dir/hello.txt", "hello from the test\n",
                         "application/octet-stream");
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->status, 201) << put->Describe();
  auto get = d->user.Call("GET", sb + "/files?path=/tmp/dir/hello.txt");
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->raw, "hello from the test\n");
  auto list = d->user.Call("GET", sb + "/files?path=/tmp/dir&list=1");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->status, 200) << list->Describe();
  ASSERT_EQ(list->body["entries"].size(), 1u) << list->Describe();
  EXPECT_EQ(list->body["entries"][0]["name"], "hello.txt");
  auto missing = d->user.Call("GET", sb + "/files?path=/tmp/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404) << missing->Describe();
  auto no_path = d->user.Call("GET", sb + "/files");
  ASSERT_TRUE(no_path.ok());
  EXPECT_EQ(no_path->status, 400) << no_path->Describe();

  auto ex =
      d->user.Exec(sb + "/exec",
                   {{"cmd", "sh"}, {"args", {"-c", "cat /tmp/dir/hello.txt; echo e >&2; exit 7"}}});
  EXPECT_EQ(ex.http_status, 200) << ex.error;
  EXPECT_EQ(ex.out, "hello from the test\n");
  EXPECT_EQ(ex.err, "e\n");
  EXPECT_EQ(ex.exit_code, 7);
  auto bad_exec = d->user.Call("POST", sb + "/exec", {{"cmd", "true"}, {"colour", "red"}});
  ASSERT_TRUE(bad_exec.ok());
  EXPECT_EQ(bad_exec->status, 400);
  EXPECT_TRUE(Contains(bad_exec->raw, "colour")) << bad_exec->Describe();

  // Timeout from now; the node's backstop follows. Out of bounds is 400.
  auto t = d->user.Call("POST", sb + "/timeout", {{"timeout_s", 900}});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->status, 200) << t->Describe();
  EXPECT_EQ(t->body["timeout_s"], 900);
  auto t0 = d->user.Call("POST", sb + "/timeout", {{"timeout_s", 0}});
  ASSERT_TRUE(t0.ok());
  EXPECT_EQ(t0->status, 400) << t0->Describe();

  // Label filter finds it; another label does not.
  auto f1 = d->user.Call("GET", "/v1/sandboxes?label=job=e2e&state=running");
  ASSERT_TRUE(f1.ok());
  ASSERT_EQ(f1->body["sandboxes"].size(), 1u) << f1->Describe();
  auto f2 = d->user.Call("GET", "/v1/sandboxes?label=job=other");
  ASSERT_TRUE(f2.ok());
  EXPECT_TRUE(f2->body["sandboxes"].empty()) << f2->Describe();

  // A command task: its output in the log, then how it ended.
  auto cmd = d->user.Call(
      "POST", "/v1/sandboxes",
      SmallSpec({{"command", {"sh", "-c", "echo out; sleep 1; echo err >&2; exit 4"}}}));
  ASSERT_TRUE(cmd.ok());
  ASSERT_TRUE(cmd->status == 201) << cmd->Describe();
  std::string cid = cmd->body["id"];
  auto events = d->user.StreamLines("/v1/sandboxes/" + cid + "/logs?follow=1", seconds(60));
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  std::string out, err;
  json end;
  for (const auto& ev : *events) {
    if (ev.value("stream", "") == "stdout") out += Base64Decode(ev.value("data", ""));
    if (ev.value("stream", "") == "stderr") err += Base64Decode(ev.value("data", ""));
    if (ev.value("event", "") == "end") end = ev;
  }
  EXPECT_EQ(out, "out\n");
  EXPECT_EQ(err, "err\n");
  ASSERT_TRUE(end.is_object()) << "the followed log ends with an end event";
  EXPECT_EQ(end["state"], "exited");
  EXPECT_EQ(end["exit_code"], 4);
  auto done = d->user.Call("GET", "/v1/sandboxes/" + cid);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->body["state"], "exited");
  EXPECT_EQ(done->body["exit_code"], 4);
  EXPECT_FALSE(done->body["ended_at"].is_null());
  // Its sandbox is gone from the node once the command ended.
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto ids = NodeSandboxes(*d);
        return std::count(ids.begin(), ids.end(), cid) == 0;
      },
      seconds(10)));

  // History: every state it went through, in order.
  auto h = d->user.Call("GET", sb + "/history");
  ASSERT_TRUE(h.ok());
  std::vector<std::string> states;
  for (const auto& e : h->body["history"]) states.push_back(e["state"]);
  ASSERT_GE(states.size(), 3u) << h->Describe();
  EXPECT_EQ(states.front(), "pending");
  EXPECT_EQ(states.back(), "running");

  // Kill: the sandbox goes from the node; exec and files now say why they cannot.
  auto k = d->user.Call("DELETE", sb);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->status, 200);
  EXPECT_EQ(k->body["state"], "killed");
  auto again = d->user.Call("DELETE", sb);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, 200) << "kill is idempotent";
  EXPECT_EQ(again->body["state"], "killed");
  auto late = d->user.Call("POST", sb + "/exec", {{"cmd", "true"}});
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->status, 409) << late->Describe();
  EXPECT_TRUE(Contains(late->raw, "killed")) << late->Describe();
  auto late_t = d->user.Call("POST", sb + "/timeout", {{"timeout_s", 60}});
  ASSERT_TRUE(late_t.ok());
  EXPECT_EQ(late_t->status, 409) << late_t->Describe();
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d).empty(); }, seconds(10)));
  ExpectNoLeaks(d);
}

// --- teams --------------------------------------------------------------------------------------

TEST_F(E2ETest, TeamsSeeOnlyTheirOwnSandboxes) {
  Daemon* d = StartEmbedded();
  ASSERT_NE(d, nullptr);
  auto make_team = [&](const std::string& name) {
    auto r = d->admin.Call("POST", "/v1/admin/teams", {{"name", name}, {"max_concurrent", 5}});
    EXPECT_TRUE(r.ok() && r->status == 201) << (r.ok() ? r->Describe() : r.status().ToString());
    return Api(d->proc.url(), r.ok() ? r->body.value("api_key", "") : "");
  };
  Api a = make_team("team-a"), b = make_team("team-b");
  auto dup = d->admin.Call("POST", "/v1/admin/teams", {{"name", "team-a"}});
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(dup->status, 409) << dup->Describe();
  auto not_admin = a.Call("POST", "/v1/admin/teams", {{"name", "sneaky"}});
  ASSERT_TRUE(not_admin.ok());
  EXPECT_EQ(not_admin->status, 401) << not_admin->Describe();
  auto no_key = Api(d->proc.url(), "").Call("GET", "/v1/sandboxes");
  ASSERT_TRUE(no_key.ok());
  EXPECT_EQ(no_key->status, 401);
  auto bad_key = Api(d->proc.url(), "hgk_0000").Call("GET", "/v1/sandboxes");
  ASSERT_TRUE(bad_key.ok());
  EXPECT_EQ(bad_key->status, 401);
  // The X-API-Key header works as well as the bearer.
  auto via_header =
      Api(d->proc.url(), "").Call("GET", "/v1/sandboxes", nullptr, {{"X-API-Key", a.bearer()}});
  ASSERT_TRUE(via_header.ok());
  EXPECT_EQ(via_header->status, 200);

  auto c = a.Call("POST", "/v1/sandboxes", SmallSpec());
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->status, 201) << c->Describe();
  std::string id = c->body["id"], sb = "/v1/sandboxes/" + id;

  for (auto [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", sb},
                                                        {"GET", sb + "/route"},
                                                        {"GET", sb + "/history"},
                                                        {"GET", sb + "/logs"},
                                                        {"GET", sb + "/files?path=/etc/passwd"},
                                                        {"DELETE", sb}}) {
    auto r = b.Call(method, path);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 404) << method << " " << path << ": " << r->Describe();
    EXPECT_EQ(r->body.value("code", ""), "not_found");
  }
  auto ex = b.Call("POST", sb + "/exec", {{"cmd", "true"}});
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->status, 404) << ex->Describe();
  auto put = b.Raw("PUT", sb + "/files?path=/tmp/x", "x", "application/octet-stream");
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->status, 404) << put->Describe();
  auto to = b.Call("POST", sb + "/timeout", {{"timeout_s", 10}});
  ASSERT_TRUE(to.ok());
  EXPECT_EQ(to->status, 404) << to->Describe();

  auto list_b = b.Call("GET", "/v1/sandboxes");
  ASSERT_TRUE(list_b.ok());
  EXPECT_TRUE(list_b->body["sandboxes"].empty()) << list_b->Describe();
  auto list_boot = d->user.Call("GET", "/v1/sandboxes");
  ASSERT_TRUE(list_boot.ok());
  EXPECT_TRUE(list_boot->body["sandboxes"].empty()) << list_boot->Describe();
  auto list_a = a.Call("GET", "/v1/sandboxes");
  ASSERT_TRUE(list_a.ok());
  ASSERT_EQ(list_a->body["sandboxes"].size(), 1u);
  EXPECT_EQ(list_a->body["sandboxes"][0]["id"], id);

  // B's failed kill changed nothing: still running, still usable by A.
  auto still = a.Exec(sb + "/exec", {{"cmd", "echo"}, {"args", {"mine"}}});
  EXPECT_EQ(still.out, "mine\n") << still.error;
  auto k = a.Call("DELETE", sb);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->body["state"], "killed");
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d).empty(); }, seconds(10)));
  ExpectNoLeaks(d);
}

// --- bad input changes nothing ------------------------------------------------------------------

TEST_F(E2ETest, BadInputIsRefusedAndChangesNothing) {
  Daemon* d = StartEmbedded({"--http-max-body-bytes", "65536"});
  ASSERT_NE(d, nullptr);
  // One sandbox of its own, so "nothing changed" is not trivially an empty list.
  auto keep = d->user.Call("POST", "/v1/sandboxes", SmallSpec());
  ASSERT_TRUE(keep.ok());
  ASSERT_EQ(keep->status, 201) << keep->Describe();
  auto before_node = NodeSandboxes(*d);
  auto count = [&] {
    auto r = d->user.Call("GET", "/v1/sandboxes?limit=1000");
    return r.ok() ? static_cast<int>(r->body["sandboxes"].size()) : -1;
  };
  int before = count();
  ASSERT_EQ(before, 1);

  struct Case {
    std::string what;
    std::string body;
    int status;
    std::string mention;
  };
  std::vector<Case> cases = {
      {"malformed JSON", R"({"template": )", 400, ""},
      {"not an object", R"([1, 2])", 400, "object"},
      {"unknown field", R"({"template": "base", "colour": "red"})", 400, "colour"},
      {"unknown resource", R"({"resources": {"gpus": 1}})", 400, "resources.gpus"},
      {"memory too small", R"({"resources": {"memory_mb": 1}})", 400, "resources.memory_mb"},
      {"cpu too large", R"({"resources": {"cpu": 65}})", 400, "resources.cpu"},
      {"cpu twice", R"({"resources": {"cpu": 1, "cpu_millis": 1000}})", 400, "not both"},
      {"negative timeout", R"({"timeout_s": -1})", 400, "timeout_s"},
      {"wrong type", R"({"command": "echo hi"})", 400, "command"},
      {"bad tier", R"({"tier": "gold"})", 400, "tier"},
      {"bad env name", R"({"env": {"1X": "y"}})", 400, "env"},
      {"bad template name", R"({"template": "../etc"})", 400, "template"},
      {"more cpu than any node", R"({"resources": {"cpu": 64}})", 400, ""},
      {"unknown template", R"({"template": "nosuch", "resources": {"disk_mb": 64}})", 404,
       "known: base"},
  };
  for (const auto& c : cases) {
    auto r = d->user.Raw("POST", "/v1/sandboxes", c.body, "application/json");
    ASSERT_TRUE(r.ok()) << c.what;
    EXPECT_EQ(r->status, c.status) << c.what << ": " << r->Describe();
    EXPECT_TRUE(r->body.is_object() && r->body.contains("code") && r->body.contains("message"))
        << c.what << ": " << r->Describe();
    if (!c.mention.empty()) {
      EXPECT_TRUE(Contains(r->body.value("message", ""), c.mention))
          << c.what << ": " << r->Describe();
    }
  }
  // Over http.max_body_bytes.
  std::string big = R"({"template": "base", "labels": {"x": ")" + std::string(70'000, 'a') + "\"}}";
  auto too_big = d->user.Raw("POST", "/v1/sandboxes", big, "application/json");
  ASSERT_TRUE(too_big.ok());
  EXPECT_EQ(too_big->status, 413) << too_big->Describe();
  auto long_key = d->user.Call("POST", "/v1/sandboxes", SmallSpec(),
                               {{"Idempotency-Key", std::string(300, 'k')}});
  ASSERT_TRUE(long_key.ok());
  EXPECT_EQ(long_key->status, 400) << long_key->Describe();

  // Bad list filters.
  for (std::string q : {"?label=novalue", "?label==x", "?state=sleeping", "?limit=0", "?limit=abc",
                        "?metadata=nokey"}) {
    auto r = d->user.Call("GET", "/v1/sandboxes" + q);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << q << ": " << r->Describe();
  }

  // A broken policy file: the reload says where, and the old policy keeps routing.
  auto route_before =
      d->user.Call("GET", "/v1/sandboxes/" + keep->body["id"].get<std::string>() + "/route");
  ASSERT_TRUE(route_before.ok());
  std::string version = route_before->body["policy_version"];
  auto good_policy = ReadFile(d->data_dir + "/policy.yaml");
  ASSERT_TRUE(good_policy.ok());
  ASSERT_TRUE(WriteFileAtomic(d->data_dir + "/policy.yaml",
                              "version: 1\ndefault: shared\nrules:\n  - name: broken\n"
                              "    when: 'paths.exists(p, p.matches(\"x\"'\n    tier: isolated\n")
                  .ok());
  auto reload = d->admin.Call("POST", "/v1/admin/policy/reload");
  ASSERT_TRUE(reload.ok());
  EXPECT_EQ(reload->status, 400) << reload->Describe();
  EXPECT_TRUE(Contains(reload->body.value("message", ""), "policy.yaml:5:")) << reload->Describe();
  auto unauth_reload = d->user.Call("POST", "/v1/admin/policy/reload");
  ASSERT_TRUE(unauth_reload.ok());
  EXPECT_EQ(unauth_reload->status, 401);
  // Past the background loop's own look at the file (it rejects it too).
  std::this_thread::sleep_for(milliseconds(600));
  auto pay = d->user.Call(
      "POST", "/v1/sandboxes",
      SmallSpec({{"paths", {"services/payments/x.go"}}, {"wait_for_capacity", false}}));
  ASSERT_TRUE(pay.ok());
  EXPECT_EQ(pay->status, 503) << "still routed isolated by the old policy: " << pay->Describe();
  EXPECT_TRUE(Contains(pay->body.value("message", ""), "isolated")) << pay->Describe();
  auto check = d->user.Call("POST", "/v1/sandboxes", SmallSpec({{"wait_for_capacity", false}}));
  ASSERT_TRUE(check.ok());
  ASSERT_EQ(check->status, 201) << check->Describe();
  auto route_after =
      d->user.Call("GET", "/v1/sandboxes/" + check->body["id"].get<std::string>() + "/route");
  ASSERT_TRUE(route_after.ok());
  EXPECT_EQ(route_after->body["policy_version"], version) << "the old policy stays in force";
  ASSERT_TRUE(d->user.Call("DELETE", "/v1/sandboxes/" + check->body["id"].get<std::string>()).ok());
  // Restoring the file and reloading works again.
  ASSERT_TRUE(WriteFileAtomic(d->data_dir + "/policy.yaml", *good_policy).ok());
  auto reload2 = d->admin.Call("POST", "/v1/admin/policy/reload");
  ASSERT_TRUE(reload2.ok());
  EXPECT_EQ(reload2->status, 200) << reload2->Describe();
  EXPECT_EQ(reload2->body["policy_version"], version);

  // Nothing was created by any refused request.
  EXPECT_EQ(count(), before + 1) << "only the one valid create made a (now killed) sandbox";
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d) == before_node; }, seconds(10)))
      << "the node holds exactly what it held before";

  ASSERT_TRUE(d->user.Call("DELETE", "/v1/sandboxes/" + keep->body["id"].get<std::string>()).ok());
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d).empty(); }, seconds(10)));
  ExpectNoLeaks(d);
}

// --- quota and capacity -------------------------------------------------------------------------

TEST_F(E2ETest, QuotaIs429AndNoCapacityIs503WithRetryAfter) {
  Daemon* d = StartEmbedded();
  ASSERT_NE(d, nullptr);
  auto team = d->admin.Call("POST", "/v1/admin/teams", {{"name", "small"}, {"max_concurrent", 2}});
  ASSERT_TRUE(team.ok() && team->status == 201);
  Api small(d->proc.url(), team->body["api_key"]);
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    auto r = small.Call("POST", "/v1/sandboxes", SmallSpec());
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->status, 201) << r->Describe();
    ids.push_back(r->body["id"]);
  }
  auto over = small.Call("POST", "/v1/sandboxes", SmallSpec(), {{"Idempotency-Key", "third"}});
  ASSERT_TRUE(over.ok());
  EXPECT_EQ(over->status, 429) << over->Describe();
  EXPECT_EQ(over->body.value("code", ""), "resource_exhausted");
  EXPECT_FALSE(over->headers["retry-after"].empty()) << over->Describe();
  EXPECT_GE(std::atoi(over->headers["retry-after"].c_str()), 1);
  EXPECT_EQ(NodeSandboxes(*d).size(), 2u) << "a refused create makes nothing";
  // Idempotent replay of an accepted create is answered even at the quota.
  auto first_again = small.Call("POST", "/v1/sandboxes", SmallSpec(), {{"Idempotency-Key", "k1"}});
  ASSERT_TRUE(first_again.ok());
  EXPECT_EQ(first_again->status, 429) << "k1 was never used: still over quota";
  ASSERT_TRUE(small.Call("DELETE", "/v1/sandboxes/" + ids[0]).ok());
  auto k1 = small.Call("POST", "/v1/sandboxes", SmallSpec(), {{"Idempotency-Key", "k1"}});
  ASSERT_TRUE(k1.ok());
  ASSERT_EQ(k1->status, 201) << k1->Describe();
  auto k1_replay = small.Call("POST", "/v1/sandboxes", SmallSpec(), {{"Idempotency-Key", "k1"}});
  ASSERT_TRUE(k1_replay.ok());
  EXPECT_EQ(k1_replay->status, 200) << "replay at the quota answers the earlier create";
  EXPECT_EQ(k1_replay->body["id"], k1->body["id"]);
  for (const auto& id : {ids[1], k1->body["id"].get<std::string>()}) {
    ASSERT_TRUE(small.Call("DELETE", "/v1/sandboxes/" + id).ok());
  }

  // Capacity: this node offers (CPUs × 1000) millis; fill it with whole cores.
  auto nodes = d->user.Call("GET", "/v1/nodes");
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->body["nodes"].size(), 1u) << nodes->Describe();
  int64_t cpu = nodes->body["nodes"][0]["capacity"]["cpu_millis"];
  ASSERT_GE(cpu, 1000);
  ASSERT_LE(cpu, 8000) << "filling a node this big takes too many sandboxes";
  std::vector<std::string> big;
  for (int64_t used = 0; used < cpu; used += 1000) {
    auto r = d->user.Call(
        "POST", "/v1/sandboxes",
        SmallSpec({{"resources", {{"cpu_millis", 1000}, {"memory_mb", 64}, {"disk_mb", 64}}}}));
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->status, 201) << r->Describe();
    big.push_back(r->body["id"]);
  }
  json one_core =
      SmallSpec({{"resources", {{"cpu_millis", 1000}, {"memory_mb", 64}, {"disk_mb", 64}}}});
  json no_wait = one_core;
  no_wait["wait_for_capacity"] = false;
  auto full = d->user.Call("POST", "/v1/sandboxes", no_wait);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->status, 503) << full->Describe();
  EXPECT_EQ(full->body.value("code", ""), "unavailable");
  EXPECT_FALSE(full->headers["retry-after"].empty());
  // Willing to wait: 202, pending with the scheduler's reason, then running once room is made.
  auto queued = d->user.Call("POST", "/v1/sandboxes", one_core);
  ASSERT_TRUE(queued.ok());
  ASSERT_EQ(queued->status, 202) << queued->Describe();
  EXPECT_EQ(queued->body["state"], "pending");
  EXPECT_TRUE(Contains(queued->body.value("reason", ""), "waiting")) << queued->Describe();
  std::string qid = queued->body["id"];
  auto pools = d->user.Call("GET", "/v1/pools");
  ASSERT_TRUE(pools.ok());
  for (const auto& p : pools->body["pools"]) {
    if (p["name"] == "shared") {
      EXPECT_EQ(p["pending"], 1) << pools->Describe();
      EXPECT_EQ(p["allocated"]["cpu_millis"], cpu) << pools->Describe();
    }
  }
  EXPECT_EQ(NodeSandboxes(*d).size(), big.size());
  ASSERT_TRUE(d->user.Call("DELETE", "/v1/sandboxes/" + big.back()).ok());
  big.pop_back();
  auto ran = WaitFor(d->user, qid, [](const json& t) { return t["state"] == "running"; });
  EXPECT_EQ(ran["state"], "running") << ran.dump();
  big.push_back(qid);
  for (const auto& id : big) ASSERT_TRUE(d->user.Call("DELETE", "/v1/sandboxes/" + id).ok());
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d).empty(); }, seconds(10)));
  ExpectNoLeaks(d);
}

// --- restarts
// -------------------------------------------------------------------------------------

TEST_F(E2ETest, ControlRestartKeepsIdleSandboxesRunningAndUsable) {
  Daemon* d = StartEmbedded();
  ASSERT_NE(d, nullptr);
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    auto r = d->user.Call("POST", "/v1/sandboxes", SmallSpec(),
                          {{"Idempotency-Key", "idle-" + std::to_string(i)}});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->status, 201) << r->Describe();
    ids.push_back(r->body["id"]);
    auto w = d->user.Raw("PUT", "/v1/sandboxes/" + ids.back() + "/files?path=/tmp/mark",
                         "before " + std::to_string(i), "application/octet-stream");
    ASSERT_TRUE(w.ok() && w->status == 201);
  }
  // A command that outlives the control plane cannot be followed again: it fails, saying why.
  auto cmd = d->user.Call("POST", "/v1/sandboxes", SmallSpec({{"command", {"sleep", "600"}}}));
  ASSERT_TRUE(cmd.ok());
  ASSERT_EQ(cmd->status, 201) << cmd->Describe();
  std::string cid = cmd->body["id"];

  Kill(d);
  Restart(d);
  ASSERT_TRUE(d->proc.running());
  for (size_t i = 0; i < ids.size(); ++i) {
    auto t = WaitFor(d->user, ids[i], [](const json& j) { return j["state"] == "running"; });
    EXPECT_EQ(t["state"], "running") << t.dump();
    auto ex = d->user.Exec("/v1/sandboxes/" + ids[i] + "/exec",
                           {{"cmd", "cat"}, {"args", {"/tmp/mark"}}});
    EXPECT_EQ(ex.http_status, 200) << ex.error;
    EXPECT_EQ(ex.out, "before " + std::to_string(i)) << ex.error;
  }
  auto c = WaitFor(d->user, cid, [](const json& j) { return IsTerminal(j["state"]); });
  EXPECT_EQ(c["state"], "failed") << c.dump();
  EXPECT_TRUE(Contains(c.value("reason", ""), "restarted")) << c.dump();
  // Replays after the restart find the same sandboxes.
  auto replay = d->user.Call("POST", "/v1/sandboxes", SmallSpec(), {{"Idempotency-Key", "idle-0"}});
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->status, 200) << replay->Describe();
  EXPECT_EQ(replay->body["id"], ids[0]);
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto on = NodeSandboxes(*d);
        return on == std::vector<std::string>{std::min(ids[0], ids[1]), std::max(ids[0], ids[1])};
      },
      seconds(10)))
      << "the node holds exactly the running tasks";
  for (const auto& id : ids) ASSERT_TRUE(d->user.Call("DELETE", "/v1/sandboxes/" + id).ok());
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*d).empty(); }, seconds(10)));
  ExpectNoLeaks(d);
}

TEST_F(E2ETest, NodeLostMidTaskFailsItAndTheReturningNodeIsCleaned) {
  Daemon* control = StartControl({"--control-node-lost-after-ms", "2000"});
  ASSERT_NE(control, nullptr);
  Daemon* node = StartNode(*control, "it-node-a");
  ASSERT_NE(node, nullptr);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto r = control->user.Call("GET", "/v1/nodes");
        return r.ok() && r->body["nodes"].size() == 1 && r->body["nodes"][0]["status"] == "ready";
      },
      seconds(10)));
  auto c = control->user.Call("POST", "/v1/sandboxes", SmallSpec());
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->status, 201) << c->Describe();
  std::string id = c->body["id"];
  EXPECT_EQ(c->body["node"], "it-node-a");
  auto ex =
      control->user.Exec("/v1/sandboxes/" + id + "/exec", {{"cmd", "echo"}, {"args", {"up"}}});
  EXPECT_EQ(ex.out, "up\n") << ex.error;

  Kill(node);
  auto lost = WaitFor(
      control->user, id, [](const json& t) { return IsTerminal(t["state"]); }, seconds(15));
  EXPECT_EQ(lost["state"], "failed") << lost.dump();
  EXPECT_TRUE(Contains(lost.value("reason", ""), "it-node-a")) << lost.dump();
  EXPECT_TRUE(Contains(lost.value("reason", ""), "lost")) << lost.dump();
  auto nodes = control->user.Call("GET", "/v1/nodes");
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(nodes->body["nodes"][0]["status"], "lost") << nodes->Describe();
  // While its only node is lost, a create queues (202) instead of failing.
  auto queued = control->user.Call("POST", "/v1/sandboxes", SmallSpec());
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->status, 202) << queued->Describe();
  std::string qid = queued->body.value("id", "");

  // The node comes back: it recovers its sandbox, reports it, and the control plane has it
  // destroyed (its task is over); the queued task then runs there.
  Restart(node);
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto on = NodeSandboxes(*node);
        return std::count(on.begin(), on.end(), id) == 0;
      },
      seconds(20)))
      << "the orphan is removed";
  auto back = control->user.Call("GET", "/v1/nodes");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->body["nodes"][0]["status"], "ready") << back->Describe();
  auto after = control->user.Call("GET", "/v1/sandboxes/" + id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->body["state"], "failed") << "a failed task stays failed";
  auto ran = WaitFor(control->user, qid, [](const json& t) { return t["state"] == "running"; });
  EXPECT_EQ(ran["state"], "running") << ran.dump();
  EXPECT_EQ(NodeSandboxes(*node), std::vector<std::string>{qid});
  ASSERT_TRUE(control->user.Call("DELETE", "/v1/sandboxes/" + qid).ok());
  EXPECT_TRUE(WaitUntil([&] { return NodeSandboxes(*node).empty(); }, seconds(10)));
  ExpectNoLeaks(node);
}

}  // namespace
}  // namespace hangar::integration
