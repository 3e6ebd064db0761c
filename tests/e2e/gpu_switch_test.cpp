// End-to-end GPU switching (§5, §8) through the built binary: the fake Ollama and real
// child processes of the fake vLLM executable. Order is checked with the fakes' own clocks
// (FakeOllama's wall_ms, the fake vLLM's t_ms: both milliseconds since the epoch).
#include <atomic>
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

std::int64_t t_ms(const json& event) { return event.value("t_ms", std::int64_t{0}); }

}  // namespace

TEST(E2eGpu, OllamaToVllmUnloadsEveryLoadedModelBeforeTheChildStarts) {
  GpuRig rig;
  auto r = rig.chat("llama");
  ASSERT_EQ(r.status, 200) << r.body;
  rig.ollama.set_loaded({"llama3.2:3b", "qwen2.5:7b"});  // one more, loaded by someone else
  r = rig.chat("vllm-a");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["model"], "vllm-a");
  auto started = rig.vllm_events("started", "vllm-a");
  ASSERT_EQ(started.size(), 1u);
  std::vector<std::string> unloaded;
  for (const auto& c : rig.ollama.calls()) {
    EXPECT_NE(c.path, "/api/stop") << "Ollama has no /api/stop";
    if (!c.is_unload()) continue;
    unloaded.push_back(c.model);
    EXPECT_LT(c.wall_ms, t_ms(started[0])) << c.model << " was unloaded after the vLLM child started";
  }
  std::sort(unloaded.begin(), unloaded.end());
  EXPECT_EQ(unloaded, (std::vector<std::string>{"llama3.2:3b", "qwen2.5:7b"}));
  EXPECT_TRUE(rig.ollama.loaded().empty());
  EXPECT_NE(rig.proxy->stderr_text().find("[ollama-manager] keep_alive unload llama3.2:3b"), std::string::npos);
}

TEST(E2eGpu, VllmToOllamaStopsTheChildBeforeTheOllamaChat) {
  GpuRig rig;
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  auto started = rig.vllm_events("started", "vllm-a");
  ASSERT_EQ(started.size(), 1u);
  const int pid = started[0]["pid"].get<int>();
  auto r = rig.chat("llama");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(process_alive(pid)) << "the vLLM child still runs after the switch to Ollama";
  auto exited = rig.vllm_events("exit", "vllm-a");
  ASSERT_EQ(exited.size(), 1u);
  for (const auto& c : rig.ollama.calls())
    if (c.path == "/v1/chat/completions") EXPECT_GT(c.wall_ms, t_ms(exited[0]));
  auto state = json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body);
  EXPECT_EQ(state["active"]["backend"], "ollama");
}

TEST(E2eGpu, VllmAToBStopsAThenStartsBOnTheSamePort) {
  GpuRig rig;
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  auto r = rig.chat("vllm-b", true);
  ASSERT_EQ(r.status, 200) << r.body;
  auto a_exit = rig.vllm_events("exit", "vllm-a");
  auto b_start = rig.vllm_events("started", "vllm-b");
  ASSERT_EQ(a_exit.size(), 1u);
  ASSERT_EQ(b_start.size(), 1u);
  EXPECT_LE(t_ms(a_exit[0]), t_ms(b_start[0])) << "B started before A had exited";
  auto a_listen = rig.vllm_events("listening", "vllm-a"), b_listen = rig.vllm_events("listening", "vllm-b");
  ASSERT_FALSE(a_listen.empty() || b_listen.empty());
  EXPECT_EQ(a_listen[0]["port"], rig.vllm_port);
  EXPECT_EQ(b_listen[0]["port"], rig.vllm_port);
  EXPECT_NE(r.body.find("\"model\":\"vllm-b\""), std::string::npos);
}

