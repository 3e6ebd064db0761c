#pragma once
// The managed vLLM server (§8): one at a time on one port. Process control is a small state
// machine — stopped → starting → ready → stopping → stopped — owned by one executor (the GPU
// coordinator's): every call below runs there, so no locks. Local mode runs the server as a
// child process; remote mode asks an executor service (`imageworks-chat-proxy vllm-executor`).
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"
#include "imageworks/config.hpp"
#include "imageworks/errors.hpp"
#include "imageworks/registry.hpp"

namespace imageworks {

enum class BackendState { stopped, starting, ready, stopping };
const char* to_string(BackendState s);

struct VllmStatus {
  BackendState state = BackendState::stopped;
  std::string logical_name, served_model_id;
  int pid = 0;
  int port = 0;
  std::chrono::system_clock::time_point started_at{};  // when its start began
  std::chrono::system_clock::time_point last_start{}, last_stop{};
  std::string base_url;    // where requests go while ready, "http://127.0.0.1:24001"
  std::string log_path;    // the server's output (local mode)
  std::string last_error;  // why the last start failed or the server exited
  bool adopted = false;    // found running at startup (state file), not started by us
};
nlohmann::json to_json(const VllmStatus& s);

class VllmControl {
 public:
  virtual ~VllmControl() = default;
  // At startup: adopt a live server recorded in the state file (local) or read the remote
  // executor's state; a dead one's record is removed.
  virtual Task<void> recover() = 0;
  // Returns when `entry`'s server answers /health with 200; stops another one first.
  // Throws ProxyError: 503 err_model_start_timeout, 502 err_backend_unavailable.
  virtual Task<void> activate(const ModelEntry& entry) = 0;
  // Returns when no server runs (SIGTERM, SIGKILL after the grace, group reaped).
  virtual Task<void> deactivate() = 0;
  virtual const VllmStatus& status() const = 0;
  // After a request found the running server unreachable: true when its process has exited,
  // now or within `limit` (its exit then handled: on_unexpected_exit has run), false when it
  // still runs. Local mode; remote mode answers false (the executor's poll sees a death).
  virtual Task<bool> wait_for_exit(std::chrono::milliseconds limit) {
    (void)limit;
    co_return false;
  }
  // Runs on the owner's executor when the server exits on its own (crash, OOM kill).
  std::function<void(const std::string& why)> on_unexpected_exit;
  // Runs on the owner's executor after status() changed (starting, ready, stopping…).
  std::function<void()> on_state_change;

 protected:
  void changed() {
    if (on_state_change) on_state_change();
  }
};

std::unique_ptr<VllmControl> make_local_vllm(Executor owner, const ProxyConfig& cfg);
std::unique_ptr<VllmControl> make_remote_vllm(Executor owner, const ProxyConfig& cfg);
// Local, or remote when CHAT_PROXY_VLLM_REMOTE_URL is set.
std::unique_ptr<VllmControl> make_vllm_control(Executor owner, const ProxyConfig& cfg);

// `imageworks-chat-proxy vllm-executor`: the local manager behind /admin/* on CHAT_PROXY_HOST
// and CHAT_PROXY_PORT, for a proxy in remote mode. Blocks until SIGTERM; returns the exit code.
int run_vllm_executor(const ProxyConfig& cfg);

// The command that starts `entry` (§8): its start_command with {port}, {served_model_id},
// {model_path}, {gpu_memory_utilization}, {max_model_len}, {chat_template} substituted, or
// `<vllm_command> serve <model_path> --port P --served-model-name S
// --gpu-memory-utilization G --max-model-len L [--chat-template T] extra_args…`.
// Throws ProxyError 503 when the entry has no model path. Pure, for tests.
std::vector<std::string> vllm_command(const ModelEntry& entry, const ProxyConfig& cfg, int port);

}  // namespace imageworks
