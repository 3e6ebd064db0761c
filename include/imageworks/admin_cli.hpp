#pragma once
// The CLI's commands besides serve and config (§12):
//   models list [--json]                       the registry as /v1/models names it, from disk
//   activate-model NAME | activate-model --stop | current-model   through a running proxy
// A running proxy is found through --url, else CHAT_PROXY_HOST / CHAT_PROXY_PORT; with API
// keys configured (CHAT_PROXY_API_KEYS / _FILE) the first one is sent as a bearer token.
#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "imageworks/config.hpp"

namespace imageworks {

struct AdminCommand {
  enum class Kind { activate, stop, current } kind = Kind::current;
  std::string model;  // activate
  std::string url;    // "" = from the configuration
};

// Prints the outcome (stdout) or the problem (stderr); returns the exit code: 0 done, 1 the
// proxy refused (the error it gave), 3 the proxy could not be reached.
int run_admin_command(const ProxyConfig& cfg, const AdminCommand& cmd);

struct ModelsListCommand {
  bool json = false;  // a JSON array for scripts instead of the table
  std::string url;    // the proxy asked for the ACTIVE column; "" = from the configuration
};

// Lists the registry's models (the names /v1/models serves, read from CHAT_PROXY_REGISTRY_DIR)
// on stdout. ACTIVE comes from the running proxy's /v1/admin/state; when none answers within
// a short timeout it is unknown ("-", null) and one stderr line says why. Returns 0.
int run_models_list(const ProxyConfig& cfg, const ModelsListCommand& cmd);

// "http://127.0.0.1:8100" from the configuration (a wildcard bind address means loopback).
std::string proxy_url(const ProxyConfig& cfg);

// The proxy the CLI talks to: `given` (--url) else proxy_url(cfg); a trailing "/" or "/v1"
// is dropped, so the OpenAI base URL works too.
std::string admin_base_url(const ProxyConfig& cfg, const std::string& given);

// GET /v1/admin/state of the proxy at `base_url`: its JSON, or why there is none
// ("cannot reach …", "HTTP 403: …").
struct GpuStateReply {
  std::optional<nlohmann::json> state;
  std::string problem;
};
GpuStateReply fetch_gpu_state(const std::string& base_url, const std::string& authorization,
                              std::chrono::milliseconds timeout);

// What the CLI sends as Authorization to a proxy with API keys: "Bearer <the first key of
// CHAT_PROXY_API_KEYS / _FILE>" (the same settings the daemon reads), "" when none is set.
std::string cli_authorization(const ProxyConfig& cfg);

}  // namespace imageworks
