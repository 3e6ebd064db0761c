#pragma once
// The daemon's recorder (§10): every exchange's record becomes one JSONL line (when the
// log is on) and one observation of the metrics (when CHAT_PROXY_ENABLE_METRICS=1).
// record() runs on the event loop that served the exchange: it formats the line and hands
// it to the log's writer thread; it never touches a file.
#include <memory>

#include "imageworks/config.hpp"
#include "imageworks/request.hpp"
#include "imageworks/telemetry.hpp"

namespace imageworks {

class RequestRecorder {
 public:
  // Opens the log (CHAT_PROXY_LOG_PATH, "" = off): throws std::runtime_error when it cannot.
  explicit RequestRecorder(const ProxyConfig& cfg);
  ~RequestRecorder();
  void record(RequestRecord& r, const Request& req);
  Metrics* metrics() { return metrics_.get(); }
  JsonlLogger* log() { return log_.get(); }
  bool log_prompts() const { return log_prompts_; }
  std::uint64_t log_dropped() const { return log_ ? log_->dropped() : 0; }

 private:
  std::unique_ptr<JsonlLogger> log_;
  std::unique_ptr<Metrics> metrics_;
  bool log_prompts_;
};

}  // namespace imageworks
