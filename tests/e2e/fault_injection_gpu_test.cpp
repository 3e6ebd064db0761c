// End-to-end fault injection on the GPU side (see fault_injection_test.cpp for the upstream
// faults): a vLLM child that ignores SIGTERM, an Ollama that never answers its unloads, and
// clients that leave while queued for a switch, during the loading comments and mid-stream.
// In each, a chat to a model on another (non-GPU) backend is served while the fault lasts,
// and the GPU coordinator is not wedged afterwards.
//
// Already covered end to end elsewhere (not repeated here):
//   Ollama keeps a model past the unload timeout     E2eGpu.AnUnloadThatNeverFinishesIsAWarningAndTheSwitchGoesOn
//   vLLM never healthy → 503, child killed           E2eGpu.NeverHealthyIs503StartTimeoutAndTheChildIsGone
//   vLLM crash mid-stream → error event, fresh start E2eGpu.CrashMidStreamEndsWithAnErrorEventThenAFreshStartServes
//   leaving the switch queue (coordinator level)     GpuCoordinator.AClientThatLeavesWhileQueuedLeavesTheQueue
#include <fstream>
#include <future>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fakes/fake_openai.hpp"
#include "support/chat_rig.hpp"
#include "support/gpu_rig.hpp"
#include "support/sse_client.hpp"

using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Adds a model on a plain OpenAI-compatible backend (no GPU coordination) to the rig's
// registry and reloads it: the "other requests" that must keep being served.
void add_healthy_model(GpuRig& rig, const FakeOpenAI& fake) {
  const auto path = rig.dir.path() / "registry" / "model_registry.json";
  std::ifstream in(path);
  json entries = json::parse(in);
  entries.push_back({{"name", "healthy"}, {"backend", "openai"}, {"backend_config", {{"base_url", fake.base_url()}}}});
  rig.dir.write("registry/model_registry.json", entries.dump(2));
  auto r = http_call(rig.port(), "POST", "/v1/reload", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
}

void expect_healthy_served(GpuRig& rig) {
  auto r = rig.chat("healthy");
  EXPECT_EQ(r.status, 200) << r.body;
  SseClient s(rig.port(), "/v1/chat/completions", chat_json("healthy", true), 30s);
  EXPECT_EQ(s.status(), 200);
  EXPECT_TRUE(stream_completed(s.rest()));
}

json admin_state(GpuRig& rig) { return json::parse(http_call(rig.port(), "GET", "/v1/admin/state").body, nullptr, false); }

// The state once no request holds the GPU: a lease is given back just after its reply went
// out (posted to the coordinator's thread), so the client may ask a moment before. Bounded.
json state_when_idle(GpuRig& rig, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  json state = admin_state(rig);
  while (state.value("in_flight", -1) != 0 && std::chrono::steady_clock::now() < deadline) state = admin_state(rig);
  return state;
}

}  // namespace

// 10. A vLLM child that ignores SIGTERM is SIGKILLed after CHAT_PROXY_VLLM_STOP_GRACE_S and
// the switch to B completes; other backends are served during the grace.
TEST(E2eFault, VllmIgnoringSigtermIsKilledAfterTheGraceAndTheSwitchCompletes) {
  GpuRig rig({{"vllm-a", {"--fake-ignore-sigterm"}}, {"vllm-b", {}}}, {{"CHAT_PROXY_VLLM_STOP_GRACE_S", "1"}});
  FakeOpenAI healthy;
  add_healthy_model(rig, healthy);
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  const int a_pid = rig.vllm_events("started", "vllm-a").at(0)["pid"].get<int>();
  auto b = std::async(std::launch::async, [&] { return rig.chat("vllm-b"); });
  ASSERT_TRUE(rig.events->wait_for("sigterm", 10s).has_value());
  expect_healthy_served(rig);  // while A sits out its grace
  auto rb = b.get();
  EXPECT_EQ(rb.status, 200) << rb.body;
  EXPECT_TRUE(rig.proxy->wait_for_log("ignored SIGTERM for 1 s: SIGKILL", 5s));
  EXPECT_TRUE(wait_process_gone(a_pid, 5s)) << "A survived its SIGKILL";
  auto term = rig.vllm_events("sigterm", "vllm-a");
  ASSERT_FALSE(term.empty());
  EXPECT_EQ(term[0]["ignored"], true);
  EXPECT_TRUE(rig.vllm_events("exit", "vllm-a").empty()) << "A exited by itself: SIGTERM was not ignored";
  EXPECT_EQ(rig.vllm_events("started", "vllm-b").size(), 1u);
  auto state = admin_state(rig);
  EXPECT_EQ(state["active"]["logical_name"], "vllm-b") << state.dump();
  EXPECT_EQ(rig.chat("vllm-b").status, 200);
}

