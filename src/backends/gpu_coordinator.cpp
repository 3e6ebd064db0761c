// The GPU coordinator's public side (gpu.hpp): start and stop, which entries it manages,
// acquire (a request's wait, with loading feedback) and the lease. The queue and the
// switches are in gpu_core.hpp.
#include "backends/gpu_core.hpp"

namespace imageworks {

std::string GpuTarget::label() const {
  switch (kind) {
    case Kind::none: return "nothing";
    case Kind::ollama: return "Ollama";
    case Kind::vllm: return "vLLM '" + logical_name + "'";
  }
  return "nothing";
}

std::string GpuTarget::metric_name() const {
  switch (kind) {
    case Kind::none: return "nothing";
    case Kind::ollama: return "ollama";
    case Kind::vllm: return logical_name;
  }
  return "nothing";
}

GpuCoordinator::GpuCoordinator(const ProxyConfig& cfg, VllmFactory make_vllm)
    : cfg_(cfg),
      core_(std::make_unique<Core>(*this, cfg, make_vllm(ioc_.get_executor()), std::make_unique<OllamaManager>(cfg))) {
  core_->vllm->on_unexpected_exit = [this](const std::string& why) { core_->on_vllm_exit(why); };
  core_->vllm->on_state_change = [this] { core_->publish(); };
  core_->publish();
}

GpuCoordinator::~GpuCoordinator() { stop(false); }

void GpuCoordinator::start() {
  if (thread_.joinable()) return;
  auto recovered = asio::co_spawn(
      ioc_,
      [this]() -> Task<void> {
        co_await core_->vllm->recover();
        // An adopted server holds the GPU once it is ready; one still loading becomes the holder
        // through the first request's switch, whose activate() waits for its health.
        if (core_->vllm->status().state == BackendState::ready)
          core_->holder = GpuTarget{GpuTarget::Kind::vllm, core_->vllm->status().logical_name};
        core_->arm_expiry();
        core_->publish();
      },
      asio::use_future);
  thread_ = std::thread([this] { ioc_.run(); });
  recovered.get();
}

void GpuCoordinator::stop(bool release) {
  if (!thread_.joinable()) return;
  if (release) {
    auto done = asio::co_spawn(
        ioc_,
        [this]() -> Task<void> {
          core_->stopping = true;
          for (auto& t : core_->queue) Core::fail(t, ProxyError(503, "err_backend_unavailable", "proxy shutting down"));
          core_->queue.clear();
          // A switch under way ends at its next step (it sees `stopping`); a start in
          // progress is cut short by the deactivate below, so wait for neither too long.
          asio::steady_timer pause(ioc_);
          for (int i = 0; i < 100 && core_->switching && core_->vllm->status().state != BackendState::starting; ++i) {
            pause.expires_after(50ms);
            co_await pause.async_wait(use_task);
          }
          try {
            co_await core_->vllm->deactivate();
            co_await core_->ollama->unload_all();
          } catch (const std::exception& e) {
            spdlog::error("[gpu] releasing the GPU at exit failed: {}", e.what());
          }
        },
        asio::use_future);
    try {
      done.get();
    } catch (const std::exception& e) {
      spdlog::error("[gpu] {}", e.what());
    }
  }
  ioc_.stop();
  thread_.join();
}

bool GpuCoordinator::manages(const ModelEntry& e) const {
  if (e.backend == "vllm") return e.backend_config.base_url.empty();
  if (e.backend == "ollama") {
    auto trim = [](std::string s) {
      while (!s.empty() && s.back() == '/') s.pop_back();
      return s;
    };
    return e.backend_config.base_url.empty() || trim(e.backend_config.base_url) == trim(cfg_.ollama_base_url);
  }
  return false;
}

GpuTarget GpuCoordinator::target_for(const ModelEntry& e) const {
  if (e.backend == "vllm") return GpuTarget{GpuTarget::Kind::vllm, e.name};
  return GpuTarget{GpuTarget::Kind::ollama, {}};
}

namespace {
void wake_ticket(void* timer) { static_cast<asio::steady_timer*>(timer)->cancel(); }
}  // namespace


// However a wait ends: no client watch left pointing at the ticket's timer, the timer gone
// (destroyed here, on its own executor), and — unless the grant became a lease — the ticket
// withdrawn: a wait that ends by an exception (the client left, a feedback write failed,
// shutdown) gives back a grant that may already be on its way, so no lease leaks.
struct GpuCoordinator::WaitEnd {
  GpuCoordinator& owner;
  std::shared_ptr<Ticket> t;
  WaitObserver* observer;
  bool handed_over = false;
  ~WaitEnd() {
    if (observer) observer->watch_client(nullptr, nullptr);
    t->wake.reset();
    if (!handed_over) asio::post(owner.ioc_, [core = owner.core_.get(), t = t] { core->withdraw(t); });
  }
};

Task<GpuLease> GpuCoordinator::acquire(const ModelEntry& entry, WaitObserver* observer) {
  const auto began = Clock::now();
  auto t = std::make_shared<Ticket>(co_await asio::this_coro::executor);
  t->target = target_for(entry);
  t->entry = entry;
  t->wake.emplace(t->home);
  WaitEnd end{*this, t, observer};
  if (observer) observer->watch_client(&wake_ticket, &*t->wake);
  asio::post(ioc_, [this, t] { core_->enqueue(t); });
  bool told = false, tick = false;
  for (;;) {
    // The state first: a grant or an error that came while feedback was written counts now.
    if (t->error) throw *t->error;
    if (t->granted) break;
    if (observer && observer->gone()) throw ClientGone();
    if (observer && t->waiting && (!told || tick || !t->steps.empty())) {
      auto steps = std::exchange(t->steps, {});
      co_await observer->on_wait(std::move(steps), !told);
      told = true;
      tick = false;
      continue;
    }
    t->wake->expires_after(observer && told ? kFeedbackEvery : std::chrono::hours(24));
    beast::error_code ec;
    co_await t->wake->async_wait(asio::redirect_error(use_task, ec));
    tick = !ec;  // the interval passed (not woken): time for another loading comment
  }
  end.handed_over = true;
  GpuLease lease;
  lease.owner_ = this;
  lease.base_url_ = std::move(t->base_url);
  lease.waited = told;
  lease.waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - began).count();
  if (observer && told && !t->steps.empty()) co_await observer->on_wait(std::exchange(t->steps, {}), false);
  co_return lease;
}

