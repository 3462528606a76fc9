#include "hangar/api/client.h"

#include <csignal>
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
