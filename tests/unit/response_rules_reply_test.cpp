// normalise_reply (SPEC §7) on whole chat completions, and the rules against malformed and
// random input: nullopt or a sane object, never a throw or a crash.
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imageworks/response_rules.hpp"
#include "response_rules_matcher.hpp"

using imageworks::normalise_reply;
using imageworks::StreamRules;
using nlohmann::json;

namespace {

// A reply with one choice around `message`; `finish` is JSON text.
std::string R(const std::string& message, const std::string& finish = "\"stop\"") {
  return R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":)" +
         message + R"(,"finish_reason":)" + finish + R"(}],"usage":{"prompt_tokens":3,"completion_tokens":4}})";
}

struct ReplyCase {
  std::string name;
  bool tools;
  std::string in, out;  // out "" = nullopt expected
};

std::vector<ReplyCase> reply_cases() {
  return {
      {"Plain", true, R(R"({"role":"assistant","content":"hi"})"), ""},
      {"FunctionCallBecomesToolCalls", true,
       R(R"({"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{\"a\":1}"}})", "\"function_call\""),
       R(R"({"role":"assistant","content":null,"tool_calls":[{"id":"$ID0","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]})",
         "\"tool_calls\"")},
      {"FunctionCallObjectArguments", true, R(R"({"function_call":{"name":"f","arguments":{"a":[1,2]}}})"),
       R(R"({"tool_calls":[{"id":"$ID0","type":"function","function":{"name":"f","arguments":"{\"a\":[1,2]}"}}]})")},
      {"FunctionCallWithoutArguments", true, R(R"({"function_call":{"name":"f"}})"),
       R(R"({"tool_calls":[{"id":"$ID0","type":"function","function":{"name":"f","arguments":"{}"}}]})")},
      {"FunctionCallBesideNullToolCalls", true, R(R"({"tool_calls":null,"function_call":{"name":"f","arguments":"{}"}})"),
       R(R"({"tool_calls":[{"id":"$ID0","type":"function","function":{"name":"f","arguments":"{}"}}]})")},
      {"ToolCallsMissingIdAndType", true,
       R(R"({"tool_calls":[{"function":{"name":"f","arguments":"{}"}},{"id":"","function":{"name":"g","arguments":"{}"}}]})", "\"tool_calls\""),
       R(R"({"tool_calls":[{"id":"$ID0","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"$ID1","type":"function","function":{"name":"g","arguments":"{}"}}]})",
         "\"tool_calls\"")},
      {"OllamaObjectArguments", true,
       R(R"({"tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":{"city":"Paris"}}}]})"),
       R(R"({"tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"city\":\"Paris\"}"}}]})")},
      {"NullArgumentsBecomeEmptyObject", true,
       R(R"({"tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":null}}]})"),
       R(R"({"tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}}]})")},
      {"StandardToolReplyUnchanged", true,
       R(R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"call_b","type":"function","function":{"name":"g","arguments":"{\"x\":1}"}}]})",
         "\"tool_calls\""),
       ""},
      {"ReasoningAlias", true, R(R"({"content":"4","reasoning":"2+2"})"), R(R"({"content":"4","reasoning":"2+2","reasoning_content":"2+2"})")},
      {"ThinkingAlias", true, R(R"({"content":"4","thinking":"2+2"})"), R(R"({"content":"4","thinking":"2+2","reasoning_content":"2+2"})")},
      {"ReasoningContentPresent", true, R(R"({"content":"4","reasoning_content":"a","reasoning":"b"})"), ""},
      {"ToolsOffRawButReasoning", false,
       R(R"({"function_call":{"name":"f","arguments":{"a":1}},"reasoning":"r"})", "\"function_call\""),
       R(R"({"function_call":{"name":"f","arguments":{"a":1}},"reasoning":"r","reasoning_content":"r"})", "\"function_call\"")},
      {"ToolsOffNothingElse", false, R(R"({"tool_calls":[{"function":{"arguments":{}}}]})", "\"function_call\""), ""},
  };
}

class ReplyRulesTable : public ::testing::TestWithParam<ReplyCase> {};

