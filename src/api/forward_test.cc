#include "hangar/api/forward.h"

#include <atomic>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/api/client.h"
#include "hangar/api/error.h"
#include "hangar/api/json.h"
#include "hangar/base/tempdir.h"
#include "test_util.h"

namespace hangar::api {
namespace {

using namespace std::chrono_literals;
using testing::BaseUrl;
using testing::StartServer;
using testing::TestOptions;

// Waits up to `limit` for `pred`, polling; true if it held in time.
template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds limit = 3000ms) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

// A front server whose every route forwards to `upstream_url` with the request's own target.
std::unique_ptr<Server> StartFront(const std::string& upstream_url, ForwardOptions fo = {},
                                   std::vector<std::pair<std::string, std::string>> set = {}) {
  Router router;
  auto h = [upstream_url, fo, set](const Request& req) -> Result<Response> {
    return Forward(req, {upstream_url, std::string(req.target()), set}, fo);
  };
  RouteOptions ro{.max_body_bytes = size_t{64} << 20, .stream_body = true};
  EXPECT_TRUE(router.Get("/{rest...}", h, ro).ok());
  EXPECT_TRUE(router.Post("/{rest...}", h, ro).ok());
  return StartServer(std::move(router));
}

// The upstream echoes what it received as JSON.
Result<Response> Echo(const Request& req) {
  nlohmann::json headers = nlohmann::json::object();
  for (const auto& [k, v] : req.headers()) headers[std::string(k)] = std::string(v);
  return JsonResponse({{"method", req.method()},
                       {"target", req.target()},
                       {"headers", headers},
                       {"body_size", req.body().size()},
                       {"body_head", req.body().substr(0, 64)}});
}

TEST(Forward, PassesMethodTargetSelectedHeadersAndBody) {
  Router up;
  ASSERT_TRUE(up.Post("/echo", Echo).ok());
  ASSERT_TRUE(up.Get("/echo", Echo).ok());
  auto upstream = StartServer(std::move(up));
  auto front = StartFront(BaseUrl(*upstream),
                          {.request_headers = {"Content-Encoding", "X-Metadata-*", "X-Replaced"}},
                          {{"X-Access-Token", "upstream-secret"}, {"X-Replaced", "by-proxy"}});
  HttpClient c = *HttpClient::Create(BaseUrl(*front));
  RequestOptions ro;
  ro.content_type = "application/octet-stream";
  ro.headers = {{"X-Metadata-Owner", "me"},
                {"X-Access-Token", "client-token"},
                {"X-Replaced", "by-client"},
                {"X-Other", "dropped"},
                {"Content-Encoding", "gzip"}};
  auto r = c.Send("POST", "/echo?path=a%20b&x=1", std::string(3000, 'z'), ro);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = *r->Json();
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["target"], "/echo?path=a%20b&x=1");
  EXPECT_EQ(j["body_size"], 3000);
  auto& h = j["headers"];
  EXPECT_EQ(h.value("X-Metadata-Owner", ""), "me");
  EXPECT_EQ(h.value("Content-Type", ""), "application/octet-stream");
  EXPECT_EQ(h.value("Content-Encoding", ""), "gzip");
  EXPECT_EQ(h.value("X-Access-Token", ""), "upstream-secret");  // replaced, never the client's
  EXPECT_EQ(h.value("X-Replaced", ""), "by-proxy");
  EXPECT_FALSE(h.contains("X-Other"));
  EXPECT_EQ(h.value("Content-Length", ""), "3000");  // a known length stays a length

  auto g = c.Get("/echo");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->Json()->at("method"), "GET");
  EXPECT_EQ(g->Json()->at("body_size"), 0);
}

TEST(Forward, StatusAndSelectedResponseHeadersPassBack) {
  Router up;
  ASSERT_TRUE(up.Get("/gone", [](const Request&) -> Result<Response> {
                  Response r = Response::Text("{\"code\":404,\"message\":\"no file\"}", 404,
                                              "application/json; charset=x");
                  r.SetHeader("Content-Encoding", "identity");
                  r.SetHeader("Connect-Custom", "c1");
                  r.SetHeader("Content-Disposition", "attachment; filename=\"f\"");
                  r.SetHeader("X-Internal", "secret");
                  return r;
                }).ok());
  ASSERT_TRUE(up.Get("/empty", [](const Request&) -> Result<Response> {
                  return Response::NoContent();
                }).ok());
  auto upstream = StartServer(std::move(up));
  auto front = StartFront(BaseUrl(*upstream));
  HttpClient c = *HttpClient::Create(BaseUrl(*front));
  auto r = c.Get("/gone");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, "{\"code\":404,\"message\":\"no file\"}");
  EXPECT_EQ(r->header("Content-Type"), "application/json; charset=x");
  EXPECT_EQ(r->header("Content-Encoding"), "identity");
  EXPECT_EQ(r->header("Connect-Custom"), "c1");
  EXPECT_EQ(r->header("Content-Disposition"), "attachment; filename=\"f\"");
  EXPECT_EQ(r->header("X-Internal"), "");
  auto e = c.Get("/empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->status, 204);
  EXPECT_EQ(e->body, "");
}

