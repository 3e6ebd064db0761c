// §10 through the built binary: the JSONL request log (one line per exchange, whatever ended
// it, across rotations, under concurrency) and the metrics routes (Prometheus text checked by
// promtool, values against a known sequence).
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "support/chat_rig.hpp"
#include "support/gpu_rig.hpp"
#include "support/sse_client.hpp"
#include "support/telemetry_support.hpp"

namespace imageworks::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> with_id(const std::string& id) { return {{"x-request-id", id}}; }

// 50 clients × 200 requests, a log that rotates every few hundred lines: afterwards every
// request id is in exactly one line, every line parses, and the client that left mid-stream
// has its line too.
TEST(E2eTelemetry, FiftyClientsTwoHundredRequestsEachAcrossRotations) {
  TempDir logs;
  const fs::path log = logs.path() / "sub" / "chat_proxy.jsonl";  // the directory is created
  ChatRig rig(Env{{"CHAT_PROXY_LOG_PATH", log.string()}, {"CHAT_PROXY_MAX_LOG_BYTES", "65536"},
                  {"CHAT_PROXY_LOG_KEEP_FILES", "100000"}});
  constexpr int kClients = 50, kEach = 200;
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) {
        const std::string id = "c" + std::to_string(c) + "-" + std::to_string(i);
        const bool stream = (i % 3) == 0;
        auto r = http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(stream).dump(), with_id(id));
        if (r.status != 200 || r.header("x-request-id") != id) ++failures;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);

  // A client that leaves mid-stream.
  FakeOpenAI::Behavior stall;
  stall.stall_after_chunks = 1;
  rig.fake.set_behavior(stall);
  {
    SseClient gone(rig.port(), "/v1/chat/completions", chat_body(true).dump(), std::chrono::seconds(20),
                   with_id("vanished"));
    ASSERT_EQ(gone.status(), 200);
    ASSERT_TRUE(gone.next_frame());
    gone.close();
  }
  ASSERT_TRUE(rig.fake.wait_for_client_disconnect(std::chrono::seconds(10)));
  rig.proxy->signal(SIGTERM);  // the log is flushed on shutdown
  ASSERT_EQ(rig.proxy->wait_exit(std::chrono::seconds(20)), 0);

  const auto files = log_files(log);
  EXPECT_GT(files.size(), 20u) << "the log did not rotate as often as expected";
  std::map<std::string, int> seen;
  json vanished;
  for (const auto& f : files) {
    EXPECT_LE(fs::file_size(f), 65536u) << f;
    for (const auto& line : read_lines(f)) {
      auto j = json::parse(line, nullptr, false);
      ASSERT_TRUE(j.is_object()) << f << ": " << line;
      expect_every_key(j);
      ++seen[j["request_id"].get<std::string>()];
      if (j["request_id"] == "vanished") vanished = j;
    }
  }
  for (int c = 0; c < kClients; ++c)
    for (int i = 0; i < kEach; ++i) {
      const std::string id = "c" + std::to_string(c) + "-" + std::to_string(i);
      EXPECT_EQ(seen[id], 1) << id;
    }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kClients * kEach + 1));
  ASSERT_TRUE(vanished.is_object()) << "the client that left mid-stream was not logged";
  EXPECT_EQ(vanished["error_code"], "err_client_closed");
  EXPECT_EQ(vanished["status"], 200);  // the head had gone out
  EXPECT_EQ(vanished["stream"], true);
}

