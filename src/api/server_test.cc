#include "hangar/api/server.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hangar/api/client.h"
#include "hangar/api/error.h"
#include "hangar/api/json.h"
#include "hangar/base/log.h"
#include "test_util.h"

namespace hangar::api {
namespace {

using namespace std::chrono_literals;
using testing::BaseUrl;
using testing::RawConn;
using testing::StartServer;
using testing::TestOptions;

Handler Ok(std::string text) {
  return [text](const Request&) -> Result<Response> { return Response::Text(text); };
}

HttpClient Client(const Server& s, ClientOptions o = {}) {
  Result<HttpClient> c = HttpClient::Create(BaseUrl(s), std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return std::move(c).value();
}

nlohmann::json BodyJson(const ClientResponse& r) {
  Result<nlohmann::json> j = r.Json();
  EXPECT_TRUE(j.ok()) << j.status().ToString() << " in " << r.body;
  return j.ok() ? *j : nlohmann::json();
}

TEST(Server, RoutesWithParamsAndQuery) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/v1/sandboxes/{id}/files/{path...}",
                       [](const Request& req) -> Result<Response> {
                         HANGAR_ASSIGN_OR_RETURN(QueryParams q, req.query());
                         return JsonResponse({{"id", req.param("id")},
                                              {"path", req.param("path")},
                                              {"mode", q.Get("mode").value_or("-")},
                                              {"ua", req.header("user-agent").substr(0, 7)}});
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  Result<ClientResponse> r = client.Get("/v1/sandboxes/sb%201/files/etc/x.conf?mode=r+w");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(
      BodyJson(*r),
      (nlohmann::json{{"id", "sb 1"}, {"path", "etc/x.conf"}, {"mode", "r w"}, {"ua", "hangar/"}}));
  r = client.Get("/v1/sandboxes/x/files/a?mode=%zz");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400);
}

TEST(Server, UnknownPathIs404AndWrongMethodIs405) {
  Router router;
  ASSERT_TRUE(router.Get("/v1/version", Ok("v")).ok());
  ASSERT_TRUE(router.Post("/v1/version", Ok("v")).ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);

  Result<ClientResponse> r = client.Get("/v1/nope");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(BodyJson(*r),
            (nlohmann::json{{"code", "not_found"}, {"message", "no route for GET /v1/nope"}}));
  r = client.Delete("/v1/version");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->header("allow"), "GET, HEAD, POST");
  EXPECT_EQ(BodyJson(*r)["code"], "unimplemented");
  // Errors keep the connection usable.
  r = client.Get("/v1/version");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "v");
}

TEST(Server, HandlerStatusesMapToHttpWithOneBodyShape) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/fail/{code}",
                       [](const Request& req) -> Result<Response> {
                         std::optional<Code> c = CodeFromName(req.param("code"));
                         if (!c) return Status::InvalidArgument("unknown code");
                         return Status(*c, "failed with " + std::string(req.param("code")));
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  for (Code code : {Code::kInvalidArgument, Code::kNotFound, Code::kAlreadyExists,
                    Code::kFailedPrecondition, Code::kPermissionDenied, Code::kUnauthenticated,
                    Code::kResourceExhausted, Code::kUnavailable, Code::kDeadlineExceeded,
                    Code::kAborted, Code::kCancelled, Code::kUnimplemented, Code::kInternal}) {
    std::string name(CodeName(code));
    Result<ClientResponse> r = client.Get("/fail/" + name);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, HttpStatusFor(code)) << name;
    EXPECT_EQ(BodyJson(*r), (nlohmann::json{{"code", name}, {"message", "failed with " + name}}));
    // And the client turns it back into the same Status.
    Result<nlohmann::json> j = client.CallJson("GET", "/fail/" + name);
    EXPECT_EQ(j.status(), Status(code, "failed with " + name));
  }
}

