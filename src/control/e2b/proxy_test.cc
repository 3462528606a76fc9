// The traffic proxy end to end: HttpClient → control (AddSandboxTrafficRoutes) → a stand-in node
// (the node's envd route, forwarding with api::Forward) → a real envd process on TCP.
#include "hangar/e2b/proxy.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/api/client.h"
#include "hangar/api/forward.h"
#include "hangar/api/json.h"
#include "hangar/api/server.h"
#include "hangar/base/base64.h"
#include "hangar/base/child.h"
#include "hangar/base/clock.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"

namespace hangar::e2b {
namespace {

using namespace std::chrono_literals;

constexpr char kE2bToken[] = "e2b-token";    // what the SDK shows (envdAccessToken)
constexpr char kEnvdToken[] = "envd-token";  // envd's own, known to the node only
constexpr char kNodeToken[] = "node-token";
constexpr char kNodeSandbox[] = "node-sb-1";  // the id on the node (not the E2B id)

template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds limit = 3000ms) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

// envd beside this test binary (both in the build's bin/), or $ENVD.
std::string EnvdBinary() {
  if (const char* e = std::getenv("ENVD"); e != nullptr && *e != '\0') return e;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / "envd").string();
}

std::string Envelope(uint8_t flags, std::string_view payload) {
  std::string out(5, '\0');
  out[0] = static_cast<char>(flags);
  uint32_t n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) out[1 + i] = static_cast<char>((n >> (24 - 8 * i)) & 0xff);
  out.append(payload);
  return out;
}

struct Frame {
  uint8_t flags;
  nlohmann::json msg;
  std::chrono::steady_clock::time_point at;
};

// Splits a Connect stream into frames as bytes arrive.
class FrameReader {
 public:
  void Feed(std::string_view data, std::vector<Frame>& out) {
    buf_.append(data);
    while (buf_.size() >= 5) {
      uint32_t n = 0;
      for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<uint8_t>(buf_[1 + i]);
      if (buf_.size() < 5 + n) break;
      auto j = nlohmann::json::parse(buf_.substr(5, n), nullptr, false);
      out.push_back({static_cast<uint8_t>(buf_[0]), j, std::chrono::steady_clock::now()});
      buf_.erase(0, 5 + n);
    }
  }

