// End-to-end: the built daemon on an ephemeral loopback port, driven over HTTP.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"
#include "support/chat_rig.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

using namespace imageworks::test;
using nlohmann::json;

namespace {

const char* kDiscovered = R"([
  {"name": "llama-12b-q4", "backend": "ollama", "display_name": "llama",
   "parameter_size": "12.2b", "quantization": "q4_k_m", "served_model_id": "llama:12b-q4_K_M"},
  {"name": "qwen-vl", "backend": "vllm", "family": "qwen2.5-vl", "parameter_size": "7b",
   "download_path": "/nonexistent/weights/qwen-vl", "capabilities": {"vision": true}},
  {"name": "tiny-test", "backend": "openai", "testing": true,
   "backend_config": {"base_url": "http://127.0.0.1:9"}},
  {"name": "staging-only", "backend": "openai", "profiles": ["staging"],
   "backend_config": {"base_url": "http://127.0.0.1:9"}}
])";

const char* kCurated = R"([
  {"name": "llama-12b-q4", "display_name": "Llama"},
  {"name": "remote-gpt", "backend": "openai", "display_name": "gpt remote",
   "backend_config": {"base_url": "https://api.example.invalid", "api_key": "sk-secret-value-123"}}
])";

std::vector<std::string> ids(const std::string& body) {
  std::vector<std::string> out;
  const json list = json::parse(body);  // named: a range-for over a temporary's member dangles
  for (auto& m : list.at("data")) out.push_back(m.at("id").get<std::string>());
  return out;
}

// The ID column of `models list` (ASCII ids: the BACKEND header's offset is the cut).
std::vector<std::string> table_ids(const std::string& table) {
  std::istringstream in(table);
  std::string line;
  std::getline(in, line);
  const auto cut = line.find("BACKEND");
  std::vector<std::string> out;
  while (std::getline(in, line)) {
    auto id = line.substr(0, cut);
    out.push_back(id.erase(id.find_last_not_of(' ') + 1));
  }
  return out;
}

struct Registry {
  TempDir dir;
  Registry() {
    dir.write("model_registry.discovered.json", kDiscovered);
    dir.write("model_registry.curated.json", kCurated);
  }
  std::map<std::string, std::string> env(std::map<std::string, std::string> extra = {}) const {
    extra.emplace("CHAT_PROXY_REGISTRY_DIR", dir.path().string());
    extra.emplace("CHAT_PROXY_REGISTRY_POLL_MS", "50");
    return extra;
  }
};

void expect_openai_error(const HttpReply& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  auto j = json::parse(r.body);
  ASSERT_TRUE(j.contains("error")) << r.body;
  EXPECT_EQ(j["error"]["code"], code) << r.body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"]["type"].is_string());
  EXPECT_TRUE(j["error"].contains("param"));
}

// Poll the daemon (it is another process: there is no event to wait on) until pred holds.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return pred();
}

}  // namespace

TEST(E2eModels, DefaultListIsInstalledProductionNonTest) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  auto r = http_call(proxy.port(), "GET", "/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(ids(r.body), (std::vector<std::string>{"Llama 12.2b (Q4 K M)", "gpt remote"})) << r.body << proxy.stderr_text();
  for (auto& m : j["data"]) {
    EXPECT_EQ(m["object"], "model");
    EXPECT_TRUE(m["created"].is_number_integer());
    EXPECT_TRUE(m.contains("owned_by"));
    EXPECT_FALSE(m.contains("backend")) << "decorations are suppressed by default";
  }
}

