#include "upload.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace hangar::envd::internal {

namespace {

constexpr size_t kReadChunk = 64 << 10;
constexpr size_t kMaxPartHeader = 16 << 10;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

// --- GunzipSource ------------------------------------------------------------------------------

GunzipSource::GunzipSource(BodySource* in) : in_(in) {
  // 15 + 32: a zlib or gzip header, detected.
  init_ = inflateInit2(&z_, 15 + 32) == Z_OK;
}

GunzipSource::~GunzipSource() {
  if (init_) inflateEnd(&z_);
}

Result<size_t> GunzipSource::Read(char* buffer, size_t size) {
  if (!init_) return Status::Internal("inflateInit2 failed");
  if (done_ || size == 0) return size_t{0};
  z_.next_out = reinterpret_cast<Bytef*>(buffer);
  z_.avail_out = static_cast<uInt>(std::min<size_t>(size, UINT32_MAX));
  for (;;) {
    if (z_.avail_in == 0 && !in_eof_) {
      input_.resize(kReadChunk);
      HANGAR_ASSIGN_OR_RETURN(size_t n, in_->Read(input_.data(), input_.size()));
      if (n == 0) in_eof_ = true;
      z_.next_in = reinterpret_cast<Bytef*>(input_.data());
      z_.avail_in = static_cast<uInt>(n);
    }
    int rc = inflate(&z_, Z_NO_FLUSH);
    size_t produced = size - z_.avail_out;
    if (rc == Z_STREAM_END) {
      done_ = true;
      return produced;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return Status::InvalidArgument("error decompressing request body: invalid gzip data");
    }
    if (produced > 0) return produced;
    if (in_eof_ && z_.avail_in == 0) {
      return Status::InvalidArgument("error decompressing request body: truncated gzip data");
    }
  }
}

// --- multipart ---------------------------------------------------------------------------------

std::optional<std::string> HeaderParam(std::string_view header, std::string_view name) {
  size_t i = 0;
  while (i < header.size()) {
    size_t semi = header.find(';', i);
    if (semi == std::string_view::npos) return std::nullopt;
    i = semi + 1;
    while (i < header.size() && header[i] == ' ') ++i;
    size_t eq = header.find('=', i);
    if (eq == std::string_view::npos) return std::nullopt;
    std::string key = Lower(header.substr(i, eq - i));
    while (!key.empty() && key.back() == ' ') key.pop_back();
    i = eq + 1;
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      while (i < header.size() && header[i] != '"') {
        if (header[i] == '\\' && i + 1 < header.size()) ++i;
        value += header[i++];
      }
      ++i;
    } else {
      size_t end = header.find(';', i);
      if (end == std::string_view::npos) end = header.size();
      value = std::string(header.substr(i, end - i));
      while (!value.empty() && value.back() == ' ') value.pop_back();
      i = end;
    }
    if (key == name) return value;
  }
  return std::nullopt;
}

std::string MultipartBoundary(std::string_view content_type) {
  return HeaderParam(content_type, "boundary").value_or("");
}

MultipartReader::MultipartReader(BodySource* in, std::string boundary)
    : in_(in), delimiter_("\r\n--" + boundary) {}

