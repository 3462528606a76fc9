#include "hangar/base/fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "hangar/base/tempdir.h"

namespace hangar {
namespace {

bool FdOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(UniqueFdTest, ClosesOnDestructionAndMove) {
  int raw;
  {
    auto f = OpenFile("/dev/null", O_RDONLY);
    ASSERT_TRUE(f.ok());
    raw = f->get();
    EXPECT_TRUE(FdOpen(raw));
    EXPECT_TRUE(::fcntl(raw, F_GETFD) & FD_CLOEXEC) << "OpenFile must set O_CLOEXEC";
    UniqueFd moved = std::move(*f);
    EXPECT_FALSE(f->valid());
    EXPECT_EQ(moved.get(), raw);
  }
  EXPECT_FALSE(FdOpen(raw));
}

TEST(UniqueFdTest, ReleaseKeepsFdOpen) {
  auto f = OpenFile("/dev/null", O_RDONLY);
  ASSERT_TRUE(f.ok());
  int raw = f->Release();
  EXPECT_TRUE(FdOpen(raw));
  ::close(raw);
}

TEST(FdTest, OpenErrorNamesPath) {
  auto f = OpenFile("/nonexistent/hangar", O_RDONLY);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/hangar"), std::string::npos);
}

TEST(FdTest, AtomicWriteReplacesWholeFile) {
  auto dir = TempDir::Make();
  ASSERT_TRUE(dir.ok());
  std::string path = dir->path() + "/state.json";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second");
  EXPECT_NE(::access((path + ".tmp").c_str(), F_OK), 0) << "temp file left behind";
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(FdTest, AtomicWriteIntoMissingDirFails) {
  Status s = WriteFileAtomic("/nonexistent/dir/f", "x");
  EXPECT_EQ(s.code(), Code::kNotFound);
}

}  // namespace
}  // namespace hangar