TEST(Server, MalformedJsonIs400NamingTheProblem) {
  Router router;
  ASSERT_TRUE(router
                  .Post("/v1/sandboxes",
                        [](const Request& req) -> Result<Response> {
                          HANGAR_ASSIGN_OR_RETURN(nlohmann::json body, ParseJsonBody(req));
                          return JsonResponse({{"got", body}}, 201);
                        })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  Result<ClientResponse> r = client.Do("POST", "/v1/sandboxes", R"({"template": "base",})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400);
  nlohmann::json body = BodyJson(*r);
  EXPECT_EQ(body["code"], "invalid_argument");
  EXPECT_EQ(body["message"].get<std::string>().rfind("invalid JSON at byte 21: ", 0), 0u) << body;
  r = client.Do("POST", "/v1/sandboxes", "");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(BodyJson(*r)["message"], "request body is empty; expected a JSON document");
  Result<nlohmann::json> ok = client.CallJson("POST", "/v1/sandboxes", {{"a", 1}});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)["got"]["a"], 1);
}

TEST(Server, HandlerExceptionIs500AndServerKeepsServing) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/throw",
                       [](const Request&) -> Result<Response> { throw std::runtime_error("boom"); })
                  .ok());
  ASSERT_TRUE(router
                  .Get("/throw-blocking", [](const Request&) -> Result<Response> { throw 42; },
                       {.blocking = true})
                  .ok());
  ASSERT_TRUE(router.Get("/ok", Ok("fine")).ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  for (const char* path : {"/throw", "/throw-blocking"}) {
    Result<ClientResponse> r = client.Get(path);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 500);
    EXPECT_EQ(BodyJson(*r)["code"], "internal");
  }
  Result<ClientResponse> r = client.Get("/ok");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "fine");
}

