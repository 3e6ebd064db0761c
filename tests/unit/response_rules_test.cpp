// StreamRules (SPEC §7): each case is a stream of chunks and what each becomes ("" = apply
// answers nullopt, the original bytes are relayed). "$ID<n>" stands for a synthesised id.
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imageworks/response_rules.hpp"
#include "response_rules_matcher.hpp"

using imageworks::StreamRules;
using nlohmann::json;

namespace {

// A chunk with one choice (index 0) around `delta`; `finish` is JSON text.
std::string C(const std::string& delta, const std::string& finish = "null") {
  return R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":)" +
         delta + R"(,"finish_reason":)" + finish + "}]}";
}
// `delta` with a tool_calls array of the given entries.
std::string T(const std::string& entries) { return C(R"({"tool_calls":[)" + entries + "]}"); }

struct Step {
  std::string in, out;  // out "" = nullopt expected
};
struct StreamCase {
  std::string name;
  bool tools;
  std::vector<Step> steps;
};

std::vector<StreamCase> stream_cases() {
  const std::string a0 = R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}})";
  const std::string b1 = R"({"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":""}})";
  const std::string b0 = R"({"index":0,"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}})";
  const std::string b0as1 = R"({"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}})";
  auto frag = [](int i, const std::string& args) {
    return R"({"index":)" + std::to_string(i) + R"(,"function":{"arguments":)" + json(args).dump() + "}}";
  };
  return {
      {"PlainContent", true, {{C(R"({"content":"hi"})"), ""}}},
      {"RoleChunk", true, {{C(R"({"role":"assistant","content":""})"), ""}}},
      {"OpenAiSingleCallUnchanged", true,
       {{C(R"({"role":"assistant","content":null,"tool_calls":[)" + a0 + "]}"), ""},
        {T(frag(0, "{\"x\"")), ""}, {T(frag(0, ":1}")), ""}, {C("{}", "\"tool_calls\""), ""}}},
      {"OpenAiParallelInterleavedUnchanged", true,
       {{T(a0), ""}, {T(b1), ""}, {T(frag(0, "{\"a\"")), ""}, {T(frag(1, "{\"b\"")), ""},
        {T(frag(0, ":1}")), ""}, {T(frag(1, ":2}")), ""}}},
      {"OllamaTwoCallsInOneChunk", true, {{T(a0 + "," + b0), T(a0 + "," + b0as1)}}},
      {"OllamaTwoCallsInConsecutiveChunks", true, {{T(a0), ""}, {T(b0), T(b0as1)}}},
      {"IdlessFragmentFollowsLatestCallAtItsUpstreamIndex", true,
       {{T(a0), ""}, {T(b0), T(b0as1)}, {T(frag(0, "x")), T(frag(1, "x"))}}},
      {"IndexedIdlessRepeatedNameStaysOneCall", true,
       {{T(a0), ""}, {T(R"({"index":0,"function":{"name":"f","arguments":"{}"}})"), ""}}},
      {"NoIndexTwoChunksById", true,
       {{T(R"({"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}})"), T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}})")},
        {T(R"({"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}})"), T(b0as1)}}},
      {"NoIndexOneChunkById", true,
       {{T(R"({"id":"call_a","function":{"name":"f","arguments":"{}"},"type":"function"},{"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}})"),
         T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}},)" + b0as1)}}},
      {"NoIndexIdlessFragmentContinuesLastCall", true,
       {{T(R"({"id":"call_a","type":"function","function":{"name":"f","arguments":""}})"), T(a0)},
        {T(R"({"function":{"arguments":"{}"}})"), T(frag(0, "{}"))}}},
      {"RepeatedIdsKeepTheirIndex", true,
       {{T(a0), ""}, {T(R"({"index":0,"id":"call_a","function":{"arguments":"{}"}})"), ""},
        {T(b0), T(b0as1)}, {T(R"({"index":0,"id":"call_b","function":{"arguments":"1"}})"),
                            T(R"({"index":1,"id":"call_b","function":{"arguments":"1"}})")}}},
      {"ArgumentsObjectBecomesString", true,
       {{T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":{"city":"Paris","n":2}}})"),
         T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"city\":\"Paris\",\"n\":2}"}})")}}},
      {"ArgumentsArrayAndNumberBecomeStrings", true,
       {{T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":[1,2]}},)"
           R"({"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":5}})"),
         T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"[1,2]"}},)"
           R"({"index":1,"id":"call_b","type":"function","function":{"name":"g","arguments":"5"}})")}}},
      {"ArgumentsNullInFragmentStays", true,
       {{T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":null}})"), ""}}},
      {"FirstFragmentWithoutIdGetsOne", true,
       {{T(R"({"index":0,"type":"function","function":{"name":"f","arguments":""}})"),
         T(R"({"index":0,"id":"$ID0","type":"function","function":{"name":"f","arguments":""}})")},
        {T(frag(0, "{}")), ""}}},
      {"FirstFragmentWithoutTypeGetsOne", true,
       {{T(R"({"index":0,"id":"call_a","function":{"name":"f"}})"),
         T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f"}})")}}},
      {"IdlessCallAtNewUpstreamIndexIsNew", true,
       {{T(a0), ""}, {T(R"({"index":1,"function":{"name":"g","arguments":""}})"),
                      T(R"({"index":1,"id":"$ID0","type":"function","function":{"name":"g","arguments":""}})")}}},
      {"IdlessNamedCallsWithoutIndexAreSeparate", true,
       {{T(R"({"function":{"name":"f","arguments":"{}"}})"),
         T(R"({"index":0,"id":"$ID0","type":"function","function":{"name":"f","arguments":"{}"}})")},
        {T(R"({"function":{"name":"g","arguments":"{}"}})"),
         T(R"({"index":1,"id":"$ID1","type":"function","function":{"name":"g","arguments":"{}"}})")}}},
      {"LegacyFunctionCallTwoFragments", true,
       {{C(R"({"role":"assistant","content":null,"function_call":{"name":"f","arguments":""}})"),
         C(R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"$ID0","type":"function","function":{"name":"f","arguments":""}}]})")},
        {C(R"({"function_call":{"arguments":"{}"}})"), T(frag(0, "{}"))},
        {C("{}", "\"function_call\""), C("{}", "\"tool_calls\"")}}},
      {"LegacyRepeatedNameDropped", true,
       {{C(R"({"function_call":{"name":"f","arguments":""}})"),
         T(R"({"index":0,"id":"$ID0","type":"function","function":{"name":"f","arguments":""}})")},
        {C(R"({"function_call":{"name":"f","arguments":"{}"}})"), T(frag(0, "{}"))}}},
      {"LegacyObjectArguments", true,
       {{C(R"({"function_call":{"name":"f","arguments":{"a":1}}})"),
         T(R"({"index":0,"id":"$ID0","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}})")}}},
      {"LegacyBesideEmptyToolCalls", true,
       {{C(R"({"tool_calls":[],"function_call":{"name":"f","arguments":""}})"),
         T(R"({"index":0,"id":"$ID0","type":"function","function":{"name":"f","arguments":""}})")}}},
      {"FinishReasonFunctionCall", true, {{C("{}", "\"function_call\""), C("{}", "\"tool_calls\"")}}},
      {"ReasoningThenContent", true,
       {{C(R"({"reasoning":"Let me"})"), C(R"({"reasoning":"Let me","reasoning_content":"Let me"})")},
        {C(R"({"reasoning":" think"})"), C(R"({"reasoning":" think","reasoning_content":" think"})")},
        {C(R"({"content":"Answer"})"), ""}, {C("{}", "\"stop\""), ""}}},
      {"ThinkingAlias", true, {{C(R"({"thinking":"hm é"})"), C(R"({"thinking":"hm é","reasoning_content":"hm é"})")}}},
      {"ReasoningContentPresentWins", true, {{C(R"({"reasoning_content":"x","reasoning":"y"})"), ""}}},
      {"ReasoningContentNullCountsAsAbsent", true,
       {{C(R"({"reasoning_content":null,"reasoning":"x"})"), C(R"({"reasoning_content":"x","reasoning":"x"})")}}},
      {"ReasoningNotAStringIgnored", true, {{C(R"({"reasoning":{"a":1}})"), ""}, {C(R"({"reasoning":null})"), ""}}},
      {"ToolsOffPassesToolFieldsRaw", false,
       {{T(a0 + "," + b0), ""}, {C(R"({"function_call":{"name":"f","arguments":{"a":1}}})"), ""},
        {C("{}", "\"function_call\""), ""}, {C(R"({"reasoning":"r"})"), C(R"({"reasoning":"r","reasoning_content":"r"})")}}},
      {"ChoicesKeepSeparateState", true,
       {{R"({"choices":[{"index":0,"delta":{"tool_calls":[)" + a0 + R"(]}},{"index":1,"delta":{"tool_calls":[)" + b0 + "]}}]}", ""},
        {R"({"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_c","function":{"name":"h"}}]}}]})",
         R"({"choices":[{"index":1,"delta":{"tool_calls":[{"index":1,"id":"call_c","type":"function","function":{"name":"h"}}]}}]})"}}},
      {"EscapedKeyIsStillAKey", true,
       {{C(R"({"t\u006fol_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}}]})"),
         T(R"({"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}})")}}},
      {"UnknownMembersKeepTheirValues", true,
       {{R"({"id":"x","system_fingerprint":"fp","usage":{"prompt_tokens":1,"completion_tokens":2},"x_custom":[1,{"a":null},2.5],"choices":[{"index":0,"logprobs":null,"delta":{"reasoning":"r","extra":true},"finish_reason":null}]})",
         R"({"id":"x","system_fingerprint":"fp","usage":{"prompt_tokens":1,"completion_tokens":2},"x_custom":[1,{"a":null},2.5],"choices":[{"index":0,"logprobs":null,"delta":{"reasoning":"r","reasoning_content":"r","extra":true},"finish_reason":null}]})"}}},
  };
}

