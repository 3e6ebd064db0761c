// RegistryLoader against real files: layer shapes, last-good layers, change detection, and
// the example registry shipped in configs/.
#include <gtest/gtest.h>

#include <filesystem>

#include "imageworks/registry.hpp"
#include "support/test_support.hpp"

namespace imageworks {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const char* kDiscovered = "model_registry.discovered.json";
const char* kCurated = "model_registry.curated.json";
const char* kSingle = "model_registry.json";

ListingOptions all_models() { return {true, true, "production", {}}; }

std::vector<std::string> names(const RegistrySnapshot& s) {
  std::vector<std::string> out;
  for (const auto& e : s.entries) out.push_back(e.name);
  return out;
}

std::vector<std::string> ids(const RegistrySnapshot& s) {
  std::vector<std::string> out;
  for (const auto& m : s.listed) out.push_back(m.id);
  return out;
}

TEST(RegistryLoader, EmptyDirectoryIsAValidEmptyRegistry) {
  TempDir dir;
  RegistryLoader loader(dir.path(), {});
  auto snap = loader.load();
  EXPECT_TRUE(snap->entries.empty());
  EXPECT_TRUE(snap->issues.empty());
  EXPECT_TRUE(snap->layers.empty());
  EXPECT_EQ(snap->error_summary(), "");
}

TEST(RegistryLoader, MissingDirectoryIsReported) {
  TempDir dir;
  RegistryLoader loader(dir.path() / "nope", {});
  auto snap = loader.load();
  ASSERT_EQ(snap->issues.size(), 1u);
  EXPECT_NE(snap->issues[0].message.find("not found"), std::string::npos);
}

TEST(RegistryLoader, AcceptsArrayModelsObjectAndSingleFileLayers) {
  TempDir dir;
  dir.write(kDiscovered, R"([{"name":"a","backend":"ollama","family":"disc","format":"gguf"}])");
  dir.write(kSingle, R"({"models":[{"name":"a","family":"single","quantization":"q8_0"},
                                     {"name":"s","backend":"vllm"}]})");
  dir.write(kCurated, R"([{"name":"a","family":"cur"}])");
  RegistryLoader loader(dir.path(), all_models());
  auto snap = loader.load();
  EXPECT_EQ(snap->error_summary(), "");
  ASSERT_EQ(names(*snap), (std::vector<std::string>{"a", "s"}));
  const auto& a = snap->entries[0];
  EXPECT_EQ(a.family, "cur");           // curated above the single file
  EXPECT_EQ(a.quantization, "q8_0");    // single file above discovered
  EXPECT_EQ(a.format, "gguf");
  EXPECT_EQ(a.layers.size(), 3u);
  EXPECT_EQ(snap->layers, (std::vector<std::string>{(dir.path() / kDiscovered).string(),
                                                    (dir.path() / kSingle).string(),
                                                    (dir.path() / kCurated).string()}));
}

TEST(RegistryLoader, EndpointsFormatBecomesOpenAiEntriesInFileOrder) {
  TempDir dir;
  dir.write(kSingle, R"({"endpoints":{
      "zeta-model":{"displayName":"Zeta","url":"https://zeta.example.com","apiKey":"sk-zeta-123456","actualModelName":"cm-llm"},
      "alpha-model":{"displayName":"Alpha","url":"http://10.0.0.2:8000/v1","apiKey":"k","actualModelName":"cm-llm-2"}}})");
  RegistryLoader loader(dir.path(), {});
  auto snap = loader.load();
  EXPECT_EQ(snap->error_summary(), "");
  ASSERT_EQ(names(*snap), (std::vector<std::string>{"zeta-model", "alpha-model"}));
  const auto& z = snap->entries[0];
  EXPECT_EQ(z.backend, "openai");
  EXPECT_EQ(z.display_name, "Zeta");
  EXPECT_EQ(z.backend_config.base_url, "https://zeta.example.com");
  EXPECT_EQ(z.backend_config.api_key, "sk-zeta-123456");
  EXPECT_EQ(z.served_model_id, "cm-llm");
  EXPECT_EQ(ids(*snap), (std::vector<std::string>{"Zeta", "Alpha"}));
}

