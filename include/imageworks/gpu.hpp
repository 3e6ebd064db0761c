#pragma once
// The GPU lease (§5, §8). One coordinator owns the GPU's state on an io_context and thread of
// its own; requests post to it and await a grant, and the lease they get (RAII) is released
// by posting back. Requests for the model holding the GPU run together; a request for
// another one waits until the requests in flight finish, then exactly one switch happens
// (unload Ollama / stop vLLM / start vLLM) and every request queued for the new holder is
// admitted together. No starvation: once a request waits for another model, new requests
// for the holder queue behind it. Entries the coordinator does not manage (remote APIs,
// vLLM with a base_url, another Ollama host) never come here.
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"
#include "imageworks/config.hpp"
#include "imageworks/errors.hpp"
#include "imageworks/ollama_manager.hpp"
#include "imageworks/registry.hpp"
#include "imageworks/vllm_manager.hpp"

namespace imageworks {

// What holds (or should hold) the GPU: nothing, Ollama (any of its models: Ollama swaps
// its own), or one managed vLLM model.
struct GpuTarget {
  enum class Kind { none, ollama, vllm };
  Kind kind = Kind::none;
  std::string logical_name;  // vllm only
  bool operator==(const GpuTarget&) const = default;
  std::string label() const;  // "nothing", "Ollama", "vLLM 'qwen'"
  std::string metric_name() const;  // "nothing", "ollama", or the vLLM logical name
};

struct SwitchRecord {
  std::string from, to;
  double duration_ms = 0;
  std::chrono::system_clock::time_point at{};
  std::string result;  // "ok" or the error
};

struct QueuedRequest {
  std::string model;  // logical name
  std::string target;
  std::chrono::system_clock::time_point since{};
};

// An immutable view of the coordinator, published after every change (for /v1/models,
// /v1/admin/state, /v1/autostart/status and the status page).
struct GpuState {
  GpuTarget holder;
  bool switching = false;
  std::string switching_to;
  int in_flight = 0;
  std::chrono::system_clock::time_point since{};  // the holder's since
  std::vector<QueuedRequest> queue;
  std::deque<SwitchRecord> last_switches;  // newest first, at most 20
  std::uint64_t switches_total = 0;
  std::string ollama_model;  // the last Ollama model granted the GPU
  VllmStatus vllm;
  OllamaStatus ollama;
};
// {"active": null | {logical_name, served_model_id, backend, pid, port, started_at, state}, ...}
nlohmann::json admin_state_json(const GpuState& s);
nlohmann::json autostart_status_json(const GpuState& s);

class GpuCoordinator;

// Held for as long as a request uses the GPU holder it was granted (the whole relay).
class GpuLease {
 public:
  GpuLease() = default;
  GpuLease(GpuLease&& o) noexcept { *this = std::move(o); }
  GpuLease& operator=(GpuLease&& o) noexcept;
  ~GpuLease() { release(); }
  void release();
  explicit operator bool() const { return owner_ != nullptr; }
  const std::string& base_url() const { return base_url_; }  // vLLM: where its server listens
  double waited_ms = 0;
  bool waited = false;  // it had to queue (a switch, or running requests of another model)

 private:
  friend class GpuCoordinator;
  GpuCoordinator* owner_ = nullptr;
  std::string base_url_;
};

// The request side while it waits: loading feedback and the client's departure. Its calls
// run on the request's executor.
class WaitObserver {
 public:
  virtual ~WaitObserver() = default;
  // Called when the wait begins (first == true), on each new step and at least every
  // feedback interval; `steps` holds the steps not shown yet ("Unloading Ollama models…").
  virtual Task<void> on_wait(std::vector<std::string> steps, bool first) = 0;
  // Arrange for wake() to be called when the client leaves; gone() says whether it has.
  virtual void watch_client(void (*wake)(void*), void* ctx) = 0;
  virtual bool gone() const = 0;
};

struct ClientGone : std::runtime_error {
  ClientGone() : std::runtime_error("client left while waiting for the GPU") {}
};

class GpuCoordinator {
 public:
  static constexpr std::chrono::milliseconds kFeedbackEvery{1500};

  // make_vllm builds the vLLM control on the coordinator's executor (local or remote mode).
  using VllmFactory = std::function<std::unique_ptr<VllmControl>(Executor)>;
  GpuCoordinator(const ProxyConfig& cfg, VllmFactory make_vllm);
  ~GpuCoordinator();
  // Starts the coordinator's thread and recovers the vLLM state (adoption). Blocks until done.
  void start();
  // Ends the thread; with release, first stops vLLM and unloads Ollama (§8 shutdown).
  void stop(bool release);

  bool manages(const ModelEntry& e) const;
  GpuTarget target_for(const ModelEntry& e) const;

  // From a request's executor: wait until `entry` may use the GPU. Throws ProxyError (503
  // err_backend_busy after CHAT_PROXY_SWITCH_WAIT_TIMEOUT_MS, start failures) or ClientGone.
  Task<GpuLease> acquire(const ModelEntry& entry, WaitObserver* observer);
  // From a request's executor, after `entry`'s managed vLLM server proved unreachable: true
  // when the server has died (within a moment), its exit handled, so that acquire() starts
  // it afresh; false when it still runs, or `entry` is not a managed vLLM model.
  Task<bool> server_died(const ModelEntry& entry);
  // Admin: make `entry` hold the GPU (returns when ready) / free it. backend "" = both,
  // "vllm" or "ollama" = only when that backend holds it.
  Task<void> activate(const ModelEntry& entry);
  Task<void> deactivate(std::string backend);

  // Called on the coordinator's thread after every switch, done or failed (telemetry). Set
  // before start().
  std::function<void(const GpuTarget& from, const GpuTarget& to, double ms, bool ok)> on_switch;

  std::shared_ptr<const GpuState> state() const {
    std::lock_guard lk(state_mu_);
    return state_;
  }

 private:
  friend class GpuLease;
  struct Ticket;
  struct Core;
  struct WaitEnd;
  void release_one();

  const ProxyConfig& cfg_;
  asio::io_context ioc_{1};
  std::unique_ptr<Core> core_;  // touched only on ioc_'s thread
  std::thread thread_;
  mutable std::mutex state_mu_;
  std::shared_ptr<const GpuState> state_;
  void publish(std::shared_ptr<const GpuState> s) {
    std::lock_guard lk(state_mu_);
    state_ = std::move(s);
  }
};

}  // namespace imageworks
