// Entry validation (§3): each bad field yields one issue naming file, entry and field.
#include <gtest/gtest.h>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

const std::string kFile = "configs/model_registry.curated.json";

json valid_entry() { return {{"name", "llama-x"}, {"backend", "ollama"}}; }

struct FieldCase {
  const char* field;     // issue field
  json patch;            // merged into a valid entry
  const char* message;   // exact issue message
};

std::vector<FieldCase> field_cases() {
  return {
      {"backend", {{"backend", "foo"}},
       "expected one of vllm, ollama, openai, llamacpp, lmdeploy, got \"foo\""},
      {"backend", {{"backend", 3}}, "expected one of vllm, ollama, openai, llamacpp, lmdeploy, got 3"},
      {"name", {{"name", ""}}, "expected a non-empty string, got \"\""},
      {"display_name", {{"display_name", 1}}, "expected a string, got 1"},
      {"served_model_id", {{"served_model_id", true}}, "expected a string, got true"},
      {"download_path", {{"download_path", json::array()}}, "expected a string, got []"},
      {"format", {{"format", 1.5}}, "expected a string, got 1.5"},
      {"quantization", {{"quantization", json::object()}}, "expected a string, got {}"},
      {"family", {{"family", false}}, "expected a string, got false"},
      {"parameter_size", {{"parameter_size", 7}}, "expected a string, got 7"},
      {"chat_template", {{"chat_template", 7}}, "expected a string, got 7"},
      {"chat_template", {{"chat_template", "../etc/passwd"}},
       "expected a file name inside the template directory, got \"../etc/passwd\""},
      {"chat_template", {{"chat_template", "/abs/t.jinja"}},
       "expected a file name inside the template directory, got \"/abs/t.jinja\""},
      {"version_lock", {{"version_lock", 2}}, "expected a string, got 2"},
      {"testing", {{"testing", "yes"}}, "expected true or false, got \"yes\""},
      {"deprecated", {{"deprecated", 1}}, "expected true or false, got 1"},
      {"roles", {{"roles", "chat"}}, "expected an array of strings, got \"chat\""},
      {"profiles", {{"profiles", json::array({"production", 1})}}, "expected an array of strings, got [\"production\",1]"},
      {"context_length", {{"context_length", "8k"}},
       "expected an integer from 1 to 9223372036854775807, got \"8k\""},
      {"context_length", {{"context_length", 0}}, "expected an integer from 1 to 9223372036854775807, got 0"},
      {"context_length", {{"context_length", 8192.5}},
       "expected an integer from 1 to 9223372036854775807, got 8192.5"},
      {"capabilities", {{"capabilities", "vision"}}, "expected an object, got \"vision\""},
      {"capabilities.vision", {{"capabilities", {{"vision", "yes"}}}}, "expected true or false, got \"yes\""},
      {"capabilities.tools", {{"capabilities", {{"tools", 1}}}}, "expected true or false, got 1"},
      {"capabilities.reasoning", {{"capabilities", {{"reasoning", "no"}}}}, "expected true or false, got \"no\""},
      {"capabilities.embedding", {{"capabilities", {{"embedding", 0}}}}, "expected true or false, got 0"},
      // backend_config may hold credentials: values are described by type only.
      {"backend_config", {{"backend_config", "sk-secret"}}, "expected an object, got a string"},
      {"backend_config.base_url", {{"backend_config", {{"base_url", 80}}}}, "expected a string, got 80"},
      {"backend_config.base_url", {{"backend_config", {{"base_url", "localhost:8000"}}}},
       "expected an http:// or https:// URL, got \"localhost:8000\""},
      {"backend_config.port", {{"backend_config", {{"port", "8000"}}}},
       "expected an integer from 0 to 65535, got \"8000\""},
      {"backend_config.port", {{"backend_config", {{"port", 70000}}}}, "expected an integer from 0 to 65535, got 70000"},
      {"backend_config.model_path", {{"backend_config", {{"model_path", 1}}}}, "expected a string, got 1"},
      {"backend_config.extra_args", {{"backend_config", {{"extra_args", "--x"}}}},
       "expected an array of strings, got a string"},
      {"backend_config.api_key", {{"backend_config", {{"api_key", 12345}}}}, "expected a string, got an integer"},
      {"backend_config.api_key_env", {{"backend_config", {{"api_key_env", 1}}}}, "expected a string, got 1"},
      {"backend_config.start_command", {{"backend_config", {{"start_command", json::array({"vllm", 1})}}}},
       "expected an array of strings, got an array"},
  };
}

TEST(RegistryValidation, EachFieldTypeErrorNamesFileEntryAndField) {
  for (const auto& c : field_cases()) {
    json j = valid_entry();
    j.merge_patch(c.patch);
    std::vector<RegistryIssue> issues;
    auto e = parse_entry(j, kFile, "llama-x", issues);
    EXPECT_FALSE(e.has_value()) << c.field;
    ASSERT_EQ(issues.size(), 1u) << c.field << " " << j.dump();
    EXPECT_EQ(issues[0].file, kFile);
    EXPECT_EQ(issues[0].entry, "llama-x");
    EXPECT_EQ(issues[0].field, c.field);
    EXPECT_EQ(issues[0].message, c.message) << c.field;
  }
}