Status MultipartReader::Fill(size_t want) {
  if (pos_ > (1 << 20) && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  while (!eof_ && buf_.size() - pos_ < want) {
    size_t old = buf_.size();
    buf_.resize(old + kReadChunk);
    Result<size_t> n = in_->Read(buf_.data() + old, kReadChunk);
    if (!n.ok()) {
      buf_.resize(old);
      return n.status();
    }
    buf_.resize(old + *n);
    if (*n == 0) eof_ = true;
  }
  return Status::Ok();
}

Result<size_t> MultipartReader::Read(char* buffer, size_t size) {
  if (state_ != State::kData || size == 0) return size_t{0};
  HANGAR_TRY(Fill(delimiter_.size() + kReadChunk));
  std::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
  size_t at = avail.find(delimiter_);
  size_t usable;
  if (at == std::string_view::npos) {
    if (eof_) return Status::InvalidArgument("multipart body ends inside a part");
    // Keep a possible partial delimiter at the end for the next read.
    usable = avail.size() > delimiter_.size() ? avail.size() - delimiter_.size() : 0;
    if (usable == 0) {
      HANGAR_TRY(Fill(avail.size() + kReadChunk));
      return Read(buffer, size);
    }
  } else {
    usable = at;
    if (usable == 0) {
      pos_ += delimiter_.size();
      state_ = State::kAfterDelimiter;
      return size_t{0};
    }
  }
  size_t n = std::min(size, usable);
  std::memcpy(buffer, avail.data(), n);
  pos_ += n;
  return n;
}

Result<std::optional<MultipartReader::Part>> MultipartReader::Next() {
  if (state_ == State::kDone) return std::optional<Part>();
  if (state_ == State::kStart) {
    // The first delimiter has no CRLF before it (a preamble may precede it).
    std::string first = delimiter_.substr(2);
    for (;;) {
      HANGAR_TRY(Fill(first.size() + kReadChunk));
      std::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
      size_t at = avail.find(first);
      if (at != std::string_view::npos) {
        pos_ += at + first.size();
        break;
      }
      if (eof_) return Status::InvalidArgument("multipart body has no boundary delimiter");
      pos_ += avail.size() > first.size() ? avail.size() - first.size() : 0;
    }
    state_ = State::kAfterDelimiter;
  }
  char skip[16 << 10];
  while (state_ == State::kData) {
    HANGAR_ASSIGN_OR_RETURN(size_t n, Read(skip, sizeof skip));
    (void)n;
  }
  HANGAR_TRY(Fill(2));
  if (std::string_view(buf_.data() + pos_, buf_.size() - pos_).substr(0, 2) == "--") {
    state_ = State::kDone;  // the close delimiter; an epilogue may follow and is ignored
    return std::optional<Part>();
  }
  // Transport padding (spaces, tabs) may sit between a delimiter and its CRLF.
  for (;;) {
    HANGAR_TRY(Fill(2));
    std::string_view after(buf_.data() + pos_, buf_.size() - pos_);
    if (!after.empty() && (after[0] == ' ' || after[0] == '\t')) {
      ++pos_;
      continue;
    }
    if (after.substr(0, 2) != "\r\n") {
      return Status::InvalidArgument("malformed multipart delimiter");
    }
    pos_ += 2;
    break;
  }
  // Headers up to a blank line; a part may have none (the blank line comes at once).
  Part part;
  for (;;) {
    std::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
    if (avail.substr(0, 2) == "\r\n") {
      pos_ += 2;
      break;
    }
    size_t end = avail.find("\r\n\r\n");
    if (end == std::string_view::npos) {
      if (eof_ || avail.size() > kMaxPartHeader) {
        return Status::InvalidArgument("multipart part header is missing or too large");
      }
      HANGAR_TRY(Fill(avail.size() + 1024));
      continue;
    }
    std::string_view headers = avail.substr(0, end);
    size_t h = 0;
    while (h <= headers.size()) {
      size_t e = headers.find("\r\n", h);
      if (e == std::string_view::npos) e = headers.size();
      std::string_view line = headers.substr(h, e - h);
      h = e + 2;
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      if (Lower(line.substr(0, colon)) == "content-disposition") {
        std::string_view value = line.substr(colon + 1);
        part.name = HeaderParam(value, "name").value_or("");
        part.filename = HeaderParam(value, "filename");
      }
    }
    pos_ += end + 4;
    break;
  }
  state_ = State::kData;
  return std::optional<Part>(std::move(part));
}

// --- Accept-Encoding ---------------------------------------------------------------------------

std::string ChooseEncoding(std::string_view header) {
  if (header.empty()) return "identity";
  double gzip_q = -1, identity_q = -1, star_q = -1;
  size_t i = 0;
  while (i <= header.size()) {
    size_t j = header.find(',', i);
    if (j == std::string_view::npos) j = header.size();
    std::string_view item = header.substr(i, j - i);
    i = j + 1;
    double q = 1;
    size_t semi = item.find(';');
    if (semi != std::string_view::npos) {
      std::string params = Lower(item.substr(semi + 1));
      size_t qpos = params.find("q=");
      if (qpos != std::string::npos) q = std::atof(params.c_str() + qpos + 2);
      item = item.substr(0, semi);
    }
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    std::string name = Lower(item);
    if (name == "gzip") gzip_q = q;
    if (name == "identity") identity_q = q;
    if (name == "*") star_q = q;
  }
  if (gzip_q < 0 && star_q > 0) gzip_q = star_q;
  bool identity_ok = identity_q != 0 && !(identity_q < 0 && star_q == 0);
  if (gzip_q > 0 && (!identity_ok || gzip_q >= std::max(identity_q, 0.0))) return "gzip";
  if (identity_ok) return "identity";
  return "";
}

}  // namespace hangar::envd::internal
