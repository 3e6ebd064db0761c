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

unsigned short closed_loopback_port() {
  asio::io_context ioc;
  tcp::acceptor acc(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  return acc.local_endpoint().port();  // closed when acc goes out of scope
}

}  // namespace imageworks::test
