#pragma once
// OllamaManager (§8): frees the GPU memory Ollama holds. It lists the loaded models
// (GET /api/ps) and unloads each with POST /api/generate {"model":M,"keep_alive":0} — Ollama
// has no /api/stop — then waits until /api/ps is empty or CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS
// passed (a warning, and the switch goes on). Runs on the GPU coordinator's executor.
#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"
#include "imageworks/config.hpp"

namespace imageworks {

struct OllamaStatus {
  std::vector<std::string> last_unloaded;  // models the last unload_all() asked to unload
  std::chrono::system_clock::time_point last_unload{};
  std::string last_error;                  // e.g. unload timeout, Ollama unreachable
};
nlohmann::json to_json(const OllamaStatus& s);

class OllamaManager {
 public:
  explicit OllamaManager(const ProxyConfig& cfg);
  // The loaded models' names; throws SimpleHttpError when Ollama does not answer.
  Task<std::vector<std::string>> loaded_models();
  Task<std::vector<std::string>> loaded_models(std::chrono::milliseconds timeout);
  // Unloads everything Ollama holds; returns the models it asked to unload. An Ollama that
  // is not running holds nothing: that is no error. CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS bounds
  // the whole of it, the API calls included (a hung Ollama delays a switch no longer).
  Task<std::vector<std::string>> unload_all();
  const std::string& base_url() const { return base_url_; }
  const OllamaStatus& status() const { return status_; }

 private:
  std::string base_url_;
  std::chrono::milliseconds unload_timeout_;
  OllamaStatus status_;
};

// The model names in an /api/ps body ({"models":[{"name":…,"model":…}]}). Pure.
std::vector<std::string> parse_ollama_ps(std::string_view body);

}  // namespace imageworks
