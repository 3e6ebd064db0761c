// ProcessExitWatch::exited_now (§8): the vLLM manager asks it when a request found the server
// unreachable, at a moment the event loop may not have run the exit event yet. It must see an
// exit without the event loop and without reaping the child.
#include <csignal>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "imageworks/process.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {
namespace {

TEST(ProcessExitWatch, ExitedNowSeesAnExitBeforeTheEventLoopRunsAndLeavesTheChildToReap) {
  TempDir dir;
  asio::io_context ioc;  // never run: the answer must not depend on it
  const pid_t pid = spawn_in_own_group({"sleep", "30"}, dir.path() / "child.log");
  ProcessExitWatch watch(ioc.get_executor(), pid);
  EXPECT_FALSE(watch.exited_now()) << "a running process reported as exited";

  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  siginfo_t info{};
  // Blocks until the child has exited; WNOWAIT leaves it unreaped, as the manager finds it.
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_TRUE(watch.exited_now()) << "the exit was not seen without the event loop";
  EXPECT_TRUE(watch.exited_now()) << "asking twice changed the answer";

  // exited_now did not reap: the owner still collects the exit code.
  EXPECT_EQ(reap_child(pid), 128 + SIGKILL);
}

}  // namespace
}  // namespace imageworks::test
