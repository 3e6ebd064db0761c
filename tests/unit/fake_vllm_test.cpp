// The fake_vllm executable's startup and routes: bind delay, health, its command line,
// chat whole and streamed in vLLM's shapes, the 404 for another model, env configuration.
// Signals, crash and the worker: fake_vllm_lifecycle_test.cpp.
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
using namespace std::chrono_literals;

json chat(const std::string& model, bool stream, bool include_usage = false) {
  json req = {{"model", model}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  if (stream) req["stream"] = true;
  if (include_usage) req["stream_options"] = {{"include_usage", true}};
  return req;
}

TEST(FakeVllm, RefusesDuringBindDelayThen503UntilLoadedThen200) {
  TempDir dir;
  const unsigned short port = free_port();
  FakeVllmChild fake(dir, {"--port", std::to_string(port), "--fake-bind-delay-ms", "800", "--fake-load-ms", "1500"});
  const auto started = fake.events.wait_for("started", 10s);
  ASSERT_TRUE(started);
  EXPECT_TRUE(connection_refused(port));
  EXPECT_TRUE(fake.events.all("listening").empty());  // so the refusal was the bind delay's

  ASSERT_EQ(fake.wait_listening(), port);
  EXPECT_EQ(http_call(port, "GET", "/health").status, 503);
  EXPECT_EQ(http_call(port, "POST", "/v1/chat/completions", chat("/models/fake-7b", false).dump()).status, 503);
  ASSERT_TRUE(fake.events.wait_for("healthy", 10s));
  const HttpReply health = http_call(port, "GET", "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "");

  const auto listening = fake.events.all("listening").at(0), healthy = fake.events.all("healthy").at(0);
  EXPECT_GE(listening["t_ms"].get<std::int64_t>() - (*started)["t_ms"].get<std::int64_t>(), 790);
  EXPECT_GE(healthy["t_ms"].get<std::int64_t>() - (*started)["t_ms"].get<std::int64_t>(), 1490);
  EXPECT_EQ((*started)["pid"], fake.pid);
  EXPECT_EQ((*started)["pgid"], fake.pid);
}

TEST(FakeVllm, RecordsItsCommandLineAndServesChatWholeAndStreamed) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port=0", "--served-model-name", "fake-7b", "--gpu-memory-utilization", "0.85",
                           "--max-model-len", "4096", "--dtype", "half", "--enforce-eager", "--fake-load-ms=0",
                           "--fake-chunks", "4", "--fake-text", "hi"});
  const unsigned short port = fake.wait_healthy();
  ASSERT_NE(port, 0);
  const json started = fake.events.all("started").at(0);
  EXPECT_EQ(started["served_model_name"], "fake-7b");
  EXPECT_EQ(started["model_path"], "/models/fake-7b");
  EXPECT_EQ(started["gpu_memory_utilization"], "0.85");
  EXPECT_EQ(started["max_model_len"], "4096");
  EXPECT_EQ(started["ignored_args"], json({"--dtype", "half", "--enforce-eager"}));
  EXPECT_EQ(started["argv"][1], "serve");

  Client client(port);
  const json models = client.request(http::verb::get, "/v1/models").json_body();
  EXPECT_EQ(models["data"][0]["id"], "fake-7b");
  EXPECT_EQ(models["data"][0]["max_model_len"], 4096);

  const json whole = client.chat(chat("fake-7b", false)).json_body();
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["model"], "fake-7b");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "hihihihi");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 4);

  ASSERT_EQ(client.start_stream(chat("fake-7b", true, true)), 200u);
  const auto events = client.rest_of_stream();
  ASSERT_EQ(events.size(), 8u);  // role, 4 content, finish, usage, [DONE]
  EXPECT_EQ(joined_content(events), "hihihihi");
  const json first = json::parse(events[0].data);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i].data);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["created"], first["created"]);
    EXPECT_EQ(c["id"], first["id"]);
  }
  EXPECT_EQ(json::parse(events[5].data)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(json::parse(events[6].data)["usage"]["total_tokens"], 11);
  EXPECT_EQ(events.back().data, "[DONE]");

  // Chunked transfer encoding, and the same connection still usable (keep-alive).
  const HttpReply raw = http_call(port, "POST", "/v1/chat/completions", chat("fake-7b", true).dump());
  EXPECT_EQ(raw.header("transfer-encoding"), "chunked");
  EXPECT_EQ(client.request(http::verb::get, "/health").status, 200u);
  EXPECT_EQ(fake.events.all("request").size(), 4u);
}

TEST(FakeVllm, WrongModelIsVllmShaped404) {
  TempDir dir;
  FakeVllmChild fake(dir, {"--port", "0", "--served-model-name", "fake-7b", "--fake-load-ms", "0"});
  const unsigned short port = fake.wait_healthy();
  ASSERT_NE(port, 0);
  const HttpReply r = http_call(port, "POST", "/v1/chat/completions", chat("other", false).dump());
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body), json::parse(R"({"object":"error","message":"The model `other` does not exist.",
                                                 "type":"NotFoundError","param":null,"code":404})"));
}

TEST(FakeVllm, EnvConfiguresAndFlagsWin) {
  TempDir dir;
  const std::string events_path = (dir.path() / "events.jsonl").string();
  FakeVllmChild fake(dir, {"--port", "0", "--fake-chunks", "2"},
                     {{"FAKE_VLLM_EVENTS", events_path}, {"FAKE_VLLM_LOAD_MS", "0"},
                      {"FAKE_VLLM_CHUNKS", "5"}, {"FAKE_VLLM_TEXT", "env"}});
  const unsigned short port = fake.wait_healthy();
  ASSERT_NE(port, 0);
  const json whole = json::parse(http_call(port, "POST", "/v1/chat/completions", chat("/models/fake-7b", false).dump()).body);
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "envenv");
}

}  // namespace
}  // namespace imageworks::test
