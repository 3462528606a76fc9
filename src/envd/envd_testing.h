// Test helpers: envd started as a real process (the binary the node runs) on a temp root.
#pragma once

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hangar/api/client.h"
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/envd/client.h"
#include "protocol.h"

namespace hangar::envd::testing {

using namespace std::chrono_literals;

// A minimal sandbox root: /etc/passwd with root and `user` (uid/gid `user_uid`), /home/user,
// /root, /tmp. Extra passwd/group lines are appended.
inline void MakeSandboxRoot(const std::string& root, uid_t user_uid, gid_t user_gid,
                            const std::string& extra_passwd = "",
                            const std::string& extra_group = "") {
  for (const char* d : {"/etc", "/home/user", "/root", "/tmp"}) {
    ASSERT_TRUE(MakeDirs(root + d).ok());
  }
  ASSERT_TRUE(WriteFile(root + "/etc/passwd",
                        "root:x:0:0:root:/root:/bin/sh\nuser:x:" + std::to_string(user_uid) + ":" +
                            std::to_string(user_gid) + "::/home/user:/bin/sh\n" + extra_passwd)
                  .ok());
  ASSERT_TRUE(WriteFile(root + "/etc/group",
                        "root:x:0:\nuser:x:" + std::to_string(user_gid) + ":\n" + extra_group)
                  .ok());
  ASSERT_EQ(::chown((root + "/home/user").c_str(), user_uid, user_gid), 0);
}

struct EnvdOptions {
  std::string root;
  std::string listen;  // "unix:/path" or "tcp:127.0.0.1:0"
  std::string token;   // via $ENVD_ACCESS_TOKEN
  std::vector<std::string> extra_args;
  std::map<std::string, std::string> env = {{"SANDBOX_MARKER", "from-envd-env"}};
};

// envd as a child process; stopped with SIGTERM (and checked to exit 0) on destruction.
class EnvdProcess {
 public:
  void Start(const EnvdOptions& o) {
    std::vector<std::string> argv = {ENVD_BINARY, "--listen",    o.listen, "--root",
                                     o.root,      "--log-level", "warn"};
    for (const auto& a : o.extra_args) argv.push_back(a);
    SpawnOptions so;
    std::map<std::string, std::string> env = o.env;
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    if (!o.token.empty()) env["ENVD_ACCESS_TOKEN"] = o.token;
    so.env = env;
    so.capture_stdout = true;
    auto c = Child::Spawn(argv, so);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    child_ = std::move(*c);
    // "listening <endpoint>" once it serves.
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{child_.stdout_fd().get(), POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      char buf[256];
      ssize_t n = ::read(child_.stdout_fd().get(), buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    ASSERT_EQ(line.rfind("listening ", 0), 0u) << "envd did not start: '" << line << "'";
    endpoint_ = line.substr(10, line.find('\n') - 10);
  }

  // SIGTERM; envd must exit 0 within `within`.
  void Stop(std::chrono::milliseconds within = 5s) {
    if (!child_.running()) return;
    ASSERT_TRUE(child_.Signal(SIGTERM).ok());
    auto st = child_.WaitFor(within);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(st->success()) << "envd exit: " << st->ToString();
  }
  ~EnvdProcess() { Stop(); }

  // "unix:/path" or "127.0.0.1:port".
  const std::string& endpoint() const { return endpoint_; }
  pid_t pid() const { return child_.pid(); }
  Endpoint ClientEndpoint(std::string token = "") const {
    Endpoint e;
    if (endpoint_.rfind("unix:", 0) == 0) {
      e.unix_socket = endpoint_.substr(5);
    } else {
      e.tcp = endpoint_;
    }
    e.access_token = std::move(token);
    return e;
  }
  std::string BaseUrl() const {
    return endpoint_.rfind("unix:", 0) == 0 ? endpoint_ : "http://" + endpoint_;
  }

 private:
  Child child_;
  std::string endpoint_;
};

// Frames of a Connect server stream, read raw.
struct RawStream {
  int http_status = 0;
  std::vector<internal::Frame> frames;
  Status transport;
};

}  // namespace hangar::envd::testing