Task<bool> GpuCoordinator::server_died(const ModelEntry& entry) {
  if (target_for(entry).kind != GpuTarget::Kind::vllm) co_return false;
  // A dying process closes its sockets a moment before its exit is reported: a second at
  // most, while a server that refused but still runs costs its 502 that second.
  constexpr auto kExitWait = std::chrono::milliseconds(1000);
  co_return co_await asio::co_spawn(ioc_, core_->vllm->wait_for_exit(kExitWait), use_task);
}

void GpuCoordinator::release_one() {
  asio::post(ioc_, [this] { core_->release(); });
}

GpuLease& GpuLease::operator=(GpuLease&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = std::exchange(o.owner_, nullptr);
    base_url_ = std::move(o.base_url_);
    waited_ms = o.waited_ms;
    waited = o.waited;
  }
  return *this;
}

void GpuLease::release() {
  if (auto* o = std::exchange(owner_, nullptr)) o->release_one();
}

Task<void> GpuCoordinator::activate(const ModelEntry& entry) {
  auto lease = co_await acquire(entry, nullptr);
  lease.release();
}

Task<void> GpuCoordinator::deactivate(std::string backend) {
  ModelEntry none;
  none.name = "(free the GPU)";
  none.backend = "none";
  auto t = std::make_shared<Ticket>(co_await asio::this_coro::executor);
  t->entry = none;  // target none
  t->force = true;  // free it even if nothing is recorded as holding it (e.g. Ollama loaded by others)
  t->free_only = backend;
  t->wake.emplace(t->home);
  WaitEnd end{*this, t, nullptr};
  asio::post(ioc_, [this, t] { core_->enqueue(t); });
  while (!t->granted) {
    if (t->error) throw *t->error;
    t->wake->expires_after(std::chrono::hours(24));
    beast::error_code ec;
    co_await t->wake->async_wait(asio::redirect_error(use_task, ec));
  }
  end.handed_over = true;
  release_one();
}

}  // namespace imageworks
