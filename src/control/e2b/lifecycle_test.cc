// E2B's lifecycle REST API over a real ControlService (SQLite store, FakeClock, in-memory node
// agents) and a real HTTP server on loopback: the bodies, status codes and error shapes the
// stock e2b SDK relies on, team scoping, routing of metadata, TTLs, pause/connect.
#include "hangar/e2b/lifecycle.h"

#include <gtest/gtest.h>

#include "hangar/api/client.h"
#include "hangar/api/query.h"
#include "hangar/api/server.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "testing/fake_node_client.h"

namespace hangar::e2b {
namespace {

using control::TaskState;
using nlohmann::json;
using std::chrono::seconds;

constexpr char kPolicy[] = R"(version: 1
default: shared
rules:
  - name: payments-isolated
    when: 'labels["area"] == "payments"'
    tier: isolated
)";
const std::string kSecret(40, 's');

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Make("hangar-e2b-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
    ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/policy.yaml", kPolicy).ok());
    auto store = control::OpenSqliteStore(dir_.path() + "/hangar.db");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    control::ControlOptions o;
    o.store = store_.get();
    o.nodes = &nodes_;
    o.clock = &clock_;
    o.policy_path = dir_.path() + "/policy.yaml";
    o.log_dir = dir_.path() + "/logs";
    o.run_loop = false;
    o.create_wait = seconds(10);
    o.node_lost_after = std::chrono::hours(24);  // the tests move the clock by minutes
    o.pools = {{.name = "shared", .tier = control::Tier::kShared, .driver = "ns"},
               {.name = "isolated", .tier = control::Tier::kIsolated, .driver = "microvm"}};
    auto svc = control::ControlService::Start(o);
    ASSERT_TRUE(svc.ok()) << svc.status().ToString();
    svc_ = std::move(*svc);
    key_a_ = NewTeam("alpha");
    key_b_ = NewTeam("beta");

    api::Router router;
    ASSERT_TRUE(AddLifecycleRoutes(router, {.service = svc_.get(),
                                            .clock = &clock_,
                                            .token_secret = kSecret,
                                            .default_template = "debian"})
                    .ok());
    server_ = std::make_unique<api::Server>(
        api::ServerOptions{.port = 0, .threads = 1, .access_log = false}, std::move(router));
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    server_.reset();
    svc_.reset();
    store_.reset();
  }

  std::string NewTeam(const std::string& name) {
    auto team = svc_->CreateTeam(name, 10);
    EXPECT_TRUE(team.ok());
    auto key = svc_->CreateApiKey(team->id, "k");
    EXPECT_TRUE(key.ok());
    return key->first;
  }
  // A shared node with `templates`, of which `with_bash` have /bin/bash.
  void Beat(std::vector<std::string> templates = {"debian", "busybox"},
            std::vector<std::string> with_bash = {"debian"}) {
    control::NodeReport r;
    r.node = {.id = "n1",
              .pool = "shared",
              .url = "http://n1",
              .token = "t",
              .drivers = {"ns"},
              .capacity = {.cpu_millis = 16000, .memory_mb = 16384, .disk_mb = 100000}};
    r.templates = std::move(templates);
    r.bash_templates = std::move(with_bash);
    r.sandboxes = nodes_.Report("n1");
    ASSERT_TRUE(svc_->Heartbeat(r).ok());
  }

