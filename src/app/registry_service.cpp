#include <spdlog/spdlog.h>

#include "imageworks/app.hpp"

namespace imageworks {

ListingOptions listing_options(const ProxyConfig& cfg) {
  ListingOptions o;
  o.include_non_installed = cfg.include_non_installed;
  o.include_test_models = cfg.include_test_models;
  o.profile = cfg.profile;
  o.template_dir = cfg.template_dir;
  return o;
}

CpuPool::CpuPool(int threads) : work_(asio::make_work_guard(ioc_)) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
}

CpuPool::~CpuPool() {
  work_.reset();
  ioc_.stop();
  for (auto& t : threads_) t.join();
}

RegistryService::RegistryService(const ProxyConfig& cfg)
    : poll_(cfg.registry_poll_ms), loader_(cfg.registry_dir, listing_options(cfg)) {
  load_and_publish("startup");
}

RegistryService::~RegistryService() { stop(); }

std::shared_ptr<const RegistrySnapshot> RegistryService::load_and_publish(const char* why) {
  auto snap = loader_.load();
  holder_.set(snap);
  if (snap->issues.empty())
    spdlog::info("[registry] {}: {} entries, {} listed", why, snap->entries.size(), snap->listed.size());
  else
    spdlog::warn("[registry] {}: {} entries, {} listed, {} issue(s): {}", why, snap->entries.size(),
                 snap->listed.size(), snap->issues.size(), snap->error_summary());
  return snap;
}

void RegistryService::start_watching() {
  if (thread_.joinable()) return;
  asio::co_spawn(ioc_, watch_loop(), asio::detached);
  thread_ = std::thread([this] { ioc_.run(); });
}

void RegistryService::stop() {
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

Task<void> RegistryService::watch_loop() {
  asio::steady_timer timer(ioc_);
  for (;;) {
    timer.expires_after(poll_);
    co_await timer.async_wait(use_task);
    if (loader_.changed()) load_and_publish("reload (file changed)");
  }
}

Task<std::shared_ptr<const RegistrySnapshot>> RegistryService::reload() {
  if (!thread_.joinable()) co_return load_and_publish("reload (requested)");
  co_return co_await asio::co_spawn(
      ioc_, [this]() -> Task<std::shared_ptr<const RegistrySnapshot>> {
        co_return load_and_publish("reload (requested)");
      },
      use_task);
}

}  // namespace imageworks
