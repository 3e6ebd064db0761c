// Listing filters, unique ids, name resolution, /v1/models objects and the debug dump.
#include <gtest/gtest.h>

#include "imageworks/registry.hpp"
#include "support/test_support.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

ModelEntry make(std::string name, std::string display = "", std::string backend = "ollama") {
  ModelEntry e;
  e.name = std::move(name);
  e.display_name = std::move(display);
  e.backend = std::move(backend);
  return e;
}

std::vector<std::string> ids(const RegistrySnapshot& s) {
  std::vector<std::string> out;
  for (const auto& m : s.listed) out.push_back(m.id);
  return out;
}

RegistrySnapshot snapshot_of(std::vector<ModelEntry> entries, const ListingOptions& opts = {}) {
  RegistrySnapshot s;
  s.entries = std::move(entries);
  build_listing(s, opts);
  return s;
}

TEST(RegistryListing, ProfileFilter) {
  auto prod = make("prod");
  prod.profiles = {"production"};
  auto staging = make("staging");
  staging.profiles = {"staging", "testing"};
  auto anywhere = make("anywhere");
  std::vector<ModelEntry> entries = {prod, staging, anywhere};
  EXPECT_EQ(ids(snapshot_of(entries)), (std::vector<std::string>{"prod", "anywhere"}));
  EXPECT_EQ(ids(snapshot_of(entries, {false, false, "staging"})),
            (std::vector<std::string>{"staging", "anywhere"}));
  EXPECT_EQ(ids(snapshot_of(entries, {false, false, "testing"})),
            (std::vector<std::string>{"staging", "anywhere"}));
}

TEST(RegistryListing, TestingModelsOnlyWhenIncluded) {
  auto t = make("t");
  t.testing = true;
  std::vector<ModelEntry> entries = {make("a"), t};
  EXPECT_EQ(ids(snapshot_of(entries)), (std::vector<std::string>{"a"}));
  EXPECT_EQ(ids(snapshot_of(entries, {false, true, "production"})), (std::vector<std::string>{"a", "t"}));
}

TEST(RegistryListing, InstalledMeansDownloadPathExists) {
  test::TempDir dir;
  auto present = make("present");
  present.download_path = dir.write("weights/model.safetensors", "x").string();
  auto absent = make("absent");
  absent.download_path = (dir.path() / "missing").string();
  auto remote = make("remote", "", "openai");  // no download_path: counts as installed
  std::vector<ModelEntry> entries = {present, absent, remote};

  auto installed_only = snapshot_of(entries);
  EXPECT_EQ(ids(installed_only), (std::vector<std::string>{"present", "remote"}));

  auto all = snapshot_of(entries, {true, false, "production"});
  ASSERT_EQ(ids(all), (std::vector<std::string>{"present", "absent", "remote"}));
  EXPECT_TRUE(all.listed[0].installed);
  EXPECT_FALSE(all.listed[1].installed);
  EXPECT_TRUE(all.listed[2].installed);
}

TEST(RegistryListing, CollisionsGetSuffixesInRegistryOrder) {
  auto a = make("a", "Llama");
  auto b = make("b", "Llama");
  auto c = make("c", "Llama");
  auto s = snapshot_of({a, b, c});
  EXPECT_EQ(ids(s), (std::vector<std::string>{"Llama", "Llama [2]", "Llama [3]"}));
}

TEST(RegistryListing, HiddenEntriesDoNotClaimIds) {
  auto hidden = make("hidden", "Llama");
  hidden.testing = true;
  auto shown = make("shown", "Llama");
  EXPECT_EQ(ids(snapshot_of({hidden, shown})), (std::vector<std::string>{"Llama"}));
}

TEST(RegistryListing, CopyRepointsListedModelsIntoTheCopy) {
  auto original = std::make_unique<RegistrySnapshot>(snapshot_of({make("a"), make("b")}));
  RegistrySnapshot copy = *original;
  original.reset();
  ASSERT_EQ(copy.listed.size(), 2u);
  EXPECT_EQ(copy.listed[1].entry, &copy.entries[1]);
  EXPECT_EQ(copy.resolve("b")->entry->name, "b");
}