TEST(E2eModels, SwitchesChangeTheList) {
  Registry reg;
  {
    ProxyProcess proxy(reg.env({{"CHAT_PROXY_INCLUDE_NON_INSTALLED", "1"},
                                {"CHAT_PROXY_INCLUDE_TEST_MODELS", "1"}}));
    auto r = http_call(proxy.port(), "GET", "/v1/models");
    EXPECT_EQ(ids(r.body), (std::vector<std::string>{"Llama 12.2b (Q4 K M)", "qwen2.5-vl 7b",
                                                     "tiny-test", "gpt remote"}));
  }
  {
    ProxyProcess proxy(reg.env({{"CHAT_PROXY_PROFILE", "staging"}}));
    auto r = http_call(proxy.port(), "GET", "/v1/models");
    EXPECT_EQ(ids(r.body), (std::vector<std::string>{"Llama 12.2b (Q4 K M)", "staging-only", "gpt remote"}));
  }
  {
    ProxyProcess proxy(reg.env({{"CHAT_PROXY_SUPPRESS_DECORATIONS", "0"}}));
    auto j = json::parse(http_call(proxy.port(), "GET", "/v1/models").body);
    auto& first = j["data"][0];
    EXPECT_EQ(first["backend"], "ollama");
    EXPECT_EQ(first["quantization"], "q4_k_m");
    EXPECT_EQ(first["served_model_id"], "llama:12b-q4_K_M");
    EXPECT_EQ(first["logical_name"], "llama-12b-q4");
    EXPECT_EQ(first["installed"], true);
    EXPECT_TRUE(first["capabilities"].is_object());
  }
}

TEST(E2eModels, GetOneModelByAnyNameAnd404) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  auto r = http_call(proxy.port(), "GET", "/v1/models/Llama%2012.2b%20(Q4%20K%20M)");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["id"], "Llama 12.2b (Q4 K M)");
  r = http_call(proxy.port(), "GET", "/v1/models/llama-12b-q4");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["id"], "Llama 12.2b (Q4 K M)");
  expect_openai_error(http_call(proxy.port(), "GET", "/v1/models/no-such-model"), 404, "err_model_not_found");
}

TEST(E2eModels, CliListPrintsTheSameNames) {
  Registry reg;
  for (const char* non_installed : {"0", "1"}) {
    auto env = reg.env({{"CHAT_PROXY_INCLUDE_NON_INSTALLED", non_installed}});
    ProxyProcess proxy(env);
    auto served = ids(http_call(proxy.port(), "GET", "/v1/models").body);
    const std::string url = "http://127.0.0.1:" + std::to_string(proxy.port());
    auto cli = run_proxy_command({"models", "list", "--url", url}, env);
    ASSERT_EQ(cli.exit_code, 0) << cli.err;
    EXPECT_EQ(table_ids(cli.out), served) << cli.out;
    auto cli_json = run_proxy_command({"models", "list", "--json", "--url", url}, env);
    ASSERT_EQ(cli_json.exit_code, 0) << cli_json.err;
    std::vector<std::string> json_ids;
    for (const auto& m : json::parse(cli_json.out)) json_ids.push_back(m.at("id"));
    EXPECT_EQ(json_ids, served);
  }
}

TEST(E2eModels, ExampleRegistryInConfigsServes) {
  std::map<std::string, std::string> env{
      {"CHAT_PROXY_REGISTRY_DIR", (source_dir() / "configs").string()}};
  ProxyProcess proxy(env);
  auto r = http_call(proxy.port(), "GET", "/v1/models");
  ASSERT_EQ(r.status, 200);
  EXPECT_FALSE(ids(r.body).empty());
  auto h = json::parse(http_call(proxy.port(), "GET", "/v1/health").body);
  EXPECT_EQ(h["status"], "ok") << h.dump();
}

