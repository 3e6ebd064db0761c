// The fake_vllm executable's end of life, which VllmManager's stop/switch/crash handling will
// be tested against: SIGTERM and the stop delay, an ignored SIGTERM, a crash mid-stream and
// the worker process left in the group.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/proxy_process.hpp"
#include "unit/fake_openai_client.hpp"
#include "unit/fake_vllm_child.hpp"

namespace imageworks::test {
namespace {

using namespace fake_client;
using namespace fake_vllm_child;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::int64_t t_ms(const json& event) { return event.at("t_ms").get<std::int64_t>(); }

TEST(FakeVllmLifecycle, SigtermStopsAcceptingAndExitsZeroAfterTheStopDelay) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port", "0", "--fake-load-ms", "0", "--fake-stop-delay-ms", "500",
                           "--fake-spawn-worker"});
  const unsigned short port = fake.wait_healthy();
  ASSERT_NE(port, 0);
  const auto spawned = fake.events.wait_for("worker_spawned", 5s);
  ASSERT_TRUE(spawned);
  const pid_t worker = (*spawned)["worker_pid"].get<pid_t>();

  const auto sent = Clock::now();
  ASSERT_EQ(kill(fake.pid, SIGTERM), 0);
  const auto sigterm = fake.events.wait_for("sigterm", 5s);
  ASSERT_TRUE(sigterm);
  EXPECT_EQ((*sigterm)["signal"], SIGTERM);
  EXPECT_EQ((*sigterm)["ignored"], false);
  EXPECT_TRUE(connection_refused(port));  // the listener closed at once; the exit comes later
  EXPECT_TRUE(process_alive(fake.pid));

  EXPECT_EQ(fake.wait_exit(5s), 0);
  EXPECT_GE(Clock::now() - sent, 500ms);
  const auto exit = fake.events.wait_for("exit", 1s);
  ASSERT_TRUE(exit);
  EXPECT_EQ((*exit)["code"], 0);
  EXPECT_GE(t_ms(*exit) - t_ms(*sigterm), 499);
  // A clean shutdown takes the worker with it (vLLM stops its engine core).
  EXPECT_TRUE(wait_process_gone(worker, 2s));
}

TEST(FakeVllmLifecycle, IgnoredSigtermKeepsServingUntilSigkill) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port", "0", "--fake-load-ms", "0", "--fake-ignore-sigterm", "--fake-stop-delay-ms", "0"});
  const unsigned short port = fake.wait_healthy();
  ASSERT_NE(port, 0);
  ASSERT_EQ(kill(fake.pid, SIGTERM), 0);
  const auto sigterm = fake.events.wait_for("sigterm", 5s);
  ASSERT_TRUE(sigterm);
  EXPECT_EQ((*sigterm)["ignored"], true);
  EXPECT_EQ(http_call(port, "GET", "/health").status, 200);  // still up after handling it
  EXPECT_FALSE(fake.wait_exit(200ms));

  ASSERT_EQ(kill(fake.pid, SIGKILL), 0);
  EXPECT_EQ(fake.wait_exit(5s), 128 + SIGKILL);
  EXPECT_TRUE(fake.events.all("exit").empty());
}

TEST(FakeVllmLifecycle, CrashAfterHealthyEndsAStreamMidwayAndExitsNonZero) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port", "0", "--served-model-name", "m", "--fake-load-ms", "0",
                           "--fake-crash-after-ms", "400", "--fake-chunks", "50", "--fake-chunk-delay-ms", "50"});
  const unsigned short port = fake.wait_healthy();
  ASSERT_NE(port, 0);
  Client client(port);
  json req = {{"model", "m"}, {"stream", true}, {"messages", json::array()}};
  ASSERT_EQ(client.start_stream(req), 200u);
  const auto events = client.rest_of_stream();  // 50 × 50 ms would outlast the crash
  ASSERT_FALSE(events.empty());
  EXPECT_NE(events.back().data, "[DONE]");
  EXPECT_TRUE(client.error());

  EXPECT_EQ(fake.wait_exit(5s), 3);
  const auto crash = fake.events.wait_for("crash", 1s);
  ASSERT_TRUE(crash);
  EXPECT_GE(t_ms(*crash) - t_ms(fake.events.all("healthy").at(0)), 399);
  EXPECT_TRUE(fake.events.all("exit").empty());
}

TEST(FakeVllmLifecycle, WorkerSharesTheProcessGroupAndDiesWithKillpg) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port", "0", "--fake-spawn-worker", "--fake-ignore-sigterm"});
  const auto spawned = fake.events.wait_for("worker_spawned", 10s);
  ASSERT_TRUE(spawned);
  const pid_t worker = (*spawned)["worker_pid"].get<pid_t>();
  ASSERT_GT(worker, 0);
  EXPECT_NE(worker, fake.pid);
  EXPECT_EQ(getpgid(worker), fake.pid);
  EXPECT_TRUE(process_alive(worker));

  // Killing only the server leaves the worker running: what the manager must not do.
  ASSERT_EQ(kill(fake.pid, SIGKILL), 0);
  EXPECT_EQ(fake.wait_exit(5s), 128 + SIGKILL);
  EXPECT_FALSE(wait_process_gone(worker, 200ms));
  EXPECT_TRUE(process_alive(worker));

  ASSERT_EQ(killpg(fake.pid, SIGKILL), 0);  // the group outlives its leader
  EXPECT_TRUE(wait_process_gone(worker, 5s));
  EXPECT_FALSE(process_alive(worker));
}

TEST(FakeVllmLifecycle, NeverHealthyStays503) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port", "0", "--fake-load-ms", "0", "--fake-never-healthy"});
  const unsigned short port = fake.wait_listening();
  ASSERT_NE(port, 0);
  EXPECT_FALSE(fake.events.wait_for("healthy", 300ms));
  EXPECT_EQ(http_call(port, "GET", "/health").status, 503);
}

TEST(FakeVllmLifecycle, BadCommandLineExitsTwo) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--fake-chunks", "many"});
  EXPECT_EQ(fake.wait_exit(10s), 2);
  EXPECT_TRUE(fake.events.all().empty());
}

}  // namespace
}  // namespace imageworks::test