TEST(Server, HeadSendsHeadersOnly) {
  Router router;
  ASSERT_TRUE(router.Get("/x", Ok("hello")).ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  Result<ClientResponse> r = client.Do("HEAD", "/x", {}, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-length"), "5");
  EXPECT_EQ(r->body, "");
  r = client.Get("/x");  // the connection is still in sync
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "hello");
}

TEST(Server, HeaderTooLargeIs431) {
  Router router;
  ASSERT_TRUE(router.Get("/x", Ok("x")).ok());
  ServerOptions o = TestOptions();
  o.max_header_bytes = 4096;
  auto server = StartServer(std::move(router), o);
  RawConn c(server->port());
  ASSERT_TRUE(c.connected());
  c.Send("GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n");
  std::string resp = c.ReadResponse();
  EXPECT_EQ(resp.rfind("HTTP/1.1 431 ", 0), 0u) << resp;
  EXPECT_NE(resp.find("Connection: close"), std::string::npos);
  EXPECT_NE(resp.find(R"("code":"resource_exhausted")"), std::string::npos) << resp;
  EXPECT_TRUE(c.WaitClosed(2s));
}

TEST(Server, BodyTooLargeIs413AndTheConnectionCloses) {
  Router router;
  ASSERT_TRUE(router.Post("/small", Ok("ok")).ok());
  ASSERT_TRUE(router.Post("/upload", Ok("uploaded"), {.max_body_bytes = 8192}).ok());
  ServerOptions o = TestOptions();
  o.max_body_bytes = 1024;
  auto server = StartServer(std::move(router), o);

  {  // Declared length over the limit: refused before the body is read, body discarded.
    RawConn c(server->port());
    c.Send("POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\n\r\n" +
           std::string(4000, 'x'));
    std::string resp = c.ReadResponse();
    EXPECT_EQ(resp.rfind("HTTP/1.1 413 ", 0), 0u) << resp;
    EXPECT_NE(resp.find("Connection: close"), std::string::npos);
    EXPECT_NE(resp.find("request body exceeds 1024 bytes"), std::string::npos) << resp;
    EXPECT_TRUE(c.WaitClosed(2s));
  }
  {  // Expect: 100-continue: refused without the client sending the body.
    RawConn c(server->port());
    c.Send(
        "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 4000\r\nExpect: 100-continue\r\n\r\n");
    std::string resp = c.ReadResponse();
    EXPECT_EQ(resp.rfind("HTTP/1.1 413 ", 0), 0u) << resp;
  }
  {  // Chunked, so the size shows only while reading.
    RawConn c(server->port());
    std::string chunk(1000, 'y');
    c.Send("POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.Send("3e8\r\n" + chunk + "\r\n3e8\r\n" + chunk + "\r\n0\r\n\r\n");
    std::string resp = c.ReadResponse();
    EXPECT_EQ(resp.rfind("HTTP/1.1 413 ", 0), 0u) << resp;
    EXPECT_TRUE(c.WaitClosed(2s));
  }
  // The route's own limit, and a 100-continue that is accepted.
  HttpClient client = Client(*server);
  Result<ClientResponse> r = client.Do("POST", "/upload", std::string(5000, 'z'), "text/plain");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  RawConn c(server->port());
  c.Send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
  std::string interim = c.ReadResponse();
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  c.Send("abc");
  EXPECT_EQ(c.ReadResponse().rfind("HTTP/1.1 200 ", 0), 0u);
}

TEST(Server, MalformedRequestIs400) {
  Router router;
  auto server = StartServer(std::move(router));
  RawConn c(server->port());
  c.Send("GARBAGE\r\n\r\n");
  std::string resp = c.ReadResponse();
  EXPECT_EQ(resp.rfind("HTTP/1.1 400 ", 0), 0u) << resp;
  EXPECT_TRUE(c.WaitClosed(2s));
}

TEST(Server, ReadTimeoutClosesSlowlorisConnection) {
  Router router;
  ASSERT_TRUE(router.Get("/x", Ok("x")).ok());
  ServerOptions o = TestOptions();
  o.read_timeout = 200ms;
  auto server = StartServer(std::move(router), o);
  RawConn c(server->port());
  auto start = std::chrono::steady_clock::now();
  c.Send("GET /x HTTP/1.1\r\nHost: t\r\n");
  bool closed = false;
  // Keep trickling header bytes: an idle timer alone would never fire.
  for (int i = 0; i < 40 && !closed; ++i) {
    if (!c.Send("X-A: b\r\n")) {
      closed = true;
      break;
    }
    std::string sink;
    closed = !c.ReadSome(sink, 50ms);
  }
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_GE(elapsed, 150ms);
  EXPECT_LT(elapsed, 1500ms);
}

TEST(Server, SilentConnectionClosedByReadTimeout) {
  Router router;
  ServerOptions o = TestOptions();
  o.read_timeout = 200ms;
  auto server = StartServer(std::move(router), o);
  RawConn c(server->port());
  EXPECT_TRUE(c.WaitClosed(1500ms));
}

TEST(Server, IdleKeepAliveConnectionIsClosed) {
  Router router;
  ASSERT_TRUE(router.Get("/x", Ok("x")).ok());
  ServerOptions o = TestOptions();
  o.idle_timeout = 200ms;
  auto server = StartServer(std::move(router), o);
  RawConn c(server->port());
  c.Send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(c.ReadResponse().rfind("HTTP/1.1 200 ", 0), 0u);
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.WaitClosed(100ms));  // not before its time
  EXPECT_TRUE(c.WaitClosed(1500ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
}

TEST(Server, KeepAliveReusesTheConnectionAndPipelines) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/whoami",
                       [](const Request& req) -> Result<Response> {
                         return Response::Text(std::string(req.remote()));
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  std::string first;
  for (int i = 0; i < 5; ++i) {
    Result<ClientResponse> r = client.Get("/whoami");
    ASSERT_TRUE(r.ok());
    if (i == 0) first = r->body;
    EXPECT_EQ(r->body, first);  // same peer port: same connection
  }
  EXPECT_EQ(server->active_connections(), 1u);

  RawConn c(server->port());
  c.Send("GET /whoami HTTP/1.1\r\nHost: t\r\n\r\nGET /whoami HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(c.ReadResponse().rfind("HTTP/1.1 200 ", 0), 0u);
  EXPECT_EQ(c.ReadResponse().rfind("HTTP/1.1 200 ", 0), 0u);
}

TEST(Server, StreamedChunksArriveBeforeTheHandlerFinishes) {
  std::promise<void> client_saw_first;
  std::shared_future<void> saw = client_saw_first.get_future().share();
  std::atomic<bool> producer_timed_out{false};
  std::thread producer;
  Router router;
  ASSERT_TRUE(router
                  .Get("/stream",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] = Response::Stream(200, "text/plain");
                         producer = std::thread([writer = writer, saw, &producer_timed_out] {
                           (void)writer->Write("chunk1;");
                           // Chunk 2 exists only once the client has seen chunk 1.
                           if (saw.wait_for(5s) != std::future_status::ready) {
                             producer_timed_out = true;
                           }
                           (void)writer->Write("chunk2;");
                           writer->Close();
                         });
                         return std::move(response);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  std::string got;
  std::vector<std::string> pieces;
  Status s = client.Stream("GET", "/stream", {}, [&](std::string_view data) {
    pieces.emplace_back(data);
    got += data;
    if (got == "chunk1;") client_saw_first.set_value();
    return Status::Ok();
  });
  producer.join();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, "chunk1;chunk2;");
  EXPECT_FALSE(producer_timed_out);
  EXPECT_GE(pieces.size(), 2u);
  // The connection is reusable after a complete stream.
  EXPECT_EQ(client.Get("/stream").value().status, 200);
  producer.join();
}

TEST(Server, StreamBackpressureBoundsTheBuffer) {
  Router router;
  std::atomic<int> full_on_io_thread{0};
  ASSERT_TRUE(router
                  .Get("/inline",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] =
                             Response::Stream(200, "text/plain", {.buffer_bytes = 64});
                         // On an I/O thread Write must not block: it says the buffer is full.
                         EXPECT_TRUE(writer->Write(std::string(40, 'a')).ok());
                         Status s = writer->Write(std::string(40, 'b'));
                         if (s.code() == Code::kResourceExhausted) ++full_on_io_thread;
                         writer->Close();
                         return std::move(response);
                       })
                  .ok());
  ASSERT_TRUE(router
                  .Get("/inline-blocking",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] =
                             Response::Stream(200, "text/plain", {.buffer_bytes = 64});
                         // Off the I/O threads too: nothing drains before the handler returns.
                         EXPECT_TRUE(writer->Write(std::string(40, 'a')).ok());
                         Status s = writer->Write(std::string(40, 'b'));
                         if (s.code() == Code::kResourceExhausted) ++full_on_io_thread;
                         writer->Close();
                         return std::move(response);
                       },
                       {.blocking = true})
                  .ok());
  std::thread producer;
  ASSERT_TRUE(router
                  .Get("/many",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] =
                             Response::Stream(200, "text/plain", {.buffer_bytes = 256});
                         producer = std::thread([writer = writer] {
                           for (int i = 0; i < 2000; ++i) {
                             if (!writer->Write(std::to_string(i % 10) + "\n").ok()) return;
                           }
                           writer->Close();
                         });
                         return std::move(response);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  Result<ClientResponse> r = client.Get("/inline");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, std::string(40, 'a'));
  EXPECT_EQ(full_on_io_thread.load(), 1);
  r = client.Get("/inline-blocking");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, std::string(40, 'a'));
  EXPECT_EQ(full_on_io_thread.load(), 2);

  size_t total = 0;
  Status s = client.Stream("GET", "/many", {}, [&](std::string_view d) {
    total += d.size();
    return Status::Ok();
  });
  producer.join();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(total, 4000u);
}

