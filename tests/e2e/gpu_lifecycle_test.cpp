// End-to-end GPU lifecycle (§5, §8, §12): loading feedback on a cold start, routes that never
// wait on the coordinator, adoption of a server after a proxy crash, shutdown with a running
// child, the CLI commands, and remote mode against `imageworks-chat-proxy vllm-executor`.
#include <csignal>
#include <fstream>
#include <future>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/chat_rig.hpp"
#include "support/gpu_rig.hpp"
#include "support/sse_client.hpp"

using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::vector<std::pair<std::string, std::string>> kOpenWebUi = {
    {"X-OpenWebUI-User-Id", "u-1"}, {"X-OpenWebUI-User-Name", "Ada"}, {"X-OpenWebUI-Chat-Id", "c-9"}};

bool is_status_event(const json& j) { return j.contains("event") && j["event"].value("type", "") == "status"; }

}  // namespace

TEST(E2eGpuFeedback, ColdStartSendsLoadingCommentsAndOpenWebUiStatusEvents) {
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "2500"}}});
  const auto began = std::chrono::steady_clock::now();
  SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s, kOpenWebUi);
  ASSERT_EQ(c.status(), 200);
  EXPECT_LT(std::chrono::steady_clock::now() - began, 2000ms) << "the SSE response must open at once";
  auto frames = c.rest();
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.front().rfind(": loading vllm-a", 0), 0u) << frames.front();
  int comments = 0;
  std::vector<json> statuses;
  std::size_t first_choice = frames.size();
  for (std::size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].rfind(":", 0) == 0) {
      ++comments;
      continue;
    }
    if (frames[i] == "data: [DONE]") continue;
    auto j = json::parse(frames[i].substr(6), nullptr, false);
    if (is_status_event(j)) {
      EXPECT_LT(i, first_choice) << "a status event after the reply began";
      statuses.push_back(j["event"]["data"]);
    } else if (j.contains("choices") && first_choice == frames.size()) {
      first_choice = i;
    }
  }
  EXPECT_GE(comments, 2) << "a comment at least every 2 s during a 2.5 s load";
  ASSERT_GE(statuses.size(), 2u);
  bool starting = false;
  for (const auto& s : statuses) starting |= s["description"].get<std::string>().find("Starting vllm-a") != std::string::npos;
  EXPECT_TRUE(starting);
  EXPECT_EQ(statuses.back()["done"], true);
  EXPECT_EQ(statuses.back()["description"].get<std::string>().rfind("Loaded vllm-a in ", 0), 0u) << statuses.back();
  for (std::size_t i = 0; i + 1 < statuses.size(); ++i) EXPECT_EQ(statuses[i]["done"], false);
  EXPECT_LT(first_choice, frames.size());
  EXPECT_EQ(frames.back(), "data: [DONE]");
}

TEST(E2eGpuFeedback, OtherClientsGetCommentsButNoChunkWithoutChoices) {
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "1800"}}});
  SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  int comments = 0;
  for (const auto& f : frames) {
    if (f.rfind(":", 0) == 0) {
      ++comments;
      continue;
    }
    if (f == "data: [DONE]") continue;
    auto j = json::parse(f.substr(6), nullptr, false);
    EXPECT_TRUE(j.contains("choices")) << f;
  }
  EXPECT_GE(comments, 1);
  EXPECT_EQ(frames.back(), "data: [DONE]");
}

// A failed start after the SSE response opened ends it with an error event and [DONE].
TEST(E2eGpuFeedback, StartTimeoutAfterTheStreamOpenedIsAnErrorEvent) {
  GpuRig rig({{"vllm-a", {"--fake-never-healthy"}}}, {{"CHAT_PROXY_VLLM_START_TIMEOUT_S", "2"}});
  SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 3u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto err = json::parse(frames[frames.size() - 2].substr(6), nullptr, false);
  EXPECT_EQ(err["error"]["code"], "err_model_start_timeout") << frames[frames.size() - 2];
}

TEST(E2eGpuFeedback, ModelsAndHealthAnswerAtOnceDuringAColdStart) {
  // Answered well within the load (the state then still says "starting"); the margin is for
  // a loaded CI machine running ASan builds in parallel.
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "6000"}}});
  auto cold = std::async(std::launch::async, [&] { return rig.chat("vllm-a"); });
  ASSERT_TRUE(rig.events->wait_for("started", 10s).has_value());
  for (const char* path : {"/v1/models", "/v1/health", "/v1/admin/state"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = http_call(rig.port(), "GET", path);
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << path << " waited on the cold start";
  }
  auto state = json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body);
  EXPECT_EQ(state["active"]["state"], "starting");
  EXPECT_EQ(cold.get().status, 200);
}

