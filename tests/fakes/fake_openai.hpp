#pragma once
// In-process fake OpenAI-compatible upstream (vLLM / llama.cpp / OpenAI flavours) for tests:
// its own io_context on its own thread, 127.0.0.1 on an ephemeral port, HTTP/1.1 keep-alive,
// scripted per test through Behavior; records requests and client disconnects.
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace imageworks::test {

struct RecordedRequest {
  std::string method;   // "POST"
  std::string target;   // "/v1/chat/completions"
  std::vector<std::pair<std::string, std::string>> headers;  // in arrival order
  std::string body;

  // Value of the first header named `name` (case-insensitive), "" when absent.
  std::string header(std::string_view name) const;
  // The body parsed as JSON; a discarded value when it is not JSON.
  nlohmann::json json() const;
};

class FakeOpenAI {
 public:
  // Applies to requests that arrive after set_behavior(). Stalls, delays, status and the
  // stream cut points apply to the inference routes (chat, completions, embeddings, other
  // POST /v1/*); /v1/models and /health always answer.
  struct Behavior {
    int chunks = 3;                          // content chunks of a stream
    std::string text = "tok";                // content of each chunk (non-stream: repeated)
    std::chrono::milliseconds chunk_delay{0};  // before each content chunk
    std::chrono::milliseconds response_delay{0};  // before the response headers
    int status = 200;                        // != 200: reply with error_body
    std::string error_body;                  // empty: a vLLM (or llama.cpp) style body
    bool stall_before_headers = false;       // read the request, never answer
    // Stream cut points, counted in content chunks sent (the role chunk always goes first):
    int stall_after_chunks = -1;             // go silent, keep the socket open
    int close_after_chunks = -1;             // close the socket mid-body
    int error_after_chunks = -1;             // send an error event and end the stream (§7):
                                             // `error: {...}` when llamacpp_style, else
                                             // `data: {"error":{...}}` + [DONE]
    bool split_every_byte = false;           // one byte per HTTP chunk and per write
    std::string required_api_key;            // other `Authorization: Bearer` → 401
    bool tool_call = false;                  // reply with a tool call instead of text
    std::string tool_name = "get_weather";
    std::string tool_arguments = R"({"city":"Paris"})";
    bool llamacpp_style = false;             // per-chunk `created`, integer error codes
    bool gate_chunks = false;                // after each frame but [DONE], wait for release_chunk()
    bool crlf = false;                       // SSE line ends "\r\n"
    std::vector<std::string> models = {"fake-model"};  // GET /v1/models
    int health_status = 200;                 // GET /health
    int prompt_tokens = 7;                   // usage.prompt_tokens
    // Scripted chat replies (another backend's dialect, §7): a stream sends each payload as
    // one `data:` frame, then [DONE]; a whole reply is script_reply verbatim.
    std::vector<std::string> script_events;
    std::string script_reply;
    // Fault injection: an inference request is answered with raw_reply verbatim (status line,
    // headers, body: no framing of the fake's own; garbage is fine), then raw_fill_bytes bytes
    // of 'x' in 64 KiB writes (one huge SSE line, say), then the socket is closed, or left
    // open and silent with raw_stall. Used when raw_reply or raw_fill_bytes is set.
    std::string raw_reply;
    std::size_t raw_fill_bytes = 0;
    bool raw_stall = false;
  };

  FakeOpenAI();
  explicit FakeOpenAI(Behavior behavior);
  ~FakeOpenAI();  // closes every socket, wakes every stalled reply, joins the thread
  FakeOpenAI(const FakeOpenAI&) = delete;
  FakeOpenAI& operator=(const FakeOpenAI&) = delete;

  unsigned short port() const;
  std::string base_url() const;  // "http://127.0.0.1:PORT"

  void set_behavior(Behavior behavior);
  Behavior behavior() const;

  std::vector<RecordedRequest> requests() const;
  // True once at least n requests arrived; false after `timeout`.
  bool wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const;

  // When the n-th client disconnect during a reply (streaming, stalled, gated or delayed)
  // was noticed; nullopt after `timeout`. Closing an idle keep-alive connection is no
  // disconnect; the fake closing its own socket (close_after_chunks, shutdown) neither.
  std::optional<std::chrono::steady_clock::time_point> wait_for_client_disconnect(
      std::chrono::milliseconds timeout, std::size_t n = 1) const;
  std::size_t client_disconnects() const;

  std::size_t connections_accepted() const;
  // True once the client has closed n keep-alive connections between requests (an idle
  // pooled connection let go); false after `timeout`.
  bool wait_for_idle_closes(std::size_t n, std::chrono::milliseconds timeout) const;
  // SSE frames started so far (all streams, [DONE] included); counted before each write, so
  // a client that has received frame N sees at least N.
  std::size_t frames_sent() const;

  // gate_chunks: let n more frames out (shared by all gated streams); release_all() opens
  // the gate for good.
  void release_chunk(int n = 1);
  // Close every connection (as a backend restarting or timing out idle keep-alive clients
  // would); call it with no request in flight. Returns when they are closed.
  void close_idle_connections();
  void release_all();

 private:
  struct Impl;  // tests/fakes/fake_openai_impl.hpp
  std::unique_ptr<Impl> impl_;
};

}  // namespace imageworks::test
