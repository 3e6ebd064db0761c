#include "imageworks/ollama_manager.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "imageworks/simple_http.hpp"
#include "imageworks/time_format.hpp"

namespace imageworks {

using namespace std::chrono_literals;

namespace {

constexpr auto kCallTimeout = 10000ms;  // one Ollama API call
constexpr auto kPollEvery = 100ms;      // /api/ps while waiting for the unloads

std::string unload_body(const std::string& model) {
  nlohmann::json j = nlohmann::json::object();
  j["model"] = model;
  j["keep_alive"] = 0;
  return j.dump();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// What is left of the unload's deadline for one API call (at least 1 ms, at most a call's own
// limit): a hung Ollama — accepting, never answering — must not hold a switch for
// kCallTimeout per call past CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS.
std::chrono::milliseconds call_timeout(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(kCallTimeout));
}

}  // namespace

std::vector<std::string> parse_ollama_ps(std::string_view body) {
  std::vector<std::string> names;
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("models") || !j["models"].is_array()) return names;
  for (const auto& m : j["models"]) {
    if (!m.is_object()) continue;
    const char* key = m.contains("name") && m["name"].is_string() ? "name" : "model";
    if (m.contains(key) && m[key].is_string()) names.push_back(m[key].get<std::string>());
  }
  return names;
}

nlohmann::json to_json(const OllamaStatus& s) {
  nlohmann::json j = nlohmann::json::object();
  j["last_unloaded"] = s.last_unloaded;
  j["last_unload"] = s.last_unload == std::chrono::system_clock::time_point{} ? nlohmann::json(nullptr)
                                                                              : nlohmann::json(iso8601(s.last_unload));
  j["last_error"] = s.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.last_error);
  return j;
}

OllamaManager::OllamaManager(const ProxyConfig& cfg)
    : base_url_(cfg.ollama_base_url), unload_timeout_(cfg.ollama_unload_timeout_ms) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
}

Task<std::vector<std::string>> OllamaManager::loaded_models() { return loaded_models(kCallTimeout); }

Task<std::vector<std::string>> OllamaManager::loaded_models(std::chrono::milliseconds timeout) {
  auto r = co_await simple_http(base_url_, http::verb::get, "/api/ps", {}, timeout);
  if (r.status != 200)
    throw SimpleHttpError(base_url_ + "/api/ps answered HTTP " + std::to_string(r.status), false, false);
  co_return parse_ollama_ps(r.body);
}

Task<std::vector<std::string>> OllamaManager::unload_all() {
  std::vector<std::string> loaded;
  status_.last_error.clear();
  const auto began = std::chrono::steady_clock::now();
  const auto deadline = began + unload_timeout_;  // bounds the API calls too
  try {
    loaded = co_await loaded_models(call_timeout(deadline));
  } catch (const SimpleHttpError& e) {
    spdlog::info("[ollama-manager] {}: nothing to unload ({})", base_url_, e.what());
    co_return loaded;
  }
  status_.last_unloaded = loaded;
  status_.last_unload = std::chrono::system_clock::now();
  if (loaded.empty()) co_return loaded;
  for (const auto& model : loaded) {
    spdlog::info("[ollama-manager] keep_alive unload {} ({})", model, base_url_);
    try {
      auto r = co_await simple_http(base_url_, http::verb::post, "/api/generate", unload_body(model),
                                    call_timeout(deadline));
      if (r.status != 200) spdlog::warn("[ollama-manager] keep_alive unload {} answered HTTP {}: {}", model, r.status, r.body);
    } catch (const SimpleHttpError& e) {
      spdlog::warn("[ollama-manager] keep_alive unload {} failed: {}", model, e.what());
    }
  }
  // The unload is asynchronous in Ollama: the reply comes before the memory is free.
  asio::steady_timer pause(co_await asio::this_coro::executor);
  std::vector<std::string> still = loaded;
  while (!still.empty()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      status_.last_error = "still loaded after " + std::to_string(unload_timeout_.count()) +
                           " ms (CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS): " + join(still);
      spdlog::warn("[ollama-manager] {}; going on", status_.last_error);
      break;
    }
    pause.expires_after(kPollEvery);
    co_await pause.async_wait(use_task);
    try {
      still = co_await loaded_models(call_timeout(deadline));
    } catch (const SimpleHttpError& e) {
      // Cut short by the unload's deadline: still loaded as far as we know (warned above).
      if (std::chrono::steady_clock::now() >= deadline) continue;
      spdlog::warn("[ollama-manager] /api/ps failed while waiting for unloads: {}", e.what());
      still.clear();
    }
  }
  if (still.empty())
    spdlog::info("[ollama-manager] unloaded {} in {} ms", join(loaded),
                 std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began).count());
  co_return loaded;
}

}  // namespace imageworks
