// FakeOllama against a small synchronous Beast client: the loaded-model bookkeeping, the
// keep_alive unload, the missing /api/stop and Ollama's OpenAI shapes must be right before
// the GPU-coordination tests can trust them.
#include <gtest/gtest.h>

#include <future>

#include <nlohmann/json.hpp>

#include "fakes/fake_ollama.hpp"
#include "unit/fake_openai_client.hpp"

namespace imageworks::test {
namespace {

using namespace fake_client;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kModel = "llama3.2:3b";

Reply get(Client& c, const std::string& target) { return c.request(http::verb::get, target); }
Reply post(Client& c, const std::string& target, const json& body) {
  return c.request(http::verb::post, target, body.dump());
}

json unload_request(const std::string& model) { return {{"model", model}, {"keep_alive", 0}}; }

json chat(const std::string& model, bool stream, bool include_usage = false) {
  json req = {{"model", model}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  if (stream) req["stream"] = true;
  if (include_usage) req["stream_options"] = {{"include_usage", true}};
  return req;
}

std::vector<std::string> ps_names(Client& c) {
  std::vector<std::string> names;
  const json ps = get(c, "/api/ps").json_body();  // a local: the loop must not range over a temporary
  for (const auto& m : ps["models"]) names.push_back(m["name"]);
  return names;
}

TEST(FakeOllama, PsThenKeepAliveUnloadThenPsEmptyAfterUnloadDelay) {
  FakeOllama::Behavior b;
  b.loaded = {kModel};
  b.unload_delay = 300ms;
  FakeOllama fake(b);
  Client client(fake.port());

  const json ps = get(client, "/api/ps").json_body();
  ASSERT_EQ(ps["models"].size(), 1u);
  const json& m = ps["models"][0];
  EXPECT_EQ(m["name"], kModel);
  EXPECT_EQ(m["model"], kModel);
  EXPECT_GT(m["size_vram"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(m["details"]["format"], "gguf");
  EXPECT_EQ(m["details"]["quantization_level"], "Q4_K_M");
  EXPECT_EQ(m["expires_at"].get<std::string>().back(), 'Z');
  EXPECT_EQ(m["digest"].get<std::string>().size(), 64u);

  const Reply r = post(client, "/api/generate", unload_request(kModel));
  ASSERT_EQ(r.status, 200u);
  const json g = r.json_body();
  EXPECT_EQ(g["model"], kModel);
  EXPECT_EQ(g["response"], "");
  EXPECT_EQ(g["done"], true);
  EXPECT_EQ(g["done_reason"], "unload");
  EXPECT_TRUE(g["created_at"].is_string());

  // The real unload is asynchronous: the model is still listed right after the reply.
  EXPECT_EQ(ps_names(client), std::vector<std::string>{kModel});
  ASSERT_TRUE(fake.wait_until_unloaded(5s));
  EXPECT_TRUE(ps_names(client).empty());
  EXPECT_TRUE(fake.loaded().empty());

  const auto calls = fake.calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_TRUE(calls[1].is_unload());
  EXPECT_EQ(calls[1].keep_alive, json(0));
  const auto left = fake.unloaded_at(kModel);
  ASSERT_TRUE(left);
  EXPECT_GE(*left - calls[1].at, 300ms);
}

TEST(FakeOllama, ZeroKeepAliveStringsUnloadOthersLoad) {
  FakeOllama::Behavior b;
  b.loaded = {kModel, "qwen2.5:7b"};
  FakeOllama fake(b);
  Client client(fake.port());
  EXPECT_EQ(post(client, "/api/generate", {{"model", kModel}, {"keep_alive", "0s"}}).json_body()["done_reason"],
            "unload");
  ASSERT_TRUE(fake.wait_until_unloaded(2s, kModel));
  EXPECT_EQ(fake.loaded(), std::vector<std::string>{"qwen2.5:7b"});
  // Without a zero keep_alive a prompt-less generate loads (Ollama's preload).
  EXPECT_EQ(post(client, "/api/generate", {{"model", kModel}, {"keep_alive", "5m"}}).json_body()["done_reason"],
            "load");
  EXPECT_TRUE(fake.wait_until_loaded(kModel, 1s));
  EXPECT_FALSE(fake.calls()[1].is_unload());
  EXPECT_EQ(post(client, "/api/generate", unload_request("missing:1b")).status, 404u);
}

TEST(FakeOllama, IgnoreUnloadKeepsTheModelListed) {
  FakeOllama::Behavior b;
  b.loaded = {kModel};
  b.ignore_unload = true;
  FakeOllama fake(b);
  Client client(fake.port());
  EXPECT_EQ(post(client, "/api/generate", unload_request(kModel)).json_body()["done_reason"], "unload");
  EXPECT_FALSE(fake.wait_until_unloaded(300ms));
  EXPECT_EQ(ps_names(client), std::vector<std::string>{kModel});
  EXPECT_FALSE(fake.unloaded_at(kModel));
}

TEST(FakeOllama, ApiStopDoesNotExistAndIsRecorded) {
  FakeOllama fake;
  Client client(fake.port());
  const Reply r = post(client, "/api/stop", {{"model", kModel}});
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "404 page not found");
  EXPECT_EQ(r.content_type.rfind("text/plain", 0), 0u);
  const auto calls = fake.calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].method, "POST");
  EXPECT_EQ(calls[0].path, "/api/stop");
  EXPECT_EQ(calls[0].model, kModel);
  // Wrong method on a real route is the router's 404 too.
  EXPECT_EQ(get(client, "/api/generate").status, 404u);
}

TEST(FakeOllama, InfoRoutes) {
  FakeOllama fake;
  Client client(fake.port());
  EXPECT_EQ(get(client, "/").body, "Ollama is running");
  EXPECT_EQ(get(client, "/api/version").json_body()["version"], "0.6.2");
  const json tags = get(client, "/api/tags").json_body();
  ASSERT_EQ(tags["models"].size(), 2u);
  EXPECT_EQ(tags["models"][0]["name"], kModel);
  const json models = get(client, "/v1/models").json_body();
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][1]["id"], "qwen2.5:7b");
  EXPECT_EQ(models["data"][1]["owned_by"], "library");
  EXPECT_TRUE(get(client, "/api/ps").json_body()["models"].empty());
}

