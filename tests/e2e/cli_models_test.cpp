// `models list [--json]` (§12): the names /v1/models serves, as an aligned table (ID, BACKEND,
// INSTALLED, ACTIVE) or one JSON array on stdout; ACTIVE from the running proxy's GPU state,
// unknown with one stderr line when no proxy answers. Also through `imageworks-models`.
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/chat_rig.hpp"
#include "support/gpu_rig.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {
namespace {

using nlohmann::json;
using Strings = std::vector<std::string>;

// An installed Ollama entry, a remote one with a non-ASCII name, a vLLM one not on disk.
const char* kRegistry = R"([
  {"name": "llama-12b-q4", "backend": "ollama", "display_name": "llama", "parameter_size": "12.2b",
   "quantization": "q4_k_m"},
  {"name": "cafe", "backend": "openai", "display_name": "Café ünïcödé 模型",
   "backend_config": {"base_url": "http://127.0.0.1:9"}},
  {"name": "qwen-vl", "backend": "vllm", "family": "qwen2.5-vl", "parameter_size": "7b",
   "download_path": "/nonexistent/weights/qwen-vl"}
])";

struct Registry {
  TempDir dir;
  Registry() { dir.write("model_registry.json", kRegistry); }
  std::map<std::string, std::string> env() const {
    return {{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()}, {"CHAT_PROXY_INCLUDE_NON_INSTALLED", "1"}};
  }
};

std::size_t code_points(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// The first `count` code points of `s`, and the rest.
std::pair<std::string, std::string> split_at(const std::string& s, std::size_t count) {
  std::size_t i = 0;
  for (std::size_t seen = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && seen++ == count) break;
  }
  return {s.substr(0, i), s.substr(i)};
}

std::string rstrip(std::string s) {
  s.erase(s.find_last_not_of(' ') + 1);
  return s;
}

// The table as rows of cells, cut at the code point where each header word starts: so a
// misaligned row (widths counted in bytes, say) comes out with garbled cells.
std::vector<Strings> parse_table(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  EXPECT_FALSE(lines.empty());
  if (lines.empty()) return {};
  const std::string& header = lines[0];
  std::vector<std::size_t> starts;
  for (const char* word : {"ID", "BACKEND", "INSTALLED", "ACTIVE"}) {
    auto at = header.find(word);
    EXPECT_NE(at, std::string::npos) << header;
    starts.push_back(code_points(header.substr(0, at)));
  }
  std::vector<Strings> rows;
  for (const auto& line : lines) {
    Strings cells;
    std::string rest = line;
    for (std::size_t c = 0; c < starts.size(); ++c) {
      if (c + 1 == starts.size()) {
        cells.push_back(rest);
        break;
      }
      auto [cell, tail] = split_at(rest, starts[c + 1] - starts[c]);
      EXPECT_TRUE(cell.ends_with("  ") || cell.empty()) << "no gap before column " << c + 1 << ": " << line;
      cells.push_back(rstrip(cell));
      rest = tail;
    }
    EXPECT_EQ(line, rstrip(line)) << "trailing blanks";
    rows.push_back(cells);
  }
  return rows;
}

Strings served_ids(unsigned short port) {
  Strings out;
  const json list = json::parse(http_call(port, "GET", "/v1/models").body);
  for (const auto& m : list.at("data")) out.push_back(m.at("id"));
  return out;
}

Strings column(const std::vector<Strings>& rows, std::size_t c) {
  Strings out;
  for (std::size_t r = 1; r < rows.size(); ++r) out.push_back(rows[r].at(c));
  return out;
}

std::string url_of(unsigned short port) { return "http://127.0.0.1:" + std::to_string(port); }

TEST(E2eCliModels, TableNamesWhatV1ModelsServesWithBackendInstalledAndActive) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  auto r = run_proxy_command({"models", "list", "--url", url_of(proxy.port())}, reg.env());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = parse_table(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;
  EXPECT_EQ(rows[0], (Strings{"ID", "BACKEND", "INSTALLED", "ACTIVE"}));
  EXPECT_EQ(column(rows, 0), served_ids(proxy.port())) << r.out;
  EXPECT_EQ(column(rows, 0), (Strings{"llama 12.2b (Q4 K M)", "Café ünïcödé 模型", "qwen2.5-vl 7b"}));
  EXPECT_EQ(column(rows, 1), (Strings{"ollama", "openai", "vllm"}));
  EXPECT_EQ(column(rows, 2), (Strings{"yes", "yes", "no"}));
  EXPECT_EQ(column(rows, 3), (Strings{"no", "no", "no"})) << "the proxy answered: nothing holds the GPU";
  EXPECT_EQ(r.err.find("ACTIVE"), std::string::npos) << r.err;
}

