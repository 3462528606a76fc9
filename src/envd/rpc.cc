// The Connect plumbing of Service: routing, content types, envelopes, errors, authentication.
#include <algorithm>
#include <cstring>

#include "hangar/api/json.h"
#include "hangar/base/log.h"
#include "protocol.h"
#include "service.h"

namespace hangar::envd::internal {

namespace {

std::string_view MediaType(std::string_view content_type) {
  size_t semi = content_type.find(';');
  std::string_view t = content_type.substr(0, semi);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  return t;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

api::Response ConnectError(const Status& status, int http_status = 0) {
  api::Response r;
  r.status = http_status ? http_status : ConnectHttpStatus(status.code());
  r.content_type = "application/json";
  r.body = api::DumpJson(ErrorJson(status));
  return r;
}

}  // namespace

// --- ConnectStream -----------------------------------------------------------------------------

ConnectStream::~ConnectStream() {
  End(Status::Internal("the stream's producer ended without a result"));
}

bool ConnectStream::Send(const nlohmann::json& message) {
  {
    std::lock_guard lock(mu_);
    if (ended_) return false;
  }
  return writer_->Write(Envelope(0, api::DumpJson(message))).ok();
}

void ConnectStream::End(const Status& status) {
  {
    std::lock_guard lock(mu_);
    if (ended_) return;
    ended_ = true;
  }
  if (!status.ok() && status.code() != Code::kCancelled) {
    log::Debug("stream ended with an error", {{"error", status.ToString()}});
  }
  (void)writer_->Write(EndStreamEnvelope(status));
  writer_->Close();
}

// --- Service plumbing --------------------------------------------------------------------------

Status Service::CheckAccessToken(const api::Request& req) const {
  const std::string token = AccessToken();
  if (token.empty()) return Status::Ok();
  if (ConstantTimeEquals(req.header("X-Access-Token"), token)) return Status::Ok();
  return Status::Unauthenticated(
      "unauthorized access, please provide a valid access token or method signing if supported");
}

Result<User> Service::DefaultUser() {
  auto u = users_.Lookup(o_.default_user);
  if (u.ok()) return u;
  // A template without the default account (a plain Debian image) still works, as root.
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) {
    log::Warn("default user not found in the sandbox; using root", {{"user", o_.default_user}});
  }
  return users_.Lookup("root");
}

Result<User> Service::CallUser(const api::Request& req) {
  std::string_view auth = req.header("Authorization");
  if (auth.empty()) return DefaultUser();
  constexpr std::string_view kBasic = "Basic ";
  if (auth.size() < kBasic.size() || !IEquals(auth.substr(0, kBasic.size()), kBasic)) {
    return Status::Unauthenticated("Authorization must be Basic base64(\"<user>:\")");
  }
  auto decoded = Base64Decode(auth.substr(kBasic.size()));
  if (!decoded.ok()) return Status::Unauthenticated("Authorization: " + decoded.status().message());
  std::string name = decoded->substr(0, decoded->find(':'));
  if (name.empty()) return DefaultUser();
  auto u = users_.Lookup(name);
  if (!u.ok()) return Status::Unauthenticated("invalid username: '" + name + "'");
  return u;
}

api::Response Service::Unary(const api::Request& req, UnaryFn fn) {
  std::string_view type = MediaType(req.header("Content-Type"));
  if (!IEquals(type, kUnaryContentType)) {
    return ConnectError(Status::InvalidArgument("unsupported content type '" + std::string(type) +
                                                "'; this endpoint takes application/json"),
                        415);
  }
  std::string_view encoding = req.header("Content-Encoding");
  if (!encoding.empty() && !IEquals(encoding, "identity")) {
    return ConnectError(Status::Unimplemented("request compression '" + std::string(encoding) +
                                              "' is not supported"));
  }
  nlohmann::json msg = nlohmann::json::object();
  if (!req.body().empty()) {
    auto parsed = api::ParseJson(req.body());
    if (!parsed.ok()) return ConnectError(parsed.status());
    if (!parsed->is_object()) {
      return ConnectError(Status::InvalidArgument("the request message must be a JSON object"));
    }
    msg = std::move(*parsed);
  }
  Result<nlohmann::json> out = (this->*fn)(req, msg);
  if (!out.ok()) return ConnectError(out.status());
  api::Response r;
  r.content_type = "application/json";
  r.body = api::DumpJson(*out);
  return r;
}

api::Response Service::ServerStream(const api::Request& req, StreamFn fn) {
  std::string_view type = MediaType(req.header("Content-Type"));
  if (!IEquals(type, kStreamContentType)) {
    return ConnectError(Status::InvalidArgument("unsupported content type '" + std::string(type) +
                                                "'; this endpoint takes application/connect+json"),
                        415);
  }
  // Connect sends a stream's errors in its end-of-stream message with HTTP 200, so from here on
  // every problem, a malformed request included, is reported that way.
  auto [response, writer] = api::Response::Stream(200, std::string(kStreamContentType));
  auto stream = std::make_shared<ConnectStream>(writer);
  auto body = SingleEnvelope(req.body());
  if (!body.ok()) {
    stream->End(body.status());
    return std::move(response);
  }
  auto msg = api::ParseJson(*body);
  if (!msg.ok() || !msg->is_object()) {
    stream->End(msg.ok() ? Status::InvalidArgument("the request message must be a JSON object")
                         : msg.status());
    return std::move(response);
  }
  (this->*fn)(req, *msg, stream);
  return std::move(response);
}

api::Response Service::Dispatch(const api::Request& req) {
  if (Status auth = CheckAccessToken(req); !auth.ok()) return ConnectError(auth);
  std::string_view service = req.param("service");
  std::string_view method = req.param("method");
  struct UnaryRoute {
    std::string_view service, method;
    UnaryFn fn;
  };
  static const UnaryRoute kUnary[] = {
      {"process.Process", "List", &Service::List},
      {"process.Process", "SendInput", &Service::SendInput},
      {"process.Process", "SendSignal", &Service::SendSignal},
      {"process.Process", "CloseStdin", &Service::CloseStdin},
      {"process.Process", "Update", &Service::Update},
      {"filesystem.Filesystem", "Stat", &Service::Stat},
      {"filesystem.Filesystem", "MakeDir", &Service::MakeDir},
      {"filesystem.Filesystem", "Move", &Service::Move},
      {"filesystem.Filesystem", "ListDir", &Service::ListDir},
      {"filesystem.Filesystem", "Remove", &Service::Remove},
      {"filesystem.Filesystem", "CreateWatcher", &Service::CreateWatcher},
      {"filesystem.Filesystem", "GetWatcherEvents", &Service::GetWatcherEvents},
      {"filesystem.Filesystem", "RemoveWatcher", &Service::RemoveWatcher},
  };
  struct StreamRoute {
    std::string_view service, method;
    StreamFn fn;
  };
  static const StreamRoute kStreams[] = {
      {"process.Process", "Start", &Service::Start},
      {"process.Process", "Connect", &Service::Connect},
      {"filesystem.Filesystem", "WatchDir", &Service::WatchDir},
  };
  for (const auto& r : kUnary) {
    if (r.service == service && r.method == method) return Unary(req, r.fn);
  }
  for (const auto& r : kStreams) {
    if (r.service == service && r.method == method) return ServerStream(req, r.fn);
  }
  if (service == "process.Process" && method == "StreamInput") {
    // A client stream: every envelope of the (complete) body, then one response message.
    std::string_view type = MediaType(req.header("Content-Type"));
    if (!IEquals(type, kStreamContentType)) {
      return ConnectError(Status::InvalidArgument("StreamInput takes application/connect+json"),
                          415);
    }
    auto [response, writer] = api::Response::Stream(200, std::string(kStreamContentType));
    auto stream = std::make_shared<ConnectStream>(writer);
    Result<nlohmann::json> out = StreamInput(req, nlohmann::json());
    if (out.ok()) stream->Send(*out);
    stream->End(out.status());
    return std::move(response);
  }
  return ConnectError(
      Status::NotFound("no procedure /" + std::string(service) + "/" + std::string(method)));
}

}  // namespace hangar::envd::internal