TEST(Server, ClientHangupCancelsTheStream) {
  std::promise<void> cancelled;
  std::shared_ptr<StreamWriter> keep;
  Router router;
  ASSERT_TRUE(router
                  .Get("/tail",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] = Response::Stream(200, "text/plain");
                         writer->OnCancel([&] { cancelled.set_value(); });
                         (void)writer->Write("line\n");
                         keep = writer;  // the producer stays alive, idle
                         return std::move(response);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  Status s = client.Stream("GET", "/tail", {}, [](std::string_view) {
    return Status::Cancelled("enough");  // like Ctrl-C in `hangar exec`
  });
  EXPECT_EQ(s.code(), Code::kCancelled);
  EXPECT_EQ(cancelled.get_future().wait_for(2s), std::future_status::ready);
  EXPECT_TRUE(keep->cancelled());
  EXPECT_EQ(keep->Write("more").code(), Code::kCancelled);
}

TEST(Server, UnsentStreamIsCancelled) {
  std::shared_ptr<StreamWriter> orphan;
  Router router;
  ASSERT_TRUE(router
                  .Get("/changed-mind",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] = Response::Stream(200, "text/plain");
                         orphan = writer;
                         return Status::FailedPrecondition("sandbox is not running");
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  Result<ClientResponse> r = client.Get("/changed-mind");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 409);
  ASSERT_NE(orphan, nullptr);
  EXPECT_TRUE(orphan->cancelled());  // a producer would stop instead of blocking forever
  EXPECT_EQ(orphan->Write("x").code(), Code::kCancelled);
}

TEST(Server, StreamAbortedByProducerTruncatesTheResponse) {
  Router router;
  ASSERT_TRUE(router
                  .Get("/abort",
                       [](const Request&) -> Result<Response> {
                         auto [response, writer] = Response::Stream(200, "text/plain");
                         (void)writer->Write("partial");
                         writer->Close(Status::Internal("process vanished"));
                         return std::move(response);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  HttpClient client = Client(*server);
  std::string got;
  Status s = client.Stream("GET", "/abort", {}, [&](std::string_view d) {
    got += d;
    return Status::Ok();
  });
  EXPECT_FALSE(s.ok());  // the client can tell a truncated stream from a complete one
  EXPECT_EQ(got, "partial");
}

TEST(Server, ThousandConcurrentConnections) {
  constexpr int kConns = 1000;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 3 * kConns) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 4 * kConns);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  Router router;
  ASSERT_TRUE(router.Get("/x", Ok("x")).ok());
  auto server = StartServer(std::move(router));
  auto start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<RawConn>> conns;
  for (int i = 0; i < kConns; ++i) {
    conns.push_back(std::make_unique<RawConn>(server->port()));
    ASSERT_TRUE(conns.back()->connected()) << i;
  }
  // All open at once, on 2 threads.
  for (int i = 0; i < 200 && server->active_connections() < kConns; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(server->active_connections(), static_cast<size_t>(kConns));
  for (auto& c : conns) ASSERT_TRUE(c->Send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n"));
  int ok = 0;
  for (auto& c : conns) ok += c->ReadResponse(5s).rfind("HTTP/1.1 200 ", 0) == 0 ? 1 : 0;
  EXPECT_EQ(ok, kConns);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(Server, ConnectionLimitClosesNewConnections) {
  Router router;
  ASSERT_TRUE(router.Get("/x", Ok("x")).ok());
  ServerOptions o = TestOptions();
  o.max_connections = 2;
  auto server = StartServer(std::move(router), o);
  RawConn a(server->port()), b(server->port());
  for (int i = 0; i < 100 && server->active_connections() < 2; ++i)
    std::this_thread::sleep_for(5ms);
  RawConn c(server->port());
  EXPECT_TRUE(c.WaitClosed(2s));
  a.Send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(a.ReadResponse().rfind("HTTP/1.1 200 ", 0), 0u);
}

TEST(Server, GracefulShutdownFinishesInFlightRequests) {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Router router;
  ASSERT_TRUE(router
                  .Get("/slow",
                       [&](const Request&) -> Result<Response> {
                         entered.set_value();
                         released.wait();
                         return Response::Text("done");
                       },
                       {.blocking = true})
                  .ok());
  auto server = StartServer(std::move(router));
  uint16_t port = server->port();
  RawConn idle(port);  // an idle keep-alive connection is closed at once
  auto in_flight = std::async(std::launch::async, [&] {
    HttpClient client = Client(*server);
    return client.Get("/slow");
  });
  ASSERT_EQ(entered.get_future().wait_for(5s), std::future_status::ready);
  auto shutdown = std::async(std::launch::async, [&] { return server->Shutdown(5s); });
  EXPECT_TRUE(idle.WaitClosed(2s));
  // Stopped accepting while the request is still running.
  std::this_thread::sleep_for(50ms);
  Result<HttpClient> late = HttpClient::Create("http://127.0.0.1:" + std::to_string(port));
  Result<ClientResponse> refused = late->Get("/slow");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(),
            "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
  EXPECT_EQ(shutdown.wait_for(100ms), std::future_status::timeout);

  release.set_value();
  Result<ClientResponse> r = in_flight.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "done");
  EXPECT_EQ(r->header("connection"), "close");
  Status s = shutdown.get();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(server->Shutdown(1s).ok());  // idempotent
}

// Threads of this process (the test's own, the server's and any helper's).
size_t ThreadCount() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return 0;
  while (struct dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

// Blocking threads start on demand, one when every one so far is busy, never more than
// blocking_threads, and are kept; a server that never blocks starts none.
TEST(Server, BlockingThreadsStartOnDemandUpToTheLimit) {
  std::atomic<int> inside{0};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Router router;
  ASSERT_TRUE(router
                  .Get("/hold",
                       [&](const Request&) -> Result<Response> {
                         ++inside;
                         released.wait();
                         --inside;
                         return Response::Text("held");
                       },
                       {.blocking = true})
                  .ok());
  ASSERT_TRUE(router.Get("/inline", Ok("inline")).ok());
  ServerOptions o = TestOptions();
  o.threads = 1;
  o.blocking_threads = 3;
  const size_t before = ThreadCount();
  auto server = StartServer(std::move(router), o);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(ThreadCount(), before + 1) << "the I/O thread only";
  {
    HttpClient client = Client(*server);
    auto r = client.Get("/inline");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  EXPECT_EQ(ThreadCount(), before + 1) << "no blocking call yet, no blocking thread";

  // Five held at once: three run (the limit), two wait for a thread.
  std::vector<std::future<Result<ClientResponse>>> calls;
  for (int i = 0; i < 5; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return Client(*server).Get("/hold"); }));
  }
  for (int i = 0; i < 500 && inside.load() < 3; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(inside.load(), 3);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inside.load(), 3) << "never more than blocking_threads at once";
  release.set_value();
  for (auto& c : calls) {
    Result<ClientResponse> r = c.get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "held");
  }
  EXPECT_EQ(ThreadCount(), before + 1 + 3) << "kept once started";
  EXPECT_TRUE(server->Shutdown(5s).ok());
  server.reset();
  EXPECT_EQ(ThreadCount(), before) << "all joined";
}

// When no thread for blocking calls exists and none can be started (envd in a sandbox whose
// processes used up its pids limit), a blocking route answers 503 naming the problem instead of
// queueing the call forever; routes that do not block still work. Real limit: RLIMIT_NPROC as
// an unprivileged user, in a child process.
TEST(Server, BlockingRouteWithoutAThreadIs503) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (to become an unprivileged user)";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(10);
    Router router;
    if (!router.Get("/block", Ok("blocked"), {.blocking = true}).ok()) _exit(11);
    if (!router.Get("/inline", Ok("inline")).ok()) _exit(12);
    ServerOptions o = TestOptions();
    o.threads = 1;
    o.blocking_threads = 2;
    Server server(o, std::move(router));
    if (!server.Start().ok()) _exit(13);
    rlimit one{1, 1};  // this user already has more processes than that: no thread can start
    if (::setrlimit(RLIMIT_NPROC, &one) != 0) _exit(14);
    Result<HttpClient> client = HttpClient::Create(BaseUrl(server));
    if (!client.ok()) _exit(15);
    Result<ClientResponse> b = client->Get("/block");
    if (!b.ok() || b->status != 503) _exit(16);
    if (b->body.find("no thread to run GET /block") == std::string::npos) _exit(17);
    Result<ClientResponse> i = client->Get("/inline");
    if (!i.ok() || i->status != 200 || i->body != "inline") _exit(18);
    (void)server.Shutdown(2s);
    _exit(0);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st)) << "child died: " << st;
  EXPECT_EQ(WEXITSTATUS(st), 0) << "failed at step " << WEXITSTATUS(st);
}