  api::ClientResponse Call(const std::string& method, const std::string& path,
                           const json& body = nullptr, const std::string& key = "") {
    auto c = api::HttpClient::Create("http://127.0.0.1:" + std::to_string(server_->port()));
    EXPECT_TRUE(c.ok());
    api::RequestOptions ro;
    ro.headers = {{"X-API-Key", key.empty() ? key_a_ : key}};
    auto r = c->Send(method, path, body.is_null() ? "" : body.dump(), ro);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : api::ClientResponse{};
  }
  static json Json(const api::ClientResponse& r) {
    auto j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json() : j;
  }
  // Creates a sandbox the way the SDK does and returns the response body.
  json CreateOk(json body = {{"templateID", "base"}, {"timeout", 300}}) {
    auto r = Call("POST", "/v2/sandboxes", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return Json(r);
  }
  // E2B's error shape: {code: <the HTTP status>, message}.
  static void ExpectError(const api::ClientResponse& r, int status, const std::string& words) {
    EXPECT_EQ(r.status, status) << r.body;
    json j = Json(r);
    EXPECT_EQ(j.value("code", 0), status) << r.body;
    EXPECT_NE(j.value("message", "").find(words), std::string::npos) << r.body;
  }
  size_t TasksOf(const std::string& key) {
    auto team = svc_->Authenticate(key);
    EXPECT_TRUE(team.ok());
    auto page = svc_->List(*team, {});
    return page.ok() ? page->tasks.size() : 0;
  }
  int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               clock_.WallNow().time_since_epoch())
        .count();
  }

  TempDir dir_;
  FakeClock clock_;
  control::testing::FakeNodeClient nodes_;
  std::unique_ptr<control::Store> store_;
  std::unique_ptr<control::ControlService> svc_;
  std::unique_ptr<api::Server> server_;
  std::string key_a_, key_b_;
};

TEST_F(LifecycleTest, CreateAnswersWhatTheSdkReadsAndRoutesLikeAnyTask) {
  Beat();
  json sb = CreateOk({{"templateID", "base"},
                      {"timeout", 120},
                      {"metadata", {{"purpose", "lint"}}},
                      {"envVars", {{"FOO", "bar"}}}});
  std::string id = sb.value("sandboxID", "");
  ASSERT_EQ(id.size(), 20u);
  EXPECT_EQ(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789"), std::string::npos);
  EXPECT_EQ(sb["templateID"], "debian");  // "base" → the configured default template
  EXPECT_EQ(sb["envdVersion"], "0.6.4");
  EXPECT_EQ(sb["envdAccessToken"], AccessToken(kSecret, id));
  EXPECT_TRUE(sb.contains("clientID"));
  // The same task the /v1 API and the CLI see: idle, metadata as labels, env, TTL.
  auto team = svc_->Authenticate(key_a_);
  auto t = svc_->Get(*team, id);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->state, TaskState::kRunning);
  EXPECT_TRUE(t->command.empty());
  EXPECT_EQ(t->labels.at("purpose"), "lint");
  EXPECT_EQ(t->env.at("FOO"), "bar");
  EXPECT_EQ(t->timeout_s, 120);
  EXPECT_EQ(nodes_.On("n1").count(id), 1u);
  // Details: the caller's metadata plus the tier chosen; TTL from the start.
  auto got = Call("GET", "/sandboxes/" + id);
  ASSERT_EQ(got.status, 200) << got.body;
  json d = Json(got);
  EXPECT_EQ(d["metadata"], json({{"purpose", "lint"}, {"hangar.tier", "shared"}}));
  EXPECT_EQ(d["state"], "running");
  EXPECT_EQ(d["cpuCount"], 1);
  EXPECT_EQ(d["memoryMB"], 512);
  EXPECT_EQ(d["envdAccessToken"], AccessToken(kSecret, id));
  EXPECT_EQ(d["endAt"], FormatRfc3339(Clock::WallTime(std::chrono::milliseconds(t->deadline_ms))));
  EXPECT_EQ(t->deadline_ms - t->started_ms, 120'000);
}

TEST_F(LifecycleTest, MetadataRouteTheSandboxAndTheTierIsVisible) {
  Beat();
  // The policy sends area=payments to the isolated tier; no isolated node exists, so the create
  // cannot start — it is refused (503) and the task killed, never run on a weaker tier.
  auto r =
      Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"metadata", {{"area", "payments"}}}});
  ExpectError(r, 503, "did not start");
  EXPECT_TRUE(nodes_.On("n1").empty());
  auto team = svc_->Authenticate(key_a_);
  auto page = svc_->List(*team, {});
  ASSERT_EQ(page->tasks.size(), 1u);
  EXPECT_EQ(page->tasks[0].tier, control::Tier::kIsolated);
  EXPECT_EQ(page->tasks[0].state, TaskState::kKilled);
}

