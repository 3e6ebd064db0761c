#pragma once
// ProxyConfig: every CHAT_PROXY_* setting (and IMAGEWORKS_OLLAMA_HOST), read once from the
// environment, overridden by CLI flags, validated, then immutable. Nothing else reads getenv.
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace imageworks {

// A bad value: names the variable (e.g. "CHAT_PROXY_PORT") and what is wrong with it.
struct ConfigError : std::runtime_error {
  ConfigError(std::string variable, const std::string& message)
      : std::runtime_error(variable + ": " + message), variable(std::move(variable)) {}
  std::string variable;
};

// One recognised setting: its variable, CLI flag, default and help text. The table of these
// drives parsing, `config` output, CLI flag registration (grouped by section in --help) and
// docs/configuration.md (one table per section).
struct ConfigOption {
  std::string env;          // "CHAT_PROXY_PORT"
  std::string flag;         // "--port"
  std::string default_value;
  std::string kind;         // "string" | "int" | "bool" | "double" | "dir" | "list"
  std::string help;
  bool secret = false;      // masked in `config` output
  std::string fallback_env; // read when `env` is unset, e.g. IMAGEWORKS_OLLAMA_HOST
  bool empty_is_value = false;  // an empty value given explicitly is a value ("off"), not "unset"
  std::string section;      // "Server", "Backends and GPU"…: the --help group and the docs heading
  // Non-empty: the variable is accepted (a seed's deployment may set it) but nothing in this
  // implementation reads its value; says why. `config` and `serve` warn when it is set.
  std::string no_effect;
};
const std::vector<ConfigOption>& config_options();

struct ProxyConfig {
  // server
  std::string host = "127.0.0.1";
  int port = 8100;
  int threads = 0;                        // 0 = one per core
  std::string log_level = "info";
  std::uint64_t max_body_bytes = 32ull << 20;
  int request_timeout_ms = 30000;         // whole request head+body must arrive in this time
  int keepalive_timeout_ms = 60000;       // idle keep-alive connection closed after this
  int shutdown_grace_ms = 10000;          // in-flight requests get this long on SIGTERM
  int max_connections = 0;                // open client connections; 0 = half the descriptor limit
  // registry and listing
  std::string registry_dir = "configs";
  std::string template_dir;               // default: <registry_dir>/chat_templates
  int registry_poll_ms = 1000;
  bool suppress_decorations = true;
  bool include_non_installed = false;
  bool include_test_models = false;
  std::string profile = "production";
  bool enable_debug_routes = true;
  bool enable_metrics = false;
  int metrics_window_s = 300;
  // forwarding
  int backend_timeout_ms = 120000;
  int stream_idle_timeout_ms = 60000;     // the backend's silence only, never a slow client's
  int client_write_timeout_ms = 60000;    // a client that accepts no bytes this long is cut off
  std::uint64_t max_sse_event_bytes = 16ull << 20;  // one upstream SSE event, buffered whole
  int upstream_max_idle = 64;              // idle keep-alive connections per backend and event loop
  int upstream_idle_timeout_ms = 60000;    // an idle upstream connection is closed after this
  int backend_max_concurrent = 256;        // upstream requests in flight per backend (0 = no limit)
  int backend_max_queue = 512;             // requests waiting for one of them, per backend; 429 beyond
  int switch_wait_timeout_ms = 300000;
  bool disable_tool_normalization = false;
  // policy / normalisation
  bool require_template = true;
  std::uint64_t max_image_bytes = 6000000;
  bool image_downscale = true;
  int image_max_edge = 2048;
  bool fetch_image_urls = false;
  bool strip_images_for_text_models = false;
  bool vision_truncate_history = true;
  int vision_keep_last_n_turns = 1;
  bool reasoning_truncate_history = false;
  int reasoning_keep_last_n_turns = 2;
  // telemetry
  std::string log_path = "logs/chat_proxy.jsonl";  // "" = no request log (given as "" or "off")
  std::uint64_t max_log_bytes = 50000000;
  int log_keep_files = 5;
  bool log_prompts = false;
  // backends
  std::string ollama_base_url = "http://127.0.0.1:11434";
  int ollama_unload_timeout_ms = 15000;
  bool vllm_single_port = true;
  int vllm_port = 24001;
  std::string vllm_state_path = "_staging/active_vllm.json";
  double vllm_gpu_memory_utilization = 0.85;
  int vllm_max_model_len = 8192;
  std::string vllm_command = "vllm";
  int vllm_start_timeout_s = 600;
  int vllm_stop_grace_s = 20;
  std::string vllm_remote_url;
  bool autostart_enabled = false;
  std::string autostart_map;
  int autostart_grace_s = 120;
  std::string loopback_alias;             // accepted, no effect (see config_options())
  bool release_on_exit = true;
  // security
  std::vector<std::string> api_keys;
  std::string api_keys_file;
  bool admin_loopback_only = true;
};

using EnvMap = std::map<std::string, std::string>;

// The process environment restricted to the variables in config_options().
EnvMap read_process_env();

// A CHAT_PROXY_* variable that no option reads: most likely a typo, which would otherwise
// leave the setting at its default without a word. `suggestion`: the closest option's
// variable when one is near ("CHAT_PROXY_PORTT" → "CHAT_PROXY_PORT"), else "".
struct UnknownVariable {
  std::string name, suggestion;
};
// Of the given variable names (e.g. every name in the process environment).
std::vector<UnknownVariable> unknown_variables(const std::vector<std::string>& names);
std::vector<std::string> process_env_names();
// "CHAT_PROXY_PORTT is not a setting of imageworks-chat-proxy (did you mean CHAT_PROXY_PORT?)"
std::string unknown_variable_text(const UnknownVariable& v);

// The options marked no_effect that are set (a non-empty value in `env` or `flags`), in table
// order: setting them changes nothing, which the operator should hear about.
std::vector<ConfigOption> settings_without_effect(const EnvMap& env, const EnvMap& flags);
// "CHAT_PROXY_LOOPBACK_ALIAS is accepted but has no effect in imageworks-chat-proxy: <why>"
std::string without_effect_text(const ConfigOption& o);

// Parse `env` (variables) overridden by `flags` (keyed by variable name too). Throws
// ConfigError naming the variable for a bad number, bad bool or missing directory.
// An empty value, in either map, counts as unset: the option keeps its default (except for
// options with empty_is_value: CHAT_PROXY_LOG_PATH="" turns the request log off).
ProxyConfig load_config(const EnvMap& env, const EnvMap& flags = {});

// The effective configuration as JSON keyed by variable name, secrets masked ("***").
nlohmann::json config_to_json(const ProxyConfig& cfg);

}  // namespace imageworks
