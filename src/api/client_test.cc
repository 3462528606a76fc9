#include "hangar/api/client.h"

#include <csignal>
#include <cstring>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/api/json.h"
#include "hangar/api/signals.h"
#include "test_util.h"

namespace hangar::api {
namespace {

using namespace std::chrono_literals;
using testing::BaseUrl;
using testing::StartServer;
using testing::TestOptions;

uint16_t UnusedPort() {
  auto s = StartServer(Router());
  uint16_t port = s->port();
  (void)s->Shutdown(0ms);
  return port;
}

TEST(HttpClient, RejectsBadBaseUrls) {
  EXPECT_TRUE(HttpClient::Create("http://127.0.0.1:8080").ok());
  EXPECT_TRUE(HttpClient::Create("localhost:8080/").ok());
  EXPECT_TRUE(HttpClient::Create("http://[::1]:8080").ok());
  EXPECT_EQ(HttpClient::Create("https://x:1").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(HttpClient::Create("http://x:1/v1").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(HttpClient::Create("http://x:port").status().code(), Code::kInvalidArgument);
}

TEST(HttpClient, ConnectionRefusedNamesThePeer) {
  uint16_t port = UnusedPort();
  HttpClient c = *HttpClient::Create("http://127.0.0.1:" + std::to_string(port));
  Result<ClientResponse> r = c.Get("/v1/version");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(r.status().message(),
            "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
  EXPECT_EQ(c.Stream("GET", "/", {}, [](std::string_view) { return Status::Ok(); }).code(),
            Code::kUnavailable);
}

TEST(HttpClient, TimeoutIsDeadlineExceeded) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/slow",
                       [](const Request&) -> Result<Response> {
                         std::this_thread::sleep_for(600ms);
                         return Response::Text("late");
                       },
                       {.blocking = true})
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient c = *HttpClient::Create(BaseUrl(*server), {.timeout = 150ms});
  auto start = std::chrono::steady_clock::now();
  Result<ClientResponse> r = c.Get("/slow");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
  EXPECT_EQ(r.status().message(),
            "GET http://" + server->endpoint() + "/slow: timed out after 150 ms");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
}

TEST(HttpClient, RetriesOnceWhenTheServerClosedTheIdleConnection) {
  Router router;
  ASSERT_TRUE(
      router
          .Post("/echo",
                [](const Request& req) -> Result<Response> { return Response::Text(req.body()); })
          .ok());
  ServerOptions o = TestOptions();
  o.idle_timeout = 100ms;
  auto server = StartServer(std::move(router), o);
  HttpClient c = *HttpClient::Create(BaseUrl(*server));
  ASSERT_EQ(c.Do("POST", "/echo", "one").value().body, "one");
  std::this_thread::sleep_for(300ms);  // the server drops the kept-alive connection
  Result<ClientResponse> r = c.Do("POST", "/echo", "two");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "two");
}

TEST(HttpClient, SendsConfiguredHeaders) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/auth",
                       [](const Request& req) -> Result<Response> {
                         if (req.header("Authorization") != "Bearer k1")
                           return Status::Unauthenticated("no key");
                         return JsonResponse({{"team", "a"}});
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient anon = *HttpClient::Create(BaseUrl(*server));
  EXPECT_EQ(anon.CallJson("GET", "/auth").status(), Status::Unauthenticated("no key"));
  HttpClient keyed =
      *HttpClient::Create(BaseUrl(*server), {.headers = {{"Authorization", "Bearer k1"}}});
  EXPECT_EQ(keyed.CallJson("GET", "/auth").value(), (nlohmann::json{{"team", "a"}}));
}

TEST(HttpClient, StreamOfAnErrorResponseIsItsStatus) {
  auto server = StartServer(Router());
  HttpClient c = *HttpClient::Create(BaseUrl(*server));
  Status s =
      c.Stream("POST", "/v1/sandboxes/x/exec", "{}", [](std::string_view) { return Status::Ok(); });
  EXPECT_EQ(s, Status::NotFound("no route for POST /v1/sandboxes/x/exec"));
}

TEST(HttpClient, OpenGivesTheHeaderThenTheBodyAndKeepsTheConnection) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/teapot",
                       [](const Request&) -> Result<Response> {
                         Response r = Response::Text(std::string(50'000, 't'), 418, "text/tea");
                         r.SetHeader("X-Brew", "green");
                         return r;
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient c = *HttpClient::Create(BaseUrl(*server));
  auto head = c.Open("GET", "/teapot", "", {});
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 418);  // any status: the caller reads what it says
  EXPECT_EQ(head->header("X-Brew"), "green");
  EXPECT_EQ(head->body, "");
  std::string body;
  char buf[4096];
  for (;;) {
    auto n = c.ReadBody(buf, sizeof buf);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == 0) break;
    EXPECT_LE(*n, sizeof buf);
    body.append(buf, *n);
  }
  EXPECT_EQ(body, std::string(50'000, 't'));
  EXPECT_EQ(c.ReadBody(buf, sizeof buf).status().code(), Code::kFailedPrecondition);
  // The connection was kept; a half-read response is dropped by the next call.
  ASSERT_TRUE(c.Open("GET", "/teapot", "", {}).ok());
  ASSERT_TRUE(c.ReadBody(buf, 10).ok());
  auto again = c.Get("/teapot");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->body.size(), 50'000u);
  EXPECT_EQ(server->active_connections(), 1u);
}

TEST(HttpClient, OpenSendsABodyFromAReaderWithALengthOrChunked) {
  Router router;
  ASSERT_TRUE(router
                  .Post("/count",
                        [](const Request& req) -> Result<Response> {
                          return JsonResponse(
                              {{"size", req.body().size()},
                               {"chunked", req.has_header("Transfer-Encoding")},
                               {"all_x", req.body().find_first_not_of('x') == std::string::npos}});
                        },
                        {.max_body_bytes = 8 << 20})
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient c = *HttpClient::Create(BaseUrl(*server));
  auto reader_of = [](size_t total) {
    auto left = std::make_shared<size_t>(total);
    return [left](char* b, size_t n) -> Result<size_t> {
      size_t k = std::min(n, *left);
      std::memset(b, 'x', k);
      *left -= k;
      return k;
    };
  };
  for (bool chunked : {false, true}) {
    std::optional<uint64_t> length;
    if (!chunked) length = 3'000'000;
    auto head = c.Open("POST", "/count", reader_of(3'000'000), length, {});
    ASSERT_TRUE(head.ok()) << head.status().ToString();
    std::string body;
    char buf[256];
    for (auto n = c.ReadBody(buf, sizeof buf); n.ok() && *n > 0; n = c.ReadBody(buf, sizeof buf)) {
      body.append(buf, *n);
    }
    auto j = *ParseJson(body);
    EXPECT_EQ(j["size"], 3'000'000);
    EXPECT_EQ(j["chunked"], chunked);
    EXPECT_EQ(j["all_x"], true);
  }
  // A reader that produces less than the announced length is refused, naming the shortfall.
  auto shorter = c.Open("POST", "/count", reader_of(10), 20, {});
  EXPECT_EQ(shorter.status().code(), Code::kInvalidArgument);
  EXPECT_NE(shorter.status().message().find("10 of its 20 bytes"), std::string::npos);
  // A reader's error ends the call with that error.
  auto failing = c.Open(
      "POST", "/count",
      [](char*, size_t) -> Result<size_t> { return Status::Unavailable("source went away"); },
      std::nullopt, {});
  EXPECT_EQ(failing.status(), Status::Unavailable("source went away"));
  // An answer sent before the body was read (413) is still returned.
  auto big = c.Open("POST", "/count", reader_of(9 << 20), uint64_t{9 << 20}, {});
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  EXPECT_EQ(big->status, 413);
}

TEST(HttpClient, AbortHandleUnblocksAReadFromAnotherThread) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/never",
                       [](const Request&) -> Result<Response> {
                         auto [res, w] = Response::Stream(200, "text/plain");
                         (void)w->Write("x");
                         w->OnCancel([w = w] {});  // keeps the stream open until cancelled
                         return std::move(res);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient c = *HttpClient::Create(BaseUrl(*server));
  std::function<void()> abort = c.AbortHandle();
  auto head = c.Open("GET", "/never", "", {});
  ASSERT_TRUE(head.ok());
  char buf[16];
  ASSERT_EQ(*c.ReadBody(buf, sizeof buf), 1u);
  std::thread t([abort] {
    std::this_thread::sleep_for(100ms);
    abort();
  });
  auto start = std::chrono::steady_clock::now();
  auto n = c.ReadBody(buf, sizeof buf);  // would wait forever
  t.join();
  EXPECT_EQ(n.status().code(), Code::kCancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(c.Get("/never").status().code(), Code::kCancelled);  // aborted for good
  {
    HttpClient gone = *HttpClient::Create(BaseUrl(*server));
    abort = gone.AbortHandle();
  }
  abort();  // after the client is gone: harmless
}

TEST(SignalWaiter, ReturnsTheSignal) {
  SignalWaiter waiter;
  std::thread t([] {
    std::this_thread::sleep_for(50ms);
    std::raise(SIGTERM);
  });
  EXPECT_EQ(waiter.Wait(5s), SIGTERM);
  t.join();
  // A signal that arrived before Wait is not lost.
  std::raise(SIGINT);
  EXPECT_EQ(waiter.Wait(5s), SIGINT);
  EXPECT_EQ(waiter.Wait(50ms), 0);
  waiter.Cancel();
  EXPECT_EQ(waiter.Wait(), 0);
}

}  // namespace
}  // namespace hangar::api
