#pragma once
// Loading feedback (§5) while a request waits for the GPU: a streaming request gets its SSE
// response opened at once and a `: loading <model>` comment at least every 2 s, so clients
// and reverse proxies do not time out; when it comes from OpenWebUI (X-OpenWebUI-* headers)
// it also gets status events OpenWebUI shows under the message, and a last one with
// "done":true before the first reply chunk. Other clients never see a chunk without choices.
#include <chrono>
#include <string>
#include <vector>

#include "imageworks/gpu.hpp"
#include "imageworks/http.hpp"

namespace imageworks {

class LoadingFeedback final : public WaitObserver {
 public:
  LoadingFeedback(Exchange& ex, bool stream, std::string model);
  ~LoadingFeedback() override;
  Task<void> on_wait(std::vector<std::string> steps, bool first) override;
  void watch_client(void (*wake)(void*), void* ctx) override;
  // The client left, or the exchange was ended from outside (shutdown): stop waiting.
  bool gone() const override { return gone_ || ex_.aborted().has_value(); }
  // After the grant: OpenWebUI's last status event ("done":true), when it was told it waits.
  Task<void> finish();

 private:
  static void on_peer_gone(void* self);
  static void on_abort(void* self);
  Exchange& ex_;
  bool stream_;
  bool openwebui_;
  std::string model_;
  bool gone_ = false;
  bool opened_ = false;
  void (*wake_)(void*) = nullptr;
  void* wake_ctx_ = nullptr;
  std::chrono::steady_clock::time_point began_ = std::chrono::steady_clock::now();
  std::string loaded_step_;  // the coordinator's "Loaded … in N s", shown last with done:true
};

// `data: {"event":{"type":"status","data":{"description":…,"done":…}}}` and a blank line.
std::string openwebui_status_frame(std::string_view description, bool done);
// The request carries OpenWebUI's forwarded user headers.
bool from_openwebui(const Request& req);

}  // namespace imageworks
