// FakeOpenAI routes and stream scripts: byte splitting, CRLF, the chunk gate, llama.cpp
// flavour, mid-stream errors and tool calls.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "fakes/fake_openai.hpp"
#include "unit/fake_openai_client.hpp"

namespace imageworks::test {
namespace {

using namespace fake_client;
using nlohmann::json;
using namespace std::chrono_literals;

std::vector<Event> stream_with(const FakeOpenAI::Behavior& b, const json& request = chat_request(true)) {
  FakeOpenAI fake(b);
  Client client(fake.port());
  EXPECT_EQ(client.start_stream(request), 200u);
  return client.rest_of_stream();
}

TEST(FakeOpenAIRoutes, ModelsHealthEmbeddingsCompletionsEchoAnd404) {
  FakeOpenAI::Behavior b;
  b.models = {"m1", "m2"};
  FakeOpenAI fake(b);
  Client client(fake.port());

  const json models = client.request(http::verb::get, "/v1/models").json_body();
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][1]["id"], "m2");
  EXPECT_EQ(models["data"][1]["object"], "model");

  EXPECT_EQ(client.request(http::verb::get, "/health").status, 200u);

  const json emb = client.request(http::verb::post, "/v1/embeddings",
                                  R"({"model":"e","input":["a","b"]})").json_body();
  EXPECT_EQ(emb["object"], "list");
  ASSERT_EQ(emb["data"].size(), 2u);
  EXPECT_EQ(emb["data"][1]["index"], 1);
  EXPECT_EQ(emb["data"][0]["object"], "embedding");
  EXPECT_EQ(emb["model"], "e");

  const json cmpl = client.request(http::verb::post, "/v1/completions", R"({"model":"c","prompt":"x"})").json_body();
  EXPECT_EQ(cmpl["object"], "text_completion");
  EXPECT_EQ(cmpl["choices"][0]["text"], "toktoktok");
  EXPECT_EQ(cmpl["model"], "c");

  const json echo = client.request(http::verb::post, "/v1/audio/speech?x=1", R"({"model":"tts"})").json_body();
  EXPECT_EQ(echo["echo_path"], "/v1/audio/speech");
  EXPECT_EQ(echo["model"], "tts");

  EXPECT_EQ(client.request(http::verb::get, "/v1/unknown").status, 404u);
  EXPECT_EQ(client.request(http::verb::get, "/nowhere").status, 404u);
  EXPECT_EQ(client.request(http::verb::post, "/v1/chat/completions", "{not json").status, 400u);
  EXPECT_EQ(fake.connections_accepted(), 1u);
}

TEST(FakeOpenAIRoutes, CompletionsStream) {
  const json req = {{"model", "c"}, {"prompt", "x"}, {"stream", true}};
  FakeOpenAI fake;
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(req, "/v1/completions"), 200u);
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 5u);  // 3 text chunks, finish, [DONE]
  EXPECT_EQ(json::parse(events[0].data)["choices"][0]["text"], "tok");
  EXPECT_EQ(json::parse(events[3].data)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[4].data, "[DONE]");
}

TEST(FakeOpenAIStream, SplitEveryByteAndCrlfCarryTheSameEvents) {
  FakeOpenAI::Behavior plain;
  plain.chunks = 2;
  FakeOpenAI::Behavior split = plain, crlf = plain, both = plain;
  split.split_every_byte = true;
  crlf.crlf = true;
  both.split_every_byte = both.crlf = true;
  const auto reference = stream_with(plain, chat_request(true, true));
  ASSERT_EQ(reference.size(), 6u);
  for (const auto& b : {split, crlf, both}) {
    const auto events = stream_with(b, chat_request(true, true));
    ASSERT_EQ(events.size(), reference.size());
    EXPECT_EQ(joined_content(events), "toktok");
    EXPECT_EQ(events.back().data, "[DONE]");
    EXPECT_EQ(json::parse(events[4].data)["usage"]["completion_tokens"], 2);
  }
}

