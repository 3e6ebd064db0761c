// `imageworks-chat-proxy vllm-executor` (§8 remote mode): the local VllmManager behind a
// small admin API, for a proxy that runs elsewhere (the compose file's GPU container):
//   POST /admin/activate {"logical_name"}  → 200 state once /health of the server is 200
//   POST /admin/deactivate                 → 200 state once it has exited
//   GET  /admin/state, GET /health
// One control loop owns the manager; calls are served one at a time, in order.
#include <deque>

#include <spdlog/spdlog.h>

#include "imageworks/app.hpp"
#include "imageworks/server.hpp"
#include "imageworks/vllm_manager.hpp"

namespace imageworks {

namespace {

using nlohmann::json;

class Executor_ {
 public:
  explicit Executor_(const ProxyConfig& cfg) : cfg_(cfg), registry_(cfg) {}

  void start() {
    control_ = make_local_vllm(ioc_.get_executor(), cfg_);
    auto recovered = asio::co_spawn(ioc_, control_->recover(), asio::use_future);
    thread_ = std::thread([this] { ioc_.run(); });
    recovered.get();
    registry_.start_watching();
  }
  void stop(bool release) {
    if (release) {  // in turn, after any activate still running
      auto done = asio::co_spawn(ioc_, run(Op::deactivate, nullptr), asio::use_future);
      try {
        done.get();
      } catch (const std::exception& e) {
        spdlog::error("[vllm-executor] stopping vLLM at exit: {}", e.what());
      }
    }
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
    registry_.stop();
  }

  Task<void> handle(Exchange& ex) {
    const std::string target(ex.request().target());
    const auto path = target.substr(0, target.find('?'));
    const auto method = ex.request().method();
    std::string body;
    if (path == "/health" && method == http::verb::get) {
      body = R"({"status":"ok"})";
    } else if (path == "/admin/state" && method == http::verb::get) {
      body = co_await call(Op::state, nullptr);
    } else if (path == "/admin/activate" && method == http::verb::post) {
      auto entry = std::make_shared<const ModelEntry>(entry_named(ex.request().body()));
      body = co_await call(Op::activate, entry);
    } else if (path == "/admin/deactivate" && method == http::verb::post) {
      body = co_await call(Op::deactivate, nullptr);
    } else {
      throw ProxyError(404, "err_not_found", "no route " + std::string(ex.request().method_string()) + " " + target);
    }
    co_await ex.send_json(http::status::ok, std::move(body));
  }

 private:
  enum class Op { state, activate, deactivate };

  // Runs op on the control loop after the calls before it finished; completes on the
  // caller's loop. (Member coroutines taking a shared_ptr: GCC 12 mishandles capturing
  // lambda coroutines and class-type temporaries passed to coroutine parameters.)
  Task<std::string> call(Op op, std::shared_ptr<const ModelEntry> entry) {
    co_return co_await asio::co_spawn(ioc_, run(op, entry), use_task);
  }
  Task<std::string> run(Op op, std::shared_ptr<const ModelEntry> entry) {
    co_await turn();
    struct Done {
      Executor_& e;
      ~Done() { e.next(); }
    } done{*this};
    if (op == Op::activate) co_await control_->activate(*entry);
    if (op == Op::deactivate) co_await control_->deactivate();
    co_return state();
  }
  Task<void> turn() {
    if (!busy_) {
      busy_ = true;
      co_return;
    }
    asio::steady_timer t(ioc_, asio::steady_timer::time_point::max());
    waiters_.push_back(&t);
    beast::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_task, ec));  // next() hands the turn over
  }
  void next() {
    if (waiters_.empty()) {
      busy_ = false;
      return;
    }
    waiters_.front()->cancel();
    waiters_.pop_front();
  }

  ModelEntry entry_named(const std::string& body) {
    auto j = json::parse(body, nullptr, false);
    std::string name;
    if (j.is_object()) {
      for (const char* key : {"logical_name", "model"})
        if (j.contains(key) && j[key].is_string()) name = j[key].get<std::string>();
    }
    if (name.empty()) throw ProxyError(400, "err_bad_request", R"(give the model as {"logical_name": NAME})", "logical_name");
    auto snap = registry_.snapshot();
    const ModelEntry* e = snap->find_entry(name);
    if (!e) {
      if (const ListedModel* m = snap->resolve(name)) e = m->entry;
    }
    if (!e) throw ProxyError(404, "err_model_not_found", "model '" + name + "' is not in this executor's registry", "logical_name");
    if (e->backend != "vllm") throw ProxyError(400, "err_bad_request", "model '" + name + "' is not a vLLM entry", "logical_name");
    return *e;
  }

  std::string state() const {
    const VllmStatus& s = control_->status();
    json j = json::object();
    if (s.state == BackendState::stopped) {
      j["active"] = nullptr;
    } else {
      json a = to_json(s);
      a["backend"] = "vllm";
      j["active"] = std::move(a);
    }
    j["vllm"] = to_json(s);
    return j.dump();
  }

  const ProxyConfig& cfg_;
  RegistryService registry_;
  asio::io_context ioc_{1};
  asio::executor_work_guard<Executor> work_{ioc_.get_executor()};
  std::thread thread_;
  std::unique_ptr<VllmControl> control_;
  bool busy_ = false;
  std::deque<asio::steady_timer*> waiters_;
};

}  // namespace

int run_vllm_executor(const ProxyConfig& cfg) {
  // Requests waiting on the control loop are owned by handlers there: it goes first (below).
  auto executor = std::make_unique<Executor_>(cfg);
  executor->start();
  ServerOptions o;
  o.host = cfg.host;
  o.port = static_cast<unsigned short>(cfg.port);
  o.threads = 1;
  o.request_timeout = std::chrono::milliseconds(cfg.request_timeout_ms);
  o.keepalive_timeout = std::chrono::milliseconds(cfg.keepalive_timeout_ms);
  o.write_timeout = std::chrono::milliseconds(cfg.client_write_timeout_ms);
  o.shutdown_grace = std::chrono::milliseconds(cfg.shutdown_grace_ms);
  Server server(o, [ex = executor.get()](Exchange& e) { return ex->handle(e); });
  const unsigned short port = server.listen();
  spdlog::info("[vllm-executor] listening on {}:{}", cfg.host, port);
  std::printf("imageworks-chat-proxy vllm-executor listening on http://%s:%u\n", cfg.host.c_str(), port);
  std::fflush(stdout);
  server.run();
  executor->stop(cfg.release_on_exit);
  executor.reset();
  return 0;
}

}  // namespace imageworks
