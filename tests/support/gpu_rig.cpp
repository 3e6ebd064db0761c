#include "support/gpu_rig.hpp"

#include <csignal>
#include <iostream>

#include <gtest/gtest.h>

#include "support/chat_rig.hpp"

namespace imageworks::test {

using nlohmann::json;

std::string chat_json(const std::string& model, bool stream) {
  json b = json::object();
  b["model"] = model;
  b["messages"] = json::array({json{{"role", "user"}, {"content", "hi"}}});
  b["stream"] = stream;
  return b.dump();
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

GpuRig::GpuRig(std::vector<VllmModel> models, std::map<std::string, std::string> extra) {
  events = std::make_unique<FakeVllmEvents>(dir.path() / "vllm-events.jsonl");
  json entries = json::array();
  json llama = json::object();
  llama["name"] = "llama";
  llama["backend"] = "ollama";
  llama["served_model_id"] = "llama3.2:3b";
  entries.push_back(llama);
  for (const auto& m : models) {
    json e = json::object();
    e["name"] = m.name;
    e["backend"] = "vllm";
    e["served_model_id"] = "served-" + m.name;
    json args = json::array({"--fake-events", events->path().string(), "--fake-max-lifetime-s", "120"});
    for (const auto& f : m.fake_flags) args.push_back(f);
    e["backend_config"] = json{{"model_path", "/models/" + m.name}, {"extra_args", args}};
    entries.push_back(e);
  }
  dir.write("registry/model_registry.json", entries.dump(2));
  vllm_port = closed_loopback_port();
  env = {{"CHAT_PROXY_REGISTRY_DIR", (dir.path() / "registry").string()},
         {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"},
         {"CHAT_PROXY_OLLAMA_BASE_URL", ollama.base_url()},
         {"CHAT_PROXY_VLLM_COMMAND", fake_vllm_binary()},
         {"CHAT_PROXY_VLLM_PORT", std::to_string(vllm_port)},
         {"CHAT_PROXY_VLLM_STATE_PATH", state_path()},
         {"CHAT_PROXY_VLLM_START_TIMEOUT_S", "30"},
         {"CHAT_PROXY_VLLM_STOP_GRACE_S", "5"},
         {"CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS", "3000"},
         {"CHAT_PROXY_LOG_LEVEL", "debug"}};
  for (auto& [k, v] : extra) env[k] = v;
  proxy = std::make_unique<ProxyProcess>(env);
}

GpuRig::~GpuRig() {
  if (::testing::Test::HasFailure()) std::cerr << "--- proxy log ---\n" << proxy->stderr_text();
  proxy.reset();
  for (int pid : vllm_pids())  // nothing a test started may outlive it
    if (pid > 1) ::kill(-pid, SIGKILL), ::kill(pid, SIGKILL);
}

std::string GpuRig::state_path() const { return (dir.path() / "_staging" / "active_vllm.json").string(); }

void GpuRig::restart_proxy(std::map<std::string, std::string> extra) {
  auto e = env;
  for (auto& [k, v] : extra) e[k] = v;
  proxy = std::make_unique<ProxyProcess>(e);
}

HttpReply GpuRig::chat(const std::string& model, bool stream,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
  return http_call(port(), "POST", "/v1/chat/completions", chat_json(model, stream), headers, std::chrono::seconds(60));
}

std::vector<json> GpuRig::vllm_events(const std::string& event, const std::string& model) const {
  std::vector<json> out;
  for (auto& e : events->all(event))
    if (e.value("served_model_name", "") == "served-" + model) out.push_back(e);
  return out;
}

std::vector<int> GpuRig::vllm_pids() const {
  std::vector<int> pids;
  for (auto& e : events->all()) {
    for (const char* key : {"pid", "worker_pid"})
      if (e.contains(key) && e[key].is_number_integer()) pids.push_back(e[key].get<int>());
  }
  return pids;
}

}  // namespace imageworks::test
