// Secrets stay secret: API keys (right or wrong) appear in no log line, no request log
// line — prompts logged or not — and no `config` output; a request cannot name the command
// a managed vLLM server is started with.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "support/chat_rig.hpp"
#include "support/gpu_rig.hpp"
#include "support/telemetry_support.hpp"

using namespace imageworks::test;
using nlohmann::json;

TEST(E2eSecurity, ApiKeysAppearInNoLogAndNoConfigOutput) {
  TempDir logs;
  const auto log_path = logs.path() / "requests.jsonl";
  ChatRig rig({{"CHAT_PROXY_API_KEYS", "sk-right-key-0123456789,sk-other-key-9876543210"},
               {"CHAT_PROXY_LOG_PATH", log_path.string()},
               {"CHAT_PROXY_LOG_PROMPTS", "1"},
               {"CHAT_PROXY_LOG_LEVEL", "debug"},
               {"CHAT_PROXY_ENABLE_METRICS", "1"}});
  const std::string body = chat_body(false).dump();
  auto ok = http_call(rig.port(), "POST", "/v1/chat/completions", body,
                      {{"Authorization", "Bearer sk-right-key-0123456789"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto stream = http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(true).dump(),
                          {{"Authorization", "Bearer sk-other-key-9876543210"}});
  EXPECT_EQ(stream.status, 200);
  auto wrong = http_call(rig.port(), "POST", "/v1/chat/completions", body,
                         {{"Authorization", "Bearer sk-wrong-key-5555555555"}});
  expect_error(wrong, 401, "err_unauthorized");
  EXPECT_EQ(wrong.body.find("sk-wrong"), std::string::npos) << "the refusal does not echo the key";
  // A prefix of a key, and a key with one more character, are refused too.
  expect_error(http_call(rig.port(), "GET", "/v1/models", {}, {{"Authorization", "Bearer sk-right-key-012345678"}}),
               401, "err_unauthorized");
  expect_error(http_call(rig.port(), "GET", "/v1/models", {}, {{"Authorization", "Bearer sk-right-key-01234567890"}}),
               401, "err_unauthorized");
  EXPECT_EQ(http_call(rig.port(), "GET", "/v1/models", {}, {{"Authorization", "Bearer sk-right-key-0123456789"}}).status,
            200);
  // The scheme is case-insensitive (RFC 9110 §11.1); the key is not.
  EXPECT_EQ(http_call(rig.port(), "GET", "/v1/models", {}, {{"Authorization", "bearer sk-right-key-0123456789"}}).status,
            200);
  EXPECT_EQ(http_call(rig.port(), "GET", "/v1/models", {}, {{"Authorization", "BEARER sk-right-key-0123456789"}}).status,
            200);
  expect_error(http_call(rig.port(), "GET", "/v1/models", {}, {{"Authorization", "Bearer SK-RIGHT-KEY-0123456789"}}),
               401, "err_unauthorized");
  auto lines = wait_for_log_lines(log_path, 6);
  ASSERT_GE(lines.size(), 6u);
  auto everything = rig.proxy->stderr_text();
  for (const auto& l : lines) everything += l + "\n";
  for (const char* secret : {"sk-right-key", "sk-other-key", "sk-wrong-key"})
    EXPECT_EQ(everything.find(secret), std::string::npos) << secret << " was logged:\n" << everything;

  auto config = run_proxy_command({"config"}, {{"CHAT_PROXY_REGISTRY_DIR", rig.dir.path().string()},
                                               {"CHAT_PROXY_API_KEYS", "sk-right-key-0123456789"}});
  EXPECT_EQ(config.exit_code, 0) << config.err;
  EXPECT_EQ((config.out + config.err).find("sk-right-key"), std::string::npos) << config.out;
}

// start_command comes from the registry files only: a request carrying backend_config (or any
// other field) changes nothing about how the server is started.
TEST(E2eSecurity, ARequestCannotChooseTheVllmCommand) {
  GpuRig rig(std::vector<VllmModel>{{"vllm-a", {}}});
  TempDir marker_dir;
  const auto marker = marker_dir.path() / "pwned";
  json body = json::parse(chat_json("vllm-a", false));
  body["backend_config"] = {{"start_command", {"/usr/bin/touch", marker.string()}},
                            {"extra_args", {"--evil"}}, {"model_path", "/etc"}};
  body["start_command"] = {"/usr/bin/touch", marker.string()};
  auto r = http_call(rig.port(), "POST", "/v1/chat/completions", body.dump(), {}, std::chrono::seconds(60));
  EXPECT_EQ(r.status, 200) << r.body;
  auto started = rig.vllm_events("started", "vllm-a");
  ASSERT_EQ(started.size(), 1u);
  const std::string argv = started[0].dump();
  EXPECT_EQ(argv.find("--evil"), std::string::npos) << argv;
  EXPECT_EQ(argv.find("/etc"), std::string::npos) << argv;
  EXPECT_NE(argv.find("/models/vllm-a"), std::string::npos) << argv;
  EXPECT_FALSE(std::filesystem::exists(marker));
}