TEST(E2eGpu, ThreeSimultaneousColdRequestsStartOneServer) {
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "500"}}});
  std::vector<std::future<HttpReply>> replies;
  for (int i = 0; i < 3; ++i) replies.push_back(std::async(std::launch::async, [&] { return rig.chat("vllm-a"); }));
  for (auto& f : replies) EXPECT_EQ(f.get().status, 200);
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 1u);
}

TEST(E2eGpu, NeverHealthyIs503StartTimeoutAndTheChildIsGone) {
  GpuRig rig({{"vllm-a", {"--fake-never-healthy", "--fake-spawn-worker"}}}, {{"CHAT_PROXY_VLLM_START_TIMEOUT_S", "1"}});
  auto r = rig.chat("vllm-a");
  expect_error(r, 503, "err_model_start_timeout");
  auto started = rig.vllm_events("started", "vllm-a");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_TRUE(wait_process_gone(started[0]["pid"].get<int>(), 5s));
  for (int pid : rig.vllm_pids()) EXPECT_TRUE(wait_process_gone(pid, 5s)) << "pid " << pid << " survived";
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(rig.state_path(), ec)) << "state file of a server that never started";
}

TEST(E2eGpu, CrashMidStreamEndsWithAnErrorEventThenAFreshStartServes) {
  GpuRig rig({{"vllm-a", {"--fake-crash-after-ms", "400", "--fake-chunks", "200", "--fake-chunk-delay-ms", "20"}}});
  SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto err = json::parse(frames[frames.size() - 2].substr(6), nullptr, false);
  ASSERT_TRUE(err.contains("error")) << frames[frames.size() - 2];
  EXPECT_EQ(err["error"]["code"], "err_backend_unavailable");
  // The crash is noticed, the state cleaned, and the next request starts a fresh server.
  auto r = rig.chat("vllm-a");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 2u);
}

// A dying server closes its port a moment before its exit can be seen (here the fake closes
// its sockets and lingers 600 ms): a request that meets the refusal in that moment is not a
// 502 but waits for the exit and a fresh start, then is served.
TEST(E2eGpu, ARequestMeetingADyingServersClosedPortWaitsForAFreshStart) {
  GpuRig rig({{"vllm-a", {"--fake-crash-after-ms", "400", "--fake-crash-linger-ms", "600", "--fake-chunks", "200",
                          "--fake-chunk-delay-ms", "20"}}});
  SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto r = rig.chat("vllm-a");  // sent while the old process lingers with its port closed
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 2u);
  EXPECT_TRUE(rig.proxy->wait_for_log("died before answering a request", 5s)) << rig.proxy->stderr_text();
}

// 20 streams on A are running when B is asked for: none is cut, B is served after they
// finish, with exactly one switch.
TEST(E2eGpu, TwentyStreamsOnAFinishBeforeTheOneSwitchToB) {
  GpuRig rig({{"vllm-a", {"--fake-chunks", "20", "--fake-chunk-delay-ms", "50"}}, {"vllm-b", {}}});
  ASSERT_EQ(rig.chat("vllm-a").status, 200);  // A is warm
  std::vector<std::unique_ptr<SseClient>> streams;
  for (int i = 0; i < 20; ++i) {
    streams.push_back(std::make_unique<SseClient>(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s));
    ASSERT_EQ(streams.back()->status(), 200);
  }
  auto b = std::async(std::launch::async, [&] { return rig.chat("vllm-b"); });
  for (auto& s : streams) {  // none was cut: A stopped only after the last one ended
    auto frames = s->rest();
    EXPECT_TRUE(stream_completed(frames)) << (frames.empty() ? "" : frames.back());
  }
  auto rb = b.get();
  EXPECT_EQ(rb.status, 200) << rb.body;
  auto b_start = rig.vllm_events("started", "vllm-b");
  ASSERT_EQ(b_start.size(), 1u);
  EXPECT_EQ(rig.vllm_events("exit", "vllm-a").size(), 1u);
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 1u);
  auto state = json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body);
  EXPECT_EQ(state["switches_total"], 2) << "nothing -> A, A -> B";
}