TEST(FakeOpenAIStream, GateHoldsEachFrameUntilReleased) {
  FakeOpenAI::Behavior b;
  b.gate_chunks = true;
  FakeOpenAI fake(b);
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
  ASSERT_TRUE(client.next_event());  // the role chunk
  EXPECT_EQ(fake.frames_sent(), 1u);  // the first content chunk waits for the test
  fake.release_chunk();
  auto first_content = client.next_event();
  ASSERT_TRUE(first_content);
  EXPECT_EQ(joined_content({*first_content}), "tok");
  EXPECT_EQ(fake.frames_sent(), 2u);
  fake.release_all();
  const auto rest = client.rest_of_stream();
  ASSERT_EQ(rest.size(), 4u);
  EXPECT_EQ(rest.back().data, "[DONE]");
}

TEST(FakeOpenAIStream, DisconnectWhileGatedOrDelayedIsNoticed) {
  FakeOpenAI::Behavior b;
  b.gate_chunks = true;
  FakeOpenAI fake(b);
  {
    Client client(fake.port());
    ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
    ASSERT_TRUE(client.next_event());
  }  // the client's destructor closes the socket
  EXPECT_TRUE(fake.wait_for_client_disconnect(5s, 1));
  b.gate_chunks = false;
  b.response_delay = 1h;
  fake.set_behavior(b);
  Client client(fake.port());
  client.send(http::verb::post, "/v1/chat/completions", chat_request(false).dump());
  ASSERT_TRUE(fake.wait_for_requests(2, 5s));
  client.close();
  EXPECT_TRUE(fake.wait_for_client_disconnect(5s, 2));
}

TEST(FakeOpenAIStream, LlamaCppStampsEachChunkAnew) {
  FakeOpenAI::Behavior b;
  b.llamacpp_style = true;
  const auto events = stream_with(b);
  ASSERT_GE(events.size(), 3u);
  EXPECT_NE(json::parse(events[0].data)["created"], json::parse(events[1].data)["created"]);
  EXPECT_EQ(json::parse(events[0].data)["id"], json::parse(events[1].data)["id"]);
}

TEST(FakeOpenAIStream, ErrorAfterChunksVllmStyle) {
  FakeOpenAI::Behavior b;
  b.error_after_chunks = 1;
  const auto events = stream_with(b);
  ASSERT_EQ(events.size(), 4u);  // role, content, error, [DONE]
  EXPECT_EQ(json::parse(events[2].data)["error"]["code"], 500);
  EXPECT_EQ(events[3].data, "[DONE]");
}

TEST(FakeOpenAIStream, ErrorAfterChunksLegacyLlamaCppLine) {
  FakeOpenAI::Behavior b;
  b.error_after_chunks = 0;
  b.llamacpp_style = true;
  const auto events = stream_with(b);
  ASSERT_EQ(events.size(), 2u);  // role, then `error: {...}` and the end of the stream
  EXPECT_EQ(events[1].event, "error");
  EXPECT_EQ(json::parse(events[1].data)["message"], "fake stream error");
}

TEST(FakeOpenAIStream, ToolCallNonStreamAndStream) {
  FakeOpenAI::Behavior b;
  b.tool_call = true;
  FakeOpenAI fake(b);
  Client client(fake.port());
  const json body = client.chat(chat_request(false)).json_body();
  const json& call = body["choices"][0]["message"]["tool_calls"][0];
  EXPECT_EQ(call["id"], "call_fake_0");
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"], R"({"city":"Paris"})");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");

  ASSERT_EQ(client.start_stream(chat_request(true)), 200u);
  std::string arguments, finish;
  for (const auto& e : client.rest_of_stream()) {
    if (e.data == "[DONE]") continue;
    const json chunk = json::parse(e.data);
    const json& choice = chunk["choices"][0];
    if (choice["finish_reason"].is_string()) finish = choice["finish_reason"];
    if (!choice["delta"].contains("tool_calls")) continue;
    const json& frag = choice["delta"]["tool_calls"][0];
    EXPECT_EQ(frag["index"], 0);
    arguments += frag["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(arguments, R"({"city":"Paris"})");
  EXPECT_EQ(finish, "tool_calls");
}

}  // namespace
}  // namespace imageworks::test
