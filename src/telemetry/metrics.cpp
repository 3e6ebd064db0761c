// Metrics (telemetry.hpp): the shards, the clock, the switches and the merge at scrape
// time. What one record adds to a shard is metrics_record.cpp; the formats, metrics_export.cpp.
//
// Each calling thread counts into a Shard of its own (metrics_shard.hpp) behind the shard's
// own mutex, uncontended but while a scrape merges that shard: no atomic or cache line is
// shared between event-loop threads per request. A thread finds its shard through a small
// thread_local cache keyed by the Metrics' generation id — never its address, which a later
// Metrics may reuse while a stale entry still points into the freed one.
#include <algorithm>
#include <atomic>
#include <ctime>

#include "imageworks/telemetry.hpp"
#include "telemetry/metrics_snapshot.hpp"

namespace imageworks {

using namespace telemetry;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::atomic<std::uint64_t> g_generation{0};

struct CachedShard {
  std::uint64_t generation = 0;  // 0: empty
  Shard* shard = nullptr;
};
// Most recently used first; a thread feeding more Metrics than this re-finds its shard
// by thread id under the registry mutex (tests do; the daemon has one Metrics).
thread_local std::array<CachedShard, 4> t_shards{};

constexpr std::size_t kRecentSwitches = 1000;

// Slots last seconds, so the coarse monotonic clock (milliseconds of resolution, a third of
// steady_clock's cost per call) is precise enough for the hot path.
SteadyClock::time_point coarse_now() {
#ifdef CLOCK_MONOTONIC_COARSE
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return SteadyClock::time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
#else
  return SteadyClock::now();
#endif
}

}  // namespace

struct Metrics::Impl {
  using Clock = std::function<SteadyClock::time_point()>;

  Impl(std::chrono::seconds w, Clock c)
      : window(std::max<std::int64_t>(1, w.count())),
        slot_ms(std::max<std::int64_t>(1, (window + 29) / 30) * 1000),
        // Slots overlapping the window, plus the one being filled and one spare.
        ring_size(static_cast<std::size_t>((window * 1000 + slot_ms - 1) / slot_ms + 2)),
        clock(std::move(c)),
        started(now()) {}

  const std::int64_t window;  // seconds
  const std::int64_t slot_ms;
  const std::size_t ring_size;
  const Clock clock;  // empty: coarse_now()
  const SteadyClock::time_point started;
  const std::uint64_t generation = ++g_generation;

  std::mutex shards_mu;
  std::vector<std::unique_ptr<Shard>> shards;  // only ever grows while the Metrics lives

  std::mutex switches_mu;
  SwitchView switches;
  std::size_t next_recent = 0;

  SteadyClock::time_point now() const { return clock ? clock() : coarse_now(); }
  std::int64_t ms_since_start(SteadyClock::time_point t) const {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - started).count();
    return ms < 0 ? 0 : ms;
  }

  Shard& local_shard() {
    if (t_shards[0].generation == generation) return *t_shards[0].shard;
    return find_shard();
  }

  Shard& find_shard() {
    auto hit = std::find_if(t_shards.begin(), t_shards.end(),
                            [&](const CachedShard& e) { return e.generation == generation; });
    Shard* shard = hit != t_shards.end() ? hit->shard : nullptr;
    if (!shard) shard = adopt_shard();
    // Move to the front; the least recently used entry falls off the end.
    auto last = hit != t_shards.end() ? hit : t_shards.end() - 1;
    std::move_backward(t_shards.begin(), last, last + 1);
    t_shards[0] = {generation, shard};
    return *shard;
  }

  // The shard this thread made before (its cache entry was evicted), else a new one.
  // A thread id is reused only after its thread ended, so the shard is never shared.
  Shard* adopt_shard() {
    std::lock_guard lock(shards_mu);
    auto self = std::this_thread::get_id();
    for (auto& s : shards)
      if (s->owner == self) return s.get();
    auto s = std::make_unique<Shard>();
    s->owner = self;
    s->ring.resize(ring_size);
    shards.push_back(std::move(s));
    return shards.back().get();
  }

  Slot& slot(Shard& s, std::int64_t epoch) {
    Slot& slot = s.ring[static_cast<std::size_t>(epoch) % ring_size];
    if (slot.epoch != epoch) {  // last used a ring's turn ago: start afresh
      slot.overall = {};
      slot.models.clear();
      slot.epoch = epoch;
      for (auto& recent : s.recent) recent.window = nullptr;
    }
    return slot;
  }

  std::vector<Shard*> all_shards() {
    std::lock_guard lock(shards_mu);
    std::vector<Shard*> out;
    for (auto& s : shards) out.push_back(s.get());
    return out;
  }

  SwitchView switch_view() {
    std::lock_guard lock(switches_mu);
    return switches;
  }

  CumulativeView cumulative();
  WindowView window_view();
};

