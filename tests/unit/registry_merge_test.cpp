// Layer merge (§3): curated wins field by field, objects deep-merge, arrays are replaced,
// and validation happens after the merge.
#include <gtest/gtest.h>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

const std::string kDisc = "d/model_registry.discovered.json";
const std::string kCur = "d/model_registry.curated.json";

TEST(RegistryMerge, CuratedScalarWins) {
  json d = {{"name", "m"}, {"backend", "ollama"}, {"display_name", "old"}, {"family", "f"}};
  json c = {{"name", "m"}, {"display_name", "new"}};
  json m = merge_layer_entry(d, c);
  EXPECT_EQ(m["display_name"], "new");
  EXPECT_EQ(m["family"], "f");
  EXPECT_EQ(m["backend"], "ollama");
}

TEST(RegistryMerge, NestedObjectsDeepMerge) {
  json d = {{"backend_config", {{"base_url", "http://a"}, {"port", 1}, {"inner", {{"x", 1}, {"y", 2}}}}},
            {"capabilities", {{"vision", false}, {"tools", true}}}};
  json c = {{"backend_config", {{"port", 2}, {"inner", {{"y", 3}}}}}, {"capabilities", {{"vision", true}}}};
  json m = merge_layer_entry(d, c);
  EXPECT_EQ(m["backend_config"]["base_url"], "http://a");
  EXPECT_EQ(m["backend_config"]["port"], 2);
  EXPECT_EQ(m["backend_config"]["inner"], (json{{"x", 1}, {"y", 3}}));
  EXPECT_EQ(m["capabilities"], (json{{"vision", true}, {"tools", true}}));
}

TEST(RegistryMerge, ArraysAreReplacedNotConcatenated) {
  json d = {{"roles", json::array({"chat", "vision"})}, {"backend_config", {{"extra_args", json::array({"--a", "--b"})}}}};
  json c = {{"roles", {"tools"}}, {"backend_config", {{"extra_args", json::array()}}}};
  json m = merge_layer_entry(d, c);
  EXPECT_EQ(m["roles"], json::array({"tools"}));
  EXPECT_EQ(m["backend_config"]["extra_args"], json::array());
}

TEST(RegistryMerge, CuratedNullUnsetsAField) {
  json m = merge_layer_entry({{"download_path", "/x"}}, {{"download_path", nullptr}});
  EXPECT_TRUE(m["download_path"].is_null());
  std::vector<RegistryIssue> issues;
  auto e = merge_layers({{kDisc, json::array({{{"name", "m"}, {"backend", "vllm"}, {"download_path", "/x"}}})},
                         {kCur, json::array({{{"name", "m"}, {"download_path", nullptr}}})}},
                        issues);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].download_path, "");
}

TEST(RegistryMerge, ObjectReplacesScalarAndScalarReplacesObject) {
  EXPECT_EQ(merge_layer_entry({{"a", 1}}, {{"a", {{"b", 2}}}})["a"], (json{{"b", 2}}));
  EXPECT_EQ(merge_layer_entry({{"a", {{"b", 2}}}}, {{"a", 1}})["a"], 1);
}

TEST(RegistryMerge, LayersMergeByNameInFirstAppearanceOrder) {
  std::vector<LayerContent> layers = {
      {kDisc, json::array({{{"name", "a"}, {"backend", "ollama"}, {"family", "fa"}},
                           {{"name", "b"}, {"backend", "vllm"}}})},
      {kCur, json::array({{{"name", "c"}, {"backend", "openai"}},
                          {{"name", "a"}, {"display_name", "A"}}})}};
  std::vector<RegistryIssue> issues;
  auto entries = merge_layers(layers, issues);
  EXPECT_TRUE(issues.empty());
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, "a");  // discovered order first…
  EXPECT_EQ(entries[1].name, "b");
  EXPECT_EQ(entries[2].name, "c");  // …then curated-only additions
  EXPECT_EQ(entries[0].display_name, "A");
  EXPECT_EQ(entries[0].family, "fa");
  EXPECT_EQ(entries[0].layers, (std::vector<std::string>{kDisc, kCur}));
  EXPECT_EQ(entries[1].layers, (std::vector<std::string>{kDisc}));  // discovered-only
  EXPECT_EQ(entries[2].layers, (std::vector<std::string>{kCur}));   // curated-only
  EXPECT_EQ(entries[0].raw["display_name"], "A");
}

TEST(RegistryMerge, PartialCuratedEntryIsValidatedAfterMerge) {
  std::vector<LayerContent> layers = {
      {kDisc, json::array({{{"name", "a"}, {"backend", "ollama"}}})},
      {kCur, json::array({{{"name", "a"}, {"display_name", "A"}}, {{"name", "partial"}, {"display_name", "P"}}})}};
  std::vector<RegistryIssue> issues;
  auto entries = merge_layers(layers, issues);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].name, "a");
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].to_string(), kCur + ": entry 'partial': field 'backend': required field missing");
}

TEST(RegistryMerge, IssueNamesTheLayerThatSetTheBadValue) {
  std::vector<LayerContent> layers = {
      {kDisc, json::array({{{"name", "a"}, {"backend", "ollama"}, {"testing", "no"}},
                           {{"name", "b"}, {"backend", "ollama"}}})},
      {kCur, json::array({{{"name", "a"}, {"display_name", "A"}},
                          {{"name", "b"}, {"backend_config", {{"port", "x"}}}}})}};
  std::vector<RegistryIssue> issues;
  auto entries = merge_layers(layers, issues);
  EXPECT_TRUE(entries.empty());  // an invalid merged entry is skipped whole
  ASSERT_EQ(issues.size(), 2u);
  EXPECT_EQ(issues[0].file, kDisc);
  EXPECT_EQ(issues[0].field, "testing");
  EXPECT_EQ(issues[1].file, kCur);
  EXPECT_EQ(issues[1].field, "backend_config.port");
}

TEST(RegistryMerge, DuplicateInOneLayerFirstWins) {
  std::vector<LayerContent> layers = {
      {kCur, json::array({{{"name", "a"}, {"backend", "ollama"}, {"family", "first"}},
                          {{"name", "a"}, {"backend", "vllm"}, {"family", "second"}}})}};
  std::vector<RegistryIssue> issues;
  auto entries = merge_layers(layers, issues);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].family, "first");
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].to_string(),
            kCur + ": entry 'a': field 'name': duplicate entry in this file (#1); the first one is used");
}

TEST(RegistryMerge, EntriesWithoutUsableNameAreLabelledByIndex) {
  std::vector<LayerContent> layers = {
      {kDisc, json::array({{{"backend", "ollama"}}, {{"name", 5}, {"backend", "ollama"}}, "junk",
                           {{"name", "ok"}, {"backend", "ollama"}}})}};
  std::vector<RegistryIssue> issues;
  auto entries = merge_layers(layers, issues);
  ASSERT_EQ(entries.size(), 1u);
  ASSERT_EQ(issues.size(), 3u);
  EXPECT_EQ(issues[0].to_string(), kDisc + ": entry '#0': field 'name': required field missing");
  EXPECT_EQ(issues[1].to_string(), kDisc + ": entry '#1': field 'name': expected a non-empty string, got 5");
  EXPECT_EQ(issues[2].to_string(), kDisc + ": entry '#2': expected an object, got string");
}

}  // namespace
}  // namespace imageworks