TEST_F(LifecycleTest, SecureFalseIssuesNoTokenAndTheResolverKnows) {
  Beat();
  json sb = CreateOk({{"templateID", "base"}, {"secure", false}});
  EXPECT_TRUE(sb["envdAccessToken"].is_null());
  json sec = CreateOk();
  auto resolve = TrafficResolver(svc_.get(), kSecret);
  auto open = resolve(sb["sandboxID"].get<std::string>());
  ASSERT_TRUE(open.ok()) << open.status().ToString();
  EXPECT_EQ(open->access_token, "");
  EXPECT_EQ(open->node.url, "http://n1");
  auto locked = resolve(sec["sandboxID"].get<std::string>());
  ASSERT_TRUE(locked.ok());
  EXPECT_EQ(locked->access_token, sec["envdAccessToken"]);
  EXPECT_EQ(resolve("nosuchsandbox0000000").status().code(), Code::kNotFound);
  // An ended sandbox is not found either (the proxy answers E2B's 502 "not found" for both).
  ASSERT_EQ(Call("DELETE", "/sandboxes/" + sec["sandboxID"].get<std::string>()).status, 204);
  EXPECT_EQ(resolve(sec["sandboxID"].get<std::string>()).status().code(), Code::kNotFound);
}

TEST_F(LifecycleTest, BadCreatesAreRefusedAndCreateNothing) {
  Beat();
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "busybox"}}), 400, "/bin/bash");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "nope"}}), 404, "unknown template");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"timeout", "x"}}), 400,
              "timeout");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"timeout", -1}}), 400,
              "timeout");
  ExpectError(Call("POST", "/v2/sandboxes",
                   {{"templateID", "base"}, {"metadata", {{"hangar.tier", "shared"}}}}),
              400, "reserved");
  ExpectError(
      Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"metadata", {{"bad key", "v"}}}}),
      400, "metadata");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"envVars", {{"1X", "v"}}}}),
              400, "envVars");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"envVars", {{"A", 1}}}}), 400,
              "envVars.A");
  ExpectError(
      Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"allow_internet_access", true}}), 400,
      "allow_internet_access");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"autoPause", true}}), 400,
              "autoPause");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}, {"mcp", {{"x", 1}}}}), 400,
              "mcp");
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "../x"}}), 400, "templateID");
  ExpectError(Call("POST", "/v2/sandboxes", json::array()), 400, "object");
  auto c = api::HttpClient::Create("http://127.0.0.1:" + std::to_string(server_->port()));
  api::RequestOptions ro;
  ro.headers = {{"X-API-Key", key_a_}};
  auto broken = c->Send("POST", "/v2/sandboxes", "{\"templateID\":", ro);
  ExpectError(*broken, 400, "JSON");
  EXPECT_EQ(TasksOf(key_a_), 0u);
  EXPECT_EQ(nodes_.creates(), 0);
}

TEST_F(LifecycleTest, WrongKeyIs401InE2bShape) {
  Beat();
  ExpectError(Call("POST", "/v2/sandboxes", {{"templateID", "base"}}, "hgk_wrong"), 401,
              "Invalid API key");
  ExpectError(Call("GET", "/v2/sandboxes", nullptr, "hgk_wrong"), 401, "Invalid API key");
  EXPECT_EQ(TasksOf(key_a_), 0u);
}