TEST_P(ReplyRulesTable, ReplyBecomesWhatTheTableSays) {
  const auto& c = GetParam();
  auto out = normalise_reply(c.in, c.tools);
  if (out) {
    EXPECT_TRUE(imageworks::reply_wants(c.in)) << "reply_wants() missed a reply normalise_reply() changes";
  }
  if (c.out.empty()) {
    EXPECT_FALSE(out) << *out;
    return;
  }
  ASSERT_TRUE(out);
  rules_test::IdBinder ids;
  EXPECT_TRUE(ids.match(json::parse(c.out), json::parse(*out)));
}

INSTANTIATE_TEST_SUITE_P(Cases, ReplyRulesTable, ::testing::ValuesIn(reply_cases()),
                         [](const auto& info) { return info.param.name; });

// Odd shapes a backend could send: each passes through (nullopt) or comes back as an object.
std::vector<std::string> malformed_inputs() {
  std::vector<std::string> v = {
      "", "   ", "[]", "null", "42", "\"tool_calls\"", "{", R"({"choices":)", R"({"choices":[{"delta":{"tool_calls":[)",
      R"({"choices":{"0":{"delta":{"tool_calls":[]}}}})", R"({"choices":"tool_calls reasoning"})", R"({"choices":[1,"x",null,[]]})",
      R"({"choices":[{"delta":"tool_calls"}]})", R"({"choices":[{"delta":{"tool_calls":{"index":0,"id":"a"}}}]})",
      R"({"choices":[{"delta":{"tool_calls":[1,"x",null,[],true]}}]})", R"({"choices":[{"delta":{"function_call":7}}]})",
      R"({"choices":[{"delta":{"function_call":[{"name":"f"}]}}]})", R"({"choices":[{"delta":{"function_call":null},"finish_reason":7}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"index":"0","id":7,"type":null,"function":"f"}]}}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"index":-3,"id":"a","function":{"name":1,"arguments":null}}]}}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"index":1e30,"function":{"arguments":[[[{}]]]}}]}}]})",
      R"({"choices":[{"index":18446744073709551615,"delta":{"tool_calls":[{"index":9223372036854775807}]}}]})",
      R"({"choices":[{"index":-9223372036854775808,"message":{"tool_calls":[{"function":[]}],"reasoning":7}}]})",
      R"({"choices":[{"delta":{"reasoning":"\ud800"}}]})", "{\"choices\":[{\"delta\":{\"reasoning\":\"\xff\xfe\"}}]}",
      R"({"choices":[{"message":{"function_call":{"name":"f"},"tool_calls":null}}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"id":"a"}]}},{"delta":{"tool_calls":[{"id":"a"}]}}],"choices":[]})",
  };
  v.push_back(R"({"choices":[{"delta":{"tool_calls":[)" + std::string(100000, '[') + "]}]}");
  v.push_back(R"({"x":)" + std::string(600, '[') + std::string(600, ']') + R"(,"choices":[{"delta":{"reasoning":"r"}}]})");
  return v;
}

TEST(ResponseRulesMalformed, OddShapesPassThroughWithoutThrowing) {
  for (const auto& text : malformed_inputs()) {
    SCOPED_TRACE(text.substr(0, 200));
    StreamRules on(true), off(false);
    for (StreamRules* rules : {&on, &off}) {
      std::optional<std::string> out;
      ASSERT_NO_THROW(rules->wants(text));
      ASSERT_NO_THROW(out = rules->apply(text));
      ASSERT_NO_THROW(out = rules->apply(text));  // with the state the first pass left
      if (out) {
        EXPECT_TRUE(json::parse(*out).is_object());
      }
    }
    for (bool tools : {true, false}) {
      std::optional<std::string> out;
      ASSERT_NO_THROW(out = normalise_reply(text, tools));
      if (out) {
        EXPECT_TRUE(json::parse(*out).is_object());
      }
    }
  }
}

