#include "support/chat_rig.hpp"

#include <iostream>

#include <gtest/gtest.h>

#include "imageworks/asio.hpp"

namespace imageworks::test {

using nlohmann::json;

ChatRig::ChatRig(Env env, const std::string& key_fields) {
  dir.write("model_registry.json", R"([
    {"name": "fake-chat", "backend": "vllm", "display_name": "Fake Chat", "parameter_size": "7b",
     "served_model_id": "served/fake-7b",
     "backend_config": {"base_url": ")" + fake.base_url() + "\"" + key_fields + R"(}},
    {"name": "fake-llama", "backend": "llamacpp", "served_model_id": "llama-served",
     "backend_config": {"base_url": ")" + fake.base_url() + R"(/v1/"}},
    {"name": "dead", "backend": "openai",
     "backend_config": {"base_url": "http://127.0.0.1:)" + std::to_string(closed_loopback_port()) + R"("}}
  ])");
  env.emplace("CHAT_PROXY_REGISTRY_DIR", dir.path().string());
  env.emplace("CHAT_PROXY_REQUIRE_TEMPLATE", "0");
  proxy = std::make_unique<ProxyProcess>(env);
}

ChatRig::~ChatRig() {
  if (::testing::Test::HasFailure()) std::cerr << "--- proxy log ---\n" << proxy->stderr_text();
}

HttpReply ChatRig::chat(const json& body) { return http_call(port(), "POST", "/v1/chat/completions", body.dump()); }

json chat_body(bool stream, const std::string& model) {
  json b = json::object();
  b["model"] = model;
  b["messages"] = json::array({json{{"role", "user"}, {"content", "hi"}}});
  b["stream"] = stream;
  return b;
}

void expect_error(const HttpReply& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r.body;
  auto j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
  EXPECT_EQ(j["error"]["code"], code) << r.body;
  EXPECT_TRUE(j["error"]["message"].is_string());
}

namespace {
std::string dialect_chunk(json delta, json finish_reason) {
  json c = {{"id", "chatcmpl-dialect"}, {"object", "chat.completion.chunk"}, {"created", 1700000000}, {"model", "upstream-name"}};
  c["choices"] = json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish_reason)}}});
  return c.dump();
}
}  // namespace

std::vector<std::string> legacy_function_call_events(const std::string& name, const std::string& arguments, int pieces) {
  std::vector<std::string> out;
  out.push_back(dialect_chunk({{"role", "assistant"}, {"content", nullptr}, {"function_call", {{"name", name}, {"arguments", ""}}}}, nullptr));
  const std::size_t step = (arguments.size() + pieces - 1) / static_cast<std::size_t>(pieces);
  for (std::size_t at = 0; at < arguments.size(); at += step)
    out.push_back(dialect_chunk({{"function_call", {{"arguments", arguments.substr(at, step)}}}}, nullptr));
  out.push_back(dialect_chunk(json::object(), "function_call"));
  return out;
}

std::vector<std::string> ollama_two_calls_at_index0_events() {
  json calls = json::array();
  calls.push_back({{"id", "call_weather"}, {"index", 0}, {"type", "function"},
                   {"function", {{"name", "get_weather"}, {"arguments", R"({"city":"Paris"})"}}}});
  calls.push_back({{"id", "call_time"}, {"index", 0}, {"type", "function"},
                   {"function", {{"name", "get_time"}, {"arguments", R"({"tz":"CET"})"}}}});
  return {dialect_chunk({{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}}, nullptr),
          dialect_chunk(json::object(), "tool_calls")};
}

unsigned short closed_loopback_port() {
  asio::io_context ioc;
  tcp::acceptor acc(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  return acc.local_endpoint().port();  // closed when acc goes out of scope
}

}  // namespace imageworks::test
