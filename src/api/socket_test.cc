// Serving on a Unix socket path or on an inherited listening socket, and the client's unix:
// base URLs and per-request options.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>

#include <gtest/gtest.h>

#include "hangar/api/client.h"
#include "hangar/api/json.h"
#include "hangar/api/server.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "test_util.h"

namespace hangar::api {
namespace {

using namespace std::chrono_literals;
using testing::TestOptions;

// Echoes what the handler saw: method, remote, content type, one custom header, all headers.
Router EchoRouter() {
  Router router;
  Handler echo = [](const Request& req) -> Result<Response> {
    nlohmann::json headers = nlohmann::json::array();
    for (const auto& [k, v] : req.headers()) headers.push_back({std::string(k), std::string(v)});
    return JsonResponse({{"method", req.method()},
                         {"remote", req.remote()},
                         {"content_type", req.header("Content-Type")},
                         {"custom", req.header("X-Custom")},
                         {"host", req.header("Host")},
                         {"body", req.body()},
                         {"headers", headers}});
  };
  EXPECT_TRUE(router.Get("/echo", echo).ok());
  EXPECT_TRUE(router.Post("/echo", echo).ok());
  EXPECT_TRUE(router
                  .Get("/stream",
                       [](const Request&) -> Result<Response> {
                         auto [res, writer] = Response::Stream(200, "text/plain");
                         EXPECT_TRUE(writer->Write("a").ok());
                         EXPECT_TRUE(writer->Write("b").ok());
                         writer->Close();
                         return std::move(res);
                       })
                  .ok());
  return router;
}

UniqueFd ListeningSocket(int family, std::string* unix_path = nullptr) {
  int fd = ::socket(family, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  } else {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", unix_path->c_str());
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  EXPECT_EQ(::listen(fd, 16), 0);
  return UniqueFd(fd);
}

TEST(UnixSocket, ServesOnAPathAndRemovesItAtShutdown) {
  auto dir = TempDir::Make("api-unix-");
  ASSERT_TRUE(dir.ok());
  std::string path = dir->path() + "/api.sock";
  // A stale socket file from an earlier run is replaced.
  std::string stale = path;
  { UniqueFd old = ListeningSocket(AF_UNIX, &stale); }
  ASSERT_EQ(::access(path.c_str(), F_OK), 0);

  ServerOptions o = TestOptions();
  o.unix_path = path;
  Server server(o, EchoRouter());
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(server.endpoint(), "unix:" + path);
  EXPECT_EQ(server.port(), 0);
  auto client = HttpClient::Create("unix:" + path);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto r = client->Get("/echo");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  auto body = *r->Json();
  EXPECT_EQ(body["remote"], "unix");
  EXPECT_EQ(body["host"], "localhost");
  std::string streamed;
  ASSERT_TRUE(client
                  ->Stream("GET", "/stream", {},
                           [&](std::string_view d) {
                             streamed.append(d);
                             return Status::Ok();
                           })
                  .ok());
  EXPECT_EQ(streamed, "ab");
  ASSERT_TRUE(server.Shutdown(1s).ok());
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "socket file left behind";
  auto gone = client->Get("/echo");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), Code::kUnavailable);
  EXPECT_NE(gone.status().message().find("unix:" + path), std::string::npos)
      << gone.status().message();
}

TEST(UnixSocket, RefusesToReplaceARegularFile) {
  auto dir = TempDir::Make("api-unix-");
  ASSERT_TRUE(dir.ok());
  std::string path = dir->path() + "/not-a-socket";
  ASSERT_TRUE(WriteFile(path, "data").ok());
  ServerOptions o = TestOptions();
  o.unix_path = path;
  Server server(o, Router());
  Status st = server.Start();
  EXPECT_EQ(st.code(), Code::kAlreadyExists) << st.ToString();
  EXPECT_EQ(*ReadFile(path), "data");
  EXPECT_EQ(HttpClient::Create("unix:relative.sock").status().code(), Code::kInvalidArgument);
}

TEST(InheritedSocket, ServesOnAListeningTcpOrUnixDescriptor) {
  auto dir = TempDir::Make("api-fd-");
  ASSERT_TRUE(dir.ok());
  std::string unix_path = dir->path() + "/fd.sock";
  for (int family : {AF_INET, AF_UNIX}) {
    UniqueFd listener = ListeningSocket(family, &unix_path);
    int fd = listener.get();
    ServerOptions o = TestOptions();
    o.listen_fd = listener.Release();
    Server server(o, EchoRouter());
    ASSERT_TRUE(server.Start().ok());
    std::string base;
    if (family == AF_INET) {
      EXPECT_GT(server.port(), 0);
      EXPECT_EQ(server.endpoint(), "127.0.0.1:" + std::to_string(server.port()));
      base = "http://" + server.endpoint();
    } else {
      EXPECT_EQ(server.endpoint(), "unix:" + unix_path);
      base = server.endpoint();
    }
    auto client = HttpClient::Create(base);
    auto r = client->Get("/echo");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    ASSERT_TRUE(server.Shutdown(1s).ok());
    EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the server owns and closes the descriptor";
    // The node's socket stays where the node made it: the server did not create it.
    if (family == AF_UNIX) {
      EXPECT_EQ(::access(unix_path.c_str(), F_OK), 0);
    }
  }
}

TEST(InheritedSocket, RejectsANonListeningDescriptor) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  ServerOptions o = TestOptions();
  o.listen_fd = fd;
  Server server(o, Router());
  Status st = server.Start();
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("fd " + std::to_string(fd)), std::string::npos) << st.message();
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "closed even though Start failed";
}