TEST(ResponseRulesMalformed, ShapesThatStayUnchanged) {
  StreamRules rules(true);
  for (const char* text : {R"({"choices":[{"delta":"tool_calls"}]})", R"({"choices":[{"delta":{"tool_calls":{"index":0}}}]})",
                           R"({"choices":[{"delta":{"function_call":7}}]})", R"({"choices":[{"delta":{"tool_calls":[]},"finish_reason":7}]})",
                           R"({"choices":"reasoning"})", "not json at all: reasoning", ""})
    EXPECT_FALSE(rules.apply(text)) << text;
}

TEST(ResponseRulesMalformed, TenThousandCallsAtIndexZeroGetTheirOwnIndices) {
  std::string entries;
  for (int i = 0; i < 10000; ++i)
    entries += (i ? "," : "") + std::string(R"({"index":0,"id":"call_)") + std::to_string(i) + R"(","function":{"arguments":{}}})";
  StreamRules rules(true);
  auto out = rules.apply(R"({"choices":[{"index":0,"delta":{"tool_calls":[)" + entries + "]}}]}");
  ASSERT_TRUE(out);
  auto calls = json::parse(*out)["choices"][0]["delta"]["tool_calls"];
  ASSERT_EQ(calls.size(), 10000u);
  for (int i = 0; i < 10000; ++i) {
    ASSERT_EQ(calls[i]["index"], i);
    ASSERT_EQ(calls[i]["function"]["arguments"], "{}");
  }
}

// A random JSON-ish value, biased towards the keys and types the rules look at.
json random_value(std::mt19937& rng, int depth) {
  static const char* keys[] = {"choices", "delta", "message", "tool_calls", "function_call", "function", "arguments",
                               "name", "id", "index", "type", "finish_reason", "reasoning", "thinking",
                               "reasoning_content", "content"};
  static const char* strings[] = {"function_call", "tool_calls", "", "call_x", "{\"a\":1}", "\xc3\xa9", "f"};
  switch (std::uniform_int_distribution<int>(0, depth > 4 ? 5 : 8)(rng)) {
    case 0: return nullptr;
    case 1: return std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    case 2: return std::uniform_int_distribution<int>(-3, 5)(rng);
    case 3: return 1.5e300;
    case 4:
    case 5: return strings[std::uniform_int_distribution<std::size_t>(0, std::size(strings) - 1)(rng)];
    case 6:
    case 7: {
      json obj = json::object();
      for (int n = std::uniform_int_distribution<int>(0, 4)(rng); n > 0; --n)
        obj[keys[std::uniform_int_distribution<std::size_t>(0, std::size(keys) - 1)(rng)]] = random_value(rng, depth + 1);
      return obj;
    }
    default: {
      json arr = json::array();
      for (int n = std::uniform_int_distribution<int>(0, 3)(rng); n > 0; --n) arr.push_back(random_value(rng, depth + 1));
      return arr;
    }
  }
}

TEST(ResponseRulesMalformed, RandomMutationsNeverThrow) {
  std::mt19937 rng(20240611);
  StreamRules on(true), off(false);
  for (int i = 0; i < 2000; ++i) {
    json root = json::object();
    json choice = json::object();
    choice[i % 2 ? "delta" : "message"] = random_value(rng, 1);
    if (i % 3 == 0) choice["index"] = random_value(rng, 4);
    if (i % 5 == 0) choice["finish_reason"] = i % 10 ? json("function_call") : random_value(rng, 4);
    root["choices"] = i % 17 ? json::array({choice}) : random_value(rng, 2);
    std::string text = root.dump();
    if (i % 4 == 3) {  // byte-level damage too: cut, or overwrite one byte
      auto pos = std::uniform_int_distribution<std::size_t>(0, text.size() - 1)(rng);
      if (i % 8 == 3) text.resize(pos);
      else text[pos] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
    }
    SCOPED_TRACE(text);
    for (StreamRules* rules : {&on, &off}) {
      std::optional<std::string> out;
      ASSERT_NO_THROW(out = rules->apply(text));
      if (out) {
        ASSERT_TRUE(rules->wants(text));
        ASSERT_TRUE(json::parse(*out).is_object());
      }
    }
    std::optional<std::string> out;
    ASSERT_NO_THROW(out = normalise_reply(text, i % 2 == 0));
    if (out) {
      ASSERT_TRUE(imageworks::reply_wants(text));
    }
  }
}

}  // namespace