// The child outlives a crashed proxy on purpose; the next proxy adopts it from the state file.
TEST(E2eGpuLifecycle, ANewProxyAdoptsTheServerTheCrashedOneLeft) {
  GpuRig rig;
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  const int pid = rig.vllm_events("started", "vllm-a").at(0)["pid"].get<int>();
  rig.proxy->signal(SIGKILL);
  ASSERT_TRUE(rig.proxy->wait_exit(10s).has_value());
  EXPECT_TRUE(process_alive(pid)) << "the child died with the proxy";
  rig.restart_proxy();
  auto state = json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body);
  EXPECT_EQ(state["active"]["pid"], pid);
  EXPECT_EQ(state["active"]["logical_name"], "vllm-a");
  auto r = rig.chat("vllm-a");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 1u) << "nothing new started";
  EXPECT_EQ(http_call(rig.port(), "GET", "/v1/models").body.find("\"active\""), std::string::npos)
      << "decorations are off by default";
}

// The proxy died while the server was still loading: the next proxy adopts it as starting
// and its first request waits for the health check instead of meeting a refused port.
TEST(E2eGpuLifecycle, AServerStillLoadingIsAdoptedAndWaitedFor) {
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "2500"}}});
  auto lost = std::async(std::launch::async, [&] { return rig.chat("vllm-a"); });
  ASSERT_TRUE(rig.events->wait_for("started", 10s).has_value());
  rig.proxy->signal(SIGKILL);
  ASSERT_TRUE(rig.proxy->wait_exit(10s).has_value());
  lost.wait();
  rig.restart_proxy();
  auto state = json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body);
  EXPECT_EQ(state["active"]["state"], "starting") << state.dump();
  auto r = rig.chat("vllm-a");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 1u) << "the loading server was adopted, not replaced";
}

TEST(E2eGpuLifecycle, ADeadRecordedServerIsCleanedUpAndStartedAfresh) {
  GpuRig rig;
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  const int pid = rig.vllm_events("started", "vllm-a").at(0)["pid"].get<int>();
  rig.proxy->signal(SIGKILL);
  ASSERT_TRUE(rig.proxy->wait_exit(10s).has_value());
  ::kill(-pid, SIGKILL);
  ASSERT_TRUE(wait_process_gone(pid, 10s));
  rig.restart_proxy();
  EXPECT_TRUE(json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body)["active"].is_null());
  EXPECT_EQ(rig.chat("vllm-a").status, 200);
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 2u);
}

TEST(E2eGpuLifecycle, SigtermStopsTheChildAndExitsZero) {
  GpuRig rig(std::vector<VllmModel>{{"vllm-a", {"--fake-spawn-worker"}}});
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  rig.proxy->signal(SIGTERM);
  auto code = rig.proxy->wait_exit(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  for (int pid : rig.vllm_pids()) EXPECT_TRUE(wait_process_gone(pid, 5s)) << "pid " << pid << " left behind";
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(rig.state_path(), ec));
}

TEST(E2eGpuLifecycle, SigtermUnloadsOllamaWhenItHoldsTheGpu) {
  GpuRig rig;
  ASSERT_EQ(rig.chat("llama").status, 200);
  ASSERT_FALSE(rig.ollama.loaded().empty());
  rig.proxy->signal(SIGTERM);
  ASSERT_EQ(rig.proxy->wait_exit(30s).value_or(-1), 0);
  EXPECT_TRUE(rig.ollama.loaded().empty()) << "CHAT_PROXY_RELEASE_ON_EXIT=1 unloads Ollama";
  bool unload = false;
  for (const auto& c : rig.ollama.calls()) unload |= c.is_unload() && c.model == "llama3.2:3b";
  EXPECT_TRUE(unload);
}

