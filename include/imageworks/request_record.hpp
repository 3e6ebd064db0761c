#pragma once
// One record per exchange (STYLE "One record per exchange"): filled along the pipeline and
// emitted once when the exchange ends, whatever ended it (a reply, a router 401/404, a
// 413/431 before routing, the client leaving, an upstream error). The JSONL line and the
// metrics both come from it. A session reuses one record for all its requests (reset()
// keeps the strings' buffers), so recording allocates nothing on a warm connection.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace imageworks {

struct RequestRecord {
  // When the exchange started (the request had been read).
  std::chrono::system_clock::time_point ts{};
  std::chrono::steady_clock::time_point started{};
  std::string request_id;
  std::string client;  // the peer's address
  std::string route;   // the canonical path ("/v1/chat/completions"); raw path for unknown ones
  // What the forwarder learnt (empty / nullopt on other routes or when it stopped earlier).
  std::string model_requested;  // as the client wrote it
  std::string model_resolved;   // the listed id it resolved to
  std::string backend;          // the registry backend ("vllm", "ollama", ...)
  bool stream = false;
  std::optional<double> ttft_ms;   // streams: request start → first event relayed
  std::optional<std::int64_t> prompt_tokens, completion_tokens;
  std::optional<double> switch_ms; // the request waited this long for the GPU (a switch)
  double upstream_wait_ms = 0;     // time spent waiting on the backend (connect, reply, stream gaps)
  // Filled when the exchange ends.
  int status = 0;                  // what the client got; 499 when it left before any head
  std::string error_code;          // "" on success; err_client_closed when the client left
  double latency_ms = 0;
  std::uint64_t bytes_in = 0;      // request body bytes
  std::uint64_t bytes_out = 0;     // response bytes written (head included)
  std::string user, chat_id;       // X-OpenWebUI-User-Id / X-OpenWebUI-Chat-Id
  bool client_gone = false;
  // Only with CHAT_PROXY_LOG_PROMPTS=1.
  bool has_prompts = false;
  std::string messages;            // the request's messages, raw JSON as the client sent them
  std::string reply;               // the reply's text (content of choice 0)

  // Gateway overhead: the time not spent waiting on the backend or for the GPU.
  double overhead_ms() const {
    double o = latency_ms - upstream_wait_ms - switch_ms.value_or(0);
    return o < 0 ? 0 : o;
  }
  void reset() {
    request_id.clear(); client.clear(); route.clear();
    model_requested.clear(); model_resolved.clear(); backend.clear();
    stream = false; ttft_ms.reset(); prompt_tokens.reset(); completion_tokens.reset();
    switch_ms.reset(); upstream_wait_ms = 0; status = 0; error_code.clear(); latency_ms = 0;
    bytes_in = bytes_out = 0; user.clear(); chat_id.clear(); client_gone = false;
    has_prompts = false; messages.clear(); reply.clear();
  }
};

}  // namespace imageworks
