// vllm_command (§8): the default `<vllm_command> serve …` line, start_command placeholders,
// where each value comes from; and the status's JSON form. Pure functions.
#include <gtest/gtest.h>

#include "imageworks/vllm_manager.hpp"

namespace imageworks {
namespace {

using Argv = std::vector<std::string>;

ModelEntry vllm_entry(const std::string& name) {
  ModelEntry e;
  e.name = name;
  e.backend = "vllm";
  e.backend_config.model_path = "/models/" + name;
  return e;
}

ProxyConfig command_config() {
  ProxyConfig cfg;
  cfg.vllm_command = "/opt/vllm/bin/vllm";
  cfg.template_dir = "/srv/registry/chat_templates";
  return cfg;  // G 0.85, L 8192: the defaults
}

TEST(VllmCommand, DefaultCommandCarriesEveryFlagInOrder) {
  auto e = vllm_entry("qwen-7b");
  e.served_model_id = "Qwen/Qwen2.5-7B-Instruct";
  EXPECT_EQ(vllm_command(e, command_config(), 24001),
            (Argv{"/opt/vllm/bin/vllm", "serve", "/models/qwen-7b", "--port", "24001", "--served-model-name",
                  "Qwen/Qwen2.5-7B-Instruct", "--gpu-memory-utilization", "0.85", "--max-model-len", "8192"}));
}

TEST(VllmCommand, ServedNameIsTheLogicalNameWithoutServedModelId) {
  const auto argv = vllm_command(vllm_entry("qwen-7b"), command_config(), 24001);
  ASSERT_GE(argv.size(), 7u);
  EXPECT_EQ(argv[5], "--served-model-name");
  EXPECT_EQ(argv[6], "qwen-7b");
}

TEST(VllmCommand, ModelPathFromModelPathElseDownloadPath) {
  auto e = vllm_entry("m");
  e.download_path = "/downloads/m";
  EXPECT_EQ(vllm_command(e, command_config(), 1).at(2), "/models/m");  // model_path wins
  e.backend_config.model_path.clear();
  EXPECT_EQ(vllm_command(e, command_config(), 1).at(2), "/downloads/m");
}

TEST(VllmCommand, MaxModelLenFromContextLengthElseConfig) {
  auto e = vllm_entry("m");
  auto cfg = command_config();
  cfg.vllm_max_model_len = 4096;
  EXPECT_EQ(vllm_command(e, cfg, 1).at(10), "4096");
  e.context_length = 32768;
  EXPECT_EQ(vllm_command(e, cfg, 1).at(10), "32768");
}

TEST(VllmCommand, GpuMemoryUtilizationIsAShortDecimal) {
  const std::vector<std::pair<double, std::string>> cases = {
      {0.85, "0.85"}, {0.9, "0.9"}, {0.5, "0.5"}, {0.925, "0.925"}, {1.0, "1"}};
  for (const auto& [value, text] : cases) {
    auto cfg = command_config();
    cfg.vllm_gpu_memory_utilization = value;
    const auto argv = vllm_command(vllm_entry("m"), cfg, 1);
    EXPECT_EQ(argv.at(7), "--gpu-memory-utilization");
    EXPECT_EQ(argv.at(8), text) << value;
  }
}

TEST(VllmCommand, ChatTemplateOnlyWithATemplateThenExtraArgsLast) {
  auto e = vllm_entry("m");
  e.backend_config.extra_args = {"--dtype", "half", "--enforce-eager"};
  auto argv = vllm_command(e, command_config(), 1);
  EXPECT_EQ(std::count(argv.begin(), argv.end(), "--chat-template"), 0);
  EXPECT_EQ(Argv(argv.end() - 3, argv.end()), e.backend_config.extra_args);

  e.chat_template = "qwen.jinja";
  argv = vllm_command(e, command_config(), 1);
  ASSERT_EQ(argv.size(), 16u);
  EXPECT_EQ(argv[11], "--chat-template");
  EXPECT_EQ(argv[12], "/srv/registry/chat_templates/qwen.jinja");
  EXPECT_EQ(Argv(argv.begin() + 13, argv.end()), e.backend_config.extra_args);
}

TEST(VllmCommand, ChatTemplatePathIsAbsoluteForARelativeTemplateDir) {
  auto e = vllm_entry("m");
  e.chat_template = "sub/../qwen.jinja";
  auto cfg = command_config();
  cfg.template_dir = "configs/chat_templates";
  const auto argv = vllm_command(e, cfg, 1);
  ASSERT_EQ(argv.size(), 13u);
  const std::filesystem::path t = argv[12];
  EXPECT_TRUE(t.is_absolute()) << t;
  EXPECT_EQ(t, (std::filesystem::current_path() / "configs/chat_templates/qwen.jinja").lexically_normal());
}

TEST(VllmCommand, StartCommandPlaceholdersAreSubstitutedInsideArguments) {
  auto e = vllm_entry("m");
  e.served_model_id = "served-m";
  e.context_length = 16384;
  e.chat_template = "t.jinja";
  e.backend_config.extra_args = {"--not-appended"};
  e.backend_config.start_command = {"/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server",
                                    "--model={model_path}", "--port={port}", "--served-model-name",
                                    "{served_model_id}", "--gpu-memory-utilization={gpu_memory_utilization}",
                                    "--max-model-len", "{max_model_len}", "--chat-template", "{chat_template}",
                                    "--tag={port}:{port}"};
  auto cfg = command_config();
  cfg.vllm_gpu_memory_utilization = 0.9;
  EXPECT_EQ(vllm_command(e, cfg, 24005),
            (Argv{"/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--model=/models/m",
                  "--port=24005", "--served-model-name", "served-m", "--gpu-memory-utilization=0.9",
                  "--max-model-len", "16384", "--chat-template", "/srv/registry/chat_templates/t.jinja",
                  "--tag=24005:24005"}));
}

TEST(VllmCommand, StartCommandDropsALoneChatTemplateWithoutATemplate) {
  auto e = vllm_entry("m");
  e.backend_config.start_command = {"/opt/serve.sh", "{model_path}", "{chat_template}", "--port", "{port}"};
  EXPECT_EQ(vllm_command(e, command_config(), 7),
            (Argv{"/opt/serve.sh", "/models/m", "--port", "7"}));
}

TEST(VllmCommand, StartCommandDropsTheTemplateFlagWithItsMissingValue) {
  auto e = vllm_entry("m");
  e.backend_config.start_command = {"serve", "--chat-template", "{chat_template}", "--port={port}"};
  EXPECT_EQ(vllm_command(e, command_config(), 7), (std::vector<std::string>{"serve", "--port=7"}));
}

// Substitution is one pass: a value holding a placeholder's text is not substituted again.
TEST(VllmCommand, StartCommandValuesAreNotSubstitutedTwice) {
  auto e = vllm_entry("m");
  e.served_model_id = "weird-{port}";
  e.backend_config.start_command = {"--name={served_model_id}", "{port}{port}"};
  EXPECT_EQ(vllm_command(e, command_config(), 9), (std::vector<std::string>{"--name=weird-{port}", "99"}));
}

TEST(VllmCommand, StartCommandNeedsNoModelPath) {
  auto e = vllm_entry("m");
  e.backend_config.model_path.clear();
  e.backend_config.start_command = {"/opt/serve.sh", "--port", "{port}"};
  EXPECT_EQ(vllm_command(e, command_config(), 7), (Argv{"/opt/serve.sh", "--port", "7"}));
}

TEST(VllmCommand, NoModelPathAndNoStartCommandIs503) {
  auto e = vllm_entry("pathless");
  e.backend_config.model_path.clear();
  try {
    vllm_command(e, command_config(), 1);
    FAIL() << "no error";
  } catch (const ProxyError& err) {
    EXPECT_EQ(err.status, 503);
    EXPECT_NE(std::string(err.what()).find("pathless"), std::string::npos) << err.what();
  }
}

TEST(VllmCommand, StatusJsonHasNullsForWhatIsUnset) {
  const auto stopped = to_json(VllmStatus{});
  EXPECT_EQ(stopped["state"], "stopped");
  for (const char* k : {"logical_name", "served_model_id", "pid", "port", "started_at", "base_url", "log_path",
                        "last_error"})
    EXPECT_TRUE(stopped.at(k).is_null()) << k;
  EXPECT_EQ(stopped["adopted"], false);

  VllmStatus s;
  s.state = BackendState::ready;
  s.logical_name = "m";
  s.pid = 42;
  s.port = 24001;
  s.base_url = "http://127.0.0.1:24001";
  s.started_at = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  s.adopted = true;
  const auto ready = to_json(s);
  EXPECT_EQ(ready["state"], "ready");
  EXPECT_EQ(ready["pid"], 42);
  EXPECT_EQ(ready["port"], 24001);
  EXPECT_EQ(ready["started_at"], "2023-11-14T22:13:20Z");
  EXPECT_EQ(ready["adopted"], true);
}

}  // namespace
}  // namespace imageworks
