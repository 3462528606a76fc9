// envd as root: switching users, a full disk, and /proc magic links inside the root.
#include <sys/mount.h>
#include <sys/stat.h>

#include "envd_testing.h"
#include "hangar/base/mount.h"

namespace hangar::envd {
namespace {

using namespace std::chrono_literals;
using testing::EnvdOptions;
using testing::EnvdProcess;

class EnvdPrivilegedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (setuid, mounts)";
    auto t = TempDir::Make("envd-priv-");
    ASSERT_TRUE(t.ok());
    tmp_ = std::move(*t);
    root_ = tmp_.path() + "/root";
    ASSERT_TRUE(MakeDirs(root_).ok());
  }

  void Start() {
    EnvdOptions o;
    o.root = root_;
    o.listen = "unix:" + tmp_.path() + "/envd.sock";
    envd_ = std::make_unique<EnvdProcess>();
    ASSERT_NO_FATAL_FAILURE(envd_->Start(o));
    auto c = Client::Create(envd_->ClientEndpoint());
    ASSERT_TRUE(c.ok());
    client_.emplace(std::move(*c));
  }

  void TearDown() override {
    client_.reset();
    envd_.reset();
    mounts_.clear();
  }

  TempDir tmp_;
  std::string root_;
  std::vector<ScopedMount> mounts_;
  std::unique_ptr<EnvdProcess> envd_;
  std::optional<Client> client_;
};

TEST_F(EnvdPrivilegedTest, CommandsAndFilesRunAsTheRequestedUser) {
  ASSERT_NO_FATAL_FAILURE(testing::MakeSandboxRoot(root_, 1001, 1001,
                                                   "alice:x:1000:1000::/home/alice:/bin/sh\n",
                                                   "alice:x:1000:\nwheel:x:10:alice,bob\n"));
  ASSERT_TRUE(MakeDirs(root_ + "/home/alice").ok());
  ASSERT_EQ(::chown((root_ + "/home/alice").c_str(), 1000, 1000), 0);
  ASSERT_NO_FATAL_FAILURE(Start());

  auto id = [&](const std::string& user) {
    std::string out;
    auto r =
        client_->Run(Command{.cmd = "/bin/sh", .args = {"-c", "id -u; id -g; id -G"}, .user = user},
                     {.on_stdout = [&](std::string_view s) { out.append(s); }});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return out;
  };
  EXPECT_EQ(id("alice"), "1000\n1000\n1000 10\n");
  EXPECT_EQ(id(""), "1001\n1001\n1001\n");  // the default user
  EXPECT_EQ(id("root"), "0\n0\n0\n");
  EXPECT_EQ(client_->Run(Command{.cmd = "true", .user = "mallory"}).status().code(),
            Code::kUnauthenticated);

  ASSERT_TRUE(client_->WriteFile("new/dir/f.txt", "x", "alice").ok());
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/home/alice/new/dir/f.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  ASSERT_EQ(::stat((root_ + "/home/alice/new").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  auto made = client_->MakeDir("made", "alice");
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->owner, "alice");
  EXPECT_EQ(made->group, "alice");
}

TEST_F(EnvdPrivilegedTest, FullDiskAnswers507) {
  auto m = ScopedMount::Mount("tmpfs", root_, "tmpfs", 0, "size=1m,mode=0755");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  mounts_.push_back(std::move(*m));
  ASSERT_NO_FATAL_FAILURE(testing::MakeSandboxRoot(root_, 1000, 1000));
  ASSERT_NO_FATAL_FAILURE(Start());
  auto w = client_->WriteFile("big.bin", std::string(4 << 20, 'x'));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kResourceExhausted) << w.status().ToString();
  api::ClientOptions co;
  auto h = api::HttpClient::Create(envd_->BaseUrl(), co);
  api::RequestOptions ro;
  ro.content_type = "application/octet-stream";
  auto res = h->Send("POST", "/files?path=big2.bin", std::string(4 << 20, 'y'), ro);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, 507);
  auto body = nlohmann::json::parse(res->body);
  EXPECT_EQ(body["code"], 507);
  // Nothing half-written is left, and the disk is usable again.
  auto list = client_->ListDir("/home/user");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty()) << list->size() << " entries, first: " << (*list)[0].name;
  EXPECT_TRUE(client_->WriteFile("small.txt", "fits").ok());
}

TEST_F(EnvdPrivilegedTest, ProcMagicLinksDoNotEscape) {
  ASSERT_NO_FATAL_FAILURE(testing::MakeSandboxRoot(root_, 1000, 1000));
  ASSERT_TRUE(MakeDirs(root_ + "/proc").ok());
  auto m = ScopedMount::Mount("/proc", root_ + "/proc", "", MS_BIND);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  mounts_.push_back(std::move(*m));
  ASSERT_NO_FATAL_FAILURE(Start());
  // /proc/self/root is the host's root for envd (not chrooted): a magic link out.
  for (const char* p : {"/proc/self/root/etc/hostname", "/proc/1/root/etc/hostname",
                        "/proc/self/cwd/etc/hostname"}) {
    auto r = client_->ReadFile(p);
    EXPECT_FALSE(r.ok()) << p << " was readable";
  }
  ASSERT_EQ(::symlink("/proc/self/root/etc/passwd", (root_ + "/home/user/ml").c_str()), 0);
  auto r = client_->ReadFile("ml");
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(client_->WriteFile("/proc/self/root/tmp/envd-escape", "x").ok());
  EXPECT_NE(::access("/tmp/envd-escape", F_OK), 0);
  // Ordinary /proc files still work.
  auto version = client_->ReadFile("/proc/version");
  EXPECT_TRUE(version.ok()) << version.status().ToString();
}

}  // namespace
}  // namespace hangar::envd
