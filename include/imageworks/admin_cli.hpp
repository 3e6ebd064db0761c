#pragma once
// The CLI's GPU commands (§12), talking to a running proxy's admin routes:
//   activate-model NAME | activate-model --stop | current-model
// The proxy is found through --url, else CHAT_PROXY_HOST / CHAT_PROXY_PORT.
#include <string>

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

// "http://127.0.0.1:8100" from the configuration (a wildcard bind address means loopback).
std::string proxy_url(const ProxyConfig& cfg);

}  // namespace imageworks
