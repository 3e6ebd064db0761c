#pragma once
// The daemon's shared state: immutable config, the registry service (current snapshot,
// hot reload on its own thread) and process facts. Route handlers receive an App&.
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "imageworks/asio.hpp"
#include "imageworks/config.hpp"
#include "imageworks/http.hpp"
#include "imageworks/registry.hpp"

namespace imageworks {

class GpuCoordinator;
class AutostartManager;
class RequestRecorder;

// Owns the RegistryLoader on a private thread: the poll loop and explicit reloads run
// there (file reads never block the event loop) and publish snapshots through the holder.
class RegistryService {
 public:
  explicit RegistryService(const ProxyConfig& cfg);  // loads once, synchronously
  ~RegistryService();
  std::shared_ptr<const RegistrySnapshot> snapshot() const { return holder_.get(); }
  void start_watching();
  void stop();
  // Reload now on the service thread; completes on the caller's executor.
  Task<std::shared_ptr<const RegistrySnapshot>> reload();

 private:
  Task<void> watch_loop();
  std::shared_ptr<const RegistrySnapshot> load_and_publish(const char* why);

  std::chrono::milliseconds poll_;
  RegistryLoader loader_;
  RegistryHolder holder_;
  asio::io_context ioc_{1};
  std::thread thread_;
};

// A few threads for CPU-heavy request work. An io_context (not asio::thread_pool) so a Task
// can be co_spawned onto it and awaited from an event loop, as RegistryService::reload().
class CpuPool {
 public:
  explicit CpuPool(int threads);
  ~CpuPool();
  asio::io_context& context() { return ioc_; }

 private:
  asio::io_context ioc_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
};

struct App {
  explicit App(ProxyConfig c) : cfg(std::move(c)), registry(cfg) {}
  const ProxyConfig cfg;
  RegistryService registry;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // Relay of POST /v1/<route> to the model's backend (the ChatForwarder); set by main.
  std::function<Task<void>(Exchange&, std::string path)> forward;
  // The GPU's owner (vLLM processes, Ollama unloads); set by main, null in tools and tests
  // that need no process control.
  GpuCoordinator* gpu = nullptr;
  // Starts backends whose health check fails (CHAT_PROXY_AUTOSTART_*); set by main.
  AutostartManager* autostart = nullptr;
  // The request log and the metrics (§10); set by main, null in tools and tests.
  RequestRecorder* recorder = nullptr;
  // CPU-heavy request work (image decoding and encoding) runs here, off the event loops.
  CpuPool cpu_pool{2};
};

ListingOptions listing_options(const ProxyConfig& cfg);

}  // namespace imageworks
