#pragma once
// AutostartManager (§8): with CHAT_PROXY_AUTOSTART_ENABLED=1, a request for a backend whose
// health check fails starts the command CHAT_PROXY_AUTOSTART_MAP gives for that backend
// (`ollama=ollama serve,llamacpp=llama-server -m /m.gguf --port 8080`; `backend:command` is
// accepted too), without a shell, its output and pid under <state dir>/autostart/, and waits
// for health up to CHAT_PROXY_AUTOSTART_GRACE_S (else 503 err_model_start_timeout). All
// requests needing the same backend share one start. Runs on a thread of its own.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"
#include "imageworks/config.hpp"
#include "imageworks/registry.hpp"

namespace imageworks {

// backend -> argv, from CHAT_PROXY_AUTOSTART_MAP; throws ConfigError for a malformed item.
std::map<std::string, std::vector<std::string>> parse_autostart_map(const std::string& text);

class AutostartManager {
 public:
  explicit AutostartManager(const ProxyConfig& cfg);
  ~AutostartManager();
  bool enabled() const { return enabled_; }
  // Does `backend` have a command to start it?
  bool covers(const std::string& backend) const { return enabled_ && commands_.count(backend) > 0; }
  // From a request's executor: returns once `base_url` (the entry's backend server) answers
  // its health check, starting the mapped command first when it does not. Throws ProxyError.
  Task<void> ensure(const std::string& backend, const std::string& base_url);
  nlohmann::json status() const;  // per backend: command, pid, running, last start, last error

 private:
  struct Service;
  Task<void> ensure_here(std::string backend, std::string base_url);
  static Task<void> reap_when_done(std::shared_ptr<Service> s, int pid);

  bool enabled_;
  std::chrono::seconds grace_;
  std::string dir_;
  std::map<std::string, std::vector<std::string>> commands_;
  asio::io_context ioc_{1};
  asio::executor_work_guard<Executor> work_{ioc_.get_executor()};
  std::map<std::string, std::shared_ptr<Service>> services_;  // touched on ioc_ only
  mutable std::mutex status_mu_;
  nlohmann::json status_ = nlohmann::json::object();
  std::thread thread_;
};

}  // namespace imageworks
