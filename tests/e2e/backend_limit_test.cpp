// CHAT_PROXY_BACKEND_MAX_CONCURRENT / _MAX_QUEUE end to end: with one slot and one queue
// place, a stream holds the slot, of two more requests one waits and the other is told at
// once to come back (429 err_rate_limited, Retry-After: 1), and the waiting one is served
// when the stream ends. Other backends are not affected.
#include <chrono>
#include <future>

#include <gtest/gtest.h>

#include "support/chat_rig.hpp"
#include "support/sse_client.hpp"

using namespace imageworks::test;
using namespace std::chrono_literals;
using nlohmann::json;

TEST(E2eBackendLimit, OverTheLimitRequestsQueueThenGet429AndTheQueuedOneIsServed) {
  ChatRig rig(Env{{"CHAT_PROXY_BACKEND_MAX_CONCURRENT", "1"}, {"CHAT_PROXY_BACKEND_MAX_QUEUE", "1"}});
  FakeOpenAI::Behavior b;
  b.gate_chunks = true;  // the stream holds its slot until released
  rig.fake.set_behavior(b);
  SseClient a(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  ASSERT_EQ(a.status(), 200);
  ASSERT_TRUE(a.next_frame().has_value());

  auto send = [&] { return rig.chat(chat_body(false)); };
  auto r1 = std::async(std::launch::async, send);
  auto r2 = std::async(std::launch::async, send);
  // Exactly one of them is refused, at once, while the stream still holds the slot.
  std::future<HttpReply>* refused = nullptr;
  std::future<HttpReply>* queued = nullptr;
  for (int i = 0; i < 400 && !refused; ++i) {
    if (r1.wait_for(25ms) == std::future_status::ready) refused = &r1, queued = &r2;
    else if (r2.wait_for(0ms) == std::future_status::ready) refused = &r2, queued = &r1;
  }
  ASSERT_TRUE(refused) << "neither request was refused";
  auto no = refused->get();
  expect_error(no, 429, "err_rate_limited");
  EXPECT_EQ(no.header("retry-after"), "1");
  EXPECT_EQ(rig.fake.requests().size(), 1u) << "nothing but the stream reached the backend";
  EXPECT_NE(queued->wait_for(0ms), std::future_status::ready);

  // A model on another backend is not held up by this one's limit.
  expect_error(rig.chat(chat_body(false, "dead")), 502, "err_backend_unavailable");

  rig.fake.release_all();  // the stream ends, the slot passes to the queued request
  EXPECT_TRUE(stream_completed(a.rest()));
  auto yes = queued->get();
  EXPECT_EQ(yes.status, 200) << yes.body;
  EXPECT_EQ(rig.fake.requests().size(), 2u);
}

// A client that leaves while queued gives its place back: the next request is queued (and
// served), not refused.
TEST(E2eBackendLimit, AClientLeavingTheQueueFreesItsPlace) {
  ChatRig rig(Env{{"CHAT_PROXY_BACKEND_MAX_CONCURRENT", "1"}, {"CHAT_PROXY_BACKEND_MAX_QUEUE", "1"}});
  FakeOpenAI::Behavior b;
  b.gate_chunks = true;
  rig.fake.set_behavior(b);
  SseClient a(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  ASSERT_EQ(a.status(), 200);
  ASSERT_TRUE(a.next_frame().has_value());
  {
    // Queued (its head never comes while the stream holds the slot), then gone.
    auto leaving = std::async(std::launch::async, [&] {
      try {
        return http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(false).dump(),
                         {{"Content-Type", "application/json"}}, 500ms);
      } catch (const std::exception&) {
        return HttpReply{};  // gave up waiting and closed the connection
      }
    });
    EXPECT_EQ(leaving.get().status, 0) << "the queued request should have timed out client-side";
  }
  // The proxy notices the departure within a few peer checks (200 ms apart, on a 50 ms
  // wheel); until then a new request may still be refused. Bounded by time, not by a count
  // of tries: a refusal takes a millisecond, a loaded machine's peer check much longer.
  HttpReply r;
  std::future<HttpReply> next;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    next = std::async(std::launch::async, [&] { return rig.chat(chat_body(false)); });
    if (next.wait_for(300ms) != std::future_status::ready) break;  // queued: the place was free
    r = next.get();
    ASSERT_EQ(r.status, 429) << r.body;
  }
  ASSERT_TRUE(next.valid()) << "the departed client's place was still taken after 10 s";
  rig.fake.release_all();
  EXPECT_TRUE(stream_completed(a.rest()));
  auto served = next.get();
  EXPECT_EQ(served.status, 200) << served.body;
}
