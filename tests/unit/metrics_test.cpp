// Metrics: the record → metric mapping (§10), Prometheus text that promtool accepts, the
// rolling window on a test clock, and window percentiles against an exact oracle.
// Threads, streams, switches and the cardinality cap: metrics_threads_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "imageworks/telemetry.hpp"
#include "metrics_rig.hpp"
#include "telemetry/metrics_snapshot.hpp"

namespace imageworks {
namespace {

using namespace std::chrono_literals;
using test::model_request;
using test::parse_prometheus;
using test::sum_samples;

double rel_error(double got, double want) { return std::abs(got - want) / want; }

double exact_percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(p * v.size() - 1e-9));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

// The sequence: 7 requests for "m", two of them errors.
TEST(MetricsKnownSequence, PrometheusAndJsonAgree) {
  Metrics metrics(300s);
  const std::vector<double> latencies{3, 7, 20, 60, 150, 700, 4000};
  for (std::size_t i = 0; i < latencies.size(); ++i) {
    auto r = model_request("m", latencies[i]);
    if (i == 3) r.status = 502, r.error_code = "err_backend_unavailable";
    if (i == 5) r.status = 404, r.error_code = "err_model_not_found";
    metrics.observe(r);
  }
  auto samples = parse_prometheus(metrics.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total"), 7);
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total", {{"status", "200"}, {"route", "/v1/chat/completions"}}), 5);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total"), 2);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total", {{"code", "err_model_not_found"}}), 1);

  const std::vector<std::pair<std::string, double>> buckets{
      {"0.005", 1}, {"0.01", 2}, {"0.025", 3}, {"0.05", 3}, {"0.1", 4}, {"0.25", 5}, {"0.5", 5},
      {"1", 6}, {"2.5", 6}, {"5", 7}, {"10", 7}, {"30", 7}, {"60", 7}, {"120", 7}, {"300", 7},
      {"600", 7}, {"+Inf", 7}};
  double previous = 0;
  std::size_t seen = 0;
  for (const auto& s : samples) {
    if (s.name != "imageworks_request_duration_seconds_bucket") continue;
    ASSERT_LT(seen, buckets.size());
    EXPECT_EQ(s.labels.at("model"), "m");
    EXPECT_EQ(s.labels.at("le"), buckets[seen].first);
    EXPECT_EQ(s.value, buckets[seen].second) << "le=" << buckets[seen].first;
    EXPECT_GE(s.value, previous);
    previous = s.value;
    ++seen;
  }
  EXPECT_EQ(seen, buckets.size());
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_count"), 7);
  EXPECT_NEAR(sum_samples(samples, "imageworks_request_duration_seconds_sum"), 4.94, 1e-9);
  EXPECT_EQ(sum_samples(samples, "imageworks_gateway_overhead_seconds_count"), 7);

  auto doc = metrics.json({});
  const auto& overall = doc["overall"];
  EXPECT_EQ(overall["requests"], 7);
  EXPECT_EQ(overall["errors"], 2);
  EXPECT_EQ(overall["errors_by_code"],
            (nlohmann::json{{"err_backend_unavailable", 1}, {"err_model_not_found", 1}}));
  EXPECT_LE(rel_error(overall["latency_ms"]["p50"], exact_percentile(latencies, 0.5)), 0.045);
  EXPECT_LE(rel_error(overall["latency_ms"]["p95"], exact_percentile(latencies, 0.95)), 0.045);
  EXPECT_LE(rel_error(overall["latency_ms"]["p99"], exact_percentile(latencies, 0.99)), 0.045);
  EXPECT_TRUE(overall["ttft_ms"]["p50"].is_null());
  EXPECT_EQ(doc["models"]["m"]["requests"], 7);
  EXPECT_EQ(doc["totals"], (nlohmann::json{{"requests", 7}, {"errors", 2}}));
}

