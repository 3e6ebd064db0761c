#pragma once
// ChatForwarder: the per-request pipeline of §5 for POST /v1/<route> — parse, resolve the
// model, pick the backend, prepare the upstream payload (model → served id, usage asked
// for), relay the reply whole or as a stream with the model restored, errors reshaped.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "imageworks/app.hpp"
#include "imageworks/http.hpp"
#include "imageworks/upstream.hpp"

namespace imageworks {

// What the client asked for, as the pipeline's steps see it.
struct ForwardRequest {
  std::string_view route;       // "chat/completions", ...: a view of the caller's path, which outlives the request
  std::string body;             // the upstream body (spliced in place)
  std::string requested_model;  // the client's model string, unescaped
  bool stream = false;
  bool usage_added = false;     // we asked for include_usage: strip the usage-only chunk
  bool has_stream_options = false;
  std::size_t model_offset = 0, model_length = 0;  // the "model" value's bytes in body
};

// Where and how to reach the model's backend.
struct BackendRoute {
  std::shared_ptr<const UpstreamTarget> target;  // shared with a per-thread cache of parsed URLs
  std::string api_key;  // "" = no Authorization header
  std::string backend;  // registry backend name, for logs
};

// Usage and timing facts gathered while relaying (telemetry reads these).
struct RelayOutcome {
  int status = 0;
  std::string error_code;
  std::optional<std::int64_t> prompt_tokens, completion_tokens;
  std::optional<double> ttft_ms;
  bool client_gone = false;
};

// Pipeline steps as plain functions (unit-testable, no I/O).
ForwardRequest parse_forward_request(std::string_view route, std::string body);
// `managed_base_url`: where the GPU coordinator's lease says a managed vLLM listens.
BackendRoute backend_route(const ProxyConfig& cfg, const ModelEntry& entry, std::string_view managed_base_url = {});
void prepare_payload(ForwardRequest& fr, const ModelEntry& entry);
// Reshape an upstream error reply into our error form (§9), keeping its status.
ProxyError upstream_error(int status, std::string_view body);

class ChatForwarder {
 public:
  explicit ChatForwarder(App& app) : app_(app) {}
  // path is canonical ("/v1/chat/completions").
  Task<void> handle(Exchange& ex, std::string path);  // by value: it lives in the frame

 private:
  App& app_;
};

}  // namespace imageworks