class RegistryResolve : public ::testing::Test {
 protected:
  void SetUp() override {
    auto x = make("logical-x", "Display X");
    x.served_model_id = "served:x";
    // y is served under x's logical name: the logical name must win.
    auto y = make("logical-y", "Display Y");
    y.served_model_id = "logical-x";
    // z is served under y's display name (= y's listed id): the id must win.
    auto z = make("logical-z");
    z.served_model_id = "Display Y";
    auto hidden = make("hidden");
    hidden.testing = true;
    snap = snapshot_of({x, y, z, hidden});
  }
  const std::string& resolved(std::string_view name) {
    static const std::string none = "<none>";
    const auto* m = snap.resolve(name);
    return m ? m->entry->name : none;
  }
  RegistrySnapshot snap;
};

TEST_F(RegistryResolve, ByIdLogicalNameOrServedId) {
  EXPECT_EQ(resolved("Display X"), "logical-x");  // listed id
  EXPECT_EQ(resolved("logical-y"), "logical-y");  // logical name
  EXPECT_EQ(resolved("served:x"), "logical-x");   // served id
}

TEST_F(RegistryResolve, LogicalNameBeatsServedId) { EXPECT_EQ(resolved("logical-x"), "logical-x"); }

TEST_F(RegistryResolve, ListedIdBeatsServedId) { EXPECT_EQ(resolved("Display Y"), "logical-y"); }

TEST(RegistryResolveOrder, ListedIdBeatsLogicalNameAndDisplayNameBeatsServedId) {
  auto a = make("a", "b");      // listed id "b"
  auto b = make("b", "other");  // logical name "b"
  auto s = snapshot_of({b, a});
  EXPECT_EQ(s.resolve("b")->entry->name, "a");

  // A display name that is not the listed id (size appended) still resolves, before served ids.
  auto c = make("c", "Shown");
  c.parameter_size = "7b";  // id "Shown 7b"
  auto d = make("d");
  d.served_model_id = "Shown";
  auto s2 = snapshot_of({d, c});
  EXPECT_EQ(s2.resolve("Shown")->entry->name, "c");
  EXPECT_EQ(s2.resolve("Shown 7b")->entry->name, "c");
}

TEST_F(RegistryResolve, CaseInsensitiveAfterExact) {
  EXPECT_EQ(resolved("display x"), "logical-x");
  EXPECT_EQ(resolved("SERVED:X"), "logical-x");
  EXPECT_EQ(resolved("LOGICAL-Y"), "logical-y");
  EXPECT_EQ(resolved("LOGICAL-X"), "logical-x");  // logical name before y's served id
}

TEST(RegistryResolveOrder, ExactMatchOfALaterKeyBeatsCaseInsensitiveMatchOfAnEarlierOne) {
  auto a = make("a", "Model");  // id "Model"
  auto b = make("b");
  b.served_model_id = "model";
  auto s = snapshot_of({a, b});
  EXPECT_EQ(s.resolve("model")->entry->name, "b");
  EXPECT_EQ(s.resolve("MODEL")->entry->name, "a");
}

TEST_F(RegistryResolve, UnknownEmptyAndHiddenDoNotResolve) {
  EXPECT_EQ(resolved("nope"), "<none>");
  EXPECT_EQ(resolved(""), "<none>");
  EXPECT_EQ(resolved("hidden"), "<none>");
  EXPECT_NE(snap.find_entry("hidden"), nullptr);  // still a valid entry for admin lookups
  EXPECT_EQ(snap.find_entry("nope"), nullptr);
}

TEST(RegistryModelJson, SuppressedDecorations) {
  auto s = snapshot_of({make("m", "Model")});
  EXPECT_EQ(model_object(s.listed[0], true, 1700000000),
            (json{{"id", "Model"}, {"object", "model"}, {"created", 1700000000}, {"owned_by", "imageworks"}}));
}

