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
#include "imageworks/request_policy.hpp"
#include "imageworks/upstream.hpp"

namespace imageworks {

// What the client asked for, as the pipeline's steps see it.
struct ForwardRequest {
  std::string_view route;       // "chat/completions", ...: a view of the caller's path, which outlives the request
  RequestPayload payload;       // the upstream body: spliced, or a tree when a rule needs one
  std::string requested_model;  // the client's model string, unescaped
  bool stream = false;
  bool usage_added = false;     // we asked for include_usage: strip the usage-only chunk
  // What the parse step's scan saw, so a rule that cannot apply costs nothing (§6):
  std::string_view tools_field;  // "tools", "tool_choice", "functions" or "function_call" when sent
  bool may_have_images = false;  // "image_url" occurs inside messages
  // The raw `messages` (chat) or `prompt` (completions) value, for the request log: a view of
  // the payload's bytes, valid only until a step edits the payload.
  std::string_view prompt_raw;
};


// Where and how to reach the model's backend.
struct BackendRoute {
  std::shared_ptr<const UpstreamTarget> target;  // shared with a per-thread cache of parsed URLs
  std::string api_key;  // "" = no Authorization header
  std::string backend;  // registry backend name, for logs
};

// Pipeline steps as plain functions (unit-testable, no I/O).
ForwardRequest parse_forward_request(std::string_view route, std::string body);
// `managed_base_url`: where the GPU coordinator's lease says a managed vLLM listens.
BackendRoute backend_route(const ProxyConfig& cfg, const ModelEntry& entry, std::string_view managed_base_url = {});
// The served id, include_usage for streams, then the bytes to send.
void prepare_payload(ForwardRequest& fr, const ModelEntry& entry);
// §6 on the messages: vision capability (409 or images stripped), history truncation for
// vision and reasoning models, image limits and formats (decoding on app.cpu_pool, image
// URLs fetched for backends that cannot). Builds a tree only when a rule applies. What it
// changed goes on the response: x-imageworks-images-stripped, x-imageworks-history-truncated.
Task<void> apply_message_policy(App& app, Exchange& ex, ForwardRequest& fr, const ModelEntry& entry);
// Whether any message rule could apply: plain requests skip the step (and its frame).
inline bool message_policy_applies(const ProxyConfig& cfg, const ForwardRequest& fr, const ModelEntry& e) {
  return fr.may_have_images || (e.capabilities.reasoning && cfg.reasoning_truncate_history);
}
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
