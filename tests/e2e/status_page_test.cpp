// The operator's status page (§14): GET /v1/status from the built binary with a managed fake
// vLLM holding the GPU, and GET / rendered by a real browser (headless Chromium driven over
// the DevTools protocol by tests/browser/status_page.mjs), its DOM checked and screenshots
// kept under artifacts/status_page/ in the test's working directory (or
// $IMAGEWORKS_ARTIFACT_DIR).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "support/gpu_rig.hpp"
#include "support/proxy_process.hpp"
#include "support/sse_client.hpp"
#include "support/test_support.hpp"

using namespace imageworks::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

json get_json(unsigned short port, const std::string& path,
              const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  auto r = http_call(port, "GET", path, {}, headers);
  EXPECT_EQ(r.status, 200) << path << ": " << r.body;
  return json::parse(r.body, nullptr, false);
}

// /v1/status once the metrics window counts n requests: an exchange is recorded just after
// its last byte went out, so its record may trail what the client has read (bounded wait).
json status_after_requests(unsigned short port, int n) {
  json s;
  for (int attempt = 0; attempt < 250; ++attempt) {
    s = get_json(port, "/v1/status");
    if (s["metrics"]["requests"] == n) break;
    std::this_thread::sleep_for(20ms);
  }
  return s;
}

// The listed id of every model, by logical name, as /v1/models reports them (decorated view).
std::map<std::string, std::string> listed_ids(const json& status) {
  std::map<std::string, std::string> ids;
  for (const auto& m : status["models"]) ids[m["logical_name"]] = m["id"];
  return ids;
}

std::filesystem::path artifact_dir() {
  const char* env = std::getenv("IMAGEWORKS_ARTIFACT_DIR");
  auto dir = (env && *env ? std::filesystem::path(env) : std::filesystem::current_path() / "artifacts") / "status_page";
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs the browser driver; hands each JSON step line to on_step as it arrives (the test can
// act between steps) and returns every step by name.
struct BrowserRun {
  std::map<std::string, json> steps;
  std::string output;  // everything the driver printed
  int status = -1;
};

BrowserRun run_browser(const std::string& url, const std::filesystem::path& out, std::vector<std::string> extra,
                       const std::function<void(const json&)>& on_step = {}) {
  auto script = source_dir() / "tests" / "browser" / "status_page.mjs";
  std::string cmd = "node --no-warnings --experimental-websocket '" + script.string() + "' --url '" + url +
                    "' --out '" + out.string() + "'";
  for (const auto& a : extra) cmd += " '" + a + "'";
  cmd += " 2>&1";
  BrowserRun run;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return run;
  std::string line;
  char buf[8192];
  while (fgets(buf, sizeof buf, pipe)) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;
    run.output += line;
    auto j = json::parse(line, nullptr, false);
    line.clear();
    if (!j.is_object() || !j.contains("step")) continue;
    run.steps[j["step"]] = j;
    if (on_step) on_step(j);
  }
  run.output += line;
  run.status = pclose(pipe);
  return run;
}

std::set<std::string> dom_model_ids(const json& facts) {
  std::set<std::string> ids;
  for (const auto& m : facts["models"]) ids.insert(m["id"].get<std::string>());
  return ids;
}

}  // namespace