TEST(RegistryModelJson, DecoratedFields) {
  auto e = make("m", "Model", "vllm");
  e.format = "awq";
  e.quantization = "awq";
  e.capabilities.vision = true;
  e.served_model_id = "served-m";
  auto s = snapshot_of({e});
  auto o = model_object(s.listed[0], false, 5);
  EXPECT_EQ(o["id"], "Model (AWQ)");
  EXPECT_EQ(o["backend"], "vllm");
  EXPECT_EQ(o["format"], "awq");
  EXPECT_EQ(o["quantization"], "awq");
  EXPECT_EQ(o["capabilities"],
            (json{{"vision", true}, {"tools", false}, {"reasoning", false}, {"embedding", false}}));
  EXPECT_EQ(o["installed"], true);
  EXPECT_EQ(o["active"], false);
  EXPECT_EQ(o["served_model_id"], "served-m");
  EXPECT_EQ(o["logical_name"], "m");
  EXPECT_EQ(o["display_name"], "Model");
}

TEST(RegistryModelJson, ListUsesSnapshotTimeAndMarksActive) {
  auto s = snapshot_of({make("a"), make("b")});
  s.loaded_at = std::chrono::system_clock::time_point(std::chrono::seconds(1234));
  auto list = models_list(s, false, "b");
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][0]["created"], 1234);
  EXPECT_EQ(list["data"][0]["active"], false);
  EXPECT_EQ(list["data"][1]["active"], true);
  EXPECT_FALSE(models_list(s, true)["data"][0].contains("backend"));
}

TEST(RegistryDebugDump, MasksKeys) {
  EXPECT_EQ(mask_api_key(""), "");
  EXPECT_EQ(mask_api_key("EMPTY"), "***");
  EXPECT_EQ(mask_api_key("12345678"), "***");
  EXPECT_EQ(mask_api_key("sk-1234567890abcdef"), "sk-1***");
  EXPECT_EQ(mask_url_credentials("https://user:pw@host:8000/v1"), "https://***@host:8000/v1");
  EXPECT_EQ(mask_url_credentials("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
  EXPECT_EQ(mask_url_credentials("http://h/path@x"), "http://h/path@x");
}

TEST(RegistryDebugDump, EntriesLayersIssuesAndNoKeyInClear) {
  auto remote = make("remote", "Remote", "openai");
  remote.backend_config.base_url = "https://u:secretpw@api.example.com";
  remote.backend_config.api_key = "sk-supersecretkey123";
  remote.backend_config.api_key_env = "OPENAI_API_KEY";
  remote.served_model_id = "gpt-x";
  remote.layers = {"c.json"};
  auto hidden = make("hidden");
  hidden.testing = true;
  auto s = snapshot_of({remote, hidden});
  s.layers = {"c.json"};
  s.issues.push_back({"c.json", "bad", "backend", "expected one of …"});

  auto dump = debug_dump(s);
  auto text = dump.dump();
  EXPECT_EQ(text.find("supersecret"), std::string::npos);
  EXPECT_EQ(text.find("secretpw"), std::string::npos);
  EXPECT_EQ(dump["layers"], json::array({"c.json"}));
  ASSERT_EQ(dump["issues"].size(), 1u);
  EXPECT_EQ(dump["issues"][0]["field"], "backend");
  ASSERT_EQ(dump["entries"].size(), 2u);
  const auto& r = dump["entries"][0];
  EXPECT_EQ(r["name"], "remote");
  EXPECT_EQ(r["display_name"], "Remote");
  EXPECT_EQ(r["id"], "Remote");
  EXPECT_EQ(r["backend"], "openai");
  EXPECT_EQ(r["base_url"], "https://***@api.example.com");
  EXPECT_EQ(r["served_model_id"], "gpt-x");
  EXPECT_EQ(r["layers"], json::array({"c.json"}));
  EXPECT_EQ(r["api_key"], "sk-s***");
  EXPECT_EQ(r["api_key_env"], "OPENAI_API_KEY");
  EXPECT_TRUE(dump["entries"][1]["id"].is_null());  // not listed
}

}  // namespace
}  // namespace imageworks
