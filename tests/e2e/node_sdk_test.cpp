// The official OpenAI Node SDK (npm `openai`, installed into tests/node by scripts/setup)
// drives the built proxy, which relays to in-process fake upstreams.
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "fakes/fake_openai.hpp"
#include "support/chat_rig.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

using namespace imageworks::test;

TEST(E2eNodeSdk, OfficialClientStreamsToolsAndErrors) {
  auto node_dir = source_dir() / "tests" / "node";
  ASSERT_TRUE(std::filesystem::exists(node_dir / "node_modules" / "openai" / "package.json"))
      << "the openai npm package is missing: run ./scripts/setup";
  FakeOpenAI chat, tools, broken, legacy, ollama_style;
  FakeOpenAI::Behavior lb;
  lb.script_events = legacy_function_call_events(
      "get_weather", R"({"city":"Paris","unit":"celsius","days":[1,2,3],"note":"twelve pieces or more"})", 12);
  legacy.set_behavior(lb);
  FakeOpenAI::Behavior ob;
  ob.script_events = ollama_two_calls_at_index0_events();
  ollama_style.set_behavior(ob);
  FakeOpenAI::Behavior tb;
  tb.tool_call = true;
  tools.set_behavior(tb);
  FakeOpenAI::Behavior bb;
  bb.status = 400;
  bb.error_body = R"({"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400})";
  broken.set_behavior(bb);
  TempDir dir;
  dir.write("model_registry.json", R"([
    {"name": "chat", "backend": "vllm", "served_model_id": "served-chat", "backend_config": {"base_url": ")" +
                                       chat.base_url() + R"("}},
    {"name": "tools", "backend": "openai", "capabilities": {"tools": true}, "backend_config": {"base_url": ")" +
                                       tools.base_url() + R"("}},
    {"name": "broken", "backend": "llamacpp", "backend_config": {"base_url": ")" + broken.base_url() + R"("}},
    {"name": "legacy", "backend": "openai", "capabilities": {"tools": true}, "backend_config": {"base_url": ")" +
                                       legacy.base_url() + R"("}},
    {"name": "ollama-style", "backend": "openai", "capabilities": {"tools": true}, "backend_config": {"base_url": ")" +
                                       ollama_style.base_url() + R"("}}
  ])");
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()}, {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"}});
  std::string cmd = "cd '" + node_dir.string() + "' && PROXY_BASE_URL=http://127.0.0.1:" +
                    std::to_string(proxy.port()) + "/v1 node --test --test-reporter=spec sdk.test.mjs 2>&1";
  auto [status, output] = run_shell(cmd);
  EXPECT_EQ(status, 0) << output << "\n--- proxy log ---\n" << proxy.stderr_text();
  EXPECT_NE(output.find("pass 9"), std::string::npos) << output;
}