Metrics::Metrics(std::chrono::seconds window) : impl_(std::make_unique<Impl>(window, nullptr)) {}
Metrics::Metrics(std::chrono::seconds window,
                 std::function<std::chrono::steady_clock::time_point()> clock)
    : impl_(std::make_unique<Impl>(window, std::move(clock))) {}
Metrics::~Metrics() = default;

void Metrics::observe(const RequestRecord& r) {
  Impl& m = *impl_;
  const std::int64_t epoch = m.ms_since_start(m.now()) / m.slot_ms;
  Shard& s = m.local_shard();
  std::lock_guard lock(s.mu);
  count_record(s, m.slot(s, epoch), r);
}

void Metrics::stream_started() {
  Shard& s = impl_->local_shard();
  std::lock_guard lock(s.mu);
  ++s.streams_started;
}

void Metrics::stream_ended() {
  Shard& s = impl_->local_shard();
  std::lock_guard lock(s.mu);
  ++s.streams_ended;
}

void Metrics::observe_switch(std::string_view from, std::string_view to, double seconds, bool ok) {
  Impl& m = *impl_;
  std::lock_guard lock(m.switches_mu);
  SwitchView& v = m.switches;
  std::array<std::string, 2> key{std::string(from), std::string(to)};
  if (!v.pairs.contains(key) && v.pairs.size() >= kMaxSeries) key = {std::string(kOther), std::string(kOther)};
  auto& pair = v.pairs[key];
  ++pair.switches;
  ++v.total;
  if (!ok) {
    ++pair.failures;
    ++v.failed;
  }
  v.duration.observe(seconds, kSwitchBounds);
  if (v.recent_seconds.size() < kRecentSwitches) {
    v.recent_seconds.push_back(seconds);
  } else {
    v.recent_seconds[m.next_recent] = seconds;
    m.next_recent = (m.next_recent + 1) % kRecentSwitches;
  }
}

CumulativeView Metrics::Impl::cumulative() {
  CumulativeView v;
  for (Shard* s : all_shards()) {
    std::lock_guard lock(s->mu);
    for (const auto& [key, n] : s->requests) v.requests[n.labels] += n.value;
    for (const auto& [key, n] : s->errors) v.errors[n.labels] += n.value;
    for (const auto& [model, series] : s->models) {
      ModelSeries& to = v.models[model];
      to.duration.merge(series.duration);
      to.ttft.merge(series.ttft);
      to.prompt_tokens += series.prompt_tokens;
      to.completion_tokens += series.completion_tokens;
      to.prompt_seen |= series.prompt_seen;
      to.completion_seen |= series.completion_seen;
    }
    v.overhead.merge(s->overhead);
    v.active_streams += s->streams_started - s->streams_ended;
  }
  v.uptime_s = ms_since_start(now()) / 1000.0;
  v.switches = switch_view();
  return v;
}

WindowView Metrics::Impl::window_view() {
  WindowView v;
  const std::int64_t now_ms = ms_since_start(now());
  const std::int64_t now_epoch = now_ms / slot_ms;
  // Slots that started within the last `window` seconds.
  const std::int64_t oldest_start_ms = now_ms - window * 1000;
  for (Shard* s : all_shards()) {
    std::lock_guard lock(s->mu);
    for (const Slot& slot : s->ring) {
      if (slot.epoch < 0 || slot.epoch > now_epoch || slot.epoch * slot_ms < oldest_start_ms) continue;
      v.overall.merge(slot.overall);
      for (const auto& [model, stats] : slot.models) v.models[model].merge(stats);
    }
    v.total_requests += s->total_requests;
    v.total_errors += s->total_errors;
    v.active_streams += s->streams_started - s->streams_ended;
  }
  v.window_s = static_cast<double>(window);
  v.uptime_s = now_ms / 1000.0;
  v.effective_s = std::max(1.0, std::min(v.window_s, v.uptime_s));
  v.switches = switch_view();
  return v;
}

std::string Metrics::prometheus(const Gauges& g) const {
  return render_prometheus(impl_->cumulative(), g);
}

nlohmann::json Metrics::json(const Gauges& g) const { return render_json(impl_->window_view(), g); }

}  // namespace imageworks