TEST_F(LifecycleTest, TeamsSeeOnlyTheirOwnSandboxes) {
  Beat();
  std::string id = CreateOk()["sandboxID"];
  ExpectError(Call("GET", "/sandboxes/" + id, nullptr, key_b_), 404, "not found");
  ExpectError(Call("DELETE", "/sandboxes/" + id, nullptr, key_b_), 404, "not found");
  ExpectError(Call("POST", "/sandboxes/" + id + "/timeout", {{"timeout", 5}}, key_b_), 404,
              "not found");
  ExpectError(Call("POST", "/v2/sandboxes/" + id + "/connect", {{"timeout", 5}}, key_b_), 404,
              "not found");
  ExpectError(Call("POST", "/sandboxes/" + id + "/pause", nullptr, key_b_), 404, "not found");
  auto list = Call("GET", "/v2/sandboxes", nullptr, key_b_);
  EXPECT_EQ(Json(list), json::array());
  EXPECT_EQ(nodes_.StateOf("n1", id), "running");
}

TEST_F(LifecycleTest, ListFiltersByMetadataAndStateAndPages) {
  Beat();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(
        CreateOk({{"templateID", "base"},
                  {"metadata", {{"run", i % 2 ? "odd" : "even"}, {"k/x", "a b&c"}}}})["sandboxID"]);
  }
  // The SDK encodes each key and value, joins them as a query string and sends that as one
  // (encoded) parameter.
  std::string meta = api::PercentEncode("run") + "=" + api::PercentEncode("odd") + "&" +
                     api::PercentEncode("k/x") + "=" + api::PercentEncode("a b&c");
  auto r = Call("GET", "/v2/sandboxes?metadata=" + api::PercentEncode(meta));
  ASSERT_EQ(r.status, 200) << r.body;
  json odd = Json(r);
  ASSERT_EQ(odd.size(), 2u);
  for (const auto& s : odd) {
    EXPECT_EQ(s["metadata"]["run"], "odd");
    EXPECT_EQ(s["state"], "running");
    EXPECT_FALSE(s.contains("envdAccessToken"));  // only details carry it
  }
  // Pages of 2 with X-Next-Token, newest first, every sandbox exactly once.
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto p = Call("GET", "/v2/sandboxes?limit=2" +
                             (token.empty() ? "" : "&nextToken=" + api::PercentEncode(token)));
    ASSERT_EQ(p.status, 200) << p.body;
    for (const auto& s : Json(p)) EXPECT_TRUE(seen.insert(s["sandboxID"]).second);
    token = std::string(p.header("X-Next-Token"));
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(seen, std::set<std::string>(ids.begin(), ids.end()));
  EXPECT_EQ(pages, 3);
  // State filters: paused ones only, or both spelled either way.
  ASSERT_EQ(Call("POST", "/sandboxes/" + ids[0] + "/pause").status, 204);
  EXPECT_EQ(Json(Call("GET", "/v2/sandboxes?state=paused")).size(), 1u);
  EXPECT_EQ(Json(Call("GET", "/v2/sandboxes?state=running")).size(), 4u);
  EXPECT_EQ(Json(Call("GET", "/v2/sandboxes?state=running,paused")).size(), 5u);
  EXPECT_EQ(Json(Call("GET", "/v2/sandboxes?state=running&state=paused")).size(), 5u);
  ExpectError(Call("GET", "/v2/sandboxes?state=dead"), 400, "state");
  ExpectError(Call("GET", "/v2/sandboxes?limit=0"), 400, "limit");
  ExpectError(Call("GET", "/v2/sandboxes?order=asc"), 400, "order");
  ExpectError(Call("GET", "/v2/sandboxes?metadata=%25zz"), 400, "");
}

TEST_F(LifecycleTest, KillIs204ThenTheSandboxIsGone) {
  Beat();
  std::string id = CreateOk()["sandboxID"];
  auto del = Call("DELETE", "/sandboxes/" + id);
  EXPECT_EQ(del.status, 204) << del.body;
  EXPECT_TRUE(nodes_.On("n1").empty());
  ExpectError(Call("GET", "/sandboxes/" + id), 404, "killed");
  ExpectError(Call("DELETE", "/sandboxes/" + id), 404, "not found");
  EXPECT_EQ(Json(Call("GET", "/v2/sandboxes")), json::array());
}

