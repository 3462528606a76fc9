#include "hangar/microvm/qmp.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "hangar/base/tempdir.h"

namespace hangar::microvm {
namespace {

TEST(QmpTest, ParsesTheHostForwardPortOfInfoUsernet) {
  const std::string info =
      "Hub -1 (net0):\r\n"
      "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
      "  TCP[HOST_FORWARD]  11       127.0.0.1 36827       10.0.2.15 49983     0     0\r\n";
  EXPECT_EQ(ParseHostForwardPort(info), 36827);
  EXPECT_EQ(ParseHostForwardPort("Hub -1 (net0):\r\n  Protocol[State] FD\r\n"), 0);
  EXPECT_EQ(ParseHostForwardPort(""), 0);
}

// A scripted QMP server on a real Unix socket: greeting, capabilities, an event before the
// answer, and an error.
TEST(QmpTest, ExecuteSkipsEventsAndReportsErrors) {
  auto dir = TempDir::Make("qmp-test");
  ASSERT_TRUE(dir.ok());
  const std::string path = dir->path() + "/qmp.sock";
  int ls = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(ls, 1), 0);
  std::thread server([ls] {
    int c = ::accept(ls, nullptr, nullptr);
    auto send = [c](const std::string& s) { (void)!::write(c, s.data(), s.size()); };
    auto read_line = [c] {
      std::string line;
      char ch;
      while (::read(c, &ch, 1) == 1 && ch != '\n') line += ch;
      return line;
    };
    send("{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
    read_line();  // qmp_capabilities
    send("{\"return\": {}}\n");
    read_line();  // query-status
    send("{\"event\": \"RESUME\", \"timestamp\": {}}\n{\"return\": {\"status\": \"running\"}}\n");
    read_line();  // bogus
    send(
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command bogus has not been "
        "found\"}}\n");
    ::close(c);
  });
  auto qmp = QmpClient::Connect(path, std::chrono::seconds(5));
  ASSERT_TRUE(qmp.ok()) << qmp.status().ToString();
  auto st = qmp->Execute("query-status");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->value("status", ""), "running");
  auto bad = qmp->Execute("bogus");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("CommandNotFound"), std::string::npos);
  auto closed = qmp->Execute("query-status");
  EXPECT_EQ(closed.status().code(), Code::kUnavailable);
  server.join();
  ::close(ls);
}

TEST(QmpTest, ConnectToNothingNamesThePath) {
  auto q = QmpClient::Connect("/nonexistent/qmp.sock", std::chrono::milliseconds(100));
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().ToString().find("/nonexistent/qmp.sock"), std::string::npos);
}

}  // namespace
}  // namespace hangar::microvm