TEST(E2eReload, EditedLayerChangesTheListAndBrokenJsonKeepsTheOld) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  auto list = [&] { return ids(http_call(proxy.port(), "GET", "/v1/models").body); };
  ASSERT_EQ(list().size(), 2u);
  reg.dir.write("model_registry.curated.json", R"([
    {"name": "llama-12b-q4", "display_name": "Renamed"},
    {"name": "another", "backend": "llamacpp", "backend_config": {"base_url": "http://127.0.0.1:9"}}
  ])");
  EXPECT_TRUE(eventually([&] { return list() == std::vector<std::string>{"Renamed 12.2b (Q4 K M)", "another"}; }))
      << "list did not change after editing the curated layer";

  reg.dir.write("model_registry.curated.json", "[ {\"name\": broken");
  EXPECT_TRUE(eventually([&] {
    auto h = json::parse(http_call(proxy.port(), "GET", "/v1/health").body);
    return h["status"] == "degraded" && h["registry"]["error"].is_string();
  }));
  auto h = json::parse(http_call(proxy.port(), "GET", "/v1/health").body);
  EXPECT_NE(h["registry"]["error"].get<std::string>().find("model_registry.curated.json"), std::string::npos);
  EXPECT_EQ(list(), (std::vector<std::string>{"Renamed 12.2b (Q4 K M)", "another"}))
      << "the last good version of the broken layer keeps serving";

  auto r = http_call(proxy.port(), "POST", "/v1/reload", "{}");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(json::parse(r.body)["error"].is_string());
}

TEST(E2eReload, PostReloadPicksUpChangesAtOnce) {
  Registry reg;
  ProxyProcess proxy(reg.env({{"CHAT_PROXY_REGISTRY_POLL_MS", "3600000"}}));
  reg.dir.write("model_registry.curated.json", R"([{"name": "only", "backend": "openai",
      "backend_config": {"base_url": "http://127.0.0.1:9"}}])");
  auto r = http_call(proxy.port(), "POST", "/reload", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["models"], 2);
  auto names = ids(http_call(proxy.port(), "GET", "/models").body);
  EXPECT_EQ(names, (std::vector<std::string>{"llama 12.2b (Q4 K M)", "only"}));
}

TEST(E2eHttp, HealthAliasesAndRequestId) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  for (const char* path : {"/v1/health", "/v1/healthz", "/health", "/healthz"}) {
    auto r = http_call(proxy.port(), "GET", path);
    ASSERT_EQ(r.status, 200) << path;
    auto j = json::parse(r.body);
    EXPECT_EQ(j["status"], "ok");
    EXPECT_TRUE(j["uptime_s"].is_number());
    EXPECT_TRUE(j["version"].is_string());
    EXPECT_EQ(j["registry"]["models"], 2);
    EXPECT_TRUE(j["registry"]["loaded_at"].is_string());
    EXPECT_FALSE(r.header("x-request-id").empty());
  }
  auto r = http_call(proxy.port(), "GET", "/v1/models", "", {{"x-request-id", "my-trace-42"}});
  EXPECT_EQ(r.header("x-request-id"), "my-trace-42");
}

TEST(E2eHttp, DebugRegistryMasksKeys) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  auto r = http_call(proxy.port(), "GET", "/v1/debug/registry");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find("sk-secret-value-123"), std::string::npos) << "API key leaked";
  EXPECT_NE(r.body.find("remote-gpt"), std::string::npos);
  EXPECT_EQ(http_call(proxy.port(), "GET", "/debug").status, 200);
  ProxyProcess off(reg.env({{"CHAT_PROXY_ENABLE_DEBUG_ROUTES", "0"}}));
  expect_openai_error(http_call(off.port(), "GET", "/v1/debug/registry"), 404, "err_not_found");
}

TEST(E2eHttp, UnknownRoutesAndMethodsGetOpenAiErrors) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  expect_openai_error(http_call(proxy.port(), "GET", "/v1/nope"), 404, "err_not_found");
  expect_openai_error(http_call(proxy.port(), "GET", "/totally/else"), 404, "err_not_found");
  expect_openai_error(http_call(proxy.port(), "DELETE", "/v1/models"), 405, "err_method_not_allowed");
}

