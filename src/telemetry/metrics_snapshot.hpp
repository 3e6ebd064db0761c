#pragma once
// Internal to Metrics: the shards merged at scrape time (metrics.cpp), and the two renderings
// of them (metrics_export.cpp) — plain functions of plain data, so the formats are testable
// without threads or clocks.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/telemetry.hpp"
#include "telemetry/metrics_shard.hpp"

namespace imageworks::telemetry {

struct SwitchView {
  struct Pair {
    std::uint64_t switches = 0, failures = 0;
  };
  std::map<std::array<std::string, 2>, Pair> pairs;  // from, to
  SwitchHistogram duration;
  std::uint64_t total = 0, failed = 0;
  std::vector<double> recent_seconds;  // the last ≤ 1000 durations, any order
};

// Everything since start, sorted by labels (the exposition is deterministic).
struct CumulativeView {
  std::map<std::array<std::string, 4>, std::uint64_t> requests;  // route, model, backend, status
  std::map<std::array<std::string, 2>, std::uint64_t> errors;    // model, code
  std::map<std::string, ModelSeries> models;
  OverheadHistogram overhead;
  std::int64_t active_streams = 0;
  double uptime_s = 0;
  SwitchView switches;
};

// The rolling window plus the few since-start numbers the JSON document carries.
struct WindowView {
  double window_s = 0;
  double effective_s = 1;  // min(window, uptime), at least 1 s: the rates' denominator
  double uptime_s = 0;
  WindowTotals overall;
  std::map<std::string, WindowTotals> models;
  std::uint64_t total_requests = 0, total_errors = 0;
  std::int64_t active_streams = 0;
  SwitchView switches;
};

std::string render_prometheus(const CumulativeView& v, const Metrics::Gauges& g);
nlohmann::json render_json(const WindowView& v, const Metrics::Gauges& g);

// Nearest-rank percentile (the smallest value with at least p·n samples at or below it),
// in milliseconds, within ≈ 4.4% (a bucket's middle clamped to min and max; the first and
// last rank are exact); nullopt without samples.
std::optional<double> percentile_ms(const LogHistogram<std::uint64_t>& h, double p);

}  // namespace imageworks::telemetry