 private:
  std::string buf_;
};

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = *TempDir::Make("e2b-proxy-");
    const std::string& r = root_.path();
    for (const char* d : {"/etc", "/home/user", "/root", "/tmp"}) ASSERT_TRUE(MakeDirs(r + d).ok());
    ASSERT_TRUE(WriteFile(r + "/etc/passwd",
                          "root:x:0:0:root:/root:/bin/sh\nuser:x:" + std::to_string(::getuid()) +
                              ":" + std::to_string(::getgid()) + "::/home/user:/bin/sh\n")
                    .ok());
    ASSERT_TRUE(WriteFile(r + "/etc/group", "root:x:0:\n").ok());
    ASSERT_TRUE(WriteFile(r + "/token", kEnvdToken).ok());
    StartEnvd();
    StartNode();
    StartControl();
  }

  void TearDown() override {
    if (control_) (void)control_->Shutdown(2s);
    if (node_) (void)node_->Shutdown(2s);
    if (envd_.running()) {
      (void)envd_.Signal(SIGTERM);
      (void)envd_.WaitFor(5s);
    }
  }

  void StartEnvd() {
    std::string bin = EnvdBinary();
    ASSERT_TRUE(std::filesystem::exists(bin))
        << "no envd at " << bin << " (build the `envd` target, or set $ENVD)";
    SpawnOptions so;
    so.capture_stdout = true;
    so.env = std::map<std::string, std::string>{
        {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}};
    auto c = Child::Spawn({bin, "--listen", "tcp:127.0.0.1:0", "--root", root_.path(),
                           "--access-token-file", root_.path() + "/token", "--log-level", "warn"},
                          so);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    envd_ = std::move(*c);
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{envd_.stdout_fd().get(), POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      char b[256];
      ssize_t n = ::read(envd_.stdout_fd().get(), b, sizeof b);
      if (n <= 0) break;
      line.append(b, static_cast<size_t>(n));
    }
    ASSERT_EQ(line.rfind("listening ", 0), 0u) << "envd did not start: '" << line << "'";
    envd_url_ = "http://" + line.substr(10, line.find('\n') - 10);
  }

  // The node's route (src/daemon/node_role.cc): its bearer token, then ForwardToEnvd — plus
  // bookkeeping.
  void StartNode() {
    api::Router router;
    auto h = [this](const api::Request& req) -> Result<api::Response> {
      if (req.header("Authorization") != std::string("Bearer ") + kNodeToken) {
        return Status::Unauthenticated("node API: missing or wrong bearer token");
      }
      {
        std::lock_guard lock(mu_);
        ++node_calls_;
        node_targets_.emplace_back(req.target());
        node_headers_.clear();
        for (const auto& [k, v] : req.headers()) node_headers_.emplace_back(k, v);
      }
      if (req.param("id") != kNodeSandbox) return Status::NotFound("no such sandbox");
      return ForwardToEnvd(req, req.param("path"), envd_url_, kEnvdToken);
    };
    api::RouteOptions ro{.max_body_bytes = size_t{1} << 30, .stream_body = true};
    ASSERT_TRUE(router.Get("/node/v1/sandboxes/{id}/envd/{path...}", h, ro).ok());
    ASSERT_TRUE(router.Post("/node/v1/sandboxes/{id}/envd/{path...}", h, ro).ok());
    api::ServerOptions o;
    o.threads = 2;
    o.access_log = false;
    node_ = std::make_unique<api::Server>(o, std::move(router));
    ASSERT_TRUE(node_->Start().ok());
  }

  void StartControl() {
    api::Router router;
    ProxyOptions po;
    po.clock = &clock_;
    po.resolve = [this](std::string_view id) -> Result<ProxyTarget> {
      control::Node node;
      node.url = "http://" + node_->endpoint();
      node.token = kNodeToken;
      if (id == "sbx1") return ProxyTarget{node, kNodeSandbox, kE2bToken};
      if (id == "open1") return ProxyTarget{node, kNodeSandbox, ""};
      if (id == "broken1") return Status::Unavailable("control store is down");
      return Status::NotFound("sandbox " + std::string(id) + " not found");
    };
    ASSERT_TRUE(AddSandboxTrafficRoutes(router, po).ok());
    api::ServerOptions o;
    o.threads = 2;
    o.access_log = false;
    control_ = std::make_unique<api::Server>(o, std::move(router));
    ASSERT_TRUE(control_->Start().ok());
  }

  // A client as the SDK is: sandbox headers and the access token on every call.
  api::HttpClient Client(std::string id = "sbx1", std::string token = kE2bToken) {
    api::ClientOptions co;
    co.max_response_bytes = 64 << 20;
    co.headers = {{"E2b-Sandbox-Id", id}, {"E2b-Sandbox-Port", "49983"}};
    if (!token.empty()) co.headers.emplace_back("X-Access-Token", token);
    return *api::HttpClient::Create("http://" + control_->endpoint(), co);
  }

  static Result<api::ClientResponse> Unary(api::HttpClient& c, const std::string& proc,
                                           const nlohmann::json& msg) {
    return c.Send("POST", "/" + proc, msg.dump(), {.content_type = "application/json"});
  }

  int node_calls() {
    std::lock_guard lock(mu_);
    return node_calls_;
  }

  TempDir root_;
  Child envd_;
  std::string envd_url_;
  std::unique_ptr<api::Server> node_, control_;
  FakeClock clock_;
  std::mutex mu_;
  int node_calls_ = 0;
  std::vector<std::string> node_targets_;
  std::vector<std::pair<std::string, std::string>> node_headers_;
};

