#pragma once
// Telemetry (§10): the JSONL request log and the metrics, both fed from RequestRecords.
//
// JsonlLogger: append() is called by the event-loop threads and never touches the file:
// lines go into a buffer of the calling thread (its own mutex, uncontended but for the
// writer's swap) and a dedicated writer thread writes them in batches, rotating at
// max_bytes and keeping keep_files rotated files (path.1 newest … path.N). A line is never
// split, lost to rotation or written twice; when the buffered bytes pass queue_limit_bytes,
// append() drops the line (never blocks) and counts it. The destructor writes what is queued.
//
// Metrics: counted per calling thread (a shard each, merged when scraped: no shared atomic
// on the hot path): cumulative counters and histograms for Prometheus, and a rolling window
// of `window` for the JSON view (p50/p95/p99, errors by code, tokens/s).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "imageworks/request_record.hpp"

namespace imageworks {

struct JsonlLogOptions {
  std::filesystem::path path;  // directories are created
  std::uint64_t max_bytes = 50000000;
  int keep_files = 5;                                   // 0: the full file is discarded at rotation
  std::size_t queue_limit_bytes = 16u << 20;            // per calling thread
  std::chrono::milliseconds flush_interval{200};        // idle lines reach the file this soon
};

class JsonlLogger {
 public:
  // Opens (appends to) the file; throws std::runtime_error naming the path and the reason.
  explicit JsonlLogger(JsonlLogOptions opts);
  ~JsonlLogger();  // writes everything appended, then closes
  JsonlLogger(const JsonlLogger&) = delete;
  JsonlLogger& operator=(const JsonlLogger&) = delete;

  // One complete line, ending in '\n'. False when it was dropped (queue full).
  bool append(std::string_view line);
  // Blocks until every line appended before the call is written (tests, shutdown).
  void flush();
  std::uint64_t dropped() const;  // lines dropped: queue full or a failed write
  const std::filesystem::path& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The JSONL line of a record (§10 keys, in order; messages/reply when has_prompts), with
// the trailing '\n', appended to `out`.
void append_log_line(const RequestRecord& r, std::string& out);

class Metrics {
 public:
  explicit Metrics(std::chrono::seconds window);
  // Tests: the rolling window and the uptime follow `clock` instead of steady_clock.
  Metrics(std::chrono::seconds window, std::function<std::chrono::steady_clock::time_point()> clock);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // On the calling thread's shard.
  void observe(const RequestRecord& r);
  void stream_started();
  void stream_ended();
  // From any thread (the GPU coordinator's); rare.
  void observe_switch(std::string_view from, std::string_view to, double seconds, bool ok);

  // Values owned elsewhere, read at scrape time.
  struct Gauges {
    std::int64_t switch_queue_depth = 0;
    std::uint64_t log_dropped = 0;
    std::uint64_t fd_exhaustion = 0;  // accept/connect failures for want of descriptors
  };
  std::string prometheus(const Gauges& g) const;  // text exposition format 0.0.4
  nlohmann::json json(const Gauges& g) const;     // the /v1/metrics document

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imageworks