TEST(Forward, StreamedBodyArrivesAsItIsProduced) {
  std::promise<void> first_seen;
  std::shared_future<void> first_seen_f = first_seen.get_future().share();
  Router up;
  ASSERT_TRUE(up.Get("/events", [first_seen_f](const Request&) -> Result<Response> {
                  auto [res, w] = Response::Stream(200, "application/connect+json");
                  res.SetHeader("Connect-Stream", "yes");
                  std::thread([w = w, first_seen_f] {
                    (void)w->Write("first;");
                    // The second piece only once the client holds the first: a buffering
                    // forwarder would deadlock here (bounded: the test then fails).
                    if (first_seen_f.wait_for(10s) != std::future_status::ready) {
                      w->Close(Status::DeadlineExceeded("first piece never arrived"));
                      return;
                    }
                    (void)w->Write("second;");
                    w->Close();
                  }).detach();
                  return std::move(res);
                }).ok());
  auto upstream = StartServer(std::move(up));
  auto front = StartFront(BaseUrl(*upstream));
  HttpClient c = *HttpClient::Create(BaseUrl(*front));
  auto head = c.Open("GET", "/events", "", {});
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("Content-Type"), "application/connect+json");
  EXPECT_EQ(head->header("Connect-Stream"), "yes");
  std::string got;
  bool signalled = false;
  char buf[256];
  for (;;) {
    auto n = c.ReadBody(buf, sizeof buf, 15s);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == 0) break;
    got.append(buf, *n);
    if (!signalled && got.find("first;") != std::string::npos) {
      EXPECT_EQ(got, "first;");
      signalled = true;
      first_seen.set_value();
    }
  }
  EXPECT_EQ(got, "first;second;");
  EXPECT_TRUE(Eventually([] { return ForwardStreamsInFlight() == 0; }));
}