class StreamRulesTable : public ::testing::TestWithParam<StreamCase> {};

TEST_P(StreamRulesTable, EachChunkBecomesWhatTheTableSays) {
  const auto& c = GetParam();
  StreamRules rules(c.tools);
  rules_test::IdBinder ids;
  for (std::size_t i = 0; i < c.steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i) + ": " + c.steps[i].in);
    auto out = rules.apply(c.steps[i].in);
    if (out) {
      EXPECT_TRUE(rules.wants(c.steps[i].in)) << "wants() missed a chunk apply() changes";
    }
    if (c.steps[i].out.empty()) {
      EXPECT_FALSE(out) << *out;
      continue;
    }
    ASSERT_TRUE(out);
    EXPECT_TRUE(ids.match(json::parse(c.steps[i].out), json::parse(*out)));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, StreamRulesTable, ::testing::ValuesIn(stream_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(StreamRules, LegacyFunctionCallSplitOverTwelveChunks) {
  const std::string args = R"({"location":"Paris, France","unit":"celsius","days":3,"note":"a \"quoted\" word"})";
  std::vector<std::string> chunks{C(R"({"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":""}})")};
  for (std::size_t k = 0; k < 10; ++k) {  // ten argument fragments, cut anywhere (inside escapes too)
    const std::size_t begin = k * args.size() / 10, end = (k + 1) * args.size() / 10;
    chunks.push_back(C(R"({"function_call":{"arguments":)" + json(args.substr(begin, end - begin)).dump() + "}}"));
  }
  chunks.push_back(C("{}", "\"function_call\""));
  ASSERT_EQ(chunks.size(), 12u);

  StreamRules rules(true);
  std::string reassembled, id;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    ASSERT_TRUE(rules.wants(chunks[i]));
    auto out = rules.apply(chunks[i]);
    ASSERT_TRUE(out) << i;
    auto choice = json::parse(*out)["choices"][0];
    auto& delta = choice["delta"];
    EXPECT_FALSE(delta.contains("function_call"));
    if (i + 1 == chunks.size()) {
      EXPECT_EQ(choice["finish_reason"], "tool_calls");
      continue;
    }
    ASSERT_EQ(delta["tool_calls"].size(), 1u);
    const auto& call = delta["tool_calls"][0];
    EXPECT_EQ(call["index"], 0);
    if (i == 0) {
      id = call["id"];
      EXPECT_TRUE(rules_test::looks_synthesised(id)) << id;
      EXPECT_EQ(call["type"], "function");
      EXPECT_EQ(call["function"]["name"], "get_weather");
    } else {
      EXPECT_FALSE(call.contains("id") || call.contains("type") || call["function"].contains("name")) << call.dump();
    }
    reassembled += call["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(reassembled, args);
  EXPECT_EQ(json::parse(reassembled)["days"], 3);
}

