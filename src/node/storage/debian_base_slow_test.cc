// BuildDebianBase end to end: mmdebstrap from this host's Debian mirror (minutes, network).
// The template lands in $HANGAR_TEMPLATE_CACHE (default /var/tmp/hangar-template-cache) under
// the name kTestTemplate, so it is built once and every later run — and other modules' tests
// that need a real rootfs — reuse it.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/storage/template_store.h"
#include "storage_util.h"

namespace hangar::storage {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr const char* kTestTemplate = "debian-bookworm-base";

TEST(DebianBaseTest, BuildsOnceAndReuses) {
  if (::geteuid() != 0) GTEST_SKIP() << "mmdebstrap root mode needs root";
  auto store = TemplateStore::Open({.root = TemplateCacheDirFromEnv()});
  ASSERT_TRUE(store.ok()) << store.status().ToString();

  auto t0 = std::chrono::steady_clock::now();
  auto t = store->BuildDebianBase(kTestTemplate, {});
  auto first_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  std::printf("first BuildDebianBase: %.1f s (0 if cached), %llu bytes, %llu files\n", first_s,
              static_cast<unsigned long long>(t->size_bytes),
              static_cast<unsigned long long>(t->file_count));
  EXPECT_TRUE(t->has_bash);
  EXPECT_THAT(t->digest, StartsWith("build:sha256:"));
  EXPECT_THAT(t->source, HasSubstr("debian:bookworm variant=apt"));
  EXPECT_THAT(t->source, HasSubstr("git"));
  EXPECT_GT(t->file_count, 1000u);

  // The default user, E2B style.
  auto passwd = ReadFile(t->rootfs + "/etc/passwd");
  ASSERT_TRUE(passwd.ok());
  EXPECT_THAT(*passwd, HasSubstr("user:x:1000:1000::/home/user:/bin/bash"));
  struct stat home;
  ASSERT_EQ(::stat((t->rootfs + "/home/user").c_str(), &home), 0);
  EXPECT_EQ(home.st_uid, 1000u);
  for (const char* tool : {"usr/bin/python3", "usr/bin/git", "usr/bin/curl", "usr/bin/ps",
                           "usr/bin/apt-get", "etc/ssl/certs/ca-certificates.crt"}) {
    EXPECT_EQ(::access((t->rootfs + "/" + tool).c_str(), F_OK), 0) << tool;
  }
  // No device nodes anywhere (the runtime provides /dev).
  auto stats = internal::InspectTree(t->rootfs);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->first_device, "");

  // Second call: a no-op that returns the same template.
  t0 = std::chrono::steady_clock::now();
  auto again = store->BuildDebianBase(kTestTemplate, {});
  auto second_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->digest, t->digest);
  EXPECT_EQ(again->created_at, t->created_at);
  EXPECT_LT(second_s, 5.0);

  // Same name, different spec: refused rather than silently returning the wrong rootfs.
  auto other = store->BuildDebianBase(kTestTemplate, {.build_essential = true});
  EXPECT_EQ(other.status().code(), Code::kAlreadyExists);
}

}  // namespace
}  // namespace hangar::storage
