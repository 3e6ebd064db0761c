#include "imageworks/admin_cli.hpp"

#include <algorithm>
#include <iostream>

#include <nlohmann/json.hpp>

#include "imageworks/asio.hpp"
#include "imageworks/simple_http.hpp"

namespace imageworks {

namespace {

using nlohmann::json;

struct Outcome {
  int status = 0;
  std::string body;
};

// One blocking call through the same client the daemon uses, on a private loop.
Outcome call(const std::string& url, const std::string& authorization, http::verb method, const std::string& target,
             std::string body, std::chrono::milliseconds timeout) {
  asio::io_context ioc;
  auto fut = asio::co_spawn(ioc, simple_http(url, method, target, std::move(body), timeout, authorization),
                            asio::use_future);
  ioc.run();
  auto r = fut.get();  // rethrows SimpleHttpError
  return {r.status, std::move(r.body)};
}

std::string error_message(const Outcome& o) {
  auto j = json::parse(o.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message"))
    return j["error"]["message"].is_string() ? j["error"]["message"].get<std::string>() : j["error"]["message"].dump();
  return "HTTP " + std::to_string(o.status) + ": " + o.body.substr(0, 500);
}

std::string describe_active(const json& state) {
  if (!state.is_object() || !state.contains("active") || state["active"].is_null()) return "none";
  const auto& a = state["active"];
  std::string s = a.value("logical_name", std::string("?"));
  s += " (" + a.value("backend", std::string("?"));
  if (a.contains("pid") && a["pid"].is_number()) s += ", pid " + std::to_string(a["pid"].get<long>());
  if (a.contains("port") && a["port"].is_number()) s += ", port " + std::to_string(a["port"].get<long>());
  if (a.contains("state") && a["state"].is_string()) s += ", " + a["state"].get<std::string>();
  return s + ")";
}

}  // namespace

std::string proxy_url(const ProxyConfig& cfg) {
  std::string host = cfg.host;
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(cfg.port);
}

std::string admin_base_url(const ProxyConfig& cfg, const std::string& given) {
  std::string url = given.empty() ? proxy_url(cfg) : given;
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.ends_with("/v1")) url.resize(url.size() - 3);
  return url;
}

std::string cli_authorization(const ProxyConfig& cfg) {
  return cfg.api_keys.empty() ? std::string() : "Bearer " + cfg.api_keys.front();
}

GpuStateReply fetch_gpu_state(const std::string& base_url, const std::string& authorization,
                              std::chrono::milliseconds timeout) {
  Outcome o;
  try {
    o = call(base_url, authorization, http::verb::get, "/v1/admin/state", {}, timeout);
  } catch (const SimpleHttpError& e) {
    return {std::nullopt, std::string("cannot reach it: ") + e.what()};
  }
  if (o.status != 200) {
    auto why = error_message(o);
    if (!why.starts_with("HTTP ")) why = "HTTP " + std::to_string(o.status) + ": " + why;
    std::replace_if(why.begin(), why.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    return {std::nullopt, "it answered " + why};
  }
  auto state = json::parse(o.body, nullptr, false);
  if (!state.is_object()) return {std::nullopt, "its /v1/admin/state reply is not a JSON object"};
  return {std::move(state), ""};
}

int run_admin_command(const ProxyConfig& cfg, const AdminCommand& cmd) {
  const std::string url = admin_base_url(cfg, cmd.url);
  const std::string auth = cli_authorization(cfg);
  // Activation may include a switch: the start timeout plus the wait for running requests.
  const auto long_wait = std::chrono::seconds(cfg.vllm_start_timeout_s + cfg.vllm_stop_grace_s + 60) +
                         std::chrono::milliseconds(cfg.switch_wait_timeout_ms);
  Outcome o;
  try {
    if (cmd.kind == AdminCommand::Kind::activate) {
      json body = json::object();
      body["model"] = cmd.model;
      o = call(url, auth, http::verb::post, "/v1/admin/activate", body.dump(),
               std::chrono::duration_cast<std::chrono::milliseconds>(long_wait));
    } else if (cmd.kind == AdminCommand::Kind::stop) {
      o = call(url, auth, http::verb::post, "/v1/admin/deactivate", "{}",
               std::chrono::duration_cast<std::chrono::milliseconds>(long_wait));
    } else {
      o = call(url, auth, http::verb::get, "/v1/admin/state", {}, std::chrono::seconds(10));
    }
  } catch (const SimpleHttpError& e) {
    std::cerr << "imageworks-chat-proxy: cannot reach the proxy at " << url << ": " << e.what()
              << "\n  (is it running? give its address with --url or CHAT_PROXY_HOST/CHAT_PROXY_PORT)\n";
    return 3;
  }
  if (o.status != 200) {
    std::cerr << "imageworks-chat-proxy: the proxy at " << url << " refused: " << error_message(o) << "\n";
    return 1;
  }
  const auto state = json::parse(o.body, nullptr, false);
  switch (cmd.kind) {
    case AdminCommand::Kind::activate:
      std::cout << "active: " << describe_active(state) << "\n";
      break;
    case AdminCommand::Kind::stop:
      std::cout << "GPU free: no model active\n";
      break;
    case AdminCommand::Kind::current: {
      const bool none = !state.is_object() || !state.contains("active") || state["active"].is_null();
      std::cout << (none ? std::string("none") : state["active"].value("logical_name", std::string("none"))) << "\n";
      break;
    }
  }
  return 0;
}

}  // namespace imageworks