// 11. An Ollama that accepts its keep_alive-0 unloads and never answers them: the switch to
// vLLM goes on after CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS (not after an API call's own 10 s
// per model) with a warning that names the models, and later switches still work.
TEST(E2eFault, HungOllamaUnloadIsBoundedByTheUnloadTimeoutAndNothingWedges) {
  GpuRig rig({{"vllm-a", {}}}, {{"CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS", "600"}});
  FakeOpenAI healthy;
  add_healthy_model(rig, healthy);
  ASSERT_EQ(rig.chat("llama").status, 200);
  rig.ollama.set_loaded({"llama3.2:3b", "qwen2.5:7b"});
  auto b = rig.ollama.behavior();
  b.stall_unload = true;
  rig.ollama.set_behavior(b);
  const auto asked = std::chrono::steady_clock::now();
  auto va = std::async(std::launch::async, [&] { return rig.chat("vllm-a"); });
  ASSERT_TRUE(rig.ollama.wait_for_calls([](const auto& calls) {
    for (const auto& c : calls) if (c.is_unload()) return true;
    return false;
  }, 10s));
  expect_healthy_served(rig);  // while the unload hangs
  auto r = va.get();
  const auto took = std::chrono::steady_clock::now() - asked;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LT(took, 5s) << "the hung unload held the switch past the unload timeout";
  EXPECT_TRUE(rig.proxy->wait_for_log("still loaded after 600 ms (CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS)", 5s));
  auto status = json::parse(http_call(rig.port(), "GET", "/v1/autostart/status").body, nullptr, false);
  EXPECT_NE(status["ollama"]["last_error"].get<std::string>().find("llama3.2:3b"), std::string::npos) << status.dump();
  // Not wedged: back to Ollama and to vLLM again (another bounded wait on the hung unloads).
  EXPECT_EQ(rig.chat("llama").status, 200);
  EXPECT_EQ(rig.chat("vllm-a").status, 200);
  EXPECT_EQ(admin_state(rig)["active"]["logical_name"], "vllm-a");
}

// 12a. A client that leaves while queued for a switch leaves the queue: no switch happens
// for it, the running stream on A finishes, and A keeps serving.
TEST(E2eFault, ClientLeavingWhileQueuedForASwitchLeavesTheQueue) {
  GpuRig rig({{"vllm-a", {"--fake-chunks", "20", "--fake-chunk-delay-ms", "100"}}, {"vllm-b", {}}});
  FakeOpenAI healthy;
  add_healthy_model(rig, healthy);
  ASSERT_EQ(rig.chat("vllm-a").status, 200);
  SseClient running(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
  ASSERT_EQ(running.status(), 200);
  ASSERT_TRUE(running.next_frame().has_value());
  {
    SseClient queued(rig.port(), "/v1/chat/completions", chat_json("vllm-b", true), 30s);
    ASSERT_EQ(queued.status(), 200);  // loading feedback opens the stream at once
    auto first = queued.next_frame();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->rfind(": loading vllm-b", 0), 0u) << *first;
    ASSERT_EQ(admin_state(rig)["queue"].size(), 1u);
    queued.close();
  }
  expect_healthy_served(rig);
  auto frames = running.rest();
  EXPECT_TRUE(stream_completed(frames)) << (frames.empty() ? "" : frames.back());
  EXPECT_EQ(rig.chat("vllm-a").status, 200);
  auto state = admin_state(rig);
  EXPECT_TRUE(state["queue"].empty()) << state.dump();
  EXPECT_EQ(state["active"]["logical_name"], "vllm-a") << "a switch ran for a client that had left";
  EXPECT_TRUE(rig.vllm_events("started", "vllm-b").empty());
}

// 12b. A client that leaves during the loading comments of a cold start: the start goes on
// for the next request (one server, not two), which is served, and the departed client
// holds no lease: a switch to B is not kept waiting (it would get 503 err_backend_busy after
// CHAT_PROXY_SWITCH_WAIT_TIMEOUT_MS).
TEST(E2eFault, ClientLeavingDuringTheLoadingCommentsDoesNotBreakTheStart) {
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "1500"}}, {"vllm-b", {}}}, {{"CHAT_PROXY_SWITCH_WAIT_TIMEOUT_MS", "5000"}});
  FakeOpenAI healthy;
  add_healthy_model(rig, healthy);
  {
    SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
    ASSERT_EQ(c.status(), 200);
    auto first = c.next_frame();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->rfind(": loading vllm-a", 0), 0u) << *first;
    c.close();
  }
  expect_healthy_served(rig);  // during the load
  auto r = rig.chat("vllm-a", true);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("[DONE]"), std::string::npos) << r.body;
  EXPECT_EQ(rig.vllm_events("started", "vllm-a").size(), 1u);
  auto rb = rig.chat("vllm-b");
  EXPECT_EQ(rb.status, 200) << rb.body;
  auto state = admin_state(rig);
  EXPECT_EQ(state["active"]["logical_name"], "vllm-b") << state.dump();
  EXPECT_TRUE(state["queue"].empty()) << state.dump();
}

// 12c. A client that leaves mid-stream gives its lease back at once: a switch to B does not
// wait for the 10 s the abandoned stream would have lasted.
TEST(E2eFault, ClientLeavingMidStreamReleasesTheGpuAtOnce) {
  GpuRig rig({{"vllm-a", {"--fake-chunks", "100", "--fake-chunk-delay-ms", "100"}}, {"vllm-b", {}}});
  FakeOpenAI healthy;
  add_healthy_model(rig, healthy);
  {
    SseClient c(rig.port(), "/v1/chat/completions", chat_json("vllm-a", true), 30s);
    ASSERT_EQ(c.status(), 200);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.next_frame().has_value());
    c.close();
  }
  expect_healthy_served(rig);
  const auto asked = std::chrono::steady_clock::now();
  auto rb = rig.chat("vllm-b");
  EXPECT_EQ(rb.status, 200) << rb.body;
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 6s) << "B waited for the abandoned stream";
  EXPECT_EQ(state_when_idle(rig)["in_flight"], 0);
}