TEST(StreamRules, WantsOnlyChunksARuleCouldChange) {
  StreamRules on(true), off(false);
  const std::string plain = C(R"({"content":"a <b> & c \u003c\u00e9"})");
  EXPECT_FALSE(on.wants(plain));
  EXPECT_FALSE(off.wants(plain));
  EXPECT_FALSE(on.wants(""));
  for (const char* trigger : {"function_call", "tool_calls", "reasoning", "thinking"}) {
    EXPECT_TRUE(on.wants(C(std::string(R"({")") + trigger + R"(":1})"))) << trigger;
    EXPECT_TRUE(imageworks::reply_wants(std::string(R"({"choices":[{"message":{")") + trigger + R"(":1}}]})"));
  }
  EXPECT_FALSE(off.wants(T(R"({"id":"a"})")));
  EXPECT_FALSE(off.wants(C("{}", "\"function_call\"")));
  EXPECT_TRUE(off.wants(C(R"({"thinking":"x"})")));
  EXPECT_TRUE(on.wants(C(R"({"t\u006fol_calls":[]})")));
  EXPECT_TRUE(on.wants(C(R"({"reas\u006Fning":"x"})")));
  EXPECT_FALSE(imageworks::reply_wants(R"({"choices":[{"message":{"role":"assistant","content":"hi"}}]})"));
}

TEST(StreamRules, SynthesisedIdsAreWellFormedAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = imageworks::synthesize_call_id();
    ASSERT_TRUE(rules_test::looks_synthesised(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

}  // namespace