TEST(RequestOptions, ContentTypeAndHeadersPerRequest) {
  auto server = testing::StartServer(EchoRouter());
  ClientOptions co;
  co.headers = {{"X-Custom", "from-client"}, {"X-Other", "kept"}};
  auto client = HttpClient::Create(testing::BaseUrl(*server), co);
  RequestOptions ro;
  ro.content_type = "application/connect+json";
  ro.headers = {{"X-Custom", "per-request"}};
  auto r = client->Send("POST", "/echo", "", ro);  // an empty POST still carries its type
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto body = *r->Json();
  EXPECT_EQ(body["content_type"], "application/connect+json");
  EXPECT_EQ(body["custom"], "per-request");
  bool other = false;
  int custom = 0;
  for (const auto& h : body["headers"]) {
    if (h[0] == "X-Other" && h[1] == "kept") other = true;
    if (h[0] == "X-Custom") ++custom;
  }
  EXPECT_TRUE(other);
  EXPECT_EQ(custom, 1);
  // Plain Do keeps its behaviour: no body, no content type.
  r = client->Do("GET", "/echo");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r->Json())["content_type"], "");
  // Stream with options.
  std::string got;
  ASSERT_TRUE(client
                  ->Stream("POST", "/echo", "x", ro,
                           [&](std::string_view d) {
                             got.append(d);
                             return Status::Ok();
                           })
                  .ok());
  EXPECT_EQ(nlohmann::json::parse(got)["content_type"], "application/connect+json");
}

TEST(StreamBody, HandlerReadsTheBodyAsItArrives) {
  Router router;
  std::atomic<size_t> largest_piece{0};
  ASSERT_TRUE(router
                  .Post("/upload",
                        [&](const Request& req) -> Result<Response> {
                          EXPECT_TRUE(req.body().empty());
                          uint64_t sum = 0, total = 0;
                          char buf[4096];
                          for (;;) {
                            HANGAR_ASSIGN_OR_RETURN(size_t n, req.ReadBody(buf, sizeof buf));
                            if (n == 0) break;
                            largest_piece = std::max<size_t>(largest_piece, n);
                            for (size_t i = 0; i < n; ++i)
                              sum += static_cast<unsigned char>(buf[i]);
                            total += n;
                          }
                          return JsonResponse({{"total", total}, {"sum", sum}});
                        },
                        {.max_body_bytes = 64 << 20, .stream_body = true})
                  .ok());
  ASSERT_TRUE(router
                  .Post("/early",
                        [](const Request& req) -> Result<Response> {
                          char buf[10];
                          HANGAR_ASSIGN_OR_RETURN(size_t n, req.ReadBody(buf, sizeof buf));
                          return Response::Text(std::string(buf, n), 400);
                        },
                        {.max_body_bytes = 64 << 20, .stream_body = true})
                  .ok());
  ASSERT_TRUE(router
                  .Post("/small",
                        [](const Request& req) -> Result<Response> {
                          std::string all;
                          char buf[3];
                          for (;;) {
                            HANGAR_ASSIGN_OR_RETURN(size_t n, req.ReadBody(buf, sizeof buf));
                            if (n == 0) break;
                            all.append(buf, n);
                          }
                          return Response::Text(all);
                        })
                  .ok());
  ServerOptions o = TestOptions();
  o.max_body_bytes = 1 << 20;  // the streamed route has its own, larger limit
  auto server = testing::StartServer(std::move(router), o);
  auto client = HttpClient::Create(testing::BaseUrl(*server));
  std::string big(20 << 20, '\0');
  uint64_t expect_sum = 0;
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>(i * 7 + (i >> 12));
    expect_sum += static_cast<unsigned char>(big[i]);
  }
  RequestOptions ro;
  ro.content_type = "application/octet-stream";
  auto r = client->Send("POST", "/upload", big, ro);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ((*r->Json())["total"], big.size());
  EXPECT_EQ((*r->Json())["sum"], expect_sum);
  EXPECT_LE(largest_piece.load(), 4096u);
  // The connection stays usable after a fully read streamed body.
  auto again = client->Send("POST", "/upload", "abc", ro);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again->Json())["total"], 3);
  // A handler that stops reading early still gets its answer through (the server drains up to
  // its linger bound, then closes the connection).
  auto early = client->Send("POST", "/early", std::string(512 << 10, 'e'), ro);
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  EXPECT_EQ(early->status, 400);
  EXPECT_EQ(early->body, "eeeeeeeeee");
  // ReadBody on an ordinary route hands out the buffered body.
  auto small = client->Send("POST", "/small", "hello world", ro);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->body, "hello world");
}

}  // namespace
}  // namespace hangar::api
