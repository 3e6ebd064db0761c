// Metrics across threads: per-thread shards merge to exact totals (also while a scraper
// runs: the sanitizer builds check the locking), the streams gauge, model switches, the
// cardinality cap, and shard lookup across several Metrics on one thread.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "imageworks/telemetry.hpp"
#include "metrics_rig.hpp"

namespace imageworks {
namespace {

using namespace std::chrono_literals;
using test::model_request;
using test::parse_prometheus;
using test::sum_samples;

constexpr int kThreads = 8;
constexpr int kPerThread = 10000;

void observe_from_threads(Metrics& metrics) {
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&metrics, t] {
      auto r = model_request("model-" + std::to_string(t % 3), 1 + t);
      for (int i = 0; i < kPerThread; ++i) {
        r.status = i % 10 == 0 ? 502 : 200;
        r.error_code = i % 10 == 0 ? "err_backend_unavailable" : "";
        r.completion_tokens = 2;
        metrics.observe(r);
      }
    });
  for (auto& t : threads) t.join();
}

void expect_exact_totals(const Metrics& metrics) {
  constexpr int kTotal = kThreads * kPerThread;
  auto samples = parse_prometheus(metrics.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total"), kTotal);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total"), kTotal / 10);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_count"), kTotal);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_bucket", {{"le", "+Inf"}}), kTotal);
  EXPECT_EQ(sum_samples(samples, "imageworks_tokens_total", {{"kind", "completion"}}), 2 * kTotal);
  auto doc = metrics.json({});
  EXPECT_EQ(doc["overall"]["requests"], kTotal);
  EXPECT_EQ(doc["overall"]["errors"], kTotal / 10);
  EXPECT_EQ(doc["overall"]["errors_by_code"]["err_backend_unavailable"], kTotal / 10);
  EXPECT_EQ(doc["totals"]["requests"], kTotal);
  std::uint64_t by_model = 0;
  for (const auto& [name, m] : doc["models"].items()) by_model += m["requests"].get<std::uint64_t>();
  EXPECT_EQ(by_model, kTotal);
}

TEST(MetricsThreads, ShardsMergeToExactTotals) {
  Metrics metrics(300s);
  observe_from_threads(metrics);
  expect_exact_totals(metrics);
}

TEST(MetricsThreads, ScrapingWhileObserving) {
  Metrics metrics(300s);
  std::atomic<bool> done{false};
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    while (!done) {
      auto samples = parse_prometheus(metrics.prometheus({}));
      EXPECT_LE(sum_samples(samples, "imageworks_requests_total"), kThreads * kPerThread);
      EXPECT_LE(metrics.json({})["overall"]["requests"].get<int>(), kThreads * kPerThread);
      ++scrapes;
    }
  });
  observe_from_threads(metrics);
  done = true;
  scraper.join();
  EXPECT_GT(scrapes.load(), 0);
  expect_exact_totals(metrics);
}