TEST_F(ProxyTest, StartStreamArrivesFramedInOrderAsItHappens) {
  api::HttpClient c = Client();
  nlohmann::json start = {
      {"process", {{"cmd", "/bin/sh"}, {"args", {"-c", "echo a; sleep 0.3; echo b"}}}}};
  api::RequestOptions ro{.content_type = "application/connect+json",
                         .headers = {{"Connect-Protocol-Version", "1"},
                                     {"Authorization", "Basic " + Base64Encode("user:")}}};
  auto head = c.Open("POST", "/process.Process/Start", Envelope(0, start.dump()), ro);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  ASSERT_EQ(head->status, 200);
  EXPECT_EQ(head->header("Content-Type"), "application/connect+json");
  std::vector<Frame> frames;
  FrameReader fr;
  char buf[4096];
  for (;;) {
    auto n = c.ReadBody(buf, sizeof buf, 10s);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == 0) break;
    fr.Feed(std::string_view(buf, *n), frames);
  }
  ASSERT_GE(frames.size(), 5u);
  EXPECT_TRUE(frames[0].msg["event"].contains("start")) << frames[0].msg;
  std::string out;
  std::chrono::steady_clock::time_point a_at, b_at;
  size_t i = 1;
  for (; i < frames.size() && frames[i].msg["event"].contains("data"); ++i) {
    std::string d = *Base64Decode(frames[i].msg["event"]["data"].value("stdout", ""));
    if (d.find('a') != std::string::npos) a_at = frames[i].at;
    if (d.find('b') != std::string::npos) b_at = frames[i].at;
    out += d;
  }
  EXPECT_EQ(out, "a\nb\n");
  // Streamed, not buffered: "a" was delivered while the command still slept.
  EXPECT_GE(b_at - a_at, 150ms);
  ASSERT_LT(i + 1, frames.size());
  EXPECT_EQ(frames[i].msg["event"]["end"].value("exitCode", -1), 0) << frames[i].msg;
  EXPECT_EQ(frames.back().flags, 0x02);  // end of stream
  EXPECT_EQ(frames.back().msg, nlohmann::json::object());

  // The node got the user as X-Envd-Authorization, its own bearer token, and nothing of the
  // client's credentials or routing headers.
  std::lock_guard lock(mu_);
  auto has = [&](std::string_view name) {
    for (const auto& [k, v] : node_headers_) {
      if (api::HeaderMatches(k, {std::string(name)})) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("X-Envd-Authorization"));
  EXPECT_TRUE(has("Connect-Protocol-Version"));
  EXPECT_FALSE(has("X-Access-Token"));
  EXPECT_FALSE(has("E2b-*"));
  EXPECT_EQ(node_targets_.back(), "/node/v1/sandboxes/node-sb-1/envd/process.Process/Start");
}

TEST_F(ProxyTest, UnaryCallsAnswerAsEnvd) {
  ASSERT_TRUE(MakeDirs(root_.path() + "/tmp/d").ok());
  ASSERT_TRUE(WriteFile(root_.path() + "/tmp/d/x.txt", "12345").ok());
  api::HttpClient c = Client();
  auto list = Unary(c, "filesystem.Filesystem/ListDir", {{"path", "/tmp/d"}, {"depth", 1}});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->status, 200) << list->body;
  auto entries = (*list->Json())["entries"];
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0]["name"], "x.txt");
  auto stat = Unary(c, "filesystem.Filesystem/Stat", {{"path", "/tmp/d/x.txt"}});
  ASSERT_TRUE(stat.ok());
  ASSERT_EQ(stat->status, 200) << stat->body;
  EXPECT_EQ((*stat->Json())["entry"]["type"], "FILE_TYPE_FILE");
  // envd's own errors come back as they are.
  auto missing = Unary(c, "filesystem.Filesystem/Stat", {{"path", "/tmp/none"}});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ((*missing->Json())["code"], "not_found");
  auto health = c.Get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 204);
}

