#include "hangar/base/child.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace hangar {
namespace {

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0; }

TEST(ChildTest, ExitCodeAndCapturedOutput) {
  auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status.code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(ChildTest, MissingProgramIsAnExecErrorNotAnExitCode) {
  auto c = Child::Spawn({"hangar-no-such-program"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kNotFound);
  EXPECT_EQ(c.status().message(), "exec(hangar-no-such-program): No such file or directory");
}

TEST(ChildTest, DestructorKillsAndReapsRunningChild) {
  pid_t pid;
  {
    auto c = Child::Spawn({"sleep", "30"});
    ASSERT_TRUE(c.ok());
    pid = c->pid();
    EXPECT_TRUE(Alive(pid));
  }
  // Reaped, not a zombie: kill(pid, 0) fails with ESRCH.
  EXPECT_FALSE(Alive(pid));
}

TEST(ChildTest, WaitForKillsAfterTimeout) {
  auto c = Child::Spawn({"sleep", "30"});
  ASSERT_TRUE(c.ok());
  auto st = c->WaitFor(std::chrono::milliseconds(50));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->signal, SIGKILL);
  EXPECT_FALSE(c->running());
}

TEST(ChildTest, EnvCwdAndStdin) {
  SpawnOptions opt;
  opt.env = std::map<std::string, std::string>{{"GREETING", "hi"}};
  opt.cwd = "/tmp";
  opt.pipe_stdin = true;
  opt.capture_stdout = true;
  auto c = Child::Spawn({"/bin/sh", "-c", "read x; echo \"$GREETING $x $(pwd)\""}, opt);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(WriteAll(c->stdin_fd().get(), "there\n").ok());
  c->stdin_fd().Reset();
  char buf[256];
  ssize_t n = ::read(c->stdout_fd().get(), buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "hi there /tmp\n");
  EXPECT_TRUE(c->Wait()->success());
}

TEST(ChildTest, RunCheckedReportsCommandAndStderr) {
  auto r = RunChecked({"sh", "-c", "echo boom >&2; exit 1"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("sh -c"), std::string::npos);
  EXPECT_NE(r.status().message().find("boom"), std::string::npos);
  EXPECT_NE(r.status().message().find("exit code 1"), std::string::npos);
}

TEST(ChildTest, RunCommandTimesOut) {
  auto r = RunCommand({"sleep", "30"}, std::chrono::milliseconds(100));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
}

// A CLONE_VM child runs on a CloneStack: it can use the whole stack, and a write into the guard
// page below it kills the child (SIGSEGV) instead of landing in the parent's memory.
struct StackProbe {
  char* target = nullptr;
  int code = 0;
};

int RunStackProbe(void* arg) {
  auto* p = static_cast<StackProbe*>(arg);
  *reinterpret_cast<volatile char*>(p->target) = 1;
  return p->code;
}

Result<ExitStatus> CloneOn(CloneStack& stack, StackProbe& probe) {
  pid_t pid = ::clone(RunStackProbe, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &probe);
  if (pid < 0) return Status::FromErrno(errno, "clone");
  return Child::Adopt(pid).Wait();
}

TEST(CloneStackTest, ChildUsesTheWholeStackAndAnOverflowKillsOnlyTheChild) {
  auto stack = CloneStack::Make(64 << 10);
  ASSERT_TRUE(stack.ok()) << stack.status().ToString();
  ASSERT_EQ(static_cast<char*>(stack->top()) - static_cast<char*>(stack->bottom()), 64 << 10);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(stack->top()) % 16, 0u);

  StackProbe deep{static_cast<char*>(stack->bottom()), 7};  // the lowest usable byte
  auto ok = CloneOn(*stack, deep);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->exited());
  EXPECT_EQ(ok->code, 7);
  EXPECT_EQ(*static_cast<char*>(stack->bottom()), 1);  // shared memory: the parent sees it

  StackProbe over{static_cast<char*>(stack->bottom()) - 1, 0};  // the guard page
  auto killed = CloneOn(*stack, over);
  ASSERT_TRUE(killed.ok()) << killed.status().ToString();
  EXPECT_EQ(killed->signal, SIGSEGV);
}

TEST(CloneStackTest, MovedFromOwnsNothingAndZeroBytesIsAnError) {
  auto a = CloneStack::Make(4096);
  ASSERT_TRUE(a.ok());
  void* top = a->top();
  CloneStack b = std::move(*a);
  EXPECT_EQ(a->top(), nullptr);
  EXPECT_EQ(b.top(), top);
  auto zero = CloneStack::Make(0);
  EXPECT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace hangar