TEST(FakeOllama, ChatStreamHasOllamaShapeAndUsageOnlyWhenAsked) {
  FakeOllama fake;
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat(kModel, true)), 200u);
  EXPECT_EQ(client.content_type(), "text/event-stream");
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 5u);  // 3 content, final, [DONE]; no separate role chunk
  EXPECT_EQ(events.back().data, "[DONE]");
  EXPECT_EQ(joined_content(events), "toktoktok");
  const json first = json::parse(events[0].data);
  EXPECT_EQ(first["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i].data);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["system_fingerprint"], "fp_ollama");
    EXPECT_EQ(c["model"], kModel);
    EXPECT_EQ(c["id"], first["id"]);
    EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
    EXPECT_TRUE(c["choices"][0]["delta"]["content"].is_string());
    EXPECT_FALSE(c.contains("usage"));
  }
  EXPECT_TRUE(json::parse(events[2].data)["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(json::parse(events[3].data)["choices"][0]["finish_reason"], "stop");

  // A fresh client: fake_client::Client does not reset its SseParser between two streams.
  Client usage_client(fake.port());
  ASSERT_EQ(usage_client.start_stream(chat(kModel, true, true)), 200u);
  const auto with_usage = usage_client.rest_of_stream();
  ASSERT_EQ(with_usage.size(), 6u);
  const json usage = json::parse(with_usage[4].data);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 3);
  EXPECT_EQ(usage["system_fingerprint"], "fp_ollama");
  EXPECT_EQ(with_usage.back().data, "[DONE]");

  const json whole = client.chat(chat(kModel, false)).json_body();
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["system_fingerprint"], "fp_ollama");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "toktoktok");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(whole["usage"]["total_tokens"], 10);
}

TEST(FakeOllama, ToolCallsArriveWholeInOneChunkAllAtIndexZero) {
  FakeOllama::Behavior b;
  b.tool_calls = true;
  b.tool_names = {"get_weather", "get_time"};
  FakeOllama fake(b);
  Client client(fake.port());
  ASSERT_EQ(client.start_stream(chat(kModel, true)), 200u);
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 3u);  // the calls, final, [DONE]
  const json calls = json::parse(events[0].data)["choices"][0]["delta"]["tool_calls"];
  ASSERT_EQ(calls.size(), 2u);
  for (const auto& call : calls) {
    EXPECT_EQ(call["index"], 0);
    EXPECT_EQ(call["type"], "function");
    EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
    EXPECT_EQ(call["id"].get<std::string>().size(), 13u);
    ASSERT_TRUE(call["function"]["arguments"].is_string());
    EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>())["city"], "Paris");
  }
  EXPECT_NE(calls[0]["id"], calls[1]["id"]);
  EXPECT_EQ(calls[1]["function"]["name"], "get_time");
  EXPECT_EQ(json::parse(events[1].data)["choices"][0]["finish_reason"], "stop");

  const json whole = client.chat(chat(kModel, false)).json_body();
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(whole["choices"][0]["message"]["tool_calls"].size(), 2u);
  EXPECT_EQ(whole["choices"][0]["message"]["tool_calls"][1]["index"], 0);
}

