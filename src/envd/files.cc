// GET /files and POST /files: file bytes in and out, E2B's envd.yaml semantics.
//
//  - path: relative to the user's home ("~" expanded); username: the user (ownership, home),
//    default user when absent. Errors are {"code": <HTTP status>, "message": "..."} as in
//    envd.yaml (not Connect's shape: these are plain HTTP routes there too).
//  - Download: 404 missing, 400 a directory, 406 when Accept-Encoding excludes both identity
//    and gzip; gzip when the client prefers it. Files up to kInlineBytes are answered whole
//    with Content-Length; larger ones are streamed (chunked) from a producer thread.
//  - Upload: application/octet-stream (path required) or multipart/form-data parts named
//    "file" (path from the query, else the part's filename), read as they arrive and written
//    straight to disk (never whole in memory); Content-Encoding: gzip accepted;
//    parents created owned by the user; each file written to a temporary name in the same
//    directory, owned by the user, then renamed over the target — readers see the old or the
//    new file, never a half-written one; an existing file keeps its mode; a symlink target is
//    written through (inside the root). X-Metadata-<key> headers become user.e2b.<key>
//    xattrs. ENOSPC/EDQUOT → 507.
//  - Signed URLs: with an access token configured and no X-Access-Token header, `signature` =
//    "v1_" + base64raw(sha256("<path>:<read|write>:<username>:<token>[:<expiration>]")) and,
//    if given, `signature_expiration` (unix seconds, not in the past) authorize the call.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <ctime>
#include <thread>

#include "entry.h"
#include "hangar/api/json.h"
#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "protocol.h"
#include "service.h"
#include "sha256.h"
#include "upload.h"