struct MappingCase {
  const char* name;
  std::string route, model_requested;
  int status;
  std::string error_code;
  std::string route_label;
  std::string error_label;  // "" when the record is no error
  bool timed;               // in the duration histogram
};

const std::vector<MappingCase> kMappingCases = {
    {"chat", "/v1/chat/completions", "m", 200, "", "/v1/chat/completions", "", true},
    {"model by id", "/v1/models/llama 8b", "", 200, "", "/v1/models/{id}", "", false},
    {"unknown path", "/wp-login.php", "", 404, "", "other", "http_404", false},
    {"health", "/v1/health", "", 200, "", "/v1/health", "", false},
    {"scrape", "/metrics", "", 200, "", "/metrics", "", false},
    {"client left", "/v1/chat/completions", "m", 499, "err_client_closed", "/v1/chat/completions", "err_client_closed", true},
    {"error code with 200", "/v1/completions", "m", 200, "err_backend_error", "/v1/completions", "err_backend_error", true},
    {"bare 5xx", "/v1/embeddings", "m", 503, "", "/v1/embeddings", "http_503", true},
    {"status page", "/", "", 200, "", "/", "", false},
};

TEST(MetricsMapping, RecordToLabels) {
  for (const auto& c : kMappingCases) {
    SCOPED_TRACE(c.name);
    Metrics metrics(300s);
    RequestRecord r;
    r.route = c.route;
    r.model_requested = c.model_requested;
    r.model_resolved = c.model_requested;
    r.status = c.status;
    r.error_code = c.error_code;
    r.latency_ms = 12;
    metrics.observe(r);
    auto samples = parse_prometheus(metrics.prometheus({}));
    EXPECT_EQ(sum_samples(samples, "imageworks_requests_total",
                     {{"route", c.route_label}, {"status", std::to_string(c.status)}}), 1);
    EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total"), c.error_label.empty() ? 0 : 1);
    if (!c.error_label.empty()) {
      EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total", {{"code", c.error_label}}), 1);
    }
    EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_count"), c.timed ? 1 : 0);
    EXPECT_EQ(sum_samples(samples, "imageworks_gateway_overhead_seconds_count"), c.timed ? 1 : 0);
    auto doc = metrics.json({});
    // The window counts model traffic only; the totals count everything.
    EXPECT_EQ(doc["overall"]["requests"], c.model_requested.empty() ? 0 : 1);
    EXPECT_EQ(doc["totals"]["requests"], 1);
    EXPECT_EQ(doc["models"].size(), c.model_requested.empty() ? 0u : 1u);
  }
}