TEST(E2eHttp, ApiKeysGuardEverythingButHealth) {
  Registry reg;
  ProxyProcess proxy(reg.env({{"CHAT_PROXY_API_KEYS", "k1,k2"}}));
  EXPECT_EQ(http_call(proxy.port(), "GET", "/v1/health").status, 200);
  expect_openai_error(http_call(proxy.port(), "GET", "/v1/models"), 401, "err_unauthorized");
  expect_openai_error(http_call(proxy.port(), "GET", "/v1/models", "", {{"Authorization", "Bearer EMPTY"}}),
                      401, "err_unauthorized");
  EXPECT_EQ(http_call(proxy.port(), "GET", "/v1/models", "", {{"Authorization", "Bearer k2"}}).status, 200);
}

TEST(E2eLimits, OversizeBodyGets413) {
  Registry reg;
  ProxyProcess proxy(reg.env({{"CHAT_PROXY_MAX_BODY_BYTES", "1024"}}));
  std::string big(4096, 'x');
  expect_openai_error(http_call(proxy.port(), "POST", "/v1/chat/completions", big), 413,
                      "err_payload_too_large");
  // The daemon is still fine.
  EXPECT_EQ(http_call(proxy.port(), "GET", "/v1/health").status, 200);
}

TEST(E2eLimits, HugeHeadersGet431) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  expect_openai_error(http_call(proxy.port(), "GET", "/v1/models", "", {{"x-big", std::string(20000, 'a')}}),
                      431, "err_headers_too_large");
  std::vector<std::pair<std::string, std::string>> many;
  for (int i = 0; i < 120; ++i) many.emplace_back("x-h" + std::to_string(i), "v");
  expect_openai_error(http_call(proxy.port(), "GET", "/v1/models", "", many), 431, "err_headers_too_large");
  EXPECT_EQ(http_call(proxy.port(), "GET", "/v1/health").status, 200);
}

TEST(E2eLimits, StalledHalfRequestIsDisconnected) {
  Registry reg;
  ProxyProcess proxy(reg.env({{"CHAT_PROXY_REQUEST_TIMEOUT_MS", "300"}}));
  imageworks::asio::io_context ioc;
  imageworks::tcp::socket sock(ioc);
  sock.connect({imageworks::asio::ip::make_address("127.0.0.1"), proxy.port()});
  std::string half = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mod";
  imageworks::asio::write(sock, imageworks::asio::buffer(half));
  // A blocking read returns when the daemon closes the connection (EOF), which it must do
  // at the request deadline; the test's own ctest timeout bounds a daemon that never does.
  auto start = std::chrono::steady_clock::now();
  char buf[512];
  boost::system::error_code ec;
  std::size_t total = 0;
  while (!ec) total += sock.read_some(imageworks::asio::buffer(buf), ec);
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ec, imageworks::asio::error::eof);
  EXPECT_EQ(total, 0u) << "no reply is owed to a client that never finished its request";
  EXPECT_LT(waited, std::chrono::seconds(10));
  EXPECT_EQ(http_call(proxy.port(), "GET", "/v1/health").status, 200);
}

TEST(E2eLimits, KeepAliveServesSeveralRequestsOnOneConnection) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  imageworks::asio::io_context ioc;
  imageworks::beast::tcp_stream stream(ioc);
  stream.connect({imageworks::asio::ip::make_address("127.0.0.1"), proxy.port()});
  imageworks::beast::flat_buffer buf;
  for (int i = 0; i < 3; ++i) {
    imageworks::http::request<imageworks::http::empty_body> req{imageworks::http::verb::get, "/v1/models", 11};
    req.set(imageworks::http::field::host, "x");
    imageworks::http::write(stream, req);
    imageworks::http::response<imageworks::http::string_body> res;
    imageworks::http::read(stream, buf, res);
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_TRUE(res.keep_alive());
  }
}