// One line's contents: every §10 key with the values of this exchange.
TEST(E2eTelemetry, AStreamLineHasUsageTimingsBytesAndTheOpenWebUiUser) {
  TempDir logs;
  const fs::path log = logs.path() / "chat_proxy.jsonl";
  ChatRig rig(Env{{"CHAT_PROXY_LOG_PATH", log.string()}});
  SseClient s(rig.port(), "/v1/chat/completions", chat_body(true).dump(), std::chrono::seconds(20),
              {{"x-request-id", "one"}, {"X-OpenWebUI-User-Id", "user-7"}, {"X-OpenWebUI-Chat-Id", "chat-\xff"}});
  auto frames = s.rest();
  ASSERT_FALSE(frames.empty());
  auto r = http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(false, "fake-llama").dump(), with_id("two"));
  ASSERT_EQ(r.status, 200);
  auto lines = wait_for_log_lines(log, 2);
  ASSERT_EQ(lines.size(), 2u);
  auto by_id = index_by_request_id(lines);
  const json& a = by_id["one"];
  expect_every_key(a);
  EXPECT_EQ(a["route"], "/v1/chat/completions");
  EXPECT_EQ(a["client"], "127.0.0.1");
  EXPECT_EQ(a["model_requested"], "Fake Chat 7b");
  EXPECT_EQ(a["model_resolved"], "Fake Chat 7b");
  EXPECT_EQ(a["backend"], "vllm");
  EXPECT_EQ(a["stream"], true);
  EXPECT_EQ(a["status"], 200);
  EXPECT_TRUE(a["error_code"].is_null());
  EXPECT_EQ(a["prompt_tokens"], 7);  // the fake's usage chunk, which the client did not ask for
  EXPECT_EQ(a["completion_tokens"], 3);
  ASSERT_TRUE(a["ttft_ms"].is_number());
  EXPECT_LE(a["ttft_ms"].get<double>(), a["latency_ms"].get<double>());
  EXPECT_TRUE(a["switch_ms"].is_null());
  EXPECT_EQ(a["bytes_in"], chat_body(true).dump().size());
  EXPECT_GT(a["bytes_out"].get<std::uint64_t>(), s.raw_body().size());
  EXPECT_EQ(a["user"], "user-7");
  EXPECT_EQ(a["chat_id"], "chat-\xef\xbf\xbd");  // an ill-formed byte becomes U+FFFD
  EXPECT_FALSE(a.contains("messages"));
  EXPECT_FALSE(a.contains("reply"));
  const json& b = by_id["two"];
  EXPECT_EQ(b["model_requested"], "fake-llama");
  EXPECT_EQ(b["backend"], "llamacpp");
  EXPECT_EQ(b["stream"], false);
  EXPECT_TRUE(b["ttft_ms"].is_null());
  EXPECT_TRUE(b["user"].is_null());
  EXPECT_GT(b["bytes_out"].get<std::size_t>(), r.body.size() + 60);  // the head is counted too
  EXPECT_LT(b["bytes_out"].get<std::size_t>(), r.body.size() + 400);
}

// Exchanges that end before or outside the forwarder are logged too.
TEST(E2eTelemetry, RefusalsAndErrorsAreLoggedWithTheirStatusAndCode) {
  TempDir logs;
  const fs::path log = logs.path() / "chat_proxy.jsonl";
  ChatRig rig(Env{{"CHAT_PROXY_LOG_PATH", log.string()}, {"CHAT_PROXY_MAX_BODY_BYTES", "100000"},
                  {"CHAT_PROXY_API_KEYS", "sk-good"}});
  const std::vector<std::pair<std::string, std::string>> auth{{"Authorization", "Bearer sk-good"}};
  auto call = [&](const std::string& id, const std::string& method, const std::string& target, const std::string& body,
                  std::vector<std::pair<std::string, std::string>> headers) {
    headers.insert(headers.begin(), {"x-request-id", id});  // first: a 431 stops reading the head
    return http_call(rig.port(), method, target, body, headers);
  };
  EXPECT_EQ(call("no-key", "GET", "/v1/models", "", {}).status, 401);
  EXPECT_EQ(call("no-route", "GET", "/v1/nowhere?x=1", "", auth).status, 404);
  EXPECT_EQ(call("no-model", "POST", "/v1/chat/completions", chat_body(false, "nope").dump(), auth).status, 404);
  EXPECT_EQ(call("dead", "POST", "/v1/chat/completions", chat_body(false, "dead").dump(), auth).status, 502);
  EXPECT_EQ(call("bad-json", "POST", "/v1/chat/completions", "{", auth).status, 400);
  EXPECT_EQ(call("too-big", "POST", "/v1/chat/completions", std::string(200000, ' '), auth).status, 413);
  std::vector<std::pair<std::string, std::string>> many = auth;
  for (int i = 0; i < 150; ++i) many.emplace_back("x-h" + std::to_string(i), "v");
  EXPECT_EQ(call("too-many", "GET", "/v1/models", "", many).status, 431);
  EXPECT_EQ(call("health", "GET", "/v1/health", "", {}).status, 200);

  auto by_id = index_by_request_id(wait_for_log_lines(log, 8));
  const std::map<std::string, std::tuple<int, std::string, std::string>> expected{
      {"no-key", {401, "err_unauthorized", "/v1/models"}},
      {"no-route", {404, "err_not_found", "/v1/nowhere"}},
      {"no-model", {404, "err_model_not_found", "/v1/chat/completions"}},
      {"dead", {502, "err_backend_unavailable", "/v1/chat/completions"}},
      {"bad-json", {400, "err_bad_request", "/v1/chat/completions"}},
      {"too-big", {413, "err_payload_too_large", "/v1/chat/completions"}},
      {"too-many", {431, "err_headers_too_large", "/v1/models"}},
      {"health", {200, "", "/v1/health"}}};
  for (const auto& [id, want] : expected) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(by_id.contains(id));
    const json& j = by_id[id];
    expect_every_key(j);
    EXPECT_EQ(j["status"], std::get<0>(want));
    if (std::get<1>(want).empty()) EXPECT_TRUE(j["error_code"].is_null());
    else EXPECT_EQ(j["error_code"], std::get<1>(want));
    EXPECT_EQ(j["route"], std::get<2>(want));
  }
  EXPECT_EQ(by_id["no-model"]["model_requested"], "nope");
  EXPECT_TRUE(by_id["no-model"]["model_resolved"].is_null());
  EXPECT_EQ(by_id["dead"]["backend"], "openai");
}

