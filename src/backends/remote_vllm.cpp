// VllmManager, remote mode (§8, CHAT_PROXY_VLLM_REMOTE_URL): the vLLM server runs where an
// executor service runs it (`imageworks-chat-proxy vllm-executor`, e.g. the GPU container of
// the compose file). The same state machine, through POST /admin/activate, POST
// /admin/deactivate and GET /admin/state; an exit of the server is learnt by polling the
// state while it is ready.
#include <spdlog/spdlog.h>

#include "imageworks/forwarder.hpp"
#include "imageworks/simple_http.hpp"
#include "imageworks/upstream.hpp"
#include "imageworks/vllm_manager.hpp"

namespace imageworks {

using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr auto kStatePoll = 2000ms;
constexpr auto kStateTimeout = 10000ms;

bool loopback_host(std::string_view host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1" || host == "[::1]";
}

std::string activate_body(const std::string& logical_name) {
  json j = json::object();
  j["logical_name"] = logical_name;
  return j.dump();
}

class RemoteVllm final : public VllmControl {
 public:
  RemoteVllm(Executor owner, const ProxyConfig& cfg) : ex_(owner), cfg_(cfg), url_(cfg.vllm_remote_url), poll_(owner) {
    while (!url_.empty() && url_.back() == '/') url_.pop_back();
    remote_host_ = parse_base_url(url_).host;
  }

  const VllmStatus& status() const override { return st_; }

  Task<void> recover() override {
    try {
      auto r = co_await simple_http(url_, http::verb::get, "/admin/state", {}, kStateTimeout);
      if (r.status == 200) apply(r.body);
      spdlog::info("[vllm-manager] remote executor {}: {}", url_,
                   st_.logical_name.empty() ? std::string("no server active") : "'" + st_.logical_name + "' " + to_string(st_.state));
    } catch (const SimpleHttpError& e) {
      spdlog::warn("[vllm-manager] remote executor {} not reachable yet: {}", url_, e.what());
    }
    if (st_.state == BackendState::ready) watch();
  }

  Task<void> activate(const ModelEntry& entry) override {
    if (st_.state == BackendState::ready && st_.logical_name == entry.name) {
      watch();
      co_return;
    }
    st_.state = BackendState::starting;
    st_.logical_name = entry.name;
    st_.last_start = std::chrono::system_clock::now();
    changed();
    const auto timeout = std::chrono::seconds(cfg_.vllm_start_timeout_s + 2 * cfg_.vllm_stop_grace_s + 30);
    auto r = co_await call(http::verb::post, "/admin/activate", activate_body(entry.name), timeout);
    if (r.status != 200) {
      auto err = upstream_error(r.status, r.body);
      st_ = VllmStatus{};
      st_.last_error = "executor " + url_ + ": " + err.what();
      if (r.body.find("err_model_start_timeout") != std::string::npos)
        throw ProxyError(503, "err_model_start_timeout", st_.last_error);
      throw ProxyError(err.status, err.code, st_.last_error);
    }
    apply(r.body);
    changed();
    if (st_.state != BackendState::ready)
      throw ProxyError(502, "err_backend_unavailable", "executor " + url_ + " answered activate without a ready server");
    watch();
  }

  Task<void> deactivate() override {
    st_.state = BackendState::stopping;
    changed();
    const auto timeout = std::chrono::seconds(2 * cfg_.vllm_stop_grace_s + 30);
    auto r = co_await call(http::verb::post, "/admin/deactivate", "{}", timeout);
    if (r.status != 200)
      throw ProxyError(502, "err_backend_unavailable", "executor " + url_ + " could not stop vLLM: " + r.body.substr(0, 300));
    apply(r.body);
    st_.last_stop = std::chrono::system_clock::now();
    changed();
  }

 private:
  Task<SimpleReply> call(http::verb method, const char* target, std::string body, std::chrono::milliseconds timeout) {
    try {
      co_return co_await simple_http(url_, method, target, std::move(body), timeout);
    } catch (const SimpleHttpError& e) {
      st_.last_error = std::string("vLLM executor unreachable: ") + e.what();
    }
    // The state stays as it was (not "stopped"): the executor may still run a server, and
    // the next switch away must ask it to stop again (deactivate is idempotent there).
    throw ProxyError(502, "err_backend_unavailable", st_.last_error);
  }

  // The executor's /admin/state; a loopback base_url is the executor's own view, so the
  // server is reached at the executor's host instead.
  void apply(const std::string& body) {
    auto j = json::parse(body, nullptr, false);
    const json* a = j.is_object() && j.contains("active") && j["active"].is_object() ? &j["active"] : nullptr;
    VllmStatus s;
    s.last_start = st_.last_start;
    s.last_stop = st_.last_stop;
    if (a) {
      s.logical_name = a->value("logical_name", "");
      s.served_model_id = a->value("served_model_id", "");
      s.pid = (*a)["pid"].is_number() ? (*a)["pid"].get<int>() : 0;
      s.port = (*a)["port"].is_number() ? (*a)["port"].get<int>() : cfg_.vllm_port;
      const std::string state = a->value("state", "stopped");
      s.state = state == "ready" ? BackendState::ready : state == "starting" ? BackendState::starting
                : state == "stopping" ? BackendState::stopping : BackendState::stopped;
      s.started_at = std::chrono::system_clock::now();
      std::string base = a->contains("base_url") && (*a)["base_url"].is_string() ? (*a)["base_url"].get<std::string>() : "";
      try {
        if (!base.empty() && loopback_host(parse_base_url(base).host)) base.clear();
      } catch (const ProxyError&) {
        base.clear();
      }
      s.base_url = !base.empty() ? base : "http://" + remote_host_ + ":" + std::to_string(s.port);
    }
    st_ = std::move(s);
  }

  // While a server is ready, ask now and then whether it still is: a crash over there ends
  // its streams by itself, and the next request must start a fresh one.
  void watch() {
    if (watching_) return;
    watching_ = true;
    asio::co_spawn(ex_, poll_loop(), asio::detached);
  }
  Task<void> poll_loop() {
    while (st_.state == BackendState::ready) {
      poll_.expires_after(kStatePoll);
      beast::error_code ec;
      co_await poll_.async_wait(asio::redirect_error(use_task, ec));
      if (st_.state != BackendState::ready) break;
      const std::string was = st_.logical_name;
      try {
        auto r = co_await simple_http(url_, http::verb::get, "/admin/state", {}, kStateTimeout);
        if (r.status != 200 || st_.state != BackendState::ready) continue;
        apply(r.body);
      } catch (const SimpleHttpError&) {
        continue;  // a blip of the network is no exit
      }
      if (st_.state != BackendState::ready || st_.logical_name != was) {
        const std::string why = "remote vLLM server '" + was + "' is no longer running";
        st_.last_error = why;
        if (on_unexpected_exit) on_unexpected_exit(why);
        break;
      }
    }
    watching_ = false;
  }

  Executor ex_;
  const ProxyConfig& cfg_;
  std::string url_, remote_host_;
  VllmStatus st_;
  asio::steady_timer poll_;
  bool watching_ = false;
};

}  // namespace

std::unique_ptr<VllmControl> make_remote_vllm(Executor owner, const ProxyConfig& cfg) {
  return std::make_unique<RemoteVllm>(owner, cfg);
}

}  // namespace imageworks
