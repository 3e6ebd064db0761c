#pragma once
// Internal to Metrics (telemetry.hpp): what one calling thread counts (a Shard) and the
// histogram types behind it. A shard is written only by its own thread and read by a
// scrape, both under the shard's mutex; nothing here is shared between threads otherwise.
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "imageworks/request_record.hpp"

namespace imageworks::telemetry {

// Series per metric family per shard; a new label set beyond it is counted as "other".
inline constexpr std::size_t kMaxSeries = 1000;
inline constexpr std::string_view kOther = "other";

inline constexpr std::array<double, 16> kLatencyBounds{
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
inline constexpr std::array<double, 13> kOverheadBounds{
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
inline constexpr std::array<double, 9> kSwitchBounds{1, 5, 10, 30, 60, 120, 300, 600, 1200};

// Lookups by string_view, so a warm series is found without building a std::string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// The series for `key`, created on a miss. Once the map holds kMaxSeries, a new key folds
// into overflow_key() (let in over the cap: it is one key). init(series, folded) fills a
// new series' labels.
template <class V, class Overflow, class Init>
V& find_or_add(StringMap<V>& map, std::string_view key, Overflow&& overflow_key, Init&& init) {
  if (auto it = map.find(key); it != map.end()) return it->second;
  bool folded = map.size() >= kMaxSeries;
  auto [it, fresh] = map.try_emplace(folded ? std::string(overflow_key()) : std::string(key));
  if (fresh) init(it->second, folded);
  return it->second;
}
inline auto other_key() { return kOther; }
inline void no_labels(auto&, bool) {}

// A Prometheus histogram: counts per bucket (not cumulative; the last is +Inf) and the sum.
template <std::size_t N>
struct FixedHistogram {
  std::array<std::uint64_t, N + 1> counts{};
  double sum = 0;

  void observe(double v, const std::array<double, N>& bounds) {
    std::size_t i = 0;
    while (i < N && v > bounds[i]) ++i;  // le is inclusive
    ++counts[i];
    sum += v;
  }
  void merge(const FixedHistogram& o) {
    for (std::size_t i = 0; i <= N; ++i) counts[i] += o.counts[i];
    sum += o.sum;
  }
  std::uint64_t count() const {
    std::uint64_t n = 0;
    for (auto c : counts) n += c;
    return n;
  }
};
using LatencyHistogram = FixedHistogram<kLatencyBounds.size()>;
using OverheadHistogram = FixedHistogram<kOverheadBounds.size()>;
using SwitchHistogram = FixedHistogram<kSwitchBounds.size()>;

// Window percentiles: 8 log-uniform buckets per power of two of microseconds (1 µs …
// 2^32 µs), so a bucket's geometric middle is within 2^(1/16) − 1 ≈ 4.4% of any value in it.
// Exact min and max clamp the answer (a lone sample comes back exact).
namespace loghist {
inline constexpr int kPerOctave = 8;
inline constexpr int kBuckets = 32 * kPerOctave;

inline int bucket_of(double us) {
  if (!(us >= 1)) return 0;  // also NaN
  if (us >= 4294967296.0) return kBuckets - 1;
  auto bits = std::bit_cast<std::uint64_t>(us);
  int octave = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  double mantissa = std::bit_cast<double>((bits & ((1ull << 52) - 1)) | (1023ull << 52));  // [1, 2)
  // 2^(k/8), k = 1…7: the sub-bucket edges within an octave.
  static constexpr std::array<double, 7> kEdges{1.0905077326652577, 1.189207115002721,
                                                1.2968395546510096, 1.4142135623730951,
                                                1.5422108254079407, 1.6817928305074290,
                                                1.8340080864093424};
  int sub = 0;
  for (double e : kEdges) sub += mantissa >= e;
  return octave * kPerOctave + sub;
}
inline double middle_of(int bucket) { return std::exp2((bucket + 0.5) / kPerOctave); }
}  // namespace loghist

template <class Count>
struct LogHistogram {
  std::array<Count, loghist::kBuckets> counts{};
  std::uint64_t n = 0;
  double min_us = std::numeric_limits<double>::infinity();
  double max_us = -std::numeric_limits<double>::infinity();

  void observe(double us) {
    ++counts[loghist::bucket_of(us)];
    ++n;
    if (us < min_us) min_us = us;
    if (us > max_us) max_us = us;
  }
  template <class C>
  void merge(const LogHistogram<C>& o) {
    if (!o.n) return;
    for (int i = 0; i < loghist::kBuckets; ++i) counts[i] += o.counts[i];
    n += o.n;
    if (o.min_us < min_us) min_us = o.min_us;
    if (o.max_us > max_us) max_us = o.max_us;
  }
};

// What one slot of the rolling window counts, overall or for one model. Slots of a shard
// use 32-bit bucket counts (a slot lasts seconds); merged windows use 64-bit ones.
template <class Count>
struct WindowStats {
  std::uint64_t requests = 0, errors = 0;
  std::uint64_t prompt_tokens = 0, completion_tokens = 0;
  std::uint64_t decode_tokens = 0;  // completion tokens of streams with a TTFT
  double decode_seconds = 0;        // their latency − ttft
  StringMap<std::uint64_t> errors_by_code;
  LogHistogram<Count> latency_us, ttft_us;

  template <class C>
  void merge(const WindowStats<C>& o) {
    requests += o.requests;
    errors += o.errors;
    prompt_tokens += o.prompt_tokens;
    completion_tokens += o.completion_tokens;
    decode_tokens += o.decode_tokens;
    decode_seconds += o.decode_seconds;
    for (const auto& [code, n] : o.errors_by_code) errors_by_code[code] += n;
    latency_us.merge(o.latency_us);
    ttft_us.merge(o.ttft_us);
  }
};
using SlotStats = WindowStats<std::uint32_t>;
using WindowTotals = WindowStats<std::uint64_t>;

// One slot of the ring; `epoch` is the slot number since the Metrics started (-1: unused).
// A slot found with an older epoch is cleared before it is reused.
struct Slot {
  std::int64_t epoch = -1;
  SlotStats overall;
  StringMap<SlotStats> models;  // by model_resolved
};

template <std::size_t N>
struct LabelledCount {
  std::array<std::string, N> labels;
  std::uint64_t value = 0;
};

// Cumulative (Prometheus) series of one model_resolved.
struct ModelSeries {
  LatencyHistogram duration, ttft;
  std::uint64_t prompt_tokens = 0, completion_tokens = 0;
  bool prompt_seen = false, completion_seen = false;
};

// The series a recent record of one model counted into, reused when the next record of that
// model has the same labels: requests to the few models in use skip the hash lookups. Map
// values never move; `window` is dropped whenever a slot is cleared.
struct RecentSeries {
  std::string model, backend;
  std::string_view route;  // route_label()'s static text
  int status = -1;
  LabelledCount<4>* requests = nullptr;  // nullptr: not looked up for this model yet
  ModelSeries* model_series = nullptr;
  std::int64_t epoch = -1;
  SlotStats* window = nullptr;

  void start_model(std::string_view m) {  // assign(): keeps the buffer
    model.assign(m);
    requests = nullptr;
    model_series = nullptr;
    window = nullptr;
  }
};

struct Shard {
  std::mutex mu;
  std::thread::id owner;  // the thread that counts here (adopted again after a cache miss)

  // Cumulative, for Prometheus and the JSON totals.
  StringMap<LabelledCount<4>> requests;  // route, model, backend, status
  StringMap<LabelledCount<2>> errors;    // model, code
  StringMap<ModelSeries> models;
  OverheadHistogram overhead;
  std::uint64_t total_requests = 0, total_errors = 0;
  std::int64_t streams_started = 0, streams_ended = 0;

  std::vector<Slot> ring;  // the rolling window

  // The owner thread's: a cache and scratch buffers that spare lookups and allocations.
  std::array<RecentSeries, 4> recent;
  std::size_t next_evicted = 0;
  std::string key, code;

  RecentSeries& recent_for(std::string_view model) {
    for (auto& r : recent)
      if (r.model == model) return r;
    RecentSeries& r = recent[next_evicted];
    next_evicted = (next_evicted + 1) % recent.size();
    r.start_model(model);
    return r;
  }
};

// The hot path (metrics_record.cpp): counts `r` into the shard, `slot` being the shard's
// slot of the current time. The caller holds s.mu.
void count_record(Shard& s, Slot& slot, const RequestRecord& r);

}  // namespace imageworks::telemetry
