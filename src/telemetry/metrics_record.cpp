// Metrics' hot path: what one RequestRecord adds to the calling thread's shard — the
// record → label mapping of §10 (bounded routes, error codes, which records are timed),
// the cumulative series and the current window slot.
#include <charconv>
#include <initializer_list>

#include "telemetry/metrics_shard.hpp"

namespace imageworks::telemetry {

namespace {

constexpr std::array<std::string_view, 16> kRoutes{
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",   "/v1/models",
    "/v1/health",           "/v1/healthz",     "/v1/metrics",      "/metrics",
    "/v1/status",           "/",               "/v1/reload",       "/v1/admin/activate",
    "/v1/admin/deactivate", "/v1/admin/state", "/v1/autostart/status", "/v1/debug/registry"};

// Bounded: an unknown path (a scanner's) must not become a series.
std::string_view route_label(std::string_view route) {
  for (std::string_view r : kRoutes)
    if (r == route) return r;
  if (route.starts_with("/v1/models/")) return "/v1/models/{id}";
  return kOther;
}

// A length before each part keeps the key injective whatever bytes the labels hold.
void append_key_part(std::string& key, std::string_view part) {
  auto n = static_cast<std::uint32_t>(part.size());
  key.append(reinterpret_cast<const char*>(&n), sizeof n);
  key.append(part);
}
std::string& make_key(std::string& key, std::initializer_list<std::string_view> parts) {
  key.clear();
  for (auto part : parts) append_key_part(key, part);
  return key;
}

// What the metrics read off a record, computed once per observe.
struct Classified {
  std::string_view route, code;  // code: "" unless an error
  char status_text[12];
  std::size_t status_len = 0;
  bool error = false;
  bool model_traffic = false;  // model_requested set: latency and overhead are about a model
  std::string_view status() const { return {status_text, status_len}; }
};

void classify(const RequestRecord& r, std::string& code_buf, Classified& c) {
  c.route = route_label(r.route);
  c.status_len = static_cast<std::size_t>(
      std::to_chars(c.status_text, c.status_text + sizeof c.status_text, r.status).ptr - c.status_text);
  c.error = r.status >= 400 || !r.error_code.empty();
  c.model_traffic = !r.model_requested.empty();
  if (!c.error) return;
  if (!r.error_code.empty()) {
    c.code = r.error_code;
  } else {
    code_buf.assign("http_").append(c.status());
    c.code = code_buf;
  }
}

std::uint64_t tokens(std::int64_t n) { return n > 0 ? static_cast<std::uint64_t>(n) : 0; }

LabelledCount<4>& requests_series(Shard& s, RecentSeries& recent, const RequestRecord& r,
                                  const Classified& c) {
  if (recent.requests && recent.route == c.route && recent.status == r.status && recent.backend == r.backend)
    return *recent.requests;
  recent.requests = &find_or_add(
      s.requests, make_key(s.key, {c.route, r.model_resolved, r.backend, c.status()}),
      [&] { return std::string(make_key(s.key, {c.route, kOther, kOther, c.status()})); },
      [&](LabelledCount<4>& n, bool folded) {
        n.labels = {std::string(c.route), folded ? std::string(kOther) : r.model_resolved,
                    folded ? std::string(kOther) : r.backend, std::string(c.status())};
      });
  recent.route = c.route;
  recent.status = r.status;
  recent.backend = r.backend;
  return *recent.requests;
}

void count_cumulative(Shard& s, RecentSeries& recent, const RequestRecord& r, const Classified& c) {
  ++s.total_requests;
  ++requests_series(s, recent, r, c).value;
  if (c.error) {
    ++s.total_errors;
    auto& err = find_or_add(
        s.errors, make_key(s.key, {r.model_resolved, c.code}),
        [&] { return std::string(make_key(s.key, {kOther, kOther})); },
        [&](LabelledCount<2>& n, bool folded) {
          n.labels = {folded ? std::string(kOther) : r.model_resolved,
                      std::string(folded ? kOther : c.code)};
        });
    ++err.value;
  }
  if (c.model_traffic) s.overhead.observe(r.overhead_ms() / 1000, kOverheadBounds);
  if (!c.model_traffic && !r.ttft_ms && !r.prompt_tokens && !r.completion_tokens) return;
  if (!recent.model_series)
    recent.model_series = &find_or_add(s.models, r.model_resolved, other_key, no_labels<ModelSeries>);
  ModelSeries& m = *recent.model_series;
  if (c.model_traffic) m.duration.observe(r.latency_ms / 1000, kLatencyBounds);
  if (r.ttft_ms) m.ttft.observe(*r.ttft_ms / 1000, kLatencyBounds);
  if (r.prompt_tokens) {
    m.prompt_tokens += tokens(*r.prompt_tokens);
    m.prompt_seen = true;
  }
  if (r.completion_tokens) {
    m.completion_tokens += tokens(*r.completion_tokens);
    m.completion_seen = true;
  }
}

void count_window(SlotStats& w, const RequestRecord& r, const Classified& c) {
  ++w.requests;
  if (c.error) {
    ++w.errors;
    ++find_or_add(w.errors_by_code, c.code, other_key, no_labels<std::uint64_t>);
  }
  if (c.model_traffic) w.latency_us.observe(r.latency_ms * 1000);
  if (r.ttft_ms) w.ttft_us.observe(*r.ttft_ms * 1000);
  if (r.prompt_tokens) w.prompt_tokens += tokens(*r.prompt_tokens);
  if (r.completion_tokens) w.completion_tokens += tokens(*r.completion_tokens);
  // Decode speed: the tokens after the first over the time after the first token.
  if (r.stream && r.ttft_ms && r.completion_tokens && r.latency_ms > *r.ttft_ms) {
    w.decode_tokens += tokens(*r.completion_tokens);
    w.decode_seconds += (r.latency_ms - *r.ttft_ms) / 1000;
  }
}

}  // namespace

void count_record(Shard& s, Slot& slot, const RequestRecord& r) {
  Classified c;
  classify(r, s.code, c);
  RecentSeries& recent = s.recent_for(r.model_resolved);
  count_cumulative(s, recent, r, c);
  // The window is about model traffic: health checks, scrapes and the status page's polls
  // would otherwise be most of its requests (they stay in the cumulative counters).
  if (!c.model_traffic) return;
  count_window(slot.overall, r, c);
  if (r.model_resolved.empty()) return;  // overall only
  if (!recent.window || recent.epoch != slot.epoch) {
    recent.window = &find_or_add(slot.models, r.model_resolved, other_key, no_labels<SlotStats>);
    recent.epoch = slot.epoch;
  }
  count_window(*recent.window, r, c);
}

}  // namespace imageworks::telemetry
