// The two renderings of merged metrics (metrics_snapshot.hpp): Prometheus text exposition
// 0.0.4 for /metrics (must pass `promtool check metrics`, lint included) and the JSON
// document of /v1/metrics.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <span>

#include "telemetry/metrics_snapshot.hpp"

namespace imageworks::telemetry {

namespace {

using Label = std::pair<std::string_view, std::string_view>;

void append_escaped(std::string& out, std::string_view v) {
  for (char ch : v) {
    if (ch == '\\') out += "\\\\";
    else if (ch == '"') out += "\\\"";
    else if (ch == '\n') out += "\\n";
    else out += ch;
  }
}

template <class Number>
void append_number(std::string& out, Number v) {
  char buf[32];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

// One HELP and one TYPE per family, printed even before it has a series.
void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

template <class Number>
void sample(std::string& out, std::string_view name, std::string_view suffix,
            std::span<const Label> labels, Number value) {
  out.append(name).append(suffix);
  if (!labels.empty()) {
    out += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i) out += ',';
      out.append(labels[i].first).append("=\"");
      append_escaped(out, labels[i].second);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  append_number(out, value);
  out += '\n';
}

// Cumulative buckets (le = each bound, then +Inf), then _sum and _count (= +Inf).
template <std::size_t N>
void histogram(std::string& out, std::string_view name, std::vector<Label> labels,
               const FixedHistogram<N>& h, const std::array<double, N>& bounds) {
  labels.emplace_back("le", "");
  std::uint64_t cumulative = 0;
  char le[32];
  for (std::size_t i = 0; i < N; ++i) {
    cumulative += h.counts[i];
    labels.back().second = {le, std::to_chars(le, le + sizeof le, bounds[i], std::chars_format::fixed).ptr};
    sample(out, name, "_bucket", labels, cumulative);
  }
  cumulative += h.counts[N];
  labels.back().second = "+Inf";
  sample(out, name, "_bucket", labels, cumulative);
  labels.pop_back();
  sample(out, name, "_sum", labels, h.sum);
  sample(out, name, "_count", labels, cumulative);
}

void request_families(std::string& out, const CumulativeView& v) {
  family(out, "imageworks_requests_total", "counter",
         "Requests answered, by route, resolved model, backend and HTTP status.");
  for (const auto& [l, n] : v.requests) {
    Label labels[] = {{"route", l[0]}, {"model", l[1]}, {"backend", l[2]}, {"status", l[3]}};
    sample(out, "imageworks_requests_total", "", labels, n);
  }
  family(out, "imageworks_request_errors_total", "counter",
         "Requests that failed (HTTP status >= 400 or an error code), by model and error code.");
  for (const auto& [l, n] : v.errors) {
    Label labels[] = {{"model", l[0]}, {"code", l[1]}};
    sample(out, "imageworks_request_errors_total", "", labels, n);
  }
  family(out, "imageworks_request_duration_seconds", "histogram",
         "Latency of model requests, from the request read to the last byte written.");
  for (const auto& [model, m] : v.models)
    if (m.duration.count()) histogram(out, "imageworks_request_duration_seconds", {{"model", model}}, m.duration, kLatencyBounds);
  family(out, "imageworks_time_to_first_token_seconds", "histogram",
         "Streams: time from the request read to the first event relayed.");
  for (const auto& [model, m] : v.models)
    if (m.ttft.count()) histogram(out, "imageworks_time_to_first_token_seconds", {{"model", model}}, m.ttft, kLatencyBounds);
  family(out, "imageworks_gateway_overhead_seconds", "histogram",
         "Time of model requests spent neither waiting on the backend nor for the GPU.");
  histogram(out, "imageworks_gateway_overhead_seconds", {}, v.overhead, kOverheadBounds);
  family(out, "imageworks_tokens_total", "counter", "Tokens reported by the backends' usage, by model and kind.");
  for (const auto& [model, m] : v.models) {
    if (m.completion_seen) {
      Label labels[] = {{"model", model}, {"kind", "completion"}};
      sample(out, "imageworks_tokens_total", "", labels, m.completion_tokens);
    }
    if (m.prompt_seen) {
      Label labels[] = {{"model", model}, {"kind", "prompt"}};
      sample(out, "imageworks_tokens_total", "", labels, m.prompt_tokens);
    }
  }
}

void switch_families(std::string& out, const SwitchView& v) {
  family(out, "imageworks_model_switches_total", "counter",
         "Model switches on the GPU (failed ones included), by the model given up and the one loaded.");
  for (const auto& [l, p] : v.pairs) {
    Label labels[] = {{"from", l[0]}, {"to", l[1]}};
    sample(out, "imageworks_model_switches_total", "", labels, p.switches);
  }
  family(out, "imageworks_model_switch_failures_total", "counter",
         "Model switches that failed, by the model given up and the one that was to be loaded.");
  for (const auto& [l, p] : v.pairs) {
    if (!p.failures) continue;
    Label labels[] = {{"from", l[0]}, {"to", l[1]}};
    sample(out, "imageworks_model_switch_failures_total", "", labels, p.failures);
  }
  family(out, "imageworks_model_switch_duration_seconds", "histogram",
         "Duration of model switches, failed ones included.");
  histogram(out, "imageworks_model_switch_duration_seconds", {}, v.duration, kSwitchBounds);
}

void unlabelled(std::string& out, std::string_view name, std::string_view type, std::string_view help, auto value) {
  family(out, name, type, help);
  sample(out, name, "", {}, value);
}

std::optional<double> exact_percentile(std::vector<double> values, double p) {
  if (values.empty()) return std::nullopt;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(std::ceil(p * values.size() - 1e-9));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

nlohmann::json value_or_null(std::optional<double> v) {
  return v ? nlohmann::json(std::round(*v * 1000) / 1000) : nlohmann::json(nullptr);
}

constexpr std::array<std::pair<double, const char*>, 3> kPercentiles{
    {{0.50, "p50"}, {0.95, "p95"}, {0.99, "p99"}}};

nlohmann::json percentiles(const LogHistogram<std::uint64_t>& h) {
  nlohmann::json o = nlohmann::json::object();
  for (auto [p, name] : kPercentiles) o[name] = value_or_null(percentile_ms(h, p));
  return o;
}

nlohmann::json window_json(const WindowTotals& w, double effective_s) {
  nlohmann::json o = nlohmann::json::object();
  o["requests"] = w.requests;
  o["requests_per_s"] = w.requests / effective_s;
  o["errors"] = w.errors;
  o["error_rate"] = w.requests ? static_cast<double>(w.errors) / w.requests : 0.0;
  nlohmann::json codes = nlohmann::json::object();
  for (const auto& [code, n] : w.errors_by_code) codes[code] = n;
  o["errors_by_code"] = std::move(codes);
  o["latency_ms"] = percentiles(w.latency_us);
  o["ttft_ms"] = percentiles(w.ttft_us);
  o["tokens"] = {{"prompt", w.prompt_tokens}, {"completion", w.completion_tokens}};
  o["tokens_per_s"] = w.completion_tokens / effective_s;
  o["decode_tokens_per_s"] =
      w.decode_seconds > 0 ? nlohmann::json(w.decode_tokens / w.decode_seconds) : nlohmann::json(nullptr);
  return o;
}

nlohmann::json switches_json(const SwitchView& v) {
  nlohmann::json durations = nlohmann::json::object();
  for (auto [p, name] : kPercentiles) durations[name] = value_or_null(exact_percentile(v.recent_seconds, p));
  return {{"total", v.total}, {"failed", v.failed}, {"duration_s", std::move(durations)}};
}

}  // namespace

std::optional<double> percentile_ms(const LogHistogram<std::uint64_t>& h, double p) {
  if (!h.n) return std::nullopt;
  auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(p * h.n - 1e-9)));
  if (rank == 1) return h.min_us / 1000;  // the extremes are kept exactly
  if (rank >= h.n) return h.max_us / 1000;
  std::uint64_t seen = 0;
  for (int i = 0; i < loghist::kBuckets; ++i) {
    seen += h.counts[i];
    if (seen >= rank) return std::clamp(loghist::middle_of(i), h.min_us, h.max_us) / 1000;
  }
  return h.max_us / 1000;
}

std::string render_prometheus(const CumulativeView& v, const Metrics::Gauges& g) {
  std::string out;
  out.reserve(4096 + 160 * (v.requests.size() + v.errors.size()) + 2400 * v.models.size());
  request_families(out, v);
  switch_families(out, v.switches);
  unlabelled(out, "imageworks_active_streams", "gauge", "Streams being relayed now.", v.active_streams);
  unlabelled(out, "imageworks_switch_queue_depth", "gauge", "Requests waiting for a model switch.", g.switch_queue_depth);
  unlabelled(out, "imageworks_log_dropped_total", "counter",
        "Request log lines dropped (queue full or a failed write).", g.log_dropped);
  unlabelled(out, "imageworks_fd_exhaustion_total", "counter",
        "Accepts and upstream connects that failed for want of file descriptors (answered 503).", g.fd_exhaustion);
  unlabelled(out, "imageworks_uptime_seconds", "gauge", "Seconds since the metrics started.", v.uptime_s);
  return out;
}

nlohmann::json render_json(const WindowView& v, const Metrics::Gauges& g) {
  nlohmann::json doc = nlohmann::json::object();
  doc["window_s"] = static_cast<std::int64_t>(v.window_s);
  doc["uptime_s"] = v.uptime_s;
  doc["overall"] = window_json(v.overall, v.effective_s);
  nlohmann::json models = nlohmann::json::object();
  for (const auto& [model, w] : v.models) models[model] = window_json(w, v.effective_s);
  doc["models"] = std::move(models);
  doc["totals"] = {{"requests", v.total_requests}, {"errors", v.total_errors}};
  doc["active_streams"] = v.active_streams;
  doc["switch_queue_depth"] = g.switch_queue_depth;
  doc["log_dropped"] = g.log_dropped;
  doc["fd_exhaustion"] = g.fd_exhaustion;
  doc["switches"] = switches_json(v.switches);
  return doc;
}

}  // namespace imageworks::telemetry