TEST_F(ProxyTest, TenMiBUploadAndDownloadAreByteExact) {
  std::string data(10 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  api::HttpClient c = Client();
  auto up = c.Send(
      "POST", "/files?path=%2Ftmp%2Fbig.bin", data,
      {.content_type = "application/octet-stream", .headers = {{"X-Metadata-Owner", "alice"}}});
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  ASSERT_EQ(up->status, 200) << up->body;
  EXPECT_EQ((*up->Json())[0]["path"], "/tmp/big.bin");
  auto down = c.Get("/files?path=/tmp/big.bin");
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  ASSERT_EQ(down->status, 200);
  EXPECT_EQ(down->body.size(), data.size());
  EXPECT_TRUE(down->body == data);
}

TEST_F(ProxyTest, GzipPassesThroughBothWays) {
  static const std::string kGz(
      "\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xcb\x48\xcd\xc9\xc9\x57\x48\xaf\xca\x2c\xe0\x02"
      "\x00\x39\x7c\x63\x56\x0b\x00\x00\x00",
      31);  // gzip of "hello gzip\n"
  api::HttpClient c = Client();
  auto up = c.Send(
      "POST", "/files?path=/tmp/g.txt", kGz,
      {.content_type = "application/octet-stream", .headers = {{"Content-Encoding", "gzip"}}});
  ASSERT_TRUE(up.ok());
  ASSERT_EQ(up->status, 200) << up->body;
  auto plain = c.Get("/files?path=/tmp/g.txt");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->body, "hello gzip\n");  // envd decoded the upload: it got the gzip bytes
  auto gz = c.Send("GET", "/files?path=/tmp/g.txt", "",
                   {.content_type = "", .headers = {{"Accept-Encoding", "gzip"}}});
  ASSERT_TRUE(gz.ok());
  ASSERT_EQ(gz->status, 200);
  EXPECT_EQ(gz->header("Content-Encoding"), "gzip");
  ASSERT_GE(gz->body.size(), 2u);
  EXPECT_EQ(gz->body.substr(0, 2), "\x1f\x8b");  // still compressed: nobody decoded it
}

TEST_F(ProxyTest, MissingOrWrongTokenIs401AndNeverReachesTheNode) {
  for (std::string token : {"", "wrong-token"}) {
    api::HttpClient c = Client("sbx1", token);
    auto rpc = Unary(c, "filesystem.Filesystem/ListDir", {{"path", "/tmp"}});
    ASSERT_TRUE(rpc.ok());
    EXPECT_EQ(rpc->status, 401);
    EXPECT_EQ((*rpc->Json())["code"], "unauthenticated");
    auto stream =
        c.Send("POST", "/process.Process/Start", Envelope(0, R"({"process":{"cmd":"/bin/true"}})"),
               {.content_type = "application/connect+json"});
    ASSERT_TRUE(stream.ok());
    EXPECT_EQ(stream->status, 401);
    auto files = c.Get("/files?path=/etc/passwd");
    ASSERT_TRUE(files.ok());
    EXPECT_EQ(files->status, 401);
    EXPECT_EQ((*files->Json())["code"], 401);
    auto upload =
        c.Send("POST", "/files?path=/tmp/evil", "x", {.content_type = "application/octet-stream"});
    ASSERT_TRUE(upload.ok());
    EXPECT_EQ(upload->status, 401);
  }
  EXPECT_EQ(node_calls(), 0);
  EXPECT_FALSE(std::filesystem::exists(root_.path() + "/tmp/evil"));
  // /health needs none; an insecure sandbox needs none anywhere.
  api::HttpClient anon = Client("sbx1", "");
  EXPECT_EQ(anon.Get("/health")->status, 204);
  api::HttpClient open = Client("open1", "");
  auto list = Unary(open, "filesystem.Filesystem/ListDir", {{"path", "/tmp"}});
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->status, 200) << list->body;
}