TEST(Server, ShutdownAsksStreamsToEnd) {
  std::thread producer;
  Router router;
  ASSERT_TRUE(router
                  .Get("/follow",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] = Response::Stream(200, "text/plain");
                         producer = std::thread([writer = writer] {
                           (void)writer->Write("hello\n");
                           while (!writer->cancelled()) std::this_thread::sleep_for(5ms);
                           writer->Close();  // a clean end for the client
                         });
                         return std::move(response);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  std::promise<void> first;
  auto streaming = std::async(std::launch::async, [&] {
    HttpClient client = Client(*server);
    bool once = false;
    return client.Stream("GET", "/follow", {}, [&](std::string_view) {
      if (!once) first.set_value();
      once = true;
      return Status::Ok();
    });
  });
  ASSERT_EQ(first.get_future().wait_for(5s), std::future_status::ready);
  Status s = server->Shutdown(5s);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(streaming.get().ok());
  producer.join();
}

TEST(Server, ShutdownForcesStreamsAfterGrace) {
  std::shared_ptr<StreamWriter> stuck;
  Router router;
  ASSERT_TRUE(router
                  .Get("/stuck",
                       [&](const Request&) -> Result<Response> {
                         auto [response, writer] = Response::Stream(200, "text/plain");
                         (void)writer->Write("x");
                         stuck = writer;  // never closes, ignores cancel
                         return std::move(response);
                       })
                  .ok());
  auto server = StartServer(std::move(router));
  std::promise<void> first;
  auto streaming = std::async(std::launch::async, [&] {
    HttpClient client = Client(*server);
    bool once = false;
    return client.Stream("GET", "/stuck", {}, [&](std::string_view) {
      if (!once) first.set_value();
      once = true;
      return Status::Ok();
    });
  });
  ASSERT_EQ(first.get_future().wait_for(5s), std::future_status::ready);
  auto start = std::chrono::steady_clock::now();
  Status s = server->Shutdown(300ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded) << s.ToString();
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 2500ms);
  EXPECT_FALSE(streaming.get().ok());
  EXPECT_TRUE(stuck->cancelled());
}

