#pragma once
// Helpers of the Metrics tests: records and a clock the test moves (the Prometheus reader and
// promtool are support/telemetry_support.hpp's).
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "imageworks/request_record.hpp"
#include "support/telemetry_support.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {

inline RequestRecord model_request(const std::string& model, double latency_ms, int status = 200,
                                   const std::string& error_code = "") {
  RequestRecord r;
  r.route = "/v1/chat/completions";
  r.model_requested = model;
  r.model_resolved = model;
  r.backend = "vllm";
  r.latency_ms = latency_ms;
  r.upstream_wait_ms = latency_ms * 0.9;
  r.status = status;
  r.error_code = error_code;
  return r;
}

// steady_clock time that moves only when the test says so.
class FakeClock {
 public:
  std::function<std::chrono::steady_clock::time_point()> fn() const {
    return [ms = ms_] { return kBase + std::chrono::milliseconds(ms->load()); };
  }
  void advance(std::chrono::milliseconds d) { *ms_ += d.count(); }

 private:
  static constexpr auto kBase = std::chrono::steady_clock::time_point{} + std::chrono::hours(1000);
  std::shared_ptr<std::atomic<std::int64_t>> ms_ = std::make_shared<std::atomic<std::int64_t>>(0);
};

}  // namespace imageworks::test