// Steady looping traffic on A does not starve B: B is served within the drain of the streams
// running when it arrived plus one switch, while the loops keep asking for A.
TEST(E2eGpu, SteadyTrafficOnADoesNotStarveB) {
  GpuRig rig({{"vllm-a", {"--fake-chunks", "10", "--fake-chunk-delay-ms", "50"}}, {"vllm-b", {}}});
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::vector<std::thread> loops;
  for (int i = 0; i < 4; ++i) {
    loops.emplace_back([&] {
      for (int n = 0; n < 200 && !stop; ++n) {
        SseClient s(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 60s);
        if (s.status() == 200 && stream_completed(s.rest())) ++served;
      }
    });
  }
  while (served < 4) std::this_thread::sleep_for(10ms);  // the loops are running (bounded by their own count)
  const auto asked = std::chrono::steady_clock::now();
  auto rb = rig.chat("vllm-b");
  const auto waited = std::chrono::steady_clock::now() - asked;
  stop = true;
  for (auto& t : loops) t.join();
  EXPECT_EQ(rb.status, 200) << rb.body;
  // One A stream lasts ≈ 0.5 s, a fake start ≈ 0.2 s: 10 s is generous and far from starvation.
  EXPECT_LT(waited, 10s) << "B waited behind steady A traffic";
}

TEST(E2eGpu, AdminRoutesActivateDeactivateAndState) {
  GpuRig rig({{"vllm-a", {}}, {"vllm-b", {}}}, {{"CHAT_PROXY_SUPPRESS_DECORATIONS", "0"}});
  auto r = http_call(rig.port(), "POST", "/v1/admin/activate", R"({"model":"vllm-a"})", {}, 60s);
  ASSERT_EQ(r.status, 200) << r.body;
  auto s = json::parse(r.body);
  EXPECT_EQ(s["active"]["logical_name"], "vllm-a");
  EXPECT_EQ(s["active"]["state"], "ready");
  EXPECT_EQ(s["active"]["port"], rig.vllm_port);
  const int pid = s["active"]["pid"].get<int>();
  EXPECT_TRUE(process_alive(pid));
  auto models = json::parse(http_call(rig.port(), "GET", "/v1/models").body);
  for (const auto& m : models["data"])  // the `active` decoration comes from the coordinator's state
    EXPECT_EQ(m["active"], m["logical_name"] == "vllm-a") << m.dump();
  r = http_call(rig.port(), "POST", "/v1/admin/deactivate", "{}", {}, 60s);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(json::parse(r.body)["active"].is_null()) << r.body;
  EXPECT_FALSE(process_alive(pid));
  expect_error(http_call(rig.port(), "POST", "/v1/admin/activate", R"({"model":"nope"})"), 404, "err_model_not_found");
  expect_error(http_call(rig.port(), "POST", "/v1/admin/deactivate", R"({"backend":"gpu"})"), 400, "err_bad_request");
}

// Ollama that keeps a model past CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS: a warning, and the
// switch goes on (§8).
TEST(E2eGpu, AnUnloadThatNeverFinishesIsAWarningAndTheSwitchGoesOn) {
  GpuRig rig({{"vllm-a", {}}}, {{"CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS", "300"}});
  auto b = rig.ollama.behavior();
  b.ignore_unload = true;
  rig.ollama.set_behavior(b);
  rig.ollama.set_loaded({"qwen2.5:7b"});
  auto r = rig.chat("vllm-a");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(rig.proxy->wait_for_log("still loaded after 300 ms (CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS): qwen2.5:7b", 5s));
  auto status = json::parse(http_call(rig.port(), "GET", "/v1/autostart/status").body);
  EXPECT_NE(status["ollama"]["last_error"].get<std::string>().find("qwen2.5:7b"), std::string::npos);
}
