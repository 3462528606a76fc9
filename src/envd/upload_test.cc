#include "upload.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include <gtest/gtest.h>

namespace hangar::envd::internal {
namespace {

// Hands out `data` at most `step` bytes per Read, to exercise every chunk boundary.
class ChunkedSource final : public BodySource {
 public:
  ChunkedSource(std::string data, size_t step) : data_(std::move(data)), step_(step) {}
  Result<size_t> Read(char* buffer, size_t size) override {
    size_t n = std::min({size, step_, data_.size() - pos_});
    std::memcpy(buffer, data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::string data_;
  size_t step_;
  size_t pos_ = 0;
};

struct ReadPart {
  std::string name;
  std::string filename;
  std::string data;
};

Result<std::vector<ReadPart>> ReadAll(const std::string& body, size_t step,
                                      const std::string& boundary = "XyZ") {
  ChunkedSource src(body, step);
  MultipartReader r(&src, boundary);
  std::vector<ReadPart> out;
  for (;;) {
    HANGAR_ASSIGN_OR_RETURN(auto part, r.Next());
    if (!part) return out;
    ReadPart p{part->name, part->filename.value_or("-"), ""};
    char buf[5];
    for (;;) {
      HANGAR_ASSIGN_OR_RETURN(size_t n, r.Read(buf, sizeof buf));
      if (n == 0) break;
      p.data.append(buf, n);
    }
    out.push_back(std::move(p));
  }
}

TEST(MultipartReaderTest, PartsAcrossAnyChunking) {
  std::string tricky = std::string("line1\r\nline2\r\n--XyNot\r\n-", 25) + std::string("\0\x01", 2);
  std::string body =
      "preamble\r\n--XyZ\r\n"
      "Content-Disposition: form-data; name=\"file\"; filename=\"dir/a b.txt\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\n" +
      tricky +
      "\r\n--XyZ\r\n"
      "Content-Disposition: form-data; name=\"other\"\r\n\r\n"
      "\r\n--XyZ  \r\n"
      "\r\nno headers\r\n--XyZ--\r\nepilogue";
  for (size_t step : {1, 2, 3, 7, 64, 100000}) {
    auto parts = ReadAll(body, step);
    ASSERT_TRUE(parts.ok()) << "step " << step << ": " << parts.status().ToString();
    ASSERT_EQ(parts->size(), 3u) << step;
    EXPECT_EQ((*parts)[0].name, "file");
    EXPECT_EQ((*parts)[0].filename, "dir/a b.txt");
    EXPECT_EQ((*parts)[0].data, tricky) << step;
    EXPECT_EQ((*parts)[1].name, "other");
    EXPECT_EQ((*parts)[1].data, "");
    EXPECT_EQ((*parts)[2].name, "");
    EXPECT_EQ((*parts)[2].data, "no headers");
  }
}

TEST(MultipartReaderTest, LargePartStaysBounded) {
  std::string data(3 << 20, 'd');
  std::string body =
      "--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + data + "\r\n--B--\r\n";
  auto parts = ReadAll(body, 100000, "B");
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data.size(), data.size());
}

TEST(MultipartReaderTest, MalformedBodies) {
  EXPECT_EQ(ReadAll("no delimiter at all", 4).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ReadAll("--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nunterminated", 4)
                .status()
                .code(),
            Code::kInvalidArgument);
  EXPECT_EQ(ReadAll("--XyZgarbage", 4).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ReadAll("--XyZ\r\nheader without end", 4).status().code(), Code::kInvalidArgument);
  // Skipping an unread part works too.
  ChunkedSource src("--XyZ\r\n\r\nskipped\r\n--XyZ\r\n\r\nread\r\n--XyZ--", 3);
  MultipartReader r(&src, "XyZ");
  ASSERT_TRUE(r.Next()->has_value());
  ASSERT_TRUE(r.Next()->has_value());
  char buf[16];
  EXPECT_EQ(std::string(buf, *r.Read(buf, sizeof buf)), "read");
  EXPECT_FALSE(r.Next()->has_value());
}

TEST(HeaderParamTest, QuotedAndBare) {
  EXPECT_EQ(HeaderParam("form-data; name=\"file\"; filename=\"a\\\"b\"", "filename"), "a\"b");
  EXPECT_EQ(HeaderParam("multipart/form-data; boundary=----abc", "boundary"), "----abc");
  EXPECT_EQ(MultipartBoundary("multipart/form-data; charset=x; boundary=\"q q\""), "q q");
  EXPECT_FALSE(HeaderParam("form-data", "name").has_value());
}

std::string Gzip(const std::string& in) {
  std::string out(in.size() + 1024, '\0');
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST(GunzipSourceTest, DecompressesAsItReads) {
  std::string plain;
  for (int i = 0; i < 100000; ++i) plain += std::to_string(i);
  std::string gz = Gzip(plain);
  for (size_t step : {1, 13, 100000}) {
    ChunkedSource src(gz, step);
    GunzipSource g(&src);
    std::string out;
    char buf[777];
    for (;;) {
      auto n = g.Read(buf, sizeof buf);
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      if (*n == 0) break;
      out.append(buf, *n);
    }
    EXPECT_EQ(out, plain) << step;
  }
  ChunkedSource truncated(gz.substr(0, gz.size() / 2), 1000);
  GunzipSource t(&truncated);
  char buf[1 << 16];
  Status last;
  for (int i = 0; i < 1000; ++i) {
    auto n = t.Read(buf, sizeof buf);
    if (!n.ok()) {
      last = n.status();
      break;
    }
    if (*n == 0) break;
  }
  EXPECT_EQ(last.code(), Code::kInvalidArgument);
  ChunkedSource junk("definitely not gzip", 5);
  GunzipSource j(&junk);
  EXPECT_EQ(j.Read(buf, sizeof buf).status().code(), Code::kInvalidArgument);
}

TEST(ChooseEncodingTest, Rfc9110) {
  EXPECT_EQ(ChooseEncoding(""), "identity");
  EXPECT_EQ(ChooseEncoding("gzip"), "gzip");
  EXPECT_EQ(ChooseEncoding("gzip, deflate, br"), "gzip");
  EXPECT_EQ(ChooseEncoding("br"), "identity");
  EXPECT_EQ(ChooseEncoding("gzip;q=0, identity"), "identity");
  EXPECT_EQ(ChooseEncoding("identity;q=0"), "");
  EXPECT_EQ(ChooseEncoding("identity;q=0, gzip"), "gzip");
  EXPECT_EQ(ChooseEncoding("*;q=0"), "");
  EXPECT_EQ(ChooseEncoding("*"), "gzip");
  EXPECT_EQ(ChooseEncoding("identity;q=1, gzip;q=0.5"), "identity");
}

}  // namespace
}  // namespace hangar::envd::internal