TEST(FakeOllama, ChatLoadsItsModelIntoPsFromTheRequestOn) {
  FakeOllama::Behavior b;
  b.load_delay = 400ms;
  b.gate_chunks = true;
  FakeOllama fake(b);
  Client observer(fake.port());
  EXPECT_TRUE(ps_names(observer).empty());
  // The stream blocks (load delay, then the gate): read it on another thread.
  auto streamed = std::async(std::launch::async, [&] {
    Client streamer(fake.port());
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(streamer.start_stream(chat(kModel, true)), 200u);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 400ms);  // not loaded: load_delay first
    return streamer.rest_of_stream().size();
  });
  ASSERT_TRUE(fake.wait_until_loaded(kModel, 5s));  // listed while loading, like Ollama
  EXPECT_EQ(ps_names(observer), std::vector<std::string>{kModel});
  fake.release_all();
  EXPECT_EQ(streamed.get(), 5u);

  Client client(fake.port());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(client.chat(chat(kModel, false)).status, 200u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 400ms);  // already loaded: no delay
  EXPECT_EQ(client.chat(chat("missing:1b", false)).status, 404u);
  EXPECT_EQ(fake.loaded(), std::vector<std::string>{kModel});
  EXPECT_EQ(fake.calls().front().path, "/api/ps");
}

TEST(FakeOllama, RecordsCallsInOrderWithModelAndKeepAlive) {
  FakeOllama::Behavior b;
  b.loaded = {kModel};
  FakeOllama fake(b);
  Client client(fake.port());
  get(client, "/api/version");
  get(client, "/api/ps");
  post(client, "/api/generate", {{"model", kModel}, {"keep_alive", "0"}});
  client.chat(chat("qwen2.5:7b", false));
  ASSERT_TRUE(fake.wait_for_calls(4, 2s));
  EXPECT_TRUE(fake.wait_for_calls([](const auto& calls) { return calls.back().path == "/v1/chat/completions"; }, 1s));
  const auto calls = fake.calls();
  ASSERT_EQ(calls.size(), 4u);
  const std::vector<std::string> paths = {calls[0].path, calls[1].path, calls[2].path, calls[3].path};
  EXPECT_EQ(paths, (std::vector<std::string>{"/api/version", "/api/ps", "/api/generate", "/v1/chat/completions"}));
  EXPECT_EQ(calls[2].model, kModel);
  EXPECT_EQ(calls[2].keep_alive, json("0"));
  EXPECT_TRUE(calls[2].is_unload());
  EXPECT_EQ(calls[3].model, "qwen2.5:7b");
  EXPECT_FALSE(calls[3].keep_alive);
  for (std::size_t i = 1; i < calls.size(); ++i) {
    EXPECT_LE(calls[i - 1].at, calls[i].at);
    EXPECT_LE(calls[i - 1].wall_ms, calls[i].wall_ms);
  }
  EXPECT_FALSE(fake.wait_for_calls(5, 50ms));
}

TEST(FakeOllama, ClientLeavingAGatedStreamIsRecorded) {
  FakeOllama::Behavior b;
  b.gate_chunks = true;
  FakeOllama fake(b);
  {
    Client client(fake.port());
    ASSERT_EQ(client.start_stream(chat(kModel, true)), 200u);
    ASSERT_TRUE(client.next_event());
    client.close();
  }
  EXPECT_TRUE(fake.wait_for_client_disconnect(5s));
  EXPECT_EQ(fake.client_disconnects(), 1u);
}

TEST(FakeOllama, StatusOverrideAnswersChatWithOpenAIError) {
  FakeOllama::Behavior b;
  b.status = 500;
  FakeOllama fake(b);
  Client client(fake.port());
  const Reply r = client.chat(chat(kModel, false));
  EXPECT_EQ(r.status, 500u);
  EXPECT_EQ(r.json_body()["error"]["type"], "api_error");
  EXPECT_TRUE(fake.loaded().empty());
}

}  // namespace
}  // namespace imageworks::test
