// append_log_line: the §10 keys in order, nulls where nothing applies, and a line that is
// valid JSON on one line whatever bytes a client sent.
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imageworks/telemetry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

RequestRecord full_record() {
  RequestRecord r;
  r.ts = std::chrono::system_clock::time_point(std::chrono::milliseconds(1796156526123));  // 2026-12-01T20:22:06.123Z
  r.request_id = "req-1";
  r.client = "127.0.0.1";
  r.route = "/v1/chat/completions";
  r.model_requested = "Qwen 7b";
  r.model_resolved = "qwen-7b";
  r.backend = "vllm";
  r.stream = true;
  r.status = 200;
  r.latency_ms = 1234.5678;
  r.ttft_ms = 12.0004;
  r.prompt_tokens = 11;
  r.completion_tokens = 22;
  r.switch_ms = 900.25;
  r.bytes_in = 321;
  r.bytes_out = 4567;
  r.user = "u-1";
  r.chat_id = "c-1";
  return r;
}

std::string line_of(const RequestRecord& r) {
  std::string out;
  append_log_line(r, out);
  return out;
}

TEST(LogLine, EveryKeyInOrderWithItsValue) {
  const std::string line = line_of(full_record());
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  auto j = json::parse(line);
  const std::vector<std::string> order{"ts", "request_id", "client", "route", "model_requested", "model_resolved",
                                       "backend", "stream", "status", "error_code", "latency_ms", "ttft_ms",
                                       "prompt_tokens", "completion_tokens", "switch_ms", "bytes_in", "bytes_out",
                                       "user", "chat_id"};
  std::size_t last = 0;
  for (const auto& k : order) {
    auto pos = line.find("\"" + k + "\":");
    ASSERT_NE(pos, std::string::npos) << k;
    EXPECT_GT(pos, last) << k << " out of order";
    last = pos;
  }
  EXPECT_EQ(j.size(), order.size());
  EXPECT_EQ(j["ts"], "2026-12-01T20:22:06.123Z");
  EXPECT_EQ(j["model_requested"], "Qwen 7b");
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["status"], 200);
  EXPECT_TRUE(j["error_code"].is_null());
  EXPECT_DOUBLE_EQ(j["latency_ms"].get<double>(), 1234.568);
  EXPECT_DOUBLE_EQ(j["ttft_ms"].get<double>(), 12.0);
  EXPECT_EQ(j["prompt_tokens"], 11);
  EXPECT_EQ(j["completion_tokens"], 22);
  EXPECT_DOUBLE_EQ(j["switch_ms"].get<double>(), 900.25);
  EXPECT_EQ(j["bytes_out"], 4567);
  EXPECT_EQ(j["chat_id"], "c-1");
}

TEST(LogLine, WhatDidNotHappenIsNull) {
  RequestRecord r;
  r.request_id = "x";
  r.client = "::1";
  r.route = "/v1/models";
  r.status = 401;
  r.error_code = "err_unauthorized";
  auto j = json::parse(line_of(r));
  for (const char* k : {"model_requested", "model_resolved", "backend", "ttft_ms", "prompt_tokens",
                        "completion_tokens", "switch_ms", "user", "chat_id"})
    EXPECT_TRUE(j[k].is_null()) << k;
  EXPECT_EQ(j["error_code"], "err_unauthorized");
  EXPECT_EQ(j["stream"], false);
  EXPECT_EQ(j["ts"], "1970-01-01T00:00:00.000Z");
}

TEST(LogLine, PromptsOnlyWhenAskedAndMinifiedToOneLine) {
  auto r = full_record();
  EXPECT_FALSE(json::parse(line_of(r)).contains("messages"));
  r.has_prompts = true;
  r.messages = "[\n  {\"role\": \"user\",\n   \"content\": \"a \\\"quoted\\\" line\\nand\\\\ more  spaces\"}\n]";
  r.reply = "two\nlines";
  const std::string line = line_of(r);
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  auto j = json::parse(line);
  EXPECT_EQ(j["messages"], json::parse(r.messages));
  EXPECT_EQ(j["messages"][0]["content"], "a \"quoted\" line\nand\\ more  spaces");
  EXPECT_EQ(j["reply"], "two\nlines");
  r.messages.clear();
  r.reply.clear();
  j = json::parse(line_of(r));
  EXPECT_TRUE(j["messages"].is_null());
  EXPECT_TRUE(j["reply"].is_null());
}

// Header values and raw paths are bytes: escapes, control bytes and ill-formed UTF-8 still
// give valid JSON (ill-formed sequences become U+FFFD, well-formed ones pass unchanged).
TEST(LogLine, ArbitraryClientBytesStayValidJson) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"plain", "plain"},
      {"quote\"back\\slash", "quote\"back\\slash"},
      {std::string("nul\0tab\t", 8), std::string("nul\0tab\t", 8)},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"\xff", "\xef\xbf\xbd"},
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},            // overlong
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},  // surrogate
      {"a\xe2\x82", "a\xef\xbf\xbd\xef\xbf\xbd"},          // truncated
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},  // > U+10FFFF
  };
  for (const auto& [in, want] : cases) {
    auto r = full_record();
    r.user = in;
    r.route = in;
    auto j = json::parse(line_of(r), nullptr, false);
    ASSERT_TRUE(j.is_object()) << in;
    EXPECT_EQ(j["user"], want);
    EXPECT_EQ(j["route"], want);
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    auto r = full_record();
    std::string bytes(rng() % 40, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    r.user = bytes;
    r.chat_id = bytes;
    r.model_requested = bytes;
    const std::string line = line_of(r);
    ASSERT_EQ(line.find('\n'), line.size() - 1);
    ASSERT_TRUE(json::parse(line, nullptr, false).is_object()) << line;
  }
}

}  // namespace
}  // namespace imageworks
