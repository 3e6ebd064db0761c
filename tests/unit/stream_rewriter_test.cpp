// StreamRewriter: what each upstream SSE event becomes for the client (§5, §7).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "forwarder/relay.hpp"

using imageworks::ProxyError;
using imageworks::StreamRewriter;
using nlohmann::json;

namespace {

json frame_json(const std::string& out) {
  EXPECT_EQ(out.rfind("data: ", 0), 0u) << out;
  EXPECT_EQ(out.substr(out.size() - 2), "\n\n");
  auto body = out.substr(6, out.size() - 8);
  EXPECT_EQ(body.find('\n'), std::string::npos) << "one line of JSON per frame";
  return json::parse(body);
}

}  // namespace

TEST(StreamRewriter, RestoresModelAndPinsIdAndCreated) {
  StreamRewriter rw("My Model \"quoted\"", false);
  std::string out;
  rw.on_event("", R"({"id":"a","created":100,"model":"served","choices":[{"delta":{"content":"x"}}]})", false, out);
  auto first = frame_json(out);
  EXPECT_EQ(first["model"], "My Model \"quoted\"");
  out.clear();
  rw.on_event("", R"({"model":"served","created":101,"id":"b","choices":[{"delta":{"content":"y"}}]})", false, out);
  auto second = frame_json(out);
  EXPECT_EQ(second["id"], "a");
  EXPECT_EQ(second["created"], 100);
  EXPECT_EQ(second["model"], "My Model \"quoted\"");
  EXPECT_EQ(second["choices"][0]["delta"]["content"], "y");
}

TEST(StreamRewriter, StripsOnlyTheUsageChunkWeAskedFor) {
  const std::string usage = R"({"id":"a","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}})";
  StreamRewriter ours("m", true);
  std::string out;
  EXPECT_TRUE(ours.on_event("", usage, false, out));
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(ours.prompt_tokens, 3);
  EXPECT_EQ(ours.completion_tokens, 5);
  StreamRewriter theirs("m", false);
  theirs.on_event("", usage, false, out);
  EXPECT_EQ(frame_json(out)["usage"]["completion_tokens"], 5);
}

TEST(StreamRewriter, DoneEndsOnceAndErrorsBecomeOurShape) {
  StreamRewriter rw("m", false);
  std::string out;
  EXPECT_FALSE(rw.on_event("", "[DONE]", false, out));
  rw.finish(out);
  EXPECT_EQ(out, "data: [DONE]\n\n");

  StreamRewriter llama("m", false);
  out.clear();
  EXPECT_FALSE(llama.on_event("error", R"({"code":500,"message":"boom","type":"server_error"})", false, out));
  auto pos = out.find("\n\n");
  auto err = frame_json(out.substr(0, pos + 2));
  EXPECT_EQ(err["error"]["code"], "err_backend_error");
  EXPECT_EQ(err["error"]["message"], "boom");
  EXPECT_EQ(out.substr(pos + 2), "data: [DONE]\n\n");

  StreamRewriter vllm("m", false);
  out.clear();
  vllm.on_event("", R"({"error":{"message":"bad","code":400}})", false, out);
  EXPECT_EQ(frame_json(out.substr(0, out.find("\n\n") + 2))["error"]["code"], "err_bad_request");
}

TEST(StreamRewriter, FailAfterStartAddsErrorEventThenDone) {
  StreamRewriter rw("m", false);
  std::string out;
  rw.fail(ProxyError(504, "err_backend_timeout", "slow"), out);
  EXPECT_NE(out.find("err_backend_timeout"), std::string::npos);
  EXPECT_EQ(out.substr(out.size() - 14), "data: [DONE]\n\n");
  out.clear();
  rw.fail(ProxyError(502, "x", "y"), out);
  EXPECT_TRUE(out.empty()) << "nothing after the end";
}

TEST(StreamRewriter, MultiLineJsonAndNonJsonKeepFraming) {
  StreamRewriter rw("m", false);
  std::string out;
  rw.on_event("", "{\"model\":\"x\",\n \"choices\":[]}", false, out);
  EXPECT_EQ(frame_json(out)["model"], "m");
  out.clear();
  rw.on_event("", "not json\nsecond line", false, out);
  EXPECT_EQ(out, "data: not json\ndata: second line\n\n");
  out.clear();
  rw.on_event("", " keep-alive", true, out);
  EXPECT_EQ(out, ": keep-alive\n\n");
}

TEST(StreamRewriter, ReadUsageFindsTheCountsOnly) {
  std::optional<std::int64_t> p, c;
  imageworks::read_usage(R"({"prompt_tokens_details":{"cached_tokens":9},"prompt_tokens" : 12,"completion_tokens":34})", p, c);
  EXPECT_EQ(p, 12);
  EXPECT_EQ(c, 34);
  std::optional<std::int64_t> p2, c2;
  imageworks::read_usage(R"({"note":"\"prompt_tokens\": 5","total_tokens":3})", p2, c2);
  EXPECT_FALSE(p2.has_value()) << "a key inside an escaped string is no key";
  EXPECT_FALSE(c2.has_value());
}