namespace hangar::envd::internal {

namespace {

constexpr size_t kInlineBytes = 4 << 20;
constexpr size_t kReadChunk = 256 << 10;

api::Response FilesError(int http_status, const std::string& message) {
  api::Response r;
  r.status = http_status;
  r.content_type = "application/json";
  r.body = api::DumpJson({{"code", http_status}, {"message", message}});
  return r;
}

int FilesHttpStatus(const Status& s) {
  if ((s.sys_errno() == ENOSPC || s.sys_errno() == EDQUOT)) return 507;
  switch (s.code()) {
    case Code::kInvalidArgument:
    case Code::kFailedPrecondition:
      return 400;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kResourceExhausted:
      return 507;
    default:
      return 500;
  }
}

api::Response FilesError(const Status& s) {
  int code = FilesHttpStatus(s);
  std::string message = s.message();
  if (code == 507) message = "not enough disk space available: " + message;
  return FilesError(code, message);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Streaming gzip (the gzip wrapper, not raw zlib) for downloads.
class Gzip {
 public:
  Gzip() { ok_ = deflateInit2(&z_, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK; }
  ~Gzip() {
    if (ok_) deflateEnd(&z_);
  }
  bool ok() const { return ok_; }
  std::string Compress(std::string_view in, bool last) {
    std::string out;
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    char buf[64 << 10];
    int rc;
    do {
      z_.next_out = reinterpret_cast<Bytef*>(buf);
      z_.avail_out = sizeof buf;
      rc = deflate(&z_, last ? Z_FINISH : Z_NO_FLUSH);
      out.append(buf, sizeof buf - z_.avail_out);
    } while (z_.avail_out == 0 || (last && rc != Z_STREAM_END && rc != Z_STREAM_ERROR));
    return out;
  }

 private:
  z_stream z_{};
  bool ok_ = false;
};

// The request body as a BodySource (read as it arrives on streamed routes).
class RequestSource final : public BodySource {
 public:
  explicit RequestSource(const api::Request& req) : req_(req) {}
  Result<size_t> Read(char* buffer, size_t size) override { return req_.ReadBody(buffer, size); }

 private:
  const api::Request& req_;
};

// The current part of a multipart body.
class PartSource final : public BodySource {
 public:
  explicit PartSource(MultipartReader* parts) : parts_(parts) {}
  Result<size_t> Read(char* buffer, size_t size) override { return parts_->Read(buffer, size); }

 private:
  MultipartReader* parts_;
};

}  // namespace

Status Service::CheckFilesAuth(const api::Request& req, std::string_view operation) const {
  const std::string token = AccessToken();
  if (token.empty()) return Status::Ok();
  std::string_view header = req.header("X-Access-Token");
  if (!header.empty()) {
    if (ConstantTimeEquals(header, token)) return Status::Ok();
    return Status::Unauthenticated("access token present in header but does not match");
  }
  HANGAR_ASSIGN_OR_RETURN(api::QueryParams q, req.query());
  auto signature = q.Get("signature");
  if (!signature) {
    return Status::Unauthenticated(
        "unauthorized access, please provide a valid access token or method signing if supported");
  }
  std::string path(q.Get("path").value_or(""));
  std::string username(q.Get("username").value_or(""));
  std::string text = path + ":" + std::string(operation) + ":" + username + ":" + token;
  auto expiration = q.Get("signature_expiration");
  if (expiration) text += ":" + std::string(*expiration);
  std::string expected = "v1_" + Base64RawEncode(Sha256(text));
  if (!ConstantTimeEquals(*signature, expected)) {
    return Status::Unauthenticated("invalid signature");
  }
  if (expiration) {
    char* end = nullptr;
    std::string e(*expiration);
    long long exp = std::strtoll(e.c_str(), &end, 10);
    if (e.empty() || *end != '\0') return Status::Unauthenticated("invalid signature expiration");
    if (exp < static_cast<long long>(std::time(nullptr))) {
      return Status::Unauthenticated("signature is already expired");
    }
  }
  return Status::Ok();
}

Result<api::Response> Service::GetFiles(const api::Request& req) {
  if (Status s = CheckFilesAuth(req, "read"); !s.ok()) return FilesError(401, s.message());
  auto q = req.query();
  if (!q.ok()) return FilesError(400, q.status().message());
  std::string raw_path(q->Get("path").value_or(""));
  auto username = q->Get("username");
  Result<User> user = username && !username->empty() ? users_.Lookup(*username) : DefaultUser();
  if (!user.ok()) {
    return FilesError(401, "error looking up user '" + std::string(username.value_or("")) +
                               "': " + user.status().message());
  }
  auto path = Root::Resolve(raw_path, user->home);
  if (!path.ok()) return FilesError(400, path.status().message());
  auto st = root_.Stat(*path);
  if (!st.ok()) {
    if (st.status().code() == Code::kNotFound) {
      return FilesError(404, "path '" + *path + "' does not exist");
    }
    return FilesError(st.status());
  }
  if (S_ISDIR(st->st_mode)) return FilesError(400, "path '" + *path + "' is a directory");
  std::string encoding = ChooseEncoding(req.header("Accept-Encoding"));
  if (encoding.empty()) {
    return FilesError(406, "no acceptable encoding found, supported: [identity, gzip]");
  }
  auto fd = root_.OpenAt(*path, O_RDONLY);
  if (!fd.ok()) return FilesError(fd.status());
  std::string name = path->substr(path->rfind('/') + 1);
  auto headers = [&](api::Response& r) {
    r.content_type = "application/octet-stream";
    r.SetHeader("Content-Disposition", "inline; filename=\"" + name + "\"");
    r.SetHeader("Vary", "Accept-Encoding");
    if (encoding == "gzip") r.SetHeader("Content-Encoding", "gzip");
  };

  if (static_cast<size_t>(st->st_size) <= kInlineBytes) {
    std::string data;
    data.reserve(static_cast<size_t>(st->st_size));
    char buf[64 << 10];
    for (;;) {
      ssize_t n = ::read(fd->get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return FilesError(Status::FromErrno(errno, "read(" + *path + ")"));
      if (n == 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
    api::Response r;
    headers(r);
    if (encoding == "gzip") {
      Gzip gz;
      if (!gz.ok()) return FilesError(500, "deflateInit2 failed");
      r.body = gz.Compress(data, true);
    } else {
      r.body = std::move(data);
    }
    return r;
  }

  // Large: stream it, so memory stays bounded by the stream buffer, not the file.
  auto [response, writer] = api::Response::Stream(200, "application/octet-stream");
  headers(response);
  auto file = std::make_shared<UniqueFd>(std::move(*fd));
  std::string where = *path;
  ++stream_threads_;
  std::thread([this, writer, file, gzip = encoding == "gzip", where] {
    std::unique_ptr<Gzip> gz;
    if (gzip) gz = std::make_unique<Gzip>();
    std::string buf(kReadChunk, '\0');
    Status result;
    for (;;) {
      ssize_t n = ::read(file->get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        result = Status::FromErrno(errno, "read(" + where + ")");
        break;
      }
      std::string_view piece(buf.data(), static_cast<size_t>(n));
      std::string chunk = gz ? gz->Compress(piece, n == 0) : std::string(piece);
      if (!chunk.empty() && !writer->Write(std::move(chunk)).ok()) {
        result = Status::Cancelled("client went away");
        break;
      }
      if (n == 0) break;
    }
    writer->Close(result);
    --stream_threads_;
  }).detach();
  return std::move(response);
}

Result<nlohmann::json> Service::WriteOneFile(const std::string& requested, const User& user,
                                             BodySource& data, const Metadata& metadata) {
  std::string path = requested;
  if (auto lst = root_.Lstat(path); lst.ok() && S_ISLNK(lst->st_mode)) {
    // Write through the link, as a plain open would, but never outside the root.
    if (auto real = root_.RealPath(path); real.ok()) path = *real;
  }
  if (auto st = root_.Stat(path); st.ok() && S_ISDIR(st->st_mode)) {
    return Status::InvalidArgument("path is a directory: " + path);
  }
  if (path == "/") return Status::InvalidArgument("path is a directory: /");
  std::string parent = path.substr(0, path.rfind('/'));
  HANGAR_TRY(root_.MakeDirs(parent.empty() ? "/" : parent, user.uid, user.gid));
  HANGAR_ASSIGN_OR_RETURN(Root::Parent dir, root_.OpenParent(path));
  mode_t mode = 0644;
  struct stat old {};
  if (::fstatat(dir.dir.get(), dir.name.c_str(), &old, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISREG(old.st_mode)) {
    mode = old.st_mode & 07777;
  }
  std::string tmp = "." + dir.name + ".envd-" + RandomHex(8);
  int fd = ::openat(dir.dir.get(), tmp.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "open(" + parent + "/" + tmp + ")");
  UniqueFd file(fd);
  auto discard = [&](Status s) {
    ::unlinkat(dir.dir.get(), tmp.c_str(), 0);
    return s;
  };
  std::string buf(kReadChunk, '\0');
  for (;;) {
    Result<size_t> n = data.Read(buf.data(), buf.size());
    if (!n.ok()) return discard(n.status());
    if (*n == 0) break;
    if (Status s = WriteAll(file.get(), std::string_view(buf.data(), *n)); !s.ok()) {
      return discard(s.With("writing " + path));
    }
  }
  if (::fchown(file.get(), user.uid, user.gid) != 0) {
    return discard(Status::FromErrno(errno, "fchown(" + path + ", " + std::to_string(user.uid) +
                                                ":" + std::to_string(user.gid) + ")"));
  }
  if (::fchmod(file.get(), mode) != 0)
    return discard(Status::FromErrno(errno, "fchmod(" + path + ")"));
  if (Status s = WriteMetadata(file.get(), metadata); !s.ok()) {
    // Filesystems without user xattrs (tmpfs before 6.6) keep the data, as E2B's envd does.
    if (s.sys_errno() != ENOTSUP) return discard(s);
    log::Warn("metadata not stored: filesystem has no user xattrs", {{"path", path}});
  }
  if (::renameat(dir.dir.get(), tmp.c_str(), dir.dir.get(), dir.name.c_str()) != 0) {
    return discard(Status::FromErrno(errno, "rename(" + tmp + ", " + path + ")"));
  }
  nlohmann::json entry = {
      {"path", requested}, {"name", requested.substr(requested.rfind('/') + 1)}, {"type", "file"}};
  Metadata stored = ReadMetadata(file.get());
  if (!stored.empty()) entry["metadata"] = stored;
  return entry;
}

Result<api::Response> Service::PostFiles(const api::Request& req) {
  if (Status s = CheckFilesAuth(req, "write"); !s.ok()) return FilesError(401, s.message());
  auto q = req.query();
  if (!q.ok()) return FilesError(400, q.status().message());
  auto query_path = q->Get("path");
  auto username = q->Get("username");
  Result<User> user = username && !username->empty() ? users_.Lookup(*username) : DefaultUser();
  if (!user.ok()) {
    return FilesError(401, "error looking up user '" + std::string(username.value_or("")) +
                               "': " + user.status().message());
  }
  Metadata metadata;
  for (const auto& [name, value] : req.headers()) {
    constexpr std::string_view kPrefix = "x-metadata-";
    std::string lower = Lower(name);
    if (lower.size() <= kPrefix.size() || lower.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    metadata.emplace(lower.substr(kPrefix.size()), std::string(value));  // first value wins
  }
  if (Status s = ValidateMetadata(metadata); !s.ok()) {
    return FilesError(400, "invalid metadata: " + s.message());
  }

  // The body is read as it arrives (the route streams it), through gunzip if it is compressed.
  RequestSource raw(req);
  std::optional<GunzipSource> gunzip;
  BodySource* body = &raw;
  std::string content_encoding = Lower(req.header("Content-Encoding"));
  if (content_encoding == "gzip") {
    body = &gunzip.emplace(&raw);
  } else if (!content_encoding.empty() && content_encoding != "identity") {
    return FilesError(
        400, "unsupported Content-Encoding: " + content_encoding + ", supported: [identity, gzip]");
  }
  // On an error the client may still be sending: read the rest, so it gets the answer instead of
  // a reset connection (its size is bounded by the route's limit).
  auto fail = [&](const api::Response& r) {
    char sink[64 << 10];
    while (true) {
      auto n = raw.Read(sink, sizeof sink);
      if (!n.ok() || *n == 0) break;
    }
    return r;
  };

  std::string content_type(req.header("Content-Type"));
  std::string media = Lower(content_type.substr(0, content_type.find(';')));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  nlohmann::json written = nlohmann::json::array();
  if (media == "application/octet-stream") {
    if (!query_path || query_path->empty()) {
      return fail(FilesError(400, "path query parameter is required for raw body upload"));
    }
    auto path = Root::Resolve(*query_path, user->home);
    if (!path.ok()) return fail(FilesError(400, path.status().message()));
    auto entry = WriteOneFile(*path, *user, *body, metadata);
    if (!entry.ok()) return fail(FilesError(entry.status()));
    written.push_back(std::move(*entry));
  } else if (media.rfind("multipart/", 0) == 0) {
    std::string boundary = MultipartBoundary(content_type);
    if (boundary.empty()) return fail(FilesError(400, "multipart request without a boundary"));
    MultipartReader parts(body, boundary);
    std::vector<std::string> done;
    for (;;) {
      auto part = parts.Next();
      if (!part.ok()) return fail(FilesError(part.status()));
      if (!*part) break;
      if ((*part)->name != "file") continue;
      std::string target = query_path && !query_path->empty() ? std::string(*query_path)
                                                              : (*part)->filename.value_or("");
      if (target.empty()) return fail(FilesError(400, "a file part needs a path or a filename"));
      auto path = Root::Resolve(target, user->home);
      if (!path.ok()) return fail(FilesError(400, path.status().message()));
      if (std::find(done.begin(), done.end(), *path) != done.end()) {
        return fail(FilesError(400, "you cannot upload multiple files to the same path '" + *path +
                                        "' in one upload request"));
      }
      PartSource data(&parts);
      auto entry = WriteOneFile(*path, *user, data, metadata);
      if (!entry.ok()) return fail(FilesError(entry.status()));
      done.push_back(*path);
      written.push_back(std::move(*entry));
    }
  } else {
    return fail(FilesError(400, "unsupported content type: " + content_type +
                                    ", expected multipart/form-data or application/octet-stream"));
  }
  api::Response r;
  r.content_type = "application/json";
  r.body = api::DumpJson(written);
  return r;
}

}  // namespace hangar::envd::internal