TEST(MetricsThreads, ActiveStreamsAcrossThreads) {
  Metrics metrics(300s);
  // Streams start on some threads and end on others: each shard's own difference may be
  // negative, the sum is right.
  std::thread([&] { for (int i = 0; i < 5; ++i) metrics.stream_started(); }).join();
  std::thread([&] { for (int i = 0; i < 3; ++i) metrics.stream_ended(); }).join();
  metrics.stream_started();
  auto samples = parse_prometheus(metrics.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_active_streams"), 3);
  EXPECT_EQ(metrics.json({})["active_streams"], 3);
}

TEST(MetricsSwitches, CountersHistogramAndJson) {
  Metrics metrics(300s);
  metrics.observe_switch("", "qwen 7b", 12, true);  // the first load: nothing to switch from
  metrics.observe_switch("qwen 7b", "llama 8b", 45, true);
  std::thread([&] { metrics.observe_switch("llama 8b", "qwen 7b", 700, false); }).join();
  auto samples = parse_prometheus(metrics.prometheus({.switch_queue_depth = 4, .log_dropped = 9}));
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switches_total"), 3);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switches_total", {{"from", "qwen 7b"}, {"to", "llama 8b"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_failures_total"), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_failures_total", {{"from", "llama 8b"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_bucket", {{"le", "30"}}), 1);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_bucket", {{"le", "60"}}), 2);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_bucket", {{"le", "600"}}), 2);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_bucket", {{"le", "1200"}}), 3);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_count"), 3);
  EXPECT_EQ(sum_samples(samples, "imageworks_model_switch_duration_seconds_sum"), 757);
  EXPECT_EQ(sum_samples(samples, "imageworks_switch_queue_depth"), 4);
  EXPECT_EQ(sum_samples(samples, "imageworks_log_dropped_total"), 9);
  auto doc = metrics.json({.switch_queue_depth = 4, .log_dropped = 9});
  EXPECT_EQ(doc["switches"]["total"], 3);
  EXPECT_EQ(doc["switches"]["failed"], 1);
  EXPECT_EQ(doc["switches"]["duration_s"], (nlohmann::json{{"p50", 45}, {"p95", 700}, {"p99", 700}}));
  EXPECT_EQ(doc["switch_queue_depth"], 4);
  EXPECT_EQ(doc["log_dropped"], 9);
}

TEST(MetricsCardinality, DistinctModelsAreCappedIntoOther) {
  Metrics metrics(300s);
  for (int i = 0; i < 1500; ++i) {
    auto r = model_request("model-" + std::to_string(i), 5, i % 2 ? 200 : 500);
    r.ttft_ms = 1;
    r.prompt_tokens = 1;
    metrics.observe(r);
  }
  auto samples = parse_prometheus(metrics.prometheus({}));
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total"), 1500);
  EXPECT_EQ(sum_samples(samples, "imageworks_requests_total", {{"model", "other"}}), 500);
  // 1000 series, then one "other" series per route and status (here 200 and 500).
  EXPECT_EQ(test::count_samples(samples, "imageworks_requests_total"), 1002u);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_errors_total"), 750);
  EXPECT_LE(test::count_samples(samples, "imageworks_request_errors_total"), 1001u);
  EXPECT_LE(test::count_samples(samples, "imageworks_request_duration_seconds_count"), 1001u);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_count"), 1500);
  EXPECT_EQ(sum_samples(samples, "imageworks_request_duration_seconds_count", {{"model", "other"}}), 500);
  EXPECT_LE(test::count_samples(samples, "imageworks_tokens_total"), 1001u);
  auto doc = metrics.json({});
  EXPECT_EQ(doc["overall"]["requests"], 1500);
  EXPECT_LE(doc["models"].size(), 1001u);
  EXPECT_EQ(doc["models"]["other"]["requests"], 500);
}

TEST(MetricsShardCache, ManyMetricsOnOneThreadAndAddressReuse) {
  // More Metrics than the thread's shard cache holds, fed round-robin.
  std::vector<std::unique_ptr<Metrics>> all;
  for (int i = 0; i < 7; ++i) all.push_back(std::make_unique<Metrics>(300s));
  for (int round = 0; round < 100; ++round)
    for (auto& m : all) m->observe(model_request("m", 1));
  for (auto& m : all) EXPECT_EQ(m->json({})["totals"]["requests"], 100);
  // A Metrics made where a destroyed one lived must not see its shard (ASan: no stale use).
  for (int i = 0; i < 20; ++i) {
    auto m = std::make_unique<Metrics>(300s);
    m->observe(model_request("m", 1));
    m->stream_started();
    EXPECT_EQ(m->json({})["totals"]["requests"], 1);
    EXPECT_EQ(m->json({})["active_streams"], 1);
  }
}

// Not a check: the hot path's cost, printed. Meaningful in a Release build only:
//   ./tests/unit_tests --gtest_also_run_disabled_tests --gtest_filter='MetricsBench*'
TEST(MetricsBench, DISABLED_NanosecondsPerObserve) {
  Metrics metrics(300s);
  auto r = model_request("qwen2.5 7b instruct (Q4 K M)", 123);
  r.stream = true;
  r.ttft_ms = 45;
  r.prompt_tokens = 321;
  r.completion_tokens = 87;
  constexpr int kWarm = 10000, kTimed = 2000000;
  for (int i = 0; i < kWarm; ++i) metrics.observe(r);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kTimed; ++i) {
    r.latency_ms = 100 + (i & 1023);
    metrics.observe(r);
  }
  std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - t0;
  std::printf("Metrics::observe: %.1f ns per call (one thread, warm shard)\n", elapsed.count() / kTimed);
}

}  // namespace
}  // namespace imageworks