TEST(MetricsMapping, TokensTtftAndDecodeSpeed) {
  test::FakeClock clock;
  Metrics metrics(300s, clock.fn());
  clock.advance(10s);  // a fresh daemon: rates over 10 s, not the 300 s window
  auto r = model_request("m", 2000);
  r.stream = true;
  r.ttft_ms = 500;
  r.prompt_tokens = 100;
  r.completion_tokens = 30;
  metrics.observe(r);
  r.ttft_ms.reset();  // a whole reply: no decode speed from it
  r.stream = false;
  metrics.observe(r);
  auto samples = parse_prometheus(metrics.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_tokens_total", {{"model", "m"}, {"kind", "prompt"}}), 200);
  EXPECT_EQ(sum_samples(samples, "imageworks_tokens_total", {{"model", "m"}, {"kind", "completion"}}), 60);
  EXPECT_EQ(sum_samples(samples, "imageworks_time_to_first_token_seconds_count"), 1);
  EXPECT_DOUBLE_EQ(sum_samples(samples, "imageworks_time_to_first_token_seconds_sum"), 0.5);
  auto m = metrics.json({})["models"]["m"];
  EXPECT_EQ(m["tokens"], (nlohmann::json{{"prompt", 200}, {"completion", 60}}));
  EXPECT_DOUBLE_EQ(m["tokens_per_s"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(m["requests_per_s"].get<double>(), 0.2);
  EXPECT_DOUBLE_EQ(m["decode_tokens_per_s"].get<double>(), 20.0);  // 30 tokens in 1.5 s
  EXPECT_DOUBLE_EQ(m["ttft_ms"]["p99"].get<double>(), 500);
}

// More models than the shard's cache of recent series, with labels changing under one
// model and slots turning over: every series still counts exactly (an oracle map).
TEST(MetricsMapping, InterleavedLabelsCountExactly) {
  test::FakeClock clock;
  Metrics metrics(60s, clock.fn());
  std::map<std::pair<std::string, std::string>, int> by_model_status;
  std::map<std::string, int> window_by_model;
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    std::string model = "model-" + std::to_string(rng() % 7);
    auto r = model_request(model, 10, rng() % 5 ? 200 : 502);
    r.backend = rng() % 2 ? "vllm" : "ollama";
    metrics.observe(r);
    ++by_model_status[{model, std::to_string(r.status)}];
    if (i >= 2000) ++window_by_model[model];
    if (i % 100 == 99) clock.advance(1500ms);  // 20 requests per 2 s slot on average
    if (i == 1999) clock.advance(120s);         // the first 2000 leave the window
  }
  auto samples = parse_prometheus(metrics.prometheus({}));
  for (const auto& [key, n] : by_model_status)
    EXPECT_EQ(sum_samples(samples, "imageworks_requests_total", {{"model", key.first}, {"status", key.second}}), n)
        << key.first << " " << key.second;
  auto doc = metrics.json({});
  for (const auto& [model, n] : window_by_model) EXPECT_EQ(doc["models"][model]["requests"], n) << model;
  EXPECT_EQ(doc["overall"]["requests"], 1000);
}

TEST(MetricsPromtool, AcceptsEmptyManyAndOddLabels) {
  if (!test::have_promtool()) GTEST_SKIP() << "/usr/bin/promtool not installed";
  Metrics empty(300s);
  Metrics many(300s);
  for (int i = 0; i < 50; ++i) {
    auto r = model_request("model-" + std::to_string(i), 10.0 * i, i % 7 ? 200 : 502,
                           i % 7 ? "" : "err_backend_unavailable");
    r.ttft_ms = 3.0 * i;
    r.prompt_tokens = i;
    r.completion_tokens = 2 * i;
    many.observe(r);
    many.observe_switch("model-" + std::to_string(i), "model-" + std::to_string(i + 1), i, i % 3);
  }
  many.stream_started();
  Metrics odd(300s);
  auto r = model_request("a\"quoted\" \\back\\slash\nnew line {}=,", 5);
  r.backend = "be\"\\\n";
  r.error_code = "err_\"x\"";
  r.status = 500;
  odd.observe(r);
  odd.observe_switch("from \"a\"\n", "to \\b", 3, false);
  auto unknown = model_request("", 1, 404, "err_model_not_found");
  unknown.model_requested = "nope";  // resolved to nothing: model=""
  odd.observe(unknown);
  RequestRecord health;  // no model, no backend: model="" backend=""
  health.route = "/v1/health";
  health.status = 200;
  odd.observe(health);

  for (Metrics* m : {&empty, &many, &odd}) {
    std::string text = m->prometheus({.switch_queue_depth = 2, .log_dropped = 5});
    auto [code, printed] = test::promtool_check(text);
    EXPECT_EQ(code, 0) << printed << "\n" << text;
    EXPECT_EQ(printed, "") << text;
  }
  std::string text = empty.prometheus({});
  EXPECT_NE(text.find("# TYPE imageworks_requests_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("\nimageworks_log_dropped_total 0\n"), std::string::npos);
  auto samples = parse_prometheus(odd.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total",
                   {{"model", "a\"quoted\" \\back\\slash\nnew line {}=,"}, {"backend", "be\"\\\n"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_failures_total", {{"from", "from \"a\"\n"}}), 1);
}

// W = 60 s: slots of 2 s; a ring of 32 slots.
TEST(MetricsWindow, OldSamplesLeaveTheWindowButNotTheCounters) {
  test::FakeClock clock;
  Metrics metrics(60s, clock.fn());
  metrics.observe(model_request("a", 10, 500, "err_backend_error"));
  clock.advance(30s);
  metrics.observe(model_request("b", 20));
  auto doc = metrics.json({});
  EXPECT_EQ(doc["overall"]["requests"], 2);
  EXPECT_DOUBLE_EQ(doc["overall"]["requests_per_s"].get<double>(), 2.0 / 30);
  clock.advance(31s);  // t = 61 s: the slot of t = 0 started more than 60 s ago
  doc = metrics.json({});
  EXPECT_EQ(doc["window_s"], 60);
  EXPECT_EQ(doc["overall"]["requests"], 1);
  EXPECT_EQ(doc["overall"]["errors"], 0);
  EXPECT_EQ(doc["overall"]["errors_by_code"], nlohmann::json::object());
  EXPECT_FALSE(doc["models"].contains("a"));
  EXPECT_DOUBLE_EQ(doc["overall"]["latency_ms"]["p50"].get<double>(), 20);
  EXPECT_EQ(doc["totals"], (nlohmann::json{{"requests", 2}, {"errors", 1}}));
  auto samples = parse_prometheus(metrics.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total"), 2);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total", {{"model", "a"}}), 1);
}

TEST(MetricsWindow, ReusedSlotsStartEmpty) {
  test::FakeClock clock;
  Metrics metrics(60s, clock.fn());
  // Four turns of the ring, one request per second: the window always holds the last
  // 30 slots' worth (the slots that started within 60 s), never a stale turn's counts.
  for (int second = 0; second < 4 * 64; ++second) {
    metrics.observe(model_request("m", 5));
    if (second >= 60) {
      auto doc = metrics.json({});
      // Slots of 2 s that started at or after now − 60 s: the requests of [now − 60, now]
      // at an even second, of [now − 59, now] at an odd one.
      int in_window = second % 2 == 0 ? 61 : 60;
      ASSERT_EQ(doc["overall"]["requests"], in_window) << "t=" << second;
      ASSERT_EQ(doc["models"]["m"]["requests"], in_window) << "t=" << second;
    }
    clock.advance(1s);
  }
  EXPECT_EQ(metrics.json({})["totals"]["requests"], 4 * 64);
}

TEST(MetricsPercentiles, WithinTheBucketErrorOfAnExactOracle) {
  for (unsigned seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> log10_ms(-1, 5);  // 0.1 ms … 100 s
    Metrics metrics(300s);
    std::vector<double> latencies, ttfts;
    telemetry::LogHistogram<std::uint64_t> direct;
    for (int i = 0; i < 5000; ++i) {
      auto r = model_request("m", std::pow(10, log10_ms(rng)));
      r.ttft_ms = r.latency_ms * 0.3;
      latencies.push_back(r.latency_ms);
      ttfts.push_back(*r.ttft_ms);
      direct.observe(r.latency_ms * 1000);
      metrics.observe(r);
    }
    auto doc = metrics.json({});
    for (auto [p, name] : {std::pair{0.5, "p50"}, {0.95, "p95"}, {0.99, "p99"}}) {
      EXPECT_LE(rel_error(doc["overall"]["latency_ms"][name], exact_percentile(latencies, p)), 0.06) << name;
      EXPECT_LE(rel_error(doc["overall"]["ttft_ms"][name], exact_percentile(ttfts, p)), 0.06) << name;
    }
    for (double p : {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1.0})
      EXPECT_LE(rel_error(*telemetry::percentile_ms(direct, p), exact_percentile(latencies, p)), 0.045) << p;
    EXPECT_DOUBLE_EQ(*telemetry::percentile_ms(direct, 1.0), *std::max_element(latencies.begin(), latencies.end()));
  }
}

}  // namespace
}  // namespace imageworks
