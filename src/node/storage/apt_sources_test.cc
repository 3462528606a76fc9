#include "apt_sources.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"

namespace hangar::storage::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(AptSourcesTest, OneLineFormat) {
  auto s = ParseOneLineSources(
      "# comment\n"
      "deb http://deb.debian.org/debian bookworm main contrib\n"
      "deb-src http://deb.debian.org/debian bookworm main\n"
      "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://m.example/debian "
      "bookworm-updates main # trailing\n"
      "\n"
      "deb broken\n");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0], (AptSource{"http://deb.debian.org/debian", "bookworm", {"main", "contrib"}}));
  EXPECT_EQ(s[1], (AptSource{"https://m.example/debian", "bookworm-updates", {"main"}}));
}

TEST(AptSourcesTest, Deb822Format) {
  auto s = ParseDeb822Sources(
      "Types: deb\n"
      "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
      "URIs: http://deb.debian.org/debian\n"
      "Suites: bookworm bookworm-updates\n"
      "Components: main\n"
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
      "\n"
      "Types: deb-src\n"
      "URIs: http://deb.debian.org/debian\n"
      "Suites: bookworm\n"
      "Components: main\n"
      "\n"
      "Types: deb\n"
      "URIs: http://disabled.example/debian\n"
      "Suites: bookworm\n"
      "Components: main\n"
      "Enabled: no\n"
      "\n"
      "Types: deb\n"
      "URIs: http://deb.debian.org/debian-security\n"
      "Suites: bookworm-security\n"
      "Components: main\n"
      "Signed-By:\n"
      " -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
      " .\n"
      " -----END PGP PUBLIC KEY BLOCK-----\n");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].suite, "bookworm");
  EXPECT_EQ(s[1].suite, "bookworm-updates");
  EXPECT_EQ(s[2],
            (AptSource{"http://deb.debian.org/debian-security", "bookworm-security", {"main"}}));
}

TEST(AptSourcesTest, MirrorLinesKeepOnlyTheSuiteAndItsPockets) {
  std::vector<AptSource> all = {
      {"http://deb.debian.org/debian", "bookworm", {"main"}},
      {"http://deb.debian.org/debian", "bookworm-updates", {"main"}},
      {"http://deb.debian.org/debian-security", "bookworm-security", {"main"}},
      {"http://deb.debian.org/debian", "bookworm-backports", {"main"}},
      {"https://packages.cloud.google.com/apt", "cloud-sdk-bookworm", {"main"}},
      {"https://deb.nodesource.com/node_20.x", "nodistro", {"main"}},
      {"http://deb.debian.org/debian", "bookworm", {"main"}},  // duplicate
  };
  EXPECT_THAT(MirrorLinesForSuite(all, "bookworm"),
              ElementsAre("deb http://deb.debian.org/debian bookworm main",
                          "deb http://deb.debian.org/debian bookworm-updates main",
                          "deb http://deb.debian.org/debian-security bookworm-security main"));
  EXPECT_THAT(MirrorLinesForSuite(all, "trixie"), IsEmpty());
}

TEST(AptSourcesTest, ReadsListAndSourcesFiles) {
  auto d = TempDir::Make("hangar-apt-");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(MakeDirs(d->path() + "/sources.list.d").ok());
  ASSERT_TRUE(WriteFile(d->path() + "/sources.list", "deb http://a/debian bookworm main\n").ok());
  ASSERT_TRUE(WriteFile(d->path() + "/sources.list.d/b.sources",
                        "Types: deb\nURIs: http://b/debian\nSuites: bookworm\nComponents: main\n")
                  .ok());
  ASSERT_TRUE(WriteFile(d->path() + "/sources.list.d/c.list.save", "deb http://c/ x main\n").ok());
  auto s = ReadAptSources(d->path());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].uri, "http://a/debian");
  EXPECT_EQ((*s)[1].uri, "http://b/debian");
}

TEST(AptSourcesTest, NetworkOptionsFromAptConfigDump) {
  auto opts = NetworkAptOptions(
      "Acquire \"\";\n"
      "Acquire::http::Proxy \"http://proxy:3128\";\n"
      "Acquire::http::Proxy::deb.debian.org \"DIRECT\";\n"
      "Acquire::https::Proxy \"\";\n"
      "Acquire::Check-Valid-Until \"false\";\n"
      "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n"
      "APT::Architecture \"amd64\";\n");
  EXPECT_THAT(opts, ElementsAre("Acquire::http::Proxy \"http://proxy:3128\";",
                                "Acquire::http::Proxy::deb.debian.org \"DIRECT\";",
                                "Acquire::Check-Valid-Until \"false\";"));
}

}  // namespace
}  // namespace hangar::storage::internal