TEST(E2eTelemetry, PromptsAndRepliesOnlyWithLogPrompts) {
  TempDir logs;
  const fs::path log = logs.path() / "chat_proxy.jsonl";
  ChatRig rig(Env{{"CHAT_PROXY_LOG_PATH", log.string()}, {"CHAT_PROXY_LOG_PROMPTS", "1"}});
  // Pretty-printed by the client: the line stays one line.
  std::string pretty = chat_body(true).dump(2);
  SseClient s(rig.port(), "/v1/chat/completions", pretty, std::chrono::seconds(20), with_id("s"));
  s.rest();
  ASSERT_EQ(http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(false).dump(), with_id("w")).status, 200);
  auto by_id = index_by_request_id(wait_for_log_lines(log, 2));
  EXPECT_EQ(by_id["s"]["messages"], chat_body(true)["messages"]);
  EXPECT_EQ(by_id["s"]["reply"], "toktoktok");  // three content chunks of "tok"
  EXPECT_EQ(by_id["w"]["messages"], chat_body(false)["messages"]);
  EXPECT_TRUE(by_id["w"]["reply"].is_string());
  EXPECT_FALSE(by_id["w"]["reply"].get<std::string>().empty());
}

TEST(E2eTelemetry, AnEmptyLogPathTurnsTheLogOffAndAnUnopenableOneStopsTheStart) {
  TempDir dir;
  const auto before = fs::current_path();
  {
    ChatRig rig(Env{{"CHAT_PROXY_LOG_PATH", ""}});
    ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  }
  EXPECT_FALSE(fs::exists(before / "logs" / "chat_proxy.jsonl"));  // not the default path either
  auto blocker = dir.write("file", "x");
  dir.write("model_registry.json", "[]");
  auto r = run_proxy_command({"serve", "--port", "0", "--log-path", (blocker / "log.jsonl").string()},
                             {{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()}});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot open request log"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--log-path"), std::string::npos) << r.err;
}

