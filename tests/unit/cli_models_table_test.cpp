// `models list`: the table's columns and alignment (code points, not bytes), the ACTIVE cell
// from the proxy's GPU state, and the JSON array for scripts.
#include <gtest/gtest.h>

#include "cli/models_table.hpp"
#include "support/test_support.hpp"

namespace imageworks::cli {
namespace {

using nlohmann::json;

ModelEntry entry(std::string name, std::string display, std::string backend) {
  ModelEntry e;
  e.name = std::move(name);
  e.display_name = std::move(display);
  e.backend = std::move(backend);
  return e;
}

// Three listed models; "absent" has a download_path that is not on disk.
struct Snapshot {
  test::TempDir dir;
  RegistrySnapshot snap;
  Snapshot() {
    auto absent = entry("absent", "Qwen2.5-VL", "vllm");
    absent.parameter_size = "7b";
    absent.download_path = (dir.path() / "missing").string();
    snap.entries = {entry("llama-q4", "llama", "ollama"), entry("cafe", "Café ünïcödé", "openai"), absent};
    ListingOptions opts;
    opts.include_non_installed = true;
    build_listing(snap, opts);
  }
};

TEST(CliModelsTable, DisplayWidthCountsCodePoints) {
  EXPECT_EQ(display_width(""), 0u);
  EXPECT_EQ(display_width("llama"), 5u);
  EXPECT_EQ(display_width("Café"), 4u);        // é is two bytes
  EXPECT_EQ(display_width("模型 7b"), 5u);     // three bytes each
  EXPECT_EQ(display_width("🦙"), 1u);          // four bytes
}

TEST(CliModelsTable, ColumnsAlignByCodePointsWithoutTrailingBlanks) {
  std::vector<ModelRow> rows{{"Café ünïcödé", "openai", true, "no"},
                             {"llama 12.2b (Q4 K M)", "ollama", true, "yes"},
                             {"模型", "vllm", false, "starting"}};
  EXPECT_EQ(models_table(rows),
            "ID                    BACKEND  INSTALLED  ACTIVE\n"
            "Café ünïcödé          openai   yes        no\n"
            "llama 12.2b (Q4 K M)  ollama   yes        yes\n"
            "模型                    vllm     no         starting\n");
}

TEST(CliModelsTable, NoRowsIsTheHeaderAlone) {
  EXPECT_EQ(models_table({}), "ID  BACKEND  INSTALLED  ACTIVE\n");
}

TEST(CliModelsTable, ActiveCellFromTheProxysGpuState) {
  Snapshot s;
  auto active_cells = [&](const GpuHolder& h) {
    std::vector<std::string> out;
    for (const auto& r : model_rows(s.snap, h)) out.push_back(r.active);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(active_cells(GpuHolder{}), (V{"-", "-", "-"})) << "no proxy answered";
  EXPECT_EQ(active_cells(gpu_holder_from_state(json::parse(R"({"active": null})"))), (V{"no", "no", "no"}));
  auto ready = gpu_holder_from_state(
      json::parse(R"({"active": {"logical_name": "llama-q4", "backend": "ollama", "state": "ready"}})"));
  EXPECT_EQ(active_cells(ready), (V{"yes", "no", "no"}));
  auto starting = gpu_holder_from_state(
      json::parse(R"({"active": {"logical_name": "absent", "backend": "vllm", "state": "starting"}})"));
  EXPECT_EQ(active_cells(starting), (V{"no", "no", "starting"}));
  // Ollama holds the GPU but no model was named: nothing listed is active.
  auto unnamed = gpu_holder_from_state(json::parse(R"({"active": {"logical_name": null, "state": "ready"}})"));
  EXPECT_EQ(active_cells(unnamed), (V{"no", "no", "no"}));
}

TEST(CliModelsTable, RowsCarryTheV1ModelsIdsBackendAndInstalled) {
  Snapshot s;
  auto rows = model_rows(s.snap, {});
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, "llama");
  EXPECT_EQ(rows[1].id, "Café ünïcödé");
  EXPECT_EQ(rows[2].id, "Qwen2.5-VL 7b");
  EXPECT_EQ(rows[2].backend, "vllm");
  EXPECT_TRUE(rows[0].installed);
  EXPECT_FALSE(rows[2].installed);
  for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i].id, s.snap.listed[i].id);
}

TEST(CliModelsTable, JsonIsAnArrayOfTheDecoratedFields) {
  Snapshot s;
  auto holder = gpu_holder_from_state(
      json::parse(R"({"active": {"logical_name": "llama-q4", "backend": "ollama", "state": "ready"}})"));
  auto j = models_json(s.snap, holder);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["id"], "llama");
  EXPECT_EQ(j[0]["logical_name"], "llama-q4");
  EXPECT_EQ(j[0]["backend"], "ollama");
  EXPECT_EQ(j[0]["installed"], true);
  EXPECT_EQ(j[0]["active"], true);
  EXPECT_EQ(j[0]["active_state"], "ready");
  EXPECT_EQ(j[1]["active"], false);
  EXPECT_TRUE(j[1]["active_state"].is_null());
  EXPECT_EQ(j[2]["installed"], false);
  for (const auto& m : j) {
    for (const char* key : {"id", "logical_name", "display_name", "backend", "served_model_id", "format",
                            "quantization", "capabilities", "installed", "active", "active_state"})
      EXPECT_TRUE(m.contains(key)) << key << " in " << m.dump();
    EXPECT_FALSE(m.contains("object")) << "the OpenAI envelope is not repeated";
    EXPECT_FALSE(m.contains("owned_by"));
  }
  auto unknown = models_json(s.snap, GpuHolder{});
  for (const auto& m : unknown) EXPECT_TRUE(m["active"].is_null()) << "no proxy: unknown, not false";
}

}  // namespace
}  // namespace imageworks::cli