TEST(E2eGpuLifecycle, CliActivatesStopsAndReportsTheModel) {
  GpuRig rig;
  auto run = [&](std::vector<std::string> args) {
    args.push_back("--url");
    args.push_back(rig.url());
    return run_proxy_command(args, rig.env);
  };
  auto current = run({"current-model"});
  EXPECT_EQ(current.exit_code, 0) << current.err;
  EXPECT_EQ(current.out, "none\n");
  auto act = run({"activate-model", "vllm-a"});
  EXPECT_EQ(act.exit_code, 0) << act.err;
  EXPECT_NE(act.out.find("vllm-a (vllm, pid "), std::string::npos) << act.out;
  EXPECT_EQ(run({"current-model"}).out, "vllm-a\n");
  auto stop = run({"activate-model", "--stop"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_EQ(run({"current-model"}).out, "none\n");
  auto unknown = run({"activate-model", "no-such-model"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("not found"), std::string::npos) << unknown.err;
  // The proxy found through CHAT_PROXY_HOST/CHAT_PROXY_PORT, and a proxy that is not there.
  auto env = rig.env;
  env["CHAT_PROXY_PORT"] = std::to_string(rig.port());
  EXPECT_EQ(run_proxy_command({"current-model"}, env).out, "none\n");
  env["CHAT_PROXY_PORT"] = std::to_string(closed_loopback_port());
  auto down = run_proxy_command({"current-model"}, env);
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_NE(down.err.find("cannot reach the proxy"), std::string::npos) << down.err;
}

// With API keys the admin commands send the configured key (the settings the daemon reads,
// as in `docker exec imageworks-chat-proxy …`); they need no registry where they run.
TEST(E2eGpuLifecycle, CliSendsTheConfiguredKeyAndNeedsNoRegistry) {
  GpuRig rig({{"vllm-a", {}}}, {{"CHAT_PROXY_API_KEYS", "k-one,k-two"}});
  std::map<std::string, std::string> env{{"CHAT_PROXY_PORT", std::to_string(rig.port())},
                                         {"CHAT_PROXY_REGISTRY_DIR", ""}};  // cwd has no configs/
  auto no_key = run_proxy_command({"current-model"}, env);
  EXPECT_EQ(no_key.exit_code, 1) << no_key.err;
  EXPECT_NE(no_key.err.find("API key"), std::string::npos) << no_key.err;
  env["CHAT_PROXY_API_KEYS"] = "k-one";
  auto act = run_proxy_command({"activate-model", "vllm-a"}, env);
  EXPECT_EQ(act.exit_code, 0) << act.err;
  EXPECT_EQ(run_proxy_command({"current-model"}, env).out, "vllm-a\n");
  env["CHAT_PROXY_API_KEYS"] = "wrong";
  EXPECT_EQ(run_proxy_command({"activate-model", "--stop"}, env).exit_code, 1);
  env.erase("CHAT_PROXY_API_KEYS");
  env["CHAT_PROXY_API_KEYS_FILE"] = (rig.dir.path() / "keys").string();
  rig.dir.write("keys", "k-two\n");
  auto stop = run_proxy_command({"activate-model", "--stop"}, env);
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  // models list asks the running proxy for ACTIVE with the key too (registry given here).
  env["CHAT_PROXY_REGISTRY_DIR"] = rig.env.at("CHAT_PROXY_REGISTRY_DIR");
  auto list = run_proxy_command({"models", "list", "--json"}, env);
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(list.err.find("ACTIVE is unknown"), std::string::npos) << list.err;
}

// Remote mode: the proxy drives `vllm-executor` (another process) through /admin/*.
TEST(E2eGpuLifecycle, RemoteModeThroughTheVllmExecutor) {
  GpuRig rig;
  ProxyProcess executor(rig.env, {"vllm-executor", "--port", "0"});
  auto health = http_call(executor.port(), "GET", "/health");
  EXPECT_EQ(health.status, 200);
  rig.restart_proxy({{"CHAT_PROXY_VLLM_REMOTE_URL", "http://127.0.0.1:" + std::to_string(executor.port())}});
  auto r = rig.chat("vllm-a", true);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"model\":\"vllm-a\""), std::string::npos);
  auto remote = json::parse(http_call(executor.port(), "GET", "/admin/state").body);
  EXPECT_EQ(remote["active"]["logical_name"], "vllm-a");
  EXPECT_EQ(remote["active"]["state"], "ready");
  auto ours = json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body);
  EXPECT_EQ(ours["active"]["pid"], remote["active"]["pid"]);
  ASSERT_EQ(rig.chat("llama").status, 200);  // vLLM -> Ollama: the executor stops it
  EXPECT_EQ(rig.vllm_events("exit", "vllm-a").size(), 1u);
  EXPECT_TRUE(json::parse(http_call(executor.port(), "GET", "/admin/state").body)["active"].is_null());
  executor.signal(SIGTERM);
  EXPECT_EQ(executor.wait_exit(30s).value_or(-1), 0);
  if (::testing::Test::HasFailure()) std::cerr << "--- executor log ---\n" << executor.stderr_text();
}