TEST(Forward, LargeTransfersAreByteExactBothWays) {
  std::string data(9 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 7919) >> 3);
  Router up;
  ASSERT_TRUE(up.Get("/blob", [&data](const Request&) -> Result<Response> {
                  auto [res, w] = Response::Stream(200, "application/octet-stream");
                  std::thread([w = w, &data] {
                    for (size_t off = 0; off < data.size(); off += 100'000) {
                      if (!w->Write(data.substr(off, 100'000)).ok()) return;
                    }
                    w->Close();
                  }).detach();
                  return std::move(res);
                }).ok());
  std::atomic<size_t> received{0};
  std::atomic<bool> same{false};
  ASSERT_TRUE(up.Post("/blob",
                      [&](const Request& req) -> Result<Response> {
                        received = req.body().size();
                        same = req.body() == data;
                        return JsonResponse({{"ok", true}});
                      },
                      {.max_body_bytes = size_t{64} << 20, .blocking = true})
                  .ok());
  auto upstream = StartServer(std::move(up));
  auto front = StartFront(BaseUrl(*upstream));
  HttpClient c = *HttpClient::Create(BaseUrl(*front), {.max_response_bytes = 64 << 20});
  auto down = c.Get("/blob");
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_EQ(down->body.size(), data.size());
  EXPECT_TRUE(down->body == data);

  RequestOptions ro;
  ro.content_type = "application/octet-stream";
  auto upl = c.Send("POST", "/blob", data, ro);  // front route streams it on (stream_body)
  ASSERT_TRUE(upl.ok()) << upl.status().ToString();
  EXPECT_EQ(upl->status, 200) << upl->body;
  EXPECT_EQ(received.load(), data.size());
  EXPECT_TRUE(same.load());

  // A chunked upload (no Content-Length) goes on chunked.
  size_t off = 0;
  BodyReader reader = [&](char* b, size_t n) -> Result<size_t> {
    size_t k = std::min(n, data.size() - off);
    std::memcpy(b, data.data() + off, k);
    off += k;
    return k;
  };
  auto ch = c.Open("POST", "/blob", reader, std::nullopt, ro);
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  EXPECT_EQ(ch->status, 200);
  char buf[64];
  while (*c.ReadBody(buf, sizeof buf) > 0) {
  }
  EXPECT_EQ(received.load(), data.size());
  EXPECT_TRUE(same.load());
}

TEST(Forward, ClientThatLeavesAbortsTheUpstreamPromptly) {
  std::promise<void> cancelled;
  auto cancelled_f = cancelled.get_future();
  std::atomic<bool> once{false};
  Router up;
  ASSERT_TRUE(up.Get("/forever", [&](const Request&) -> Result<Response> {
                  auto [res, w] = Response::Stream(200, "application/connect+json");
                  (void)w->Write("started;");
                  w->OnCancel([&] {
                    if (!once.exchange(true)) cancelled.set_value();
                  });
                  // The producer writes nothing more and never closes: only a cancel
                  // ends this stream (the writer lives in the cancel-free lambda below).
                  std::thread([w = w] {
                    while (!w->cancelled()) std::this_thread::sleep_for(20ms);
                  }).detach();
                  return std::move(res);
                }).ok());
  auto upstream = StartServer(std::move(up));
  auto front = StartFront(BaseUrl(*upstream));
  {
    HttpClient c = *HttpClient::Create(BaseUrl(*front));
    std::string got;
    Status s = c.Stream("GET", "/forever", "", [&](std::string_view d) {
      got.append(d);
      return Status::Cancelled("client leaves");  // closes the connection
    });
    EXPECT_EQ(s.code(), Code::kCancelled);
    EXPECT_EQ(got, "started;");
  }
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(cancelled_f.wait_for(5s), std::future_status::ready)
      << "the upstream stream was never cancelled";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  EXPECT_TRUE(Eventually([] { return ForwardStreamsInFlight() == 0; }));
  EXPECT_TRUE(Eventually([&] { return upstream->active_connections() == 0; }));
}

TEST(Forward, UnreachableUpstreamIs502WithTheErrorBody) {
  uint16_t port;
  {
    auto s = StartServer(Router());
    port = s->port();
    (void)s->Shutdown(0ms);
  }
  auto front = StartFront("http://127.0.0.1:" + std::to_string(port));
  HttpClient c = *HttpClient::Create(BaseUrl(*front));
  auto r = c.Get("/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 502);
  auto j = r->Json();
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["code"], "unavailable");
  EXPECT_NE((*j)["message"].get<std::string>().find("Connection refused"), std::string::npos)
      << r->body;

  TempDir dir = *TempDir::Make("fwd");
  auto front2 = StartFront("unix:" + dir.path() + "/missing.sock");
  HttpClient c2 = *HttpClient::Create(BaseUrl(*front2));
  auto r2 = c2.Get("/x");
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->status, 502);
  EXPECT_EQ(r2->Json()->at("code"), "unavailable");
}

TEST(Forward, SlowUpstreamHeaderIs504) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Router up;
  ASSERT_TRUE(up.Get("/slow",
                     [released](const Request&) -> Result<Response> {
                       released.wait_for(5s);
                       return Response::Text("late");
                     },
                     {.blocking = true})
                  .ok());
  auto upstream = StartServer(std::move(up));
  auto front = StartFront(BaseUrl(*upstream), {.timeout = 200ms});
  HttpClient c = *HttpClient::Create(BaseUrl(*front));
  auto r = c.Get("/slow");
  release.set_value();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(r->Json()->at("code"), "deadline_exceeded");
}

TEST(Forward, UpstreamOnAUnixSocketAndOneThatDiesMidBody) {
  TempDir dir = *TempDir::Make("fwd");
  Router up;
  ASSERT_TRUE(up.Get("/partial", [](const Request&) -> Result<Response> {
                  auto [res, w] = Response::Stream(200, "application/octet-stream");
                  std::thread([w = w] {
                    (void)w->Write(std::string(1000, 'p'));
                    w->Close(Status::Internal("producer failed"));  // aborts the body
                  }).detach();
                  return std::move(res);
                }).ok());
  ASSERT_TRUE(up.Get("/ok", [](const Request&) -> Result<Response> {
                  return Response::Text("over unix");
                }).ok());
  ServerOptions o = TestOptions();
  o.unix_path = dir.path() + "/up.sock";
  auto upstream = StartServer(std::move(up), o);
  auto front = StartFront("unix:" + o.unix_path);
  HttpClient c = *HttpClient::Create(BaseUrl(*front));
  auto ok = c.Get("/ok");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->body, "over unix");
  std::string got;
  Status s = c.Stream("GET", "/partial", "", [&](std::string_view d) {
    got.append(d);
    return Status::Ok();
  });
  EXPECT_FALSE(s.ok()) << "a truncated upstream body must not look complete";
  EXPECT_EQ(got, std::string(1000, 'p'));
}

}  // namespace
}  // namespace hangar::api
