// FakeOllama lifecycle and bookkeeping: the io thread, accepting, call recording, the set of
// loaded models (with Ollama's asynchronous unload), client-disconnect detection and the
// chunk gate. The HTTP exchange is in fake_ollama_session.cpp, the bodies in
// fake_ollama_bodies.cpp.
#include <algorithm>

#include "fakes/fake_ollama_impl.hpp"

namespace imageworks::test {

using Clock = std::chrono::steady_clock;

bool OllamaCall::is_unload() const {
  if (method != "POST" || path != "/api/generate" || !keep_alive) return false;
  if (!fake_ollama::keep_alive_is_zero(*keep_alive)) return false;
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) return false;
  auto prompt = j.find("prompt");
  return prompt == j.end() || !prompt->is_string() || prompt->get<std::string>().empty();
}

// ---- Impl: lifecycle (the io thread, accepting, disconnects and the gate: fake_http_core.hpp) ----

FakeOllama::Impl::Impl(Behavior b) : behavior(std::move(b)) {
  for (const auto& m : behavior.loaded) models.push_back({m, std::nullopt});
  start();
}

// ---- Impl: shared state ----

void FakeOllama::Impl::record(const Request& req) {
  OllamaCall call;
  call.method = std::string(req.method_string());
  const std::string_view target = req.target();
  call.path = std::string(target.substr(0, target.find('?')));
  call.body = req.body();
  const auto j = nlohmann::json::parse(call.body, nullptr, false);
  if (j.is_object()) {
    if (auto m = j.find("model"); m != j.end() && m->is_string()) call.model = m->get<std::string>();
    if (auto k = j.find("keep_alive"); k != j.end()) call.keep_alive = *k;
  }
  call.at = Clock::now();
  call.wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
  {
    std::lock_guard lock(mu);
    call_log.push_back(std::move(call));
  }
  cv.notify_all();
}

FakeOllama::Behavior FakeOllama::Impl::snapshot() const {
  std::lock_guard lock(mu);
  return behavior;
}

bool FakeOllama::Impl::is_installed(const std::string& model) const {
  std::lock_guard lock(mu);
  const auto& inst = behavior.installed;
  return std::find(inst.begin(), inst.end(), model) != inst.end() ||
         std::any_of(models.begin(), models.end(), [&](const auto& m) { return m.name == model; });
}

void FakeOllama::Impl::purge_locked(Clock::time_point now) {
  std::erase_if(models, [&](const LoadedModel& m) {
    if (!m.unload_at || *m.unload_at > now) return false;
    unload_times[m.name] = *m.unload_at;
    return true;
  });
}

std::optional<Clock::time_point> FakeOllama::Impl::next_unload_locked() const {
  std::optional<Clock::time_point> next;
  for (const auto& m : models) {
    if (m.unload_at && (!next || *m.unload_at < *next)) next = m.unload_at;
  }
  return next;
}

// A request for a model that is unloading loads it again (cancels the pending unload).
bool FakeOllama::Impl::load(const std::string& model) {
  bool fresh = false;
  {
    std::lock_guard lock(mu);
    purge_locked(Clock::now());
    auto it = std::find_if(models.begin(), models.end(), [&](const auto& m) { return m.name == model; });
    if (it == models.end()) {
      models.push_back({model, std::nullopt});
      unload_times.erase(model);
      fresh = true;
    } else {
      it->unload_at.reset();
    }
  }
  cv.notify_all();
  return fresh;
}

void FakeOllama::Impl::request_unload(const std::string& model, const Behavior& b) {
  if (b.ignore_unload) return;
  {
    std::lock_guard lock(mu);
    const auto now = Clock::now();
    for (auto& m : models) {
      if (m.name == model && !m.unload_at) m.unload_at = now + b.unload_delay;
    }
    purge_locked(now);
  }
  cv.notify_all();
}

std::vector<std::string> FakeOllama::Impl::loaded_now() {
  std::lock_guard lock(mu);
  purge_locked(Clock::now());
  std::vector<std::string> out;
  for (const auto& m : models) out.push_back(m.name);
  return out;
}

// ---- FakeOllama ----

FakeOllama::FakeOllama() : FakeOllama(Behavior{}) {}
FakeOllama::FakeOllama(Behavior behavior) : impl_(std::make_unique<Impl>(std::move(behavior))) {}
FakeOllama::~FakeOllama() = default;

unsigned short FakeOllama::port() const { return impl_->port; }
std::string FakeOllama::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

void FakeOllama::set_behavior(Behavior behavior) {
  std::lock_guard lock(impl_->mu);
  impl_->behavior = std::move(behavior);
}

FakeOllama::Behavior FakeOllama::behavior() const { return impl_->snapshot(); }

std::vector<OllamaCall> FakeOllama::calls() const {
  std::lock_guard lock(impl_->mu);
  return impl_->call_log;
}

bool FakeOllama::wait_for_calls(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return impl_->call_log.size() >= n; });
}

bool FakeOllama::wait_for_calls(const std::function<bool(const std::vector<OllamaCall>&)>& pred,
                                std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return pred(impl_->call_log); });
}

std::vector<std::string> FakeOllama::loaded() const { return impl_->loaded_now(); }

void FakeOllama::set_loaded(std::vector<std::string> names) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->models.clear();
    for (auto& n : names) impl_->models.push_back({std::move(n), std::nullopt});
  }
  impl_->cv.notify_all();
}

// A pending unload completes by the clock, not by an event: wake at the earliest pending
// unload time as well as on every notify.
bool FakeOllama::wait_until_unloaded(std::chrono::milliseconds timeout, const std::string& model) const {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock lock(impl_->mu);
  for (;;) {
    const auto now = Clock::now();
    impl_->purge_locked(now);
    const bool gone = std::none_of(impl_->models.begin(), impl_->models.end(),
                                   [&](const auto& m) { return model.empty() || m.name == model; });
    if (gone) return true;
    if (now >= deadline) return false;
    const auto next = impl_->next_unload_locked();
    impl_->cv.wait_until(lock, next ? std::min(*next, deadline) : deadline);
  }
}

bool FakeOllama::wait_until_loaded(const std::string& model, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] {
    impl_->purge_locked(Clock::now());
    return std::any_of(impl_->models.begin(), impl_->models.end(), [&](const auto& m) { return m.name == model; });
  });
}

std::optional<Clock::time_point> FakeOllama::unloaded_at(const std::string& model) const {
  std::lock_guard lock(impl_->mu);
  impl_->purge_locked(Clock::now());
  auto it = impl_->unload_times.find(model);
  if (it == impl_->unload_times.end()) return std::nullopt;
  return it->second;
}

std::size_t FakeOllama::client_disconnects() const { return impl_->client_disconnects(); }

std::optional<Clock::time_point> FakeOllama::wait_for_client_disconnect(std::chrono::milliseconds timeout,
                                                                        std::size_t n) const {
  return impl_->wait_for_client_disconnect(timeout, n);
}

void FakeOllama::release_chunk(int n) { impl_->release_chunk(n); }
void FakeOllama::release_all() { impl_->release_all(); }

}  // namespace imageworks::test