TEST(E2eLifecycle, SigtermExitsZero) {
  Registry reg;
  ProxyProcess proxy(reg.env());
  ASSERT_EQ(http_call(proxy.port(), "GET", "/v1/health").status, 200);
  proxy.signal(SIGTERM);
  auto code = proxy.wait_exit(std::chrono::seconds(15));
  ASSERT_TRUE(code.has_value()) << "daemon did not exit after SIGTERM";
  EXPECT_EQ(*code, 0) << proxy.stderr_text();
}

TEST(E2eLifecycle, SigtermWithAnIdleKeepAliveConnectionStillExitsPromptly) {
  Registry reg;
  ProxyProcess proxy(reg.env({{"CHAT_PROXY_SHUTDOWN_GRACE_MS", "20000"}}));
  imageworks::asio::io_context ioc;
  imageworks::tcp::socket sock(ioc);
  sock.connect({imageworks::asio::ip::make_address("127.0.0.1"), proxy.port()});
  ASSERT_EQ(http_call(proxy.port(), "GET", "/v1/health").status, 200);
  auto start = std::chrono::steady_clock::now();
  proxy.signal(SIGTERM);
  auto code = proxy.wait_exit(std::chrono::seconds(15));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10))
      << "an idle connection must not hold the shutdown for the grace period";
}

TEST(E2eCli, ConfigPrintsJsonAndRejectsBadValues) {
  Registry reg;
  auto ok = run_proxy_command({"config"}, reg.env({{"CHAT_PROXY_API_KEYS", "topsecret"}}));
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto j = json::parse(ok.out);
  EXPECT_EQ(j["CHAT_PROXY_PORT"], 8100);
  EXPECT_EQ(ok.out.find("topsecret"), std::string::npos);
  auto flag = run_proxy_command({"config", "--port", "9123"}, reg.env({{"CHAT_PROXY_PORT", "9000"}}));
  ASSERT_EQ(flag.exit_code, 0) << flag.err;
  EXPECT_EQ(json::parse(flag.out)["CHAT_PROXY_PORT"], 9123) << "flags override the environment";
  auto bad = run_proxy_command({"config"}, reg.env({{"CHAT_PROXY_PORT", "eighty"}}));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("CHAT_PROXY_PORT"), std::string::npos) << bad.err;
  auto missing = run_proxy_command({"serve"}, {{"CHAT_PROXY_REGISTRY_DIR", "/nonexistent/dir"}});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("CHAT_PROXY_REGISTRY_DIR"), std::string::npos) << missing.err;
}

// A misspelt variable leaves its setting at the default: `config` and `serve` say so.
TEST(E2eCli, AMisspeltVariableIsNamedWithTheSettingItMeant) {
  Registry reg;
  auto r = run_proxy_command({"config"}, reg.env({{"CHAT_PROXY_PORTT", "9000"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["CHAT_PROXY_PORT"], 8100);
  EXPECT_NE(r.err.find("warning: CHAT_PROXY_PORTT is not a setting of imageworks-chat-proxy (did you mean "
                       "CHAT_PROXY_PORT?)"),
            std::string::npos)
      << r.err;
  ProxyProcess proxy(reg.env({{"CHAT_PROXY_ENABLE_METRIC", "1"}}));
  EXPECT_TRUE(proxy.wait_for_log("did you mean CHAT_PROXY_ENABLE_METRICS?", std::chrono::seconds(10)))
      << proxy.stderr_text();
}

TEST(E2eCli, ImageworksModelsSymlinkRunsTheModelsCommands) {
  Registry reg;
  auto link = reg.dir.path() / "imageworks-models";
  std::filesystem::create_symlink(proxy_binary(), link);
  std::string cmd = "CHAT_PROXY_REGISTRY_DIR='" + reg.dir.path().string() + "' CHAT_PROXY_PORT=" +
                    std::to_string(closed_loopback_port()) + " '" + link.string() + "' list 2>/dev/null";
  auto [status, out] = run_shell(cmd);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(table_ids(out), (std::vector<std::string>{"Llama 12.2b (Q4 K M)", "gpt remote"})) << out;
}
