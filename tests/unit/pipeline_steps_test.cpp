// The ChatForwarder's pure steps: request parsing, payload preparation, error reshaping.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imageworks/forwarder.hpp"

using namespace imageworks;
using nlohmann::json;

namespace {

ModelEntry entry(std::string served) {
  ModelEntry e;
  e.name = "logical";
  e.backend = "openai";
  e.served_model_id = std::move(served);
  return e;
}

json prepared(const std::string& body, const std::string& served, bool* usage_added = nullptr) {
  auto fr = parse_forward_request("chat/completions", body);
  prepare_payload(fr, entry(served));
  if (usage_added) *usage_added = fr.usage_added;
  return json::parse(fr.payload.bytes());
}

}  // namespace

TEST(PipelineSteps, ModelBecomesTheServedIdOtherFieldsUntouched) {
  auto j = prepared(R"({"model":"My \"Model\"","messages":[{"role":"user","content":"model"}],"x_custom":{"model":"keep"}})",
                    "org/served \"q\"");
  EXPECT_EQ(j["model"], "org/served \"q\"");
  EXPECT_EQ(j["messages"][0]["content"], "model");
  EXPECT_EQ(j["x_custom"]["model"], "keep") << "unknown fields pass through untouched";
  EXPECT_FALSE(j.contains("stream_options"));
}

TEST(PipelineSteps, StreamsAskForUsageExactlyWhenTheClientDidNot) {
  bool added = false;
  auto j = prepared(R"({"model":"m","messages":[],"stream":true})", "s", &added);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_TRUE(added);
  j = prepared(R"({"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false}})", "s", &added);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_TRUE(added);
  j = prepared(R"({"model":"m","messages":[],"stream":true,"stream_options":{"continuous_usage_stats":true}})", "s", &added);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_EQ(j["stream_options"]["continuous_usage_stats"], true);
  EXPECT_TRUE(added);
  j = prepared(R"({"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}})", "s", &added);
  EXPECT_FALSE(added) << "the client asked: its usage chunk is its own";
}

TEST(PipelineSteps, BadRequestsNameTheField) {
  auto code_and_param = [](const std::string& body) -> std::pair<std::string, std::string> {
    try {
      parse_forward_request("chat/completions", body);
    } catch (const ProxyError& e) {
      EXPECT_EQ(e.status, 400);
      return {e.code, e.param};
    }
    return {"none", ""};
  };
  EXPECT_EQ(code_and_param("").first, "err_bad_request");
  EXPECT_EQ(code_and_param("{").first, "err_bad_request");
  EXPECT_EQ(code_and_param(R"({"messages":[]})").second, "model");
  EXPECT_EQ(code_and_param(R"({"model":1,"messages":[]})").second, "model");
  EXPECT_EQ(code_and_param(R"({"model":"","messages":[]})").second, "model");
  EXPECT_EQ(code_and_param(R"({"model":"m"})").second, "messages");
  EXPECT_EQ(code_and_param(R"({"model":"m","messages":{}})").second, "messages");
  EXPECT_EQ(code_and_param(R"({"model":"m","messages":[],"stream":1})").second, "stream");
  EXPECT_EQ(code_and_param(R"({"model":"m","messages":[],"tools":{}})").second, "tools");
  EXPECT_EQ(code_and_param(R"({"model":"m","messages":[],"stream_options":true})").second, "stream_options");
  EXPECT_EQ(code_and_param(R"({"model":"m","messages":[],"model":"n"})").second, "model");
  EXPECT_EQ(code_and_param(R"({"model":"m","messages":[],"user":"a","user":"b"})").second, "user");
  EXPECT_EQ(code_and_param("{\"model\":\"m\xC0\xAF\",\"messages\":[]}").first, "err_bad_request");
  EXPECT_NO_THROW(parse_forward_request("embeddings", R"({"model":"m","input":"x"})"));
}

TEST(PipelineSteps, Utf8AndDuplicateErrorsSayWhatIsWrong) {
  auto message = [](const std::string& body) -> std::string {
    try {
      parse_forward_request("chat/completions", body);
    } catch (const ProxyError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(message("{\"model\":\"\xE2\x82\",\"messages\":[]}"),
            "request body is not valid UTF-8 (RFC 8259 §8.1): ill-formed byte sequence at offset 10");
  EXPECT_EQ(message(R"({"model":"m","messages":[],"model":"n"})"),
            "field 'model' occurs more than once; send each top-level member once");
  const std::string long_key(100, 'k');
  const std::string m = message(R"({"model":"m","messages":[],")" + long_key + R"(":1,")" + long_key + R"(":2})");
  EXPECT_EQ(m, "field '" + long_key.substr(0, 64) + "...' occurs more than once; send each top-level member once");
}

TEST(PipelineSteps, UpstreamErrorsKeepStatusAndMessage) {
  auto e = upstream_error(400, R"({"object":"error","message":"too long","type":"BadRequestError","code":400})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "err_bad_request");
  EXPECT_STREQ(e.what(), "too long");
  e = upstream_error(503, R"({"error":{"message":"Loading model","code":503}})");
  EXPECT_EQ(e.code, "err_backend_unavailable");
  e = upstream_error(500, "plain text failure");
  EXPECT_EQ(e.code, "err_backend_error");
  EXPECT_STREQ(e.what(), "plain text failure");
  e = upstream_error(422, R"({"detail":[{"msg":"field required"}]})");
  EXPECT_EQ(e.status, 422);
  EXPECT_NE(std::string(e.what()).find("field required"), std::string::npos);
}