TEST(Server, PortAlreadyInUseIsAStatus) {
  Router a;
  auto first = StartServer(std::move(a));
  ServerOptions o = TestOptions();
  o.port = first->port();
  Server second(o, Router());
  Status s = second.Start();
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(),
            "listen 127.0.0.1:" + std::to_string(first->port()) + ": Address already in use");
  EXPECT_TRUE(second.Shutdown(1s).ok());

  ServerOptions bad = TestOptions();
  bad.address = "not-an-ip";
  EXPECT_EQ(Server(bad, Router()).Start().code(), Code::kInvalidArgument);
}

TEST(Server, AccessLogHasOneLinePerRequest) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  log::SetOutputFd(fds[1]);
  {
    Router router;
    ASSERT_TRUE(router.Get("/logged", Ok("12345")).ok());
    ServerOptions o = TestOptions();
    o.access_log = true;
    auto server = StartServer(std::move(router), o);
    HttpClient client = Client(*server);
    ASSERT_TRUE(client.Get("/logged?x=1").ok());
    ASSERT_TRUE(client.Get("/missing").ok());
    ASSERT_TRUE(server->Shutdown(1s).ok());
  }
  log::SetOutputFd(-1);
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) out.append(buf, n);
  close(fds[0]);
  EXPECT_NE(out.find("method=GET"), std::string::npos) << out;
  EXPECT_NE(out.find("path=\"/logged?x=1\""), std::string::npos) << out;
  EXPECT_NE(out.find("status=200"), std::string::npos) << out;
  EXPECT_NE(out.find("status=404"), std::string::npos) << out;
  EXPECT_NE(out.find("bytes="), std::string::npos) << out;
  EXPECT_NE(out.find("remote=127.0.0.1:"), std::string::npos) << out;
}

}  // namespace
}  // namespace hangar::api