TEST(E2eCliModels, JsonIsOneArrayOnStdoutWithTheV1ModelsIds) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  auto r = run_proxy_command({"models", "list", "--json", "--url", url_of(proxy.port()) + "/v1"}, reg.env());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);  // throws on anything but one JSON document
  ASSERT_TRUE(j.is_array()) << r.out;
  Strings ids;
  for (const auto& m : j) {
    ids.push_back(m.at("id"));
    EXPECT_EQ(m.at("active"), false);
    EXPECT_TRUE(m.at("logical_name").is_string());
    EXPECT_TRUE(m.at("installed").is_boolean());
  }
  EXPECT_EQ(ids, served_ids(proxy.port()));
  EXPECT_EQ(j[0]["logical_name"], "llama-12b-q4");
  EXPECT_EQ(j[0]["backend"], "ollama");
  EXPECT_EQ(j[2]["installed"], false);
}

TEST(E2eCliModels, ActiveIsTheModelHoldingTheGpu) {
  GpuRig rig;
  auto act = http_call(rig.port(), "POST", "/v1/admin/activate", R"({"model": "vllm-a"})", {},
                       std::chrono::seconds(60));
  ASSERT_EQ(act.status, 200) << act.body;
  auto r = run_proxy_command({"models", "list", "--url", rig.url()}, rig.env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = parse_table(r.out);
  EXPECT_EQ(column(rows, 0), (Strings{"llama", "vllm-a", "vllm-b"})) << r.out;
  EXPECT_EQ(column(rows, 3), (Strings{"no", "yes", "no"})) << r.out;
  auto j = json::parse(run_proxy_command({"models", "list", "--json", "--url", rig.url()}, rig.env).out);
  EXPECT_EQ(j[1]["active"], true);
  EXPECT_EQ(j[1]["active_state"], "ready");
  EXPECT_EQ(j[0]["active"], false);
  // Found through CHAT_PROXY_HOST/CHAT_PROXY_PORT as the admin commands find it.
  auto env = rig.env;
  env["CHAT_PROXY_PORT"] = std::to_string(rig.port());
  EXPECT_EQ(column(parse_table(run_proxy_command({"models", "list"}, env).out), 3), (Strings{"no", "yes", "no"}));
}

TEST(E2eCliModels, WithoutAProxyActiveIsUnknownAndOneLineSaysWhy) {
  Registry reg;
  auto env = reg.env();
  env["CHAT_PROXY_PORT"] = std::to_string(closed_loopback_port());
  auto r = run_proxy_command({"models", "list"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = parse_table(r.out);
  EXPECT_EQ(column(rows, 0), (Strings{"llama 12.2b (Q4 K M)", "Café ünïcödé 模型", "qwen2.5-vl 7b"}));
  EXPECT_EQ(column(rows, 3), (Strings{"-", "-", "-"}));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("note: ACTIVE is unknown", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("http://127.0.0.1:" + env["CHAT_PROXY_PORT"]), std::string::npos) << r.err;
  auto j = run_proxy_command({"models", "list", "--json"}, env);
  ASSERT_EQ(j.exit_code, 0) << j.err;
  for (const auto& m : json::parse(j.out)) EXPECT_TRUE(m.at("active").is_null()) << m.dump();
  EXPECT_EQ(std::count(j.err.begin(), j.err.end(), '\n'), 1) << j.err;
}

// The imageworks-models symlink runs the models subcommands: `imageworks-models list --json`.
TEST(E2eCliModels, ImageworksModelsListJsonThroughTheSymlink) {
  Registry reg;
  auto link = reg.dir.path() / "imageworks-models";
  std::filesystem::create_symlink(proxy_binary(), link);
  std::string cmd = "CHAT_PROXY_REGISTRY_DIR='" + reg.dir.path().string() +
                    "' CHAT_PROXY_PORT=" + std::to_string(closed_loopback_port()) + " '" + link.string() +
                    "' list --json 2>/dev/null";
  auto [status, out] = run_shell(cmd);
  EXPECT_EQ(status, 0);
  auto j = json::parse(out);
  ASSERT_TRUE(j.is_array()) << out;
  Strings ids;
  for (const auto& m : j) ids.push_back(m.at("id"));
  EXPECT_EQ(ids, (Strings{"llama 12.2b (Q4 K M)", "Café ünïcödé 模型"})) << "installed only by default";
}

}  // namespace
}  // namespace imageworks::test