TEST_F(LifecycleTest, TimeoutSetsTheTtlFromNowAndExpiryKills) {
  Beat();
  std::string id = CreateOk()["sandboxID"];
  clock_.Advance(seconds(100));
  ASSERT_EQ(Call("POST", "/sandboxes/" + id + "/timeout", {{"timeout", 30}}).status, 204);
  json d = Json(Call("GET", "/sandboxes/" + id));
  EXPECT_EQ(d["endAt"], FormatRfc3339(clock_.WallNow() + seconds(30)));
  // Refreshes only ever extend: 10 s is shorter than what is left.
  ASSERT_EQ(Call("POST", "/sandboxes/" + id + "/refreshes", {{"duration", 10}}).status, 204);
  EXPECT_EQ(Json(Call("GET", "/sandboxes/" + id))["endAt"], d["endAt"]);
  ExpectError(Call("POST", "/sandboxes/" + id + "/timeout", json::object()), 400, "timeout");
  clock_.Advance(seconds(31));
  svc_->Tick();
  ExpectError(Call("GET", "/sandboxes/" + id), 404, "timed_out");
  EXPECT_TRUE(nodes_.On("n1").empty());
}

TEST_F(LifecycleTest, PauseConnectResume) {
  Beat();
  json sb = CreateOk();
  std::string id = sb["sandboxID"];
  ASSERT_EQ(Call("POST", "/sandboxes/" + id + "/pause").status, 204);
  EXPECT_EQ(nodes_.StateOf("n1", id), "paused");
  EXPECT_EQ(Json(Call("GET", "/sandboxes/" + id))["state"], "paused");
  ExpectError(Call("POST", "/sandboxes/" + id + "/pause"), 409, "already paused");
  // A paused sandbox takes no traffic (and is not "not found").
  EXPECT_EQ(TrafficResolver(svc_.get(), kSecret)(id).status().code(), Code::kFailedPrecondition);
  // connect resumes it (201) and answers as create does.
  auto c = Call("POST", "/v2/sandboxes/" + id + "/connect", {{"timeout", 600}});
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(Json(c)["envdAccessToken"], sb["envdAccessToken"]);
  EXPECT_EQ(nodes_.StateOf("n1", id), "running");
  EXPECT_EQ(Json(Call("GET", "/sandboxes/" + id))["endAt"],
            FormatRfc3339(clock_.WallNow() + seconds(600)));
  // Running: 200, and a shorter timeout does not cut its life.
  auto again = Call("POST", "/sandboxes/" + id + "/connect", {{"timeout", 5}});
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Json(Call("GET", "/sandboxes/" + id))["endAt"],
            FormatRfc3339(clock_.WallNow() + seconds(600)));
  ExpectError(Call("POST", "/sandboxes/" + id + "/resume"), 409, "already running");
  ASSERT_EQ(Call("POST", "/sandboxes/" + id + "/pause").status, 204);
  auto resumed = Call("POST", "/sandboxes/" + id + "/resume", json::object());
  EXPECT_EQ(resumed.status, 201) << resumed.body;
  EXPECT_EQ(nodes_.StateOf("n1", id), "running");
  ExpectError(Call("POST", "/v2/sandboxes/nosuchsandbox/connect", json::object()), 404,
              "not found");
}

TEST_F(LifecycleTest, WhatHangarCannotDoIsAClear400) {
  Beat();
  std::string id = CreateOk()["sandboxID"];
  ExpectError(Call("POST", "/sandboxes/" + id + "/snapshots", json::object()), 400, "snapshots");
  ExpectError(Call("POST", "/sandboxes/" + id + "/fork", json::object()), 400, "fork");
  ExpectError(Call("PUT", "/sandboxes/" + id + "/network", json::object()), 400, "network");
}

}  // namespace
}  // namespace hangar::e2b