TEST(RegistryValidation, IssueTextHasTheDocumentedForm) {
  json j = valid_entry();
  j["backend"] = "foo";
  std::vector<RegistryIssue> issues;
  parse_entry(j, kFile, "llama-x", issues);
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].to_string(),
            "configs/model_registry.curated.json: entry 'llama-x': field 'backend': expected one of "
            "vllm, ollama, openai, llamacpp, lmdeploy, got \"foo\"");
  EXPECT_EQ((RegistryIssue{"f.json", "", "", "invalid JSON"}).to_string(), "f.json: invalid JSON");
  EXPECT_EQ((RegistryIssue{"f.json", "#2", "", "m"}).to_string(), "f.json: entry '#2': m");
}

TEST(RegistryValidation, MissingNameAndBackendAreReported) {
  std::vector<RegistryIssue> issues;
  EXPECT_FALSE(parse_entry(json::object(), kFile, "#0", issues));
  ASSERT_EQ(issues.size(), 2u);
  EXPECT_EQ(issues[0].field, "name");
  EXPECT_EQ(issues[0].message, "required field missing");
  EXPECT_EQ(issues[1].field, "backend");
  EXPECT_EQ(issues[1].message, "required field missing");
}

TEST(RegistryValidation, NullCountsAsAbsent) {
  json j = valid_entry();
  j["display_name"] = nullptr;
  j["capabilities"] = nullptr;
  std::vector<RegistryIssue> issues;
  auto e = parse_entry(j, kFile, "llama-x", issues);
  ASSERT_TRUE(e);
  EXPECT_TRUE(issues.empty());
  EXPECT_EQ(e->display_name, "");
  j["backend"] = nullptr;
  EXPECT_FALSE(parse_entry(j, kFile, "llama-x", issues));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].message, "required field missing");
}

TEST(RegistryValidation, EveryBadFieldOfOneEntryIsReported) {
  json j = {{"name", "m"}, {"backend", "nope"}, {"testing", "x"}, {"roles", 1}};
  std::vector<RegistryIssue> issues;
  EXPECT_FALSE(parse_entry(j, kFile, "m", issues));
  EXPECT_EQ(issues.size(), 3u);
}

TEST(RegistryValidation, NonObjectEntryIsRejected) {
  std::vector<RegistryIssue> issues;
  EXPECT_FALSE(parse_entry(json("text"), kFile, "#1", issues));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].entry, "#1");
  EXPECT_EQ(issues[0].field, "");
}

TEST(RegistryValidation, ValidEntryParsesEveryField) {
  json j = {{"name", "qwen"},
            {"display_name", "Qwen"},
            {"backend", "vllm"},
            {"backend_config",
             {{"base_url", "http://127.0.0.1:8000"}, {"port", 8000}, {"model_path", "/m"},
              {"extra_args", {"--a"}}, {"api_key", "k"}, {"api_key_env", "E"},
              {"start_command", json::array({"vllm", "serve"})}}},
            {"served_model_id", "qwen-served"},
            {"download_path", "/d"},
            {"format", "awq"},
            {"quantization", "awq"},
            {"family", "qwen2.5"},
            {"parameter_size", "7b"},
            {"capabilities", {{"vision", true}, {"tools", true}, {"reasoning", true}, {"embedding", true}}},
            {"chat_template", "sub/chatml.jinja"},
            {"roles", {"chat"}},
            {"profiles", {"staging"}},
            {"testing", true},
            {"deprecated", true},
            {"version_lock", "1.2"},
            {"context_length", 32768},
            {"unknown_field", "kept in raw"}};
  std::vector<RegistryIssue> issues;
  auto e = parse_entry(j, kFile, "qwen", issues);
  ASSERT_TRUE(e) << (issues.empty() ? "" : issues[0].to_string());
  EXPECT_EQ(e->backend_config.port, 8000);
  EXPECT_EQ(e->backend_config.start_command, (std::vector<std::string>{"vllm", "serve"}));
  EXPECT_EQ(e->backend_config.api_key_env, "E");
  EXPECT_TRUE(e->capabilities.vision && e->capabilities.tools && e->capabilities.reasoning &&
              e->capabilities.embedding);
  EXPECT_EQ(e->chat_template, "sub/chatml.jinja");
  EXPECT_EQ(e->profiles, (std::vector<std::string>{"staging"}));
  EXPECT_TRUE(e->testing && e->deprecated);
  EXPECT_EQ(e->context_length, 32768);
  EXPECT_EQ(e->version_lock, "1.2");
  EXPECT_EQ(e->upstream_model(), "qwen-served");
  EXPECT_EQ(e->raw["unknown_field"], "kept in raw");
}

TEST(RegistryValidation, EveryBackendIsAccepted) {
  for (const char* b : {"vllm", "ollama", "openai", "llamacpp", "lmdeploy"}) {
    std::vector<RegistryIssue> issues;
    EXPECT_TRUE(parse_entry({{"name", "m"}, {"backend", b}}, kFile, "m", issues)) << b;
  }
}

}  // namespace
}  // namespace imageworks