TEST(RegistryLoader, EndpointThatIsNotAnObjectIsReportedWithoutItsValue) {
  TempDir dir;
  dir.write(kSingle, R"({"endpoints":{"bad":"sk-secret-value","good":{"url":"http://h:1"}}})");
  RegistryLoader loader(dir.path(), {});
  auto snap = loader.load();
  EXPECT_EQ(names(*snap), (std::vector<std::string>{"good"}));
  ASSERT_EQ(snap->issues.size(), 1u);
  EXPECT_EQ(snap->issues[0].entry, "bad");
  EXPECT_EQ(snap->error_summary().find("sk-secret"), std::string::npos);
}

TEST(RegistryLoader, BadJsonKeepsTheLastGoodLayerAcrossLoads) {
  TempDir dir;
  dir.write(kDiscovered, R"([{"name":"d","backend":"ollama"}])");
  dir.write(kCurated, R"([{"name":"c","backend":"ollama","family":"good"}])");
  RegistryLoader loader(dir.path(), {});
  ASSERT_EQ(names(*loader.load()), (std::vector<std::string>{"d", "c"}));

  dir.write(kCurated, "[{\"name\":\"c\",\n \"backend\": oops}]");
  for (int round = 0; round < 2; ++round) {
    auto snap = loader.load();
    EXPECT_EQ(names(*snap), (std::vector<std::string>{"d", "c"})) << round;
    EXPECT_EQ(snap->entries[1].family, "good");
    ASSERT_EQ(snap->issues.size(), 1u);
    const auto& issue = snap->issues[0];
    EXPECT_EQ(issue.file, (dir.path() / kCurated).string());
    EXPECT_EQ(issue.entry, "");
    EXPECT_EQ(issue.field, "");
    EXPECT_NE(issue.message.find("line 2, column"), std::string::npos) << issue.message;
    EXPECT_NE(issue.message.find("last good version"), std::string::npos) << issue.message;
  }

  dir.write(kCurated, R"([{"name":"c","backend":"ollama","family":"fixed"}])");
  auto snap = loader.load();
  EXPECT_TRUE(snap->issues.empty());
  EXPECT_EQ(snap->entries[1].family, "fixed");
}

TEST(RegistryLoader, BadJsonWithoutLastGoodIgnoresTheLayer) {
  TempDir dir;
  dir.write(kDiscovered, R"([{"name":"d","backend":"ollama"}])");
  dir.write(kCurated, "[{");
  RegistryLoader loader(dir.path(), {});
  auto snap = loader.load();
  EXPECT_EQ(names(*snap), (std::vector<std::string>{"d"}));
  ASSERT_EQ(snap->issues.size(), 1u);
  EXPECT_NE(snap->issues[0].message.find("invalid JSON"), std::string::npos);
  EXPECT_NE(snap->issues[0].message.find("layer ignored"), std::string::npos);
  EXPECT_EQ(snap->layers.size(), 1u);
}

TEST(RegistryLoader, ParseErrorDoesNotEchoTheFileText) {
  TempDir dir;
  dir.write(kCurated, R"([{"name":"c","backend_config":{"api_key":"sk-live-abcdef123456)");
  RegistryLoader loader(dir.path(), {});
  auto snap = loader.load();
  ASSERT_EQ(snap->issues.size(), 1u);
  EXPECT_EQ(snap->error_summary().find("sk-live"), std::string::npos) << snap->error_summary();
  EXPECT_NE(snap->issues[0].message.find("line 1"), std::string::npos);
}

TEST(RegistryLoader, WrongTopLevelShapeIsReported) {
  for (const char* text : {R"({"foo":[]})", "42", R"({"models":{}})", R"({"endpoints":[]})"}) {
    TempDir dir;
    dir.write(kCurated, text);
    RegistryLoader loader(dir.path(), {});
    auto snap = loader.load();
    ASSERT_EQ(snap->issues.size(), 1u) << text;
    EXPECT_EQ(snap->issues[0].to_string(),
              (dir.path() / kCurated).string() +
                  ": expected a JSON array of entries, {\"models\": [...]} or {\"endpoints\": {...}}"
                  " (layer ignored)");
  }
}

TEST(RegistryLoader, InvalidEntryIsSkippedAndTheRestServe) {
  TempDir dir;
  dir.write(kCurated, R"([{"name":"llama-x","backend":"foo"},{"name":"ok","backend":"ollama"}])");
  RegistryLoader loader(dir.path(), {});
  auto snap = loader.load();
  EXPECT_EQ(names(*snap), (std::vector<std::string>{"ok"}));
  EXPECT_EQ(snap->error_summary(),
            (dir.path() / kCurated).string() +
                ": entry 'llama-x': field 'backend': expected one of vllm, ollama, openai, llamacpp, "
                "lmdeploy, got \"foo\"");
}

TEST(RegistryLoader, ErrorSummaryJoinsIssues) {
  TempDir dir;
  dir.write(kCurated, R"([{"name":"a"},{"name":"b"}])");
  RegistryLoader loader(dir.path(), {});
  auto summary = loader.load()->error_summary();
  EXPECT_NE(summary.find("entry 'a'"), std::string::npos);
  EXPECT_NE(summary.find("; "), std::string::npos);
  EXPECT_NE(summary.find("entry 'b'"), std::string::npos);
}

TEST(RegistryLoader, RemovedLayerIsGoneNotBroken) {
  TempDir dir;
  dir.write(kCurated, R"([{"name":"c","backend":"ollama"}])");
  RegistryLoader loader(dir.path(), {});
  ASSERT_EQ(loader.load()->entries.size(), 1u);
  fs::remove(dir.path() / kCurated);
  auto snap = loader.load();
  EXPECT_TRUE(snap->entries.empty());
  EXPECT_TRUE(snap->issues.empty());
  // A broken file that reappears later has no last good version any more.
  dir.write(kCurated, "[");
  EXPECT_TRUE(loader.load()->entries.empty());
}

// A layer replaced by something that is not a file (a directory, as `mkdir` over a removed
// file or a bad bind mount leaves it) is broken, not removed: reported, last good kept.
TEST(RegistryLoader, LayerReplacedByADirectoryKeepsItsLastGoodVersion) {
  TempDir dir;
  dir.write(kCurated, R"([{"name":"c","backend":"ollama"}])");
  RegistryLoader loader(dir.path(), {});
  ASSERT_EQ(names(*loader.load()), std::vector<std::string>{"c"});
  fs::remove(dir.path() / kCurated);
  fs::create_directory(dir.path() / kCurated);
  EXPECT_TRUE(loader.changed());
  auto snap = loader.load();
  EXPECT_EQ(names(*snap), std::vector<std::string>{"c"});
  ASSERT_EQ(snap->issues.size(), 1u);
  EXPECT_EQ(snap->issues[0].file, (dir.path() / kCurated).string());
  EXPECT_EQ(snap->issues[0].message, "not a regular file (the last good version of this file is used)");
}

// The whole directory vanishing while serving keeps every layer's last good version.
TEST(RegistryLoader, VanishedDirectoryKeepsTheLastGoodLayers) {
  TempDir dir;
  const auto reg = dir.path() / "registry";
  dir.write("registry/" + std::string(kDiscovered), R"([{"name":"d","backend":"ollama"}])");
  dir.write("registry/" + std::string(kCurated), R"([{"name":"c","backend":"ollama"}])");
  RegistryLoader loader(reg, {});
  ASSERT_EQ(names(*loader.load()), (std::vector<std::string>{"d", "c"}));
  fs::remove_all(reg);
  EXPECT_TRUE(loader.changed());
  auto snap = loader.load();
  EXPECT_EQ(names(*snap), (std::vector<std::string>{"d", "c"}));
  ASSERT_EQ(snap->issues.size(), 1u);
  EXPECT_NE(snap->issues[0].message.find("registry directory not found"), std::string::npos);
  // It comes back with one layer only: that is the registry now.
  dir.write("registry/" + std::string(kCurated), R"([{"name":"c","backend":"ollama"}])");
  snap = loader.load();
  EXPECT_EQ(names(*snap), std::vector<std::string>{"c"});
  EXPECT_TRUE(snap->issues.empty());
}

TEST(RegistryLoader, ChangedDetectsContentMtimeCreationAndRemoval) {
  TempDir dir;
  auto curated = dir.write(kCurated, R"([{"name":"c","backend":"ollama"}])");
  RegistryLoader loader(dir.path(), {});
  EXPECT_TRUE(loader.changed());  // never loaded
  loader.load();
  EXPECT_FALSE(loader.changed());

  dir.write(kCurated, R"([{"name":"c","backend":"vllm"}])");  // size changes
  EXPECT_TRUE(loader.changed());
  loader.load();
  EXPECT_FALSE(loader.changed());

  // Same size, new mtime (an editor rewriting one character).
  fs::last_write_time(curated, fs::last_write_time(curated) + std::chrono::seconds(5));
  EXPECT_TRUE(loader.changed());
  loader.load();
  EXPECT_FALSE(loader.changed());

  dir.write(kDiscovered, "[]");  // a new layer appears
  EXPECT_TRUE(loader.changed());
  loader.load();
  EXPECT_FALSE(loader.changed());

  fs::remove(curated);  // a layer disappears
  EXPECT_TRUE(loader.changed());
  loader.load();
  EXPECT_FALSE(loader.changed());
}

// The example registry that ./scripts/run and the end-to-end tests use.
class RegistryExampleConfig : public ::testing::Test {
 protected:
  std::shared_ptr<const RegistrySnapshot> load(ListingOptions opts) {
    RegistryLoader loader(test::source_dir() / "configs", opts);
    return loader.load();
  }
};

TEST_F(RegistryExampleConfig, LoadsWithoutIssues) {
  ListingOptions opts;
  opts.template_dir = test::source_dir() / "configs" / "chat_templates";
  auto snap = load(opts);
  EXPECT_EQ(snap->error_summary(), "");
  const ModelEntry* templated = snap->find_entry("qwen2.5-7b-instruct-awq");
  ASSERT_NE(templated, nullptr);
  EXPECT_TRUE(templated->chat_template_found) << "decided when the snapshot is built";
  EXPECT_EQ(snap->layers.size(), 2u);
  EXPECT_GE(snap->entries.size(), 6u);
  // Every referenced chat template exists in configs/chat_templates/.
  for (const auto& e : snap->entries) {
    if (e.chat_template.empty()) continue;
    EXPECT_TRUE(fs::exists(test::source_dir() / "configs" / "chat_templates" / e.chat_template))
        << e.chat_template;
  }
}

TEST_F(RegistryExampleConfig, AMissingTemplateFileIsAnIssueNamingEntryAndField) {
  ListingOptions opts;
  opts.template_dir = "/nonexistent-template-dir";
  auto snap = load(opts);
  EXPECT_NE(snap->error_summary().find("entry 'qwen2.5-7b-instruct-awq': field 'chat_template'"), std::string::npos)
      << snap->error_summary();
  EXPECT_FALSE(snap->find_entry("qwen2.5-7b-instruct-awq")->chat_template_found);
}

TEST_F(RegistryExampleConfig, DefaultListingShowsInstalledProductionModels) {
  auto snap = load({});
  EXPECT_EQ(ids(*snap), (std::vector<std::string>{"Llama 3.2 Instruct 3.2b (Q4 K M)",
                                                  "qwen2.5vl 8.3b (Q4 K M)", "GPT-4o mini"}));
  const auto* vision = snap->resolve("qwen2.5vl:7b-q4_K_M");
  ASSERT_NE(vision, nullptr);
  EXPECT_TRUE(vision->entry->capabilities.vision);
  const auto* remote = snap->resolve("gpt-4o-mini");
  ASSERT_NE(remote, nullptr);
  EXPECT_EQ(remote->entry->backend_config.api_key_env, "OPENAI_API_KEY");
}

TEST_F(RegistryExampleConfig, FlagsRevealNonInstalledTestingAndStagingModels) {
  auto all = load({true, true, "staging", {}});
  EXPECT_EQ(ids(*all), (std::vector<std::string>{
                           "Qwen2.5 7B Instruct (AWQ)", "Llama 3.2 Instruct 3.2b (Q4 K M)",
                           "qwen2.5vl 8.3b (Q4 K M)", "qwen3 8.2b (Q4 K M)", "llama3.2 1.2b (Q8 0)",
                           "GPT-4o mini"}));
  const auto* vllm = all->resolve("qwen2.5-7b-instruct-awq");
  ASSERT_NE(vllm, nullptr);
  EXPECT_FALSE(vllm->installed);
  EXPECT_EQ(vllm->entry->chat_template, "chatml.jinja");  // from the curated override
  EXPECT_EQ(vllm->entry->backend_config.base_url, "");   // managed by the proxy
  EXPECT_EQ(vllm->entry->layers.size(), 2u);
  EXPECT_EQ(load({true, false, "production", {}})->listed.size(), 4u);
  EXPECT_EQ(load({false, true, "production", {}})->listed.size(), 4u);
  EXPECT_EQ(load({false, false, "staging", {}})->listed.size(), 4u);
}

}  // namespace
}  // namespace imageworks
