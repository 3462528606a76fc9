// upload: reading /files request bodies as they arrive, so an upload never has to fit in the
// sandbox's memory — raw, gzip-compressed, or multipart/form-data — plus Accept-Encoding.
//
// Thread safety: each reader is owned by one thread (the request's handler).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <zlib.h>

#include "hangar/base/status.h"

namespace hangar::envd::internal {

// A stream of bytes: Read returns 0 at the end.
class BodySource {
 public:
  virtual ~BodySource() = default;
  virtual Result<size_t> Read(char* buffer, size_t size) = 0;
};

// Decompresses a gzip (or zlib) stream read from `in`, as it is read. A corrupt or truncated
// stream is invalid_argument.
class GunzipSource final : public BodySource {
 public:
  explicit GunzipSource(BodySource* in);
  ~GunzipSource() override;
  GunzipSource(const GunzipSource&) = delete;
  GunzipSource& operator=(const GunzipSource&) = delete;
  Result<size_t> Read(char* buffer, size_t size) override;

 private:
  BodySource* in_;
  z_stream z_{};
  bool init_ = false;
  bool done_ = false;
  bool in_eof_ = false;
  std::string input_;
};

// multipart/form-data (RFC 7578), one part at a time.
//   MultipartReader r(&body, "boundary");
//   while (auto part = r.Next(); part.ok() && *part) { ... r.Read(buf, n) until 0 ... }
// A part's data is read up to (not including) the CRLF before the next delimiter, whatever the
// chunk boundaries of the underlying source are.
class MultipartReader {
 public:
  struct Part {
    std::string name;                     // Content-Disposition name=
    std::optional<std::string> filename;  // Content-Disposition filename=
  };
  MultipartReader(BodySource* in, std::string boundary);

  // Advances to the next part (skipping what is left of the current one): the part, or nullopt
  // after the closing delimiter. invalid_argument for a malformed body.
  Result<std::optional<Part>> Next();
  // The current part's data; 0 at its end.
  Result<size_t> Read(char* buffer, size_t size);

 private:
  Status Fill(size_t want);  // buffers at least `want` bytes past pos_, unless the input ends
  enum class State { kStart, kData, kAfterDelimiter, kDone };
  BodySource* in_;
  std::string delimiter_;  // "\r\n--" + boundary
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
  State state_ = State::kStart;
};

// The boundary parameter of a multipart Content-Type ("" if none).
std::string MultipartBoundary(std::string_view content_type);
// A parameter of a header value like `form-data; name="file"; filename="a b"`.
std::optional<std::string> HeaderParam(std::string_view header, std::string_view name);

// Accept-Encoding → "gzip", "identity", or "" when neither is acceptable (RFC 9110 §12.5.3).
std::string ChooseEncoding(std::string_view accept_encoding);

}  // namespace hangar::envd::internal