// /v1/status: the holder (from the vLLM manager: pid, port, state), a request waiting for a
// switch, the switches, every listed model with the active flag, the window's traffic and the
// registry; models by the same ids as /v1/models.
TEST(E2eStatus, JsonShowsHolderQueueSwitchesModelsTrafficAndRegistry) {
  GpuRig rig({{"vllm-a", {"--fake-chunks", "30", "--fake-chunk-delay-ms", "100"}}, {"vllm-b", {}}},
             {{"CHAT_PROXY_ENABLE_METRICS", "1"}});
  auto before = get_json(rig.port(), "/v1/status");
  EXPECT_TRUE(before["gpu"]["holder"].is_null()) << before.dump();
  EXPECT_EQ(before["version"], IMAGEWORKS_VERSION);

  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  // A 3 s stream holds vLLM A; a stream for B then waits for the switch (its SSE response
  // opens at once with loading comments: that is the moment it is queued).
  SseClient on_a(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
  ASSERT_EQ(on_a.status(), 200);
  SseClient for_b(rig.port(), "/v1/chat/completions", chat_json("vllm-b", true), 30s);
  ASSERT_EQ(for_b.status(), 200);

  auto s = get_json(rig.port(), "/v1/status");
  auto ids = listed_ids(s);
  const auto& h = s["gpu"]["holder"];
  ASSERT_TRUE(h.is_object()) << s.dump();
  EXPECT_EQ(h["logical_name"], "vllm-a");
  EXPECT_EQ(h["listed_id"], ids["vllm-a"]);
  EXPECT_EQ(h["backend"], "vllm");
  EXPECT_EQ(h["state"], "ready");
  EXPECT_EQ(h["port"], rig.vllm_port);
  auto started = rig.vllm_events("started", "vllm-a");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(h["pid"], started[0]["pid"]);
  EXPECT_TRUE(h["since"].is_string());
  EXPECT_GE(s["gpu"]["in_flight"].get<int>(), 1);
  ASSERT_EQ(s["gpu"]["queue"].size(), 1u) << s.dump();
  EXPECT_EQ(s["gpu"]["queue"][0]["model"], "vllm-b");
  EXPECT_EQ(s["gpu"]["queue"][0]["listed_id"], ids["vllm-b"]);
  EXPECT_GE(s["gpu"]["queue"][0]["waited_s"].get<double>(), 0.0);
  ASSERT_EQ(s["gpu"]["last_switches"].size(), 1u);
  EXPECT_EQ(s["gpu"]["last_switches"][0]["result"], "ok");
  EXPECT_NE(s["gpu"]["last_switches"][0]["to"].get<std::string>().find("vllm-a"), std::string::npos);

  // Every listed model, with the same ids as /v1/models, exactly one of them active.
  auto models = get_json(rig.port(), "/v1/models");
  std::set<std::string> listed, shown;
  for (const auto& m : models["data"]) listed.insert(m["id"].get<std::string>());
  int active = 0;
  for (const auto& m : s["models"]) {
    shown.insert(m["id"].get<std::string>());
    if (m["active"] == true) {
      ++active;
      EXPECT_EQ(m["logical_name"], "vllm-a");
    }
    EXPECT_TRUE(m.contains("backend") && m.contains("installed") && m.contains("gpu_managed"));
  }
  EXPECT_EQ(shown, listed);
  EXPECT_EQ(active, 1);
  EXPECT_EQ(s["registry"]["models"], listed.size());
  EXPECT_TRUE(s["registry"]["error"].is_null());
  ASSERT_TRUE(s["metrics"].is_object());
  EXPECT_EQ(s["metrics"]["requests"], 1) << "the warm-up request; the two streams are still running";
  EXPECT_EQ(s["metrics"]["active_streams"], 2) << "both SSE responses are open (B's with loading comments)";

  // After A's stream ends the switch happens once; the status shows B and the history.
  EXPECT_TRUE(stream_completed(on_a.rest()));
  EXPECT_TRUE(stream_completed(for_b.rest()));
  s = status_after_requests(rig.port(), 3);
  EXPECT_EQ(s["gpu"]["holder"]["logical_name"], "vllm-b");
  EXPECT_TRUE(s["gpu"]["queue"].empty());
  ASSERT_EQ(s["gpu"]["last_switches"].size(), 2u);
  EXPECT_NE(s["gpu"]["last_switches"][0]["to"].get<std::string>().find("vllm-b"), std::string::npos) << "newest first";
  EXPECT_EQ(s["gpu"]["switches_total"], 2);
  EXPECT_EQ(s["metrics"]["requests"], 3);
  EXPECT_EQ(s["metrics"]["models"][ids["vllm-b"]]["requests"], 1);
}

// The page in a real browser: the holder's name and every listed id in the DOM; the page's
// own refresh follows a switch; nothing is fetched from another host; it fits a phone.
TEST(E2eStatus, PageRendersInChromiumAndFollowsASwitch) {
  GpuRig rig({{"vllm-a", {}}, {"vllm-b", {}}}, {{"CHAT_PROXY_ENABLE_METRICS", "1"}});
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  auto status = status_after_requests(rig.port(), 2);
  auto ids = listed_ids(status);
  std::set<std::string> listed;
  for (const auto& m : status["models"]) listed.insert(m["id"].get<std::string>());
  ASSERT_GE(listed.size(), 3u) << "two vLLM models and the Ollama one";

  auto out = artifact_dir();
  std::future<HttpReply> activate_b;
  auto run = run_browser(rig.url() + "/", out, {"--wait-holder", "vllm-b"}, [&](const json& step) {
    // The first render is checked below; now switch, and the page must follow by itself.
    if (step["step"] == "loaded")
      activate_b = std::async(std::launch::async, [&] {
        return http_call(rig.port(), "POST", "/v1/admin/activate", R"({"model":"vllm-b"})", {}, 60s);
      });
  });
  ASSERT_EQ(run.status, 0) << run.output;
  ASSERT_TRUE(activate_b.valid());
  EXPECT_EQ(activate_b.get().status, 200);

  const auto& first = run.steps["loaded"];
  EXPECT_EQ(first["loaded"], "1");
  EXPECT_EQ(first["holder"], "vllm-a");
  EXPECT_EQ(first["holder_id"], ids["vllm-a"]);
  EXPECT_EQ(first["holder_state"], "ready");
  EXPECT_EQ(first["holder_backend"], "vllm");
  EXPECT_EQ(first["holder_port"], std::to_string(rig.vllm_port));
  EXPECT_EQ(first["holder_pid"], std::to_string(rig.vllm_events("started", "vllm-a").at(0)["pid"].get<int>()));
  EXPECT_EQ(first["version"], IMAGEWORKS_VERSION);
  EXPECT_EQ(dom_model_ids(first), listed);
  for (const auto& m : first["models"]) EXPECT_EQ(m["active"], m["logical_name"] == "vllm-a") << m.dump();
  EXPECT_EQ(first["requests"], "2");
  EXPECT_NE(first["p50"], "–") << "two requests give a latency";
  EXPECT_FALSE(first["metrics_off_visible"].get<bool>());
  EXPECT_FALSE(first["key_box_visible"].get<bool>());
  EXPECT_EQ(first["registry_models"], std::to_string(listed.size()));
  EXPECT_EQ(first["registry_error"], "none");
  ASSERT_FALSE(first["switches"].empty());
  EXPECT_NE(first["switches"][0][0].get<std::string>().find("vllm-a"), std::string::npos);

  const auto& after = run.steps["holder"];
  EXPECT_EQ(after["holder"], "vllm-b");
  EXPECT_EQ(after["holder_id"], ids["vllm-b"]);
  for (const auto& m : after["models"]) EXPECT_EQ(m["active"], m["logical_name"] == "vllm-b") << m.dump();
  EXPECT_EQ(after["switches"].size(), 2u);

  const auto& phone = run.steps["phone"];
  EXPECT_LE(phone["scroll_width"].get<int>(), phone["viewport_width"].get<int>()) << "the page scrolls sideways on a phone";
  EXPECT_EQ(phone["viewport_width"], 390);

  const auto& req = run.steps["requests"];
  ASSERT_FALSE(req["urls"].empty());
  for (const auto& u : req["urls"])
    EXPECT_EQ(u.get<std::string>().rfind(rig.url() + "/", 0), 0u) << "fetched from elsewhere: " << u;
  EXPECT_TRUE(req["console_errors"].empty()) << req["console_errors"].dump();
  for (auto name : {"status-desktop.png", "status-switched.png", "status-phone.png"}) {
    auto png = out / name;
    ASSERT_TRUE(std::filesystem::exists(png)) << png;
    EXPECT_GT(std::filesystem::file_size(png), 10000u) << png;
    std::ifstream f(png, std::ios::binary);
    char magic[8] = {};
    f.read(magic, 8);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  }
}

// With API keys: the page itself is served without one (it holds no data), its data needs
// the key; in the browser the page asks for it, then shows the status.
TEST(E2eStatus, WithApiKeysThePageAsksForAKeyAndSendsItAsBearer) {
  TempDir dir;
  dir.write("model_registry.json", R"([
    {"name": "remote-one", "display_name": "Remote One", "backend": "openai", "backend_config": {"base_url": "http://127.0.0.1:9"}},
    {"name": "remote-two", "backend": "openai", "backend_config": {"base_url": "http://127.0.0.1:9"}}
  ])");
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()},
                      {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"},
                      {"CHAT_PROXY_API_KEYS", "first-key,sesame"}});
  auto page = http_call(proxy.port(), "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  EXPECT_NE(page.header("content-security-policy").find("default-src 'none'"), std::string::npos);
  EXPECT_EQ(http_call(proxy.port(), "GET", "/v1/status").status, 401);
  auto ok = http_call(proxy.port(), "GET", "/v1/status", {}, {{"Authorization", "Bearer sesame"}});
  ASSERT_EQ(ok.status, 200);
  auto s = json::parse(ok.body);
  EXPECT_TRUE(s["metrics"].is_null()) << "metrics are off by default";

  auto run = run_browser("http://127.0.0.1:" + std::to_string(proxy.port()) + "/", artifact_dir(), {"--key", "sesame"});
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(run.steps["key_prompt"]["key_box_visible"].get<bool>());
  EXPECT_EQ(run.steps["key_prompt"]["loaded"], "0");
  const auto& f = run.steps["loaded"];
  EXPECT_EQ(f["loaded"], "1");
  EXPECT_FALSE(f["key_box_visible"].get<bool>());
  EXPECT_EQ(f["holder"], "nothing");
  EXPECT_EQ(dom_model_ids(f), (std::set<std::string>{"Remote One", "remote-two"}));
  EXPECT_TRUE(f["metrics_off_visible"].get<bool>());
}

// The page is one document: no script, style, font or image from anywhere (the browser test
// checks what was fetched; this checks the markup and the headers).
TEST(E2eStatus, PageIsSelfContained) {
  TempDir dir;
  dir.write("model_registry.json", "[]");
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()}});
  auto page = http_call(proxy.port(), "GET", "/?refresh=1");
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<!doctype html>"), std::string::npos);
  for (std::string bad : {"src=", "<link rel=\"stylesheet\"", "@import", "url(", "http://", "https://", "//cdn"})
    EXPECT_EQ(page.body.find(bad), std::string::npos) << bad;
  EXPECT_NE(page.body.find("fetch(\"v1/status\""), std::string::npos);
  EXPECT_EQ(page.header("cache-control"), "no-cache");
  EXPECT_EQ(http_call(proxy.port(), "POST", "/", "{}").status, 405);
  auto s = get_json(proxy.port(), "/v1/status");
  EXPECT_TRUE(s["models"].empty());
  EXPECT_EQ(s["registry"]["models"], 0);
}
