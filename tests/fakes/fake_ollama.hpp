#pragma once
// In-process fake Ollama (0.5/0.6 wire shapes) for the GPU-coordination tests: its own
// io_context on its own thread, 127.0.0.1 on an ephemeral port, HTTP/1.1 keep-alive.
// It keeps a set of loaded models like Ollama's scheduler (/api/ps), unloads on
// `keep_alive: 0` after a configurable delay (or never), answers /api/stop with the
// router's 404, and records every call in order so tests can assert what the proxy did.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace imageworks::test {

struct OllamaCall {
  std::string method;  // "POST"
  std::string path;    // "/api/generate" (no query)
  std::string model;   // the body's "model", "" when absent or not JSON
  std::optional<nlohmann::json> keep_alive;  // the body's "keep_alive" as sent (0, "0s", "5m"…)
  std::string body;
  std::chrono::steady_clock::time_point at;  // when the request was read
  std::int64_t wall_ms = 0;  // the same instant in ms since the epoch: comparable with the
                             // fake vLLM's event `t_ms` (another process, another clock)

  // POST /api/generate with a zero keep_alive and no prompt: Ollama's unload request.
  bool is_unload() const;
};

class FakeOllama {
 public:
  // Applies to requests that arrive after set_behavior(); `loaded` is read once at
  // construction (use set_loaded() later). load_delay, chunk_delay, gate and status apply to
  // /v1/chat/completions and to a loading /api/generate; the /api/* listings always answer.
  struct Behavior {
    std::vector<std::string> installed = {"llama3.2:3b", "qwen2.5:7b"};  // /api/tags, /v1/models
    std::vector<std::string> loaded;                  // in /api/ps when the fake starts
    std::chrono::milliseconds load_delay{0};          // before the first byte of a reply whose
                                                      // model was not loaded (it is listed
                                                      // in /api/ps from the request on)
    int chunks = 3;                                   // content chunks of a chat stream
    std::string text = "tok";                         // each chunk's content (non-stream: repeated)
    std::chrono::milliseconds chunk_delay{0};         // before each content chunk
    bool gate_chunks = false;                         // after each frame but [DONE], wait for
                                                      // release_chunk()
    std::chrono::milliseconds unload_delay{0};        // keep_alive 0: still in /api/ps this long
                                                      // after the reply (Ollama unloads async)
    bool ignore_unload = false;                       // keep_alive 0 answers but never unloads
    bool stall_unload = false;                        // keep_alive 0 is read, never answered
                                                      // and never unloads (a hung Ollama)
    int status = 200;                                 // != 200: chat/generate answer this error
    bool tool_calls = false;                          // chat answers with tool_names' calls
    std::vector<std::string> tool_names = {"get_weather"};  // one call each, all at index 0
    std::string tool_arguments = R"({"city":"Paris"})";
    std::uint64_t model_size = 3338801804;            // /api/ps size and size_vram
  };

  FakeOllama();
  explicit FakeOllama(Behavior behavior);
  ~FakeOllama();  // closes every socket, wakes every gated reply, joins the thread
  FakeOllama(const FakeOllama&) = delete;
  FakeOllama& operator=(const FakeOllama&) = delete;

  unsigned short port() const;
  std::string base_url() const;  // "http://127.0.0.1:PORT"

  void set_behavior(Behavior behavior);
  Behavior behavior() const;

  // Every request in arrival order (unknown routes and /api/stop included).
  std::vector<OllamaCall> calls() const;
  // True once n calls arrived / once pred(calls) holds; false after `timeout`. pred runs
  // under the fake's lock: it must not call the fake.
  bool wait_for_calls(std::size_t n, std::chrono::milliseconds timeout) const;
  bool wait_for_calls(const std::function<bool(const std::vector<OllamaCall>&)>& pred,
                      std::chrono::milliseconds timeout) const;

  // Models /api/ps lists now (a pending unload_delay that has run out counts as unloaded).
  std::vector<std::string> loaded() const;
  void set_loaded(std::vector<std::string> models);
  // True once `model` (empty: every model) is out of /api/ps; false after `timeout`.
  bool wait_until_unloaded(std::chrono::milliseconds timeout, const std::string& model = {}) const;
  bool wait_until_loaded(const std::string& model, std::chrono::milliseconds timeout) const;
  // When `model` last left /api/ps (steady clock); nullopt while loaded or never unloaded.
  std::optional<std::chrono::steady_clock::time_point> unloaded_at(const std::string& model) const;

  // Client disconnects noticed during a reply (load delay, stream, gate), as FakeOpenAI.
  std::size_t client_disconnects() const;
  std::optional<std::chrono::steady_clock::time_point> wait_for_client_disconnect(
      std::chrono::milliseconds timeout, std::size_t n = 1) const;

  // gate_chunks: let n more frames out (shared by all gated streams); release_all() opens
  // the gate for good.
  void release_chunk(int n = 1);
  void release_all();

 private:
  struct Impl;  // tests/fakes/fake_ollama_impl.hpp
  std::unique_ptr<Impl> impl_;
};

}  // namespace imageworks::test
