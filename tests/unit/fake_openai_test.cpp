// FakeOpenAI against a small synchronous Beast client: the fake must be right before the
// proxy's tests can trust it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "fakes/fake_openai.hpp"
#include "unit/fake_openai_client.hpp"

namespace imageworks::test {
namespace {

using namespace fake_client;

using nlohmann::json;
using namespace std::chrono_literals;

TEST(FakeOpenAI, NonStreamChatCompletion) {
  FakeOpenAI fake;
  Client client(fake.port());
  const Reply r = client.chat(chat_request(false));
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.content_type, "application/json");
  const json body = r.json_body();
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "client-model");
  EXPECT_TRUE(body["id"].is_string());
  EXPECT_TRUE(body["created"].is_number_integer());
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "toktoktok");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_EQ(body["usage"]["total_tokens"], 10);
  EXPECT_EQ(fake.base_url(), "http://127.0.0.1:" + std::to_string(fake.port()));
}

TEST(FakeOpenAI, StreamEndsWithDoneAndHasNoUsageUnlessAsked) {
  FakeOpenAI fake;
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
  EXPECT_EQ(client.content_type(), "text/event-stream");
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 6u);  // role, 3 content, finish, [DONE]
  EXPECT_EQ(events.back().data, "[DONE]");
  EXPECT_EQ(joined_content(events), "toktoktok");
  const json first = json::parse(events[0].data);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i].data);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], first["id"]);
    EXPECT_EQ(c["created"], first["created"]);
    EXPECT_EQ(c["model"], "client-model");
    EXPECT_FALSE(c.contains("usage"));
  }
  EXPECT_EQ(json::parse(events[4].data)["choices"][0]["finish_reason"], "stop");
}

TEST(FakeOpenAI, StreamUsageChunkWhenIncludeUsage) {
  FakeOpenAI fake;
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat_request(true, true)), 200u);
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events.back().data, "[DONE]");
  const json usage = json::parse(events[5].data);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 3);
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 7);
}

TEST(FakeOpenAI, WrongApiKeyIs401) {
  FakeOpenAI::Behavior b;
  b.required_api_key = "sk-right";
  FakeOpenAI fake(b);
  Client client(fake.port());
  const Reply wrong = client.chat(chat_request(false), "sk-wrong");
  EXPECT_EQ(wrong.status, 401u);
  EXPECT_EQ(wrong.json_body()["error"]["code"], "invalid_api_key");
  EXPECT_EQ(client.chat(chat_request(false)).status, 401u);
  EXPECT_EQ(client.chat(chat_request(false), "sk-right").status, 200u);
  EXPECT_EQ(client.request(http::verb::get, "/health").status, 200u);  // health needs no key
}

TEST(FakeOpenAI, ErrorStatusReturnsTheScriptedBody) {
  FakeOpenAI fake;
  FakeOpenAI::Behavior b;
  b.status = 400;
  b.error_body = R"({"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}})";
  fake.set_behavior(b);
  Client client(fake.port());
  Reply r = client.chat(chat_request(true));
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, b.error_body);

  b.error_body.clear();  // default: vLLM's shape with an integer code
  b.status = 503;
  fake.set_behavior(b);
  r = client.chat(chat_request(false));
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(r.json_body()["object"], "error");
  EXPECT_EQ(r.json_body()["code"], 503);

  b.llamacpp_style = true;
  fake.set_behavior(b);
  r = client.chat(chat_request(false));
  EXPECT_EQ(r.json_body()["error"]["code"], 503);
}

TEST(FakeOpenAI, CloseAfterChunksCutsTheBody) {
  FakeOpenAI::Behavior b;
  b.close_after_chunks = 1;
  FakeOpenAI fake(b);
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 2u);  // role + one content chunk, then the socket closes
  EXPECT_EQ(joined_content(events), "tok");
  EXPECT_EQ(client.error(), http::error::partial_message);
  EXPECT_EQ(fake.client_disconnects(), 0u);  // the fake's own close is not a client leaving
}

TEST(FakeOpenAI, DetectsClientDisconnectWhileStalledMidStream) {
  FakeOpenAI::Behavior b;
  b.stall_after_chunks = 1;
  FakeOpenAI fake(b);
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
  ASSERT_TRUE(client.next_event());
  ASSERT_TRUE(client.next_event());
  const auto closed_at = std::chrono::steady_clock::now();
  client.close();
  const auto noticed = fake.wait_for_client_disconnect(5s);
  ASSERT_TRUE(noticed);
  EXPECT_GE(*noticed, closed_at);
  EXPECT_EQ(fake.client_disconnects(), 1u);
}

TEST(FakeOpenAI, DetectsClientDisconnectWhileStalledBeforeHeaders) {
  FakeOpenAI::Behavior b;
  b.stall_before_headers = true;
  FakeOpenAI fake(b);
  Client client(fake.port());
  client.send(http::verb::post, "/v1/chat/completions", chat_request(false).dump());
  ASSERT_TRUE(fake.wait_for_requests(1, 5s));
  client.close();
  EXPECT_TRUE(fake.wait_for_client_disconnect(5s));
}

TEST(FakeOpenAI, DestructionDoesNotWaitForStalledReplies) {
  auto fake = std::make_unique<FakeOpenAI>();
  FakeOpenAI::Behavior b;
  b.stall_before_headers = true;
  fake->set_behavior(b);
  Client stalled(fake->port()), gated(fake->port()), idle(fake->port());
  stalled.send(http::verb::post, "/v1/chat/completions", chat_request(false).dump());
  b.stall_before_headers = false;
  b.gate_chunks = true;
  ASSERT_TRUE(fake->wait_for_requests(1, 5s));
  fake->set_behavior(b);
  ASSERT_EQ(gated.start_stream(chat_request(true)), 200u);
  fake.reset();  // must return although both replies wait forever and `idle` is connected
  EXPECT_LE(gated.rest_of_stream().size(), 1u);  // the role chunk, then the fake's close
}

TEST(FakeOpenAI, KeepAliveReusesTheConnectionAndRecordsRequests) {
  FakeOpenAI fake;
  Client client(fake.port());
  EXPECT_EQ(client.chat(chat_request(false), "sk-any").status, 200u);
  EXPECT_EQ(client.request(http::verb::get, "/v1/models").status, 200u);
  ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
  client.rest_of_stream();
  EXPECT_EQ(client.chat(chat_request(false)).status, 200u);
  EXPECT_EQ(fake.connections_accepted(), 1u);
  const auto reqs = fake.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].target, "/v1/chat/completions");
  EXPECT_EQ(reqs[0].header("authorization"), "Bearer sk-any");
  EXPECT_EQ(reqs[0].header("x-test-header"), "yes");
  EXPECT_EQ(reqs[0].header("absent"), "");
  EXPECT_EQ(reqs[0].json()["model"], "client-model");
  EXPECT_EQ(reqs[1].method, "GET");
  EXPECT_TRUE(fake.wait_for_requests(4, 1s));
  EXPECT_EQ(fake.client_disconnects(), 0u);
}

}  // namespace
}  // namespace imageworks::test
