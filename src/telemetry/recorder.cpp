#include "imageworks/recorder.hpp"

#include <stdexcept>

namespace imageworks {

RequestRecorder::RequestRecorder(const ProxyConfig& cfg) : log_prompts_(cfg.log_prompts && !cfg.log_path.empty()) {
  if (!cfg.log_path.empty()) {
    JsonlLogOptions o;
    o.path = cfg.log_path;
    o.max_bytes = cfg.max_log_bytes;
    o.keep_files = cfg.log_keep_files;
    try {
      log_ = std::make_unique<JsonlLogger>(std::move(o));
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(e.what()) +
                               " (CHAT_PROXY_LOG_PATH; --log-path \"\" turns the request log off)");
    }
  }
  if (cfg.enable_metrics) metrics_ = std::make_unique<Metrics>(std::chrono::seconds(cfg.metrics_window_s));
}

RequestRecorder::~RequestRecorder() = default;

void RequestRecorder::record(RequestRecord& r, const Request& req) {
  if (metrics_) metrics_->observe(r);
  if (!log_) return;
  // OpenWebUI names the user and the chat (ENABLE_FORWARD_USER_INFO_HEADERS); looked up
  // only here, where the log needs them.
  r.user.assign(req["x-openwebui-user-id"]);
  r.chat_id.assign(req["x-openwebui-chat-id"]);
  thread_local std::string line;
  line.clear();
  append_log_line(r, line);
  log_->append(line);
  if (line.capacity() > (1u << 20)) std::string().swap(line);  // a logged prompt does not pin memory
}

}  // namespace imageworks