TEST_F(ProxyTest, SignedFileUrlsStandInForTheToken) {
  ASSERT_TRUE(WriteFile(root_.path() + "/tmp/s.txt", "signed").ok());
  api::HttpClient c = Client("sbx1", "");
  auto get = [&](const std::string& query) { return c.Get("/files?" + query)->status; };
  std::string sig = api::PercentEncode(FilesSignature("/tmp/s.txt", "read", "", kE2bToken));
  auto ok = c.Get("/files?path=%2Ftmp%2Fs.txt&signature=" + sig);
  ASSERT_TRUE(ok.ok());
  ASSERT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(ok->body, "signed");
  {
    std::lock_guard lock(mu_);
    EXPECT_EQ(node_targets_.back(), "/node/v1/sandboxes/node-sb-1/envd/files?path=%2Ftmp%2Fs.txt");
  }
  int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(clock_.WallNow().time_since_epoch()).count();
  std::string later = std::to_string(now + 60);
  EXPECT_EQ(get("path=/tmp/s.txt&signature_expiration=" + later + "&signature=" +
                api::PercentEncode(FilesSignature("/tmp/s.txt", "read", "", kE2bToken, later))),
            200);
  clock_.Advance(61s);  // the same URL, expired
  EXPECT_EQ(get("path=/tmp/s.txt&signature_expiration=" + later + "&signature=" +
                api::PercentEncode(FilesSignature("/tmp/s.txt", "read", "", kE2bToken, later))),
            401);
  int calls = node_calls();
  EXPECT_EQ(get("path=/tmp/other.txt&signature=" + sig), 401);            // signed for another path
  EXPECT_EQ(get("path=/tmp/s.txt&username=root&signature=" + sig), 401);  // another user
  EXPECT_EQ(get("path=/tmp/s.txt&signature=" +
                api::PercentEncode(FilesSignature("/tmp/s.txt", "write", "", kE2bToken))),
            401);  // a write signature does not read
  EXPECT_EQ(get("path=/tmp/s.txt&signature=" +
                api::PercentEncode(FilesSignature("/tmp/s.txt", "read", "", "guess"))),
            401);
  EXPECT_EQ(node_calls(), calls);
  // A write signature uploads.
  auto up = c.Send("POST",
                   "/files?path=/tmp/w.txt&signature=" +
                       api::PercentEncode(FilesSignature("/tmp/w.txt", "write", "", kE2bToken)),
                   "written", {.content_type = "application/octet-stream"});
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->status, 200) << up->body;
  EXPECT_EQ(*ReadFile(root_.path() + "/tmp/w.txt"), "written");
}

TEST_F(ProxyTest, UnknownSandboxWrongPortAndNoIdAnswerAsE2bsProxy) {
  api::HttpClient gone = Client("nosuch1");
  auto r = Unary(gone, "filesystem.Filesystem/ListDir", {{"path", "/tmp"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 502);
  EXPECT_EQ(*r->Json(), (nlohmann::json{{"sandboxId", "nosuch1"},
                                        {"message", "The sandbox was not found"},
                                        {"code", 502}}));
  EXPECT_EQ(gone.Get("/health")->status, 502);  // the SDK's probe: "not running"

  api::ClientOptions co;
  co.headers = {{"E2b-Sandbox-Id", "sbx1"}, {"E2b-Sandbox-Port", "8080"}};
  api::HttpClient port = *api::HttpClient::Create("http://" + control_->endpoint(), co);
  auto p = port.Get("/health");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->status, 502);
  EXPECT_EQ((*p->Json())["message"], "The sandbox is running but port is not open");

  api::HttpClient none = *api::HttpClient::Create("http://" + control_->endpoint());
  auto n = Unary(none, "filesystem.Filesystem/ListDir", {{"path", "/tmp"}});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->status, 400);
  EXPECT_EQ((*n->Json())["code"], "invalid_argument");

  api::HttpClient broken = Client("broken1");
  EXPECT_EQ(broken.Get("/health")->status, 503);
  EXPECT_EQ(node_calls(), 0);
}

