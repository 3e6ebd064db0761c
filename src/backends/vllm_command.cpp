// The vLLM start command of an entry (§8), and the status's JSON form. Pure functions.
#include <cstdio>
#include <filesystem>

#include "imageworks/time_format.hpp"
#include "imageworks/vllm_manager.hpp"

namespace imageworks {

const char* to_string(BackendState s) {
  switch (s) {
    case BackendState::stopped: return "stopped";
    case BackendState::starting: return "starting";
    case BackendState::ready: return "ready";
    case BackendState::stopping: return "stopping";
  }
  return "stopped";
}

namespace {

// One pass over `arg`: a value that itself holds "{port}" is not substituted again.
std::string substitute(std::string_view arg, const std::vector<std::pair<std::string_view, std::string>>& values) {
  std::string out;
  for (std::size_t i = 0; i < arg.size();) {
    bool hit = false;
    if (arg[i] == '{') {
      for (const auto& [name, value] : values) {
        if (arg.substr(i, name.size()) == name) {
          out += value;
          i += name.size();
          hit = true;
          break;
        }
      }
    }
    if (!hit) out += arg[i++];
  }
  return out;
}

std::string format_fraction(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::vector<std::string> vllm_command(const ModelEntry& e, const ProxyConfig& cfg, int port) {
  const std::string model_path = !e.backend_config.model_path.empty() ? e.backend_config.model_path : e.download_path;
  if (model_path.empty() && e.backend_config.start_command.empty())
    throw ProxyError(503, "err_backend_unavailable",
                     "model '" + e.name + "' has neither backend_config.model_path nor download_path: nothing for vLLM to serve");
  std::string template_path;
  if (!e.chat_template.empty()) {
    std::filesystem::path p = std::filesystem::path(cfg.template_dir) / e.chat_template;
    std::error_code ec;
    auto abs = std::filesystem::absolute(p, ec);
    template_path = (ec ? p : abs).lexically_normal().string();
  }
  const std::string max_len = std::to_string(e.context_length.value_or(cfg.vllm_max_model_len));
  const std::string gpu = format_fraction(cfg.vllm_gpu_memory_utilization);
  std::vector<std::string> argv;
  if (!e.backend_config.start_command.empty()) {
    const std::vector<std::pair<std::string_view, std::string>> values = {
        {"{port}", std::to_string(port)}, {"{served_model_id}", e.upstream_model()}, {"{model_path}", model_path},
        {"{gpu_memory_utilization}", gpu}, {"{max_model_len}", max_len}, {"{chat_template}", template_path}};
    for (const auto& raw : e.backend_config.start_command) {
      std::string arg = substitute(raw, values);
      if (!arg.empty()) {
        argv.push_back(std::move(arg));
      } else if (raw == "{chat_template}" && !argv.empty() && argv.back() == "--chat-template") {
        argv.pop_back();  // no template: the flag goes with its missing value
      }
    }
    return argv;
  }
  argv = {cfg.vllm_command, "serve", model_path, "--port", std::to_string(port), "--served-model-name",
          e.upstream_model(), "--gpu-memory-utilization", gpu, "--max-model-len", max_len};
  if (!template_path.empty()) {
    argv.push_back("--chat-template");
    argv.push_back(template_path);
  }
  argv.insert(argv.end(), e.backend_config.extra_args.begin(), e.backend_config.extra_args.end());
  return argv;
}

nlohmann::json to_json(const VllmStatus& s) {
  using nlohmann::json;
  auto time_or_null = [](std::chrono::system_clock::time_point t) {
    return t == std::chrono::system_clock::time_point{} ? json(nullptr) : json(iso8601(t));
  };
  json j = json::object();
  j["state"] = to_string(s.state);
  j["logical_name"] = s.logical_name.empty() ? json(nullptr) : json(s.logical_name);
  j["served_model_id"] = s.served_model_id.empty() ? json(nullptr) : json(s.served_model_id);
  j["pid"] = s.pid > 0 ? json(s.pid) : json(nullptr);
  j["port"] = s.port > 0 ? json(s.port) : json(nullptr);
  j["started_at"] = time_or_null(s.started_at);
  j["last_start"] = time_or_null(s.last_start);
  j["last_stop"] = time_or_null(s.last_stop);
  j["base_url"] = s.base_url.empty() ? json(nullptr) : json(s.base_url);
  j["log_path"] = s.log_path.empty() ? json(nullptr) : json(s.log_path);
  j["last_error"] = s.last_error.empty() ? json(nullptr) : json(s.last_error);
  j["adopted"] = s.adopted;
  return j;
}

}  // namespace imageworks