// §10's metrics against a known sequence: 7 model requests of which 2 fail.
TEST(E2eTelemetry, MetricsCountAKnownSequenceAndPassPromtool) {
  ChatRig rig(Env{{"CHAT_PROXY_ENABLE_METRICS", "1"}});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  for (int i = 0; i < 2; ++i) {
    SseClient s(rig.port(), "/v1/chat/completions", chat_body(true).dump());
    s.rest();
  }
  EXPECT_EQ(rig.chat(chat_body(false, "nope")).status, 404);
  EXPECT_EQ(rig.chat(chat_body(false, "dead")).status, 502);

  auto prom = http_call(rig.port(), "GET", "/metrics");
  ASSERT_EQ(prom.status, 200);
  EXPECT_NE(prom.header("content-type").find("text/plain"), std::string::npos);
  expect_promtool_accepts(prom.body);
  auto samples = parse_prometheus(prom.body);
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total", {{"route", "/v1/chat/completions"}}), 7);
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total", {{"route", "/v1/chat/completions"}, {"status", "200"}}), 5);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total", {}), 2);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total", {{"code", "err_model_not_found"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total", {{"code", "err_backend_unavailable"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_count", {}), 7);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_bucket", {{"le", "+Inf"}}), 7);
  expect_cumulative_buckets(samples, "imageworks_request_duration_seconds_bucket");
  EXPECT_EQ(sum_samples(samples, "imageworks_time_to_first_token_seconds_count", {}), 2);
  EXPECT_EQ(sum_samples(samples, "imageworks_tokens_total", {{"kind", "completion"}}), 5 * 3);
  EXPECT_EQ(sum_samples(samples, "imageworks_gateway_overhead_seconds_count", {}), 7);
  EXPECT_EQ(sum_samples(samples, "imageworks_active_streams", {}), 0);
  EXPECT_EQ(sum_samples(samples, "imageworks_log_dropped_total", {}), 0);

  auto j = json::parse(http_call(rig.port(), "GET", "/v1/metrics").body);
  EXPECT_EQ(j["overall"]["requests"], 7);
  EXPECT_EQ(j["overall"]["errors"], 2);
  EXPECT_EQ(j["overall"]["errors_by_code"]["err_model_not_found"], 1);
  EXPECT_EQ(j["models"]["Fake Chat 7b"]["requests"], 5);
  for (const char* p : {"p50", "p95", "p99"}) EXPECT_TRUE(j["overall"]["latency_ms"][p].is_number()) << p;
  EXPECT_EQ(j["window_s"], 300);
}

// A request that waited for a switch says so in its line; the switch is counted by from/to.
TEST(E2eTelemetry, SwitchesAreCountedAndTheWaitingRequestLogsSwitchMs) {
  TempDir logs;
  const fs::path log = logs.path() / "chat_proxy.jsonl";
  GpuRig rig({{"vllm-a", {"--fake-load-ms", "300"}}, {"vllm-b", {}}},
             {{"CHAT_PROXY_ENABLE_METRICS", "1"}, {"CHAT_PROXY_LOG_PATH", log.string()}});
  ASSERT_EQ(rig.chat("vllm-a", false, with_id("cold")).status, 200);
  ASSERT_EQ(rig.chat("vllm-a", false, with_id("warm")).status, 200);
  ASSERT_EQ(rig.chat("llama", false, with_id("to-ollama")).status, 200);
  auto samples = parse_prometheus(http_call(rig.port(), "GET", "/metrics").body);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switches_total", {{"from", "nothing"}, {"to", "vllm-a"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switches_total", {{"from", "vllm-a"}, {"to", "ollama"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_count", {}), 2);
  EXPECT_GE(sum_samples(samples, "imageworks_model_switch_duration_seconds_sum", {}), 0.3);  // the fake's load time
  EXPECT_EQ(sum_samples(samples, "imageworks_switch_queue_depth", {}), 0);
  auto by_id = index_by_request_id(wait_for_log_lines(log, 4));
  ASSERT_TRUE(by_id["cold"]["switch_ms"].is_number()) << by_id["cold"].dump();
  EXPECT_GE(by_id["cold"]["switch_ms"].get<double>(), 300.0);
  EXPECT_LE(by_id["cold"]["switch_ms"].get<double>(), by_id["cold"]["latency_ms"].get<double>());
  EXPECT_TRUE(by_id["warm"]["switch_ms"].is_null());
  EXPECT_EQ(by_id["to-ollama"]["backend"], "ollama");
  EXPECT_TRUE(by_id["to-ollama"]["switch_ms"].is_number());
}

TEST(E2eTelemetry, MetricsRoutesAre404UnlessEnabled) {
  ChatRig rig;
  expect_error(http_call(rig.port(), "GET", "/metrics"), 404, "err_not_found");
  expect_error(http_call(rig.port(), "GET", "/v1/metrics"), 404, "err_not_found");
}

}  // namespace
}  // namespace imageworks::test
