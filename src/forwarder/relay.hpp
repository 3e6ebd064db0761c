#pragma once
// Sending the prepared request upstream and relaying the reply to the client: whole
// replies with the model restored, SSE streams event by event as they arrive.
#include <span>

#include "imageworks/forwarder.hpp"
#include "imageworks/response_rules.hpp"

namespace imageworks {

struct RelaySettings {
  std::chrono::milliseconds backend_timeout;  // connect + first byte / whole non-stream reply
  std::chrono::milliseconds idle_timeout;     // the backend's silence between stream chunks
  std::size_t max_event_bytes;                // one upstream SSE event
  bool normalize_tools = true;                // §7 tool rules (off: CHAT_PROXY_DISABLE_TOOL_NORMALIZATION=1)
  bool capture_reply = false;                 // the reply's text into the record (CHAT_PROXY_LOG_PROMPTS=1)
};

// What telemetry needs (TTFT, usage, a mid-stream error, the time waiting on the backend)
// goes into the exchange's record.
Task<void> relay(Exchange& ex, const ForwardRequest& fr, const BackendRoute& route, const RelaySettings& settings);

// The text of choice 0 appended to `reply` (request log with CHAT_PROXY_LOG_PROMPTS=1):
// of one stream event (delta.content / text), of a whole reply (message.content / text).
void append_stream_reply(std::string_view event_data, std::string& reply);
void append_whole_reply(std::string_view body, std::string& reply);

// prompt_tokens / completion_tokens of a `usage` object already validated by a scan.
void read_usage(std::string_view usage_json, std::optional<std::int64_t>& prompt,
                std::optional<std::int64_t>& completion);

// Rewrites one upstream SSE event for the client (model restored, id/created pinned to the
// first chunk's, our usage chunk dropped, error dialects unified, the §7 rules of a chat
// stream applied to the events they want) and appends the frame(s) to `out`. Pure, for
// unit tests.
class StreamRewriter {
 public:
  // `rules`: the chat-chunk rules (response_rules.hpp), or none (text completions).
  StreamRewriter(const std::string& requested_model, bool strip_usage_chunk, std::optional<StreamRules> rules = {});
  // Returns false once the stream is over ([DONE] or an error event was relayed).
  bool on_event(std::string_view event_name, std::string_view data, bool comment, std::string& out);
  // Frames that end the stream: [DONE] unless already sent.
  void finish(std::string& out);
  // An error after the stream started: a final error event then [DONE].
  void fail(const ProxyError& e, std::string& out);
  bool done() const { return done_; }
  std::optional<std::int64_t> prompt_tokens, completion_tokens;

 private:
  void record_usage(std::string_view usage_json);
  void append_event(std::string_view data, std::span<std::optional<std::string_view>> v, std::string& out);
  std::optional<StreamRules> rules_;
  std::string model_json_;  // the requested model as a JSON string literal
  bool strip_usage_;
  bool done_ = false;
  std::string pinned_id_, pinned_created_;
};

}  // namespace imageworks
