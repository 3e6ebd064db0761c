#pragma once
// Internals of the fake_vllm executable: a stand-in for `vllm serve` that the proxy's
// VllmManager spawns as a real child process. Options (vLLM's CLI plus --fake-* behaviour
// flags) in fake_vllm_options.cpp, the HTTP side in fake_vllm_http.cpp, the process
// lifecycle (bind, health, signals, worker, crash) in fake_vllm_main.cpp.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"

namespace imageworks::fake_vllm {

using Millis = std::chrono::milliseconds;

struct Options {
  // vLLM's own CLI (what the manager passes).
  std::string model_path;
  unsigned short port = 8000;  // vLLM's default; 0 = ephemeral, the bound port is in "listening"
  std::string served_model_name;  // defaults to model_path, as in vLLM
  std::string gpu_memory_utilization, max_model_len, chat_template;
  std::vector<std::string> argv;     // everything, argv[0] included
  std::vector<std::string> ignored;  // flags (and their values) the fake does not model

  // Behaviour: --fake-<name> flags, else env FAKE_VLLM_<NAME>.
  Millis bind_delay{0};    // no listening socket until then (connections refused)
  Millis load{200};        // /health 503 until this long after start
  bool never_healthy = false;
  std::optional<Millis> crash_after;  // _exit(3) this long after becoming healthy
  // With crash_after: the crash first closes every socket (the port refuses at once), then
  // the process lingers this long before it exits — a dying server whose exit is not seen yet.
  Millis crash_linger{0};
  Millis stop_delay{100};  // SIGTERM/SIGINT → exit 0 after this
  bool ignore_sigterm = false;  // SIGTERM is recorded and ignored; SIGINT still stops
  bool spawn_worker = false;  // fork a sleeping child in our process group (EngineCore)
  int chunks = 3;
  Millis chunk_delay{0};
  std::string text = "tok";
  std::string events_path;
  // A leaked fake (a test that died before killing it) exits by itself after this.
  std::chrono::seconds max_lifetime{600};
};

// argv → Options; nullopt with `error` set on a malformed command line.
std::optional<Options> parse_options(int argc, char** argv, std::string& error);

// Lifecycle events, one JSON line each, appended with a single write() on an O_APPEND fd so
// several processes may share a file and a reader never sees half a line.
class EventLog {
 public:
  EventLog(const std::string& path, std::string served_model_name);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  // Adds "event", "pid", "served_model_name" and "t_ms" (ms since the epoch) to `fields`.
  void emit(const std::string& event, nlohmann::json fields = nlohmann::json::object());

 private:
  int fd_ = -1;
  std::string served_;
};

// What the HTTP side reads from the lifecycle (one thread: plain fields).
struct ServerState {
  const Options* opts = nullptr;
  EventLog* events = nullptr;
  bool healthy = false;
  std::int64_t created = 0;   // unix seconds at start; every reply's `created`
  std::uint64_t replies = 0;  // numbers the ids
};

// One keep-alive connection until the peer closes it or the process exits.
asio::awaitable<void> serve_connection(tcp::socket socket, ServerState& state);

}  // namespace imageworks::fake_vllm