TEST_F(ProxyTest, OnlyEnvdsPublicRoutesExist) {
  api::HttpClient c = Client();
  for (const char* path : {"/init", "/envs", "/metrics", "/upgrade", "/freeze", "/process.Process",
                           "/files/x", "/other.Service/Call"}) {
    auto g = c.Get(path);
    ASSERT_TRUE(g.ok());
    EXPECT_EQ(g->status, 404) << path;
    auto p = c.Send("POST", path, "{}", {});
    ASSERT_TRUE(p.ok());
    EXPECT_TRUE(p->status == 404 || p->status == 405) << path << " " << p->status;
  }
  auto bad = Unary(c, "process.Process/Sta..rt", nlohmann::json::object());
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 404);
  EXPECT_EQ(node_calls(), 0);
}

TEST_F(ProxyTest, ClientLeavingAStreamFreesTheUpstreams) {
  size_t before = api::ForwardStreamsInFlight();
  int pid = 0;
  {
    api::HttpClient c = Client();
    nlohmann::json start = {{"process", {{"cmd", "/bin/sh"}, {"args", {"-c", "sleep 30"}}}}};
    auto head = c.Open("POST", "/process.Process/Start", Envelope(0, start.dump()),
                       {.content_type = "application/connect+json"});
    ASSERT_TRUE(head.ok());
    ASSERT_EQ(head->status, 200);
    std::vector<Frame> frames;
    FrameReader fr;
    char buf[1024];
    while (frames.empty()) {
      auto n = c.ReadBody(buf, sizeof buf, 10s);
      ASSERT_TRUE(n.ok() && *n > 0);
      fr.Feed(std::string_view(buf, *n), frames);
    }
    pid = frames[0].msg["event"]["start"].value("pid", 0);
    ASSERT_GT(pid, 0);
    EXPECT_EQ(api::ForwardStreamsInFlight(), before + 2);  // control → node, node → envd
  }                                                        // the client goes away mid-stream
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(Eventually([&] { return api::ForwardStreamsInFlight() == before; }))
      << "forwarded streams still open: " << api::ForwardStreamsInFlight();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(Eventually([&] { return node_->active_connections() == 0; }));
  // The process itself keeps running (E2B's semantics: re-attach with Connect); end it.
  api::HttpClient c = Client();
  auto kill = Unary(c, "process.Process/SendSignal",
                    {{"process", {{"pid", pid}}}, {"signal", "SIGNAL_SIGKILL"}});
  ASSERT_TRUE(kill.ok());
  EXPECT_EQ(kill->status, 200) << kill->body;
}

TEST_F(ProxyTest, MalformedConnectRequestsGetEnvdsOwnAnswer) {
  api::ClientOptions direct_opts;
  direct_opts.headers = {{"X-Access-Token", kEnvdToken}};
  api::HttpClient direct = *api::HttpClient::Create(envd_url_, direct_opts);
  api::HttpClient proxied = Client();
  struct Case {
    std::string path, type, body;
  };
  for (const Case& k :
       {Case{"/process.Process/Start", "application/connect+json", "garbage"},
        Case{"/process.Process/Start", "application/connect+json", Envelope(0, "{not json")},
        Case{"/filesystem.Filesystem/Stat", "application/json", "{not json"},
        Case{"/filesystem.Filesystem/Stat", "text/plain", "{}"}}) {
    auto want = direct.Send("POST", k.path, k.body, {.content_type = k.type});
    auto got = proxied.Send("POST", k.path, k.body, {.content_type = k.type});
    ASSERT_TRUE(want.ok() && got.ok());
    EXPECT_EQ(got->status, want->status) << k.path << " " << k.body;
    EXPECT_EQ(got->header("Content-Type"), want->header("Content-Type"));
    EXPECT_EQ(got->body, want->body) << k.path << " " << k.body;
  }
}

}  // namespace
}  // namespace hangar::e2b