// Autostart (§8): a backend that does not answer is started from CHAT_PROXY_AUTOSTART_MAP
// (no shell, pid and log under <state dir>/autostart/) and the request waits for it.
TEST(E2eAutostart, ABackendThatIsDownIsStartedAndTheRequestServed) {
  const unsigned short port = closed_loopback_port();
  TempDir dir;
  FakeVllmEvents events(dir.path() / "events.jsonl");
  dir.write("reg/model_registry.json", R"([{"name": "remote-ish", "backend": "llamacpp", "served_model_id": "served-x",
      "backend_config": {"base_url": "http://127.0.0.1:)" + std::to_string(port) + R"("}}])");
  const std::string command = fake_vllm_binary() + " serve /m --port " + std::to_string(port) +
                              " --served-model-name served-x --fake-load-ms 400 --fake-max-lifetime-s 60 --fake-events " +
                              events.path().string();
  const std::string state = (dir.path() / "_staging" / "active_vllm.json").string();
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", (dir.path() / "reg").string()},
                      {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"},
                      {"CHAT_PROXY_VLLM_STATE_PATH", state},
                      {"CHAT_PROXY_OLLAMA_BASE_URL", "http://127.0.0.1:" + std::to_string(closed_loopback_port())},
                      {"CHAT_PROXY_AUTOSTART_ENABLED", "1"},
                      {"CHAT_PROXY_AUTOSTART_MAP", "llamacpp=" + command},
                      {"CHAT_PROXY_AUTOSTART_GRACE_S", "20"}});
  std::vector<std::future<HttpReply>> replies;
  for (int i = 0; i < 2; ++i)
    replies.push_back(std::async(std::launch::async, [&] {
      return http_call(proxy.port(), "POST", "/v1/chat/completions", chat_json("remote-ish", false), {}, 60s);
    }));
  for (auto& f : replies) {
    auto r = f.get();
    EXPECT_EQ(r.status, 200) << r.body;
  }
  auto started = events.all("started");
  ASSERT_EQ(started.size(), 1u) << "two requests, one start";
  const int pid = started[0]["pid"].get<int>();
  const auto pid_file = dir.path() / "_staging" / "autostart" / "llamacpp.pid";
  std::ifstream in(pid_file);
  int recorded = 0;
  in >> recorded;
  EXPECT_EQ(recorded, pid);
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "_staging" / "autostart" / "llamacpp.log"));
  auto status = json::parse(http_call(proxy.port(), "GET", "/v1/autostart/status").body);
  EXPECT_EQ(status["autostart"]["services"]["llamacpp"]["pid"], pid);
  EXPECT_EQ(status["autostart"]["services"]["llamacpp"]["running"], true);
  // Up now: the next request does not start anything.
  EXPECT_EQ(http_call(proxy.port(), "POST", "/v1/chat/completions", chat_json("remote-ish", false)).status, 200);
  EXPECT_EQ(events.all("started").size(), 1u);
  ::kill(-pid, SIGKILL);
}

TEST(E2eAutostart, ABackendThatNeverAnswersIs503AfterTheGrace) {
  const unsigned short port = closed_loopback_port();
  TempDir dir;
  dir.write("reg/model_registry.json", R"([{"name": "m", "backend": "openai",
      "backend_config": {"base_url": "http://127.0.0.1:)" + std::to_string(port) + R"("}}])");
  FakeVllmEvents events(dir.path() / "events.jsonl");
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", (dir.path() / "reg").string()},
                      {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"},
                      {"CHAT_PROXY_VLLM_STATE_PATH", (dir.path() / "_staging" / "s.json").string()},
                      {"CHAT_PROXY_AUTOSTART_ENABLED", "1"},
                      {"CHAT_PROXY_AUTOSTART_MAP", "openai:" + fake_vllm_binary() + " serve /m --port " +
                                                       std::to_string(port) + " --fake-never-healthy --fake-max-lifetime-s 30 --fake-events " +
                                                       events.path().string()},
                      {"CHAT_PROXY_AUTOSTART_GRACE_S", "1"}});
  auto r = http_call(proxy.port(), "POST", "/v1/chat/completions", chat_json("m", false), {}, 30s);
  expect_error(r, 503, "err_model_start_timeout");
  EXPECT_NE(r.body.find("CHAT_PROXY_AUTOSTART_GRACE_S"), std::string::npos);
  for (auto& e : events.all("started")) ::kill(-e["pid"].get<int>(), SIGKILL);
}
