// The response rules' one-pass trigger test against a plain substring oracle: every trigger
// at every offset of texts of every length around the 16-byte blocks, and random texts.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "imageworks/response_rules.hpp"

using namespace imageworks;

namespace {

bool oracle(const std::string& s, bool tools) {
  auto has = [&](const char* n) { return s.find(n) != std::string::npos; };
  if (has("reasoning") || has("thinking")) return true;
  if (tools && (has("tool_calls") || has("function_call"))) return true;
  for (auto p = s.find("\\u00"); p != std::string::npos; p = s.find("\\u00", p + 1))
    if (p + 4 < s.size() && s[p + 4] >= '5' && s[p + 4] <= '7') return true;
  return false;
}

}  // namespace

TEST(ResponseTriggers, EveryTriggerAtEveryOffsetAndLength) {
  const std::string triggers[] = {"reasoning", "thinking", "tool_calls", "function_call", "\\u005f", "\\u0074",
                                  "\\u007a"};
  const std::string near_misses[] = {"reasonin", "thinkin", "tool_call", "function_cal", "\\u0041", "\\u00",
                                     "reasoninG", "Thinking"};
  for (std::size_t len = 0; len <= 70; ++len) {
    for (bool tools : {true, false}) {
      const std::string filler(len, 'x');
      EXPECT_FALSE(mentions_response_trigger(filler, tools));
      for (const auto& t : triggers) {
        for (std::size_t at = 0; at + t.size() <= len; ++at) {
          std::string s = filler;
          s.replace(at, t.size(), t);
          ASSERT_EQ(mentions_response_trigger(s, tools), oracle(s, tools)) << s << " tools=" << tools;
        }
      }
      for (const auto& m : near_misses) {
        for (std::size_t at = 0; at + m.size() <= len; ++at) {
          std::string s = filler;
          s.replace(at, m.size(), m);
          ASSERT_FALSE(mentions_response_trigger(s, tools)) << s;
        }
      }
    }
  }
}

TEST(ResponseTriggers, RandomTextsAgreeWithTheOracle) {
  std::mt19937 rng(11);
  const std::string alphabet = "reasoningthkltoucfl_\\u0057\" {}:,";
  for (int round = 0; round < 20000; ++round) {
    std::string s(rng() % 200, ' ');
    for (auto& c : s) c = alphabet[rng() % alphabet.size()];
    const bool tools = rng() % 2;
    ASSERT_EQ(mentions_response_trigger(s, tools), oracle(s, tools)) << s;
  }
}

TEST(ResponseTriggers, PlainChunksDoNotTrigger) {
  const char* plain[] = {
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"tok"},"logprobs":null,"finish_reason":null}]})",
      R"({"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"line\nbreak \u00e9"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7}})"};
  for (const char* p : plain) EXPECT_FALSE(mentions_response_trigger(p, true)) << p;
}
