// End-to-end: response normalisation (§7) through the built binary — other backends'
// dialects (legacy function_call streams and replies, Ollama's calls all at index 0,
// reasoning fields) reach the client as standard OpenAI tool calls, and the switch that
// turns the tool rules off.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <regex>

#include "support/chat_rig.hpp"

using namespace imageworks::test;
using nlohmann::json;

namespace {

// The `data:` payloads of an SSE body, [DONE] excluded.
std::vector<json> events_of(const std::string& sse) {
  std::vector<json> out;
  std::size_t pos = 0;
  while ((pos = sse.find("data: ", pos)) != std::string::npos) {
    auto end = sse.find("\n\n", pos);
    auto payload = sse.substr(pos + 6, end - pos - 6);
    if (payload != "[DONE]") out.push_back(json::parse(payload));
    pos = end;
  }
  return out;
}

struct Assembled {
  std::map<int, json> calls;  // by index: id, type, name, arguments
  std::string finish;
};
// OpenWebUI's way: merge tool-call deltas by index.
Assembled merge_by_index(const std::vector<json>& events) {
  Assembled a;
  for (const auto& e : events) {
    for (const auto& c : e["choices"]) {
      if (c["finish_reason"].is_string()) a.finish = c["finish_reason"];
      if (!c["delta"].contains("tool_calls")) continue;
      EXPECT_FALSE(c["delta"].contains("function_call")) << e.dump();
      for (const auto& t : c["delta"]["tool_calls"]) {
        EXPECT_TRUE(t.contains("index") && t["index"].is_number_integer()) << e.dump();
        auto& call = a.calls[t["index"].get<int>()];
        if (t.contains("id")) call["id"] = t["id"];
        if (t.contains("type")) call["type"] = t["type"];
        if (t["function"].contains("name")) call["name"] = t["function"]["name"];
        if (t["function"].contains("arguments"))
          call["arguments"] = call.value("arguments", std::string()) + t["function"]["arguments"].get<std::string>();
      }
    }
  }
  return a;
}

FakeOpenAI::Behavior scripted(std::vector<std::string> events) {
  FakeOpenAI::Behavior b;
  b.script_events = std::move(events);
  return b;
}

}  // namespace

TEST(ResponseNormalisationE2E, LegacyFunctionCallStreamBecomesOneToolCall) {
  ChatRig rig;
  const std::string args = R"({"city":"Paris","unit":"celsius","days":[1,2,3],"note":"split me into many pieces"})";
  rig.fake.set_behavior(scripted(legacy_function_call_events("get_weather", args, 12)));
  auto r = rig.chat(chat_body(true));
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = events_of(r.body);
  ASSERT_GE(events.size(), 13u);
  for (const auto& e : events) EXPECT_EQ(e["model"], "Fake Chat 7b");
  auto a = merge_by_index(events);
  ASSERT_EQ(a.calls.size(), 1u) << r.body;
  EXPECT_TRUE(std::regex_match(a.calls[0]["id"].get<std::string>(), std::regex("call_[A-Za-z0-9]{24}")));
  EXPECT_EQ(a.calls[0]["type"], "function");
  EXPECT_EQ(a.calls[0]["name"], "get_weather");
  EXPECT_EQ(a.calls[0]["arguments"], args);
  EXPECT_EQ(a.finish, "tool_calls");
}

TEST(ResponseNormalisationE2E, OllamaCallsAllAtIndexZeroAreReindexed) {
  ChatRig rig;
  rig.fake.set_behavior(scripted(ollama_two_calls_at_index0_events()));
  auto r = rig.chat(chat_body(true));
  ASSERT_EQ(r.status, 200) << r.body;
  auto a = merge_by_index(events_of(r.body));
  ASSERT_EQ(a.calls.size(), 2u) << r.body;
  EXPECT_EQ(a.calls[0]["name"], "get_weather");
  EXPECT_EQ(a.calls[0]["arguments"], R"({"city":"Paris"})");
  EXPECT_EQ(a.calls[1]["name"], "get_time");
  EXPECT_EQ(a.calls[1]["arguments"], R"({"tz":"CET"})");
}

TEST(ResponseNormalisationE2E, ReasoningIsAlsoReasoningContent) {
  ChatRig rig;
  rig.fake.set_behavior(scripted(
      {R"({"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"reasoning":"think"},"finish_reason":null}]})",
       R"({"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"answer"},"finish_reason":"stop"}]})"}));
  auto events = events_of(rig.chat(chat_body(true)).body);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["choices"][0]["delta"]["reasoning_content"], "think");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["reasoning"], "think");
  EXPECT_EQ(events[1]["choices"][0]["delta"], json::parse(R"({"content":"answer"})"));
}

TEST(ResponseNormalisationE2E, WholeReplyFunctionCallBecomesToolCalls) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.script_reply = R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"upstream","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":{"city":"Paris"}}},"finish_reason":"function_call"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})";
  rig.fake.set_behavior(b);
  auto r = rig.chat(chat_body(false));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["model"], "Fake Chat 7b");
  const auto& m = j["choices"][0]["message"];
  ASSERT_EQ(m["tool_calls"].size(), 1u) << r.body;
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], R"({"city":"Paris"})") << "arguments are a JSON string";
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
}

TEST(ResponseNormalisationE2E, DisabledToolNormalisationPassesToolFieldsRaw) {
  ChatRig rig(Env{{"CHAT_PROXY_DISABLE_TOOL_NORMALIZATION", "1"}});
  rig.fake.set_behavior(scripted(legacy_function_call_events("f", R"({"a":1})", 3)));
  auto events = events_of(rig.chat(chat_body(true)).body);
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events[0]["choices"][0]["delta"].contains("function_call"));
  EXPECT_FALSE(events[0]["choices"][0]["delta"].contains("tool_calls"));
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "function_call");
}
