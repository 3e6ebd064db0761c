// The upstream keep-alive pool (issue 12): idle connections are closed after
// CHAT_PROXY_UPSTREAM_IDLE_TIMEOUT_MS and at most CHAT_PROXY_UPSTREAM_MAX_IDLE are kept per
// backend and event loop; the rest are closed as they come back.
#include <chrono>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "support/chat_rig.hpp"
#include "support/sse_client.hpp"

using namespace imageworks::test;
using namespace std::chrono_literals;

TEST(E2eUpstreamPool, AnIdleConnectionIsClosedAfterTheIdleTimeout) {
  ChatRig rig(Env{{"CHAT_PROXY_UPSTREAM_IDLE_TIMEOUT_MS", "300"}});
  ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  const auto released = std::chrono::steady_clock::now();
  ASSERT_TRUE(rig.fake.wait_for_idle_closes(1, 10s)) << "the idle connection was never let go";
  EXPECT_GE(std::chrono::steady_clock::now() - released, 250ms) << "closed before its idle timeout";
  EXPECT_EQ(rig.fake.connections_accepted(), 1u);
  ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  EXPECT_EQ(rig.fake.connections_accepted(), 2u) << "a fresh connection after the old one was closed";
}

TEST(E2eUpstreamPool, WithinTheIdleTimeoutTheConnectionIsReused) {
  ChatRig rig(Env{{"CHAT_PROXY_THREADS", "1"}});  // one event loop, one pool; default timeout 60 s
  ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  EXPECT_FALSE(rig.fake.wait_for_idle_closes(1, 400ms));
  ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  ASSERT_EQ(rig.chat(chat_body(true)).status, 200);
  EXPECT_EQ(rig.fake.connections_accepted(), 1u);
}

TEST(E2eUpstreamPool, AtMostMaxIdleAreKept) {
  ChatRig rig(Env{{"CHAT_PROXY_UPSTREAM_MAX_IDLE", "2"}, {"CHAT_PROXY_THREADS", "1"}});
  FakeOpenAI::Behavior b;
  b.gate_chunks = true;  // six streams at once: six upstream connections
  rig.fake.set_behavior(b);
  std::vector<std::unique_ptr<SseClient>> streams;
  for (int i = 0; i < 6; ++i) {
    streams.push_back(std::make_unique<SseClient>(rig.port(), "/v1/chat/completions", chat_body(true).dump(), 20s));
    ASSERT_EQ(streams.back()->status(), 200);
  }
  ASSERT_TRUE(rig.fake.wait_for_requests(6, 10s));
  EXPECT_EQ(rig.fake.connections_accepted(), 6u);
  rig.fake.release_all();
  for (auto& s : streams) {
    auto frames = s->rest();
    ASSERT_FALSE(frames.empty());
    EXPECT_EQ(frames.back(), "data: [DONE]");
  }
  EXPECT_TRUE(rig.fake.wait_for_idle_closes(4, 10s)) << "six came back, two may stay";
  EXPECT_FALSE(rig.fake.wait_for_idle_closes(5, 300ms)) << "the two kept are not closed";
  rig.fake.set_behavior({});
  for (int i = 0; i < 2; ++i) ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  EXPECT_EQ(rig.fake.connections_accepted(), 6u) << "the two kept connections are reused";
}
