#pragma once
// End-to-end setup for GPU coordination: a fake Ollama, the fake vLLM executable as the
// proxy's vLLM command, a registry with one Ollama model and managed vLLM models, and the
// built proxy. Every fake vLLM process reports its lifecycle to one events file.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fakes/fake_ollama.hpp"
#include "support/fake_vllm_events.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {

struct VllmModel {
  std::string name;                     // logical name; served id is "served-<name>"
  std::vector<std::string> fake_flags;  // e.g. {"--fake-load-ms", "300"}
};

struct GpuRig {
  // models: the managed vLLM entries; env overrides the rig's defaults.
  explicit GpuRig(std::vector<VllmModel> models = {{"vllm-a", {}}, {"vllm-b", {}}},
                  std::map<std::string, std::string> env = {});
  ~GpuRig();

  FakeOllama ollama;
  TempDir dir;
  std::unique_ptr<FakeVllmEvents> events;
  std::map<std::string, std::string> env;  // what the proxy was started with
  std::unique_ptr<ProxyProcess> proxy;
  unsigned short vllm_port = 0;

  unsigned short port() const { return proxy->port(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }
  std::string state_path() const;
  // Start (another) proxy on the same registry, state file and environment.
  void restart_proxy(std::map<std::string, std::string> extra = {});
  HttpReply chat(const std::string& model, bool stream = false,
                 const std::vector<std::pair<std::string, std::string>>& headers = {});
  // The fake vLLM events of one model ("started", "healthy", "exit", ...).
  std::vector<nlohmann::json> vllm_events(const std::string& event, const std::string& model) const;
  // Every pid a fake vLLM reported (leaders and workers), to check nothing is left.
  std::vector<int> vllm_pids() const;
};

std::string chat_json(const std::string& model, bool stream);
// Milliseconds since the epoch, the clock of the fake's t_ms and FakeOllama's wall_ms.
std::int64_t wall_ms();

}  // namespace imageworks::test
