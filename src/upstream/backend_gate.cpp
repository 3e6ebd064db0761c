#include "imageworks/backend_gate.hpp"

#include <deque>
#include <map>
#include <memory>
#include <mutex>

#include "imageworks/errors.hpp"

namespace imageworks {

namespace {

BackendLimits g_limits;

// One request waiting for a slot. Granted under the gate's lock by the thread that released
// the slot; the waiter's own thread is then woken by cancelling its timer there.
struct Waiter {
  explicit Waiter(Executor ex) : timer(ex) {}
  asio::steady_timer timer;
  bool granted = false;
};

}  // namespace

struct BackendGate {
  std::mutex mu;
  std::size_t in_flight = 0;
  std::deque<std::shared_ptr<Waiter>> queue;

  void release() {
    std::shared_ptr<Waiter> next;
    {
      std::lock_guard lk(mu);
      if (queue.empty()) {
        --in_flight;
        return;
      }
      next = std::move(queue.front());  // the slot passes on: in_flight stays
      queue.pop_front();
      next->granted = true;
    }
    asio::post(next->timer.get_executor(), [next] { next->timer.cancel(); });
  }
};

namespace {

std::mutex g_gates_mu;
std::map<std::string, std::unique_ptr<BackendGate>, std::less<>> g_gates;  // never erased: one per backend

BackendGate& gate_for(const std::string& key) {
  // Requests on a thread mostly go to the backend its last one went to: no global lock then.
  thread_local const std::string* last_key = nullptr;
  thread_local BackendGate* last_gate = nullptr;
  if (last_gate && *last_key == key) return *last_gate;
  std::lock_guard lk(g_gates_mu);
  auto it = g_gates.find(key);
  if (it == g_gates.end()) it = g_gates.emplace(key, std::make_unique<BackendGate>()).first;
  last_key = &it->first;  // map nodes are never erased: the key's storage stays
  last_gate = it->second.get();
  return *it->second;
}

ProxyError busy(int status, std::string_view code, std::string message) {
  ProxyError e(status, std::string(code), std::move(message));
  e.retry_after_s = 1;
  return e;
}

}  // namespace

void set_backend_limits(BackendLimits limits) { g_limits = limits; }
BackendLimits backend_limits() { return g_limits; }

BackendSlot& BackendSlot::operator=(BackendSlot&& o) noexcept {
  if (this != &o) {
    if (gate_) gate_->release();
    gate_ = std::exchange(o.gate_, nullptr);
  }
  return *this;
}

BackendSlot::~BackendSlot() {
  if (gate_) gate_->release();
}

std::optional<BackendSlot> try_backend_slot(const std::string& key) {
  const auto limits = g_limits;
  if (limits.max_concurrent == 0) return BackendSlot();
  BackendGate& g = gate_for(key);
  std::lock_guard lk(g.mu);
  if (g.in_flight >= limits.max_concurrent) return std::nullopt;
  ++g.in_flight;
  return BackendSlot(&g);
}

Task<BackendSlot> acquire_backend_slot(const std::string& key, std::chrono::steady_clock::time_point deadline,
                                       SlotWaitHandle& handle, bool& cancelled) {
  cancelled = false;
  std::optional<BackendSlot> free_slot = try_backend_slot(key);  // the common case: no waiter, no timer
  if (free_slot) co_return std::move(*free_slot);
  const auto limits = g_limits;
  BackendGate& g = gate_for(key);
  const Executor ex = co_await asio::this_coro::executor;
  auto w = std::make_shared<Waiter>(ex);
  {
    std::lock_guard lk(g.mu);
    if (g.in_flight < limits.max_concurrent) {  // freed meanwhile
      ++g.in_flight;
      co_return BackendSlot(&g);
    }
    if (g.queue.size() >= limits.max_queue)
      throw busy(429, "err_rate_limited",
                 "backend " + key + " has " + std::to_string(limits.max_concurrent) + " requests in flight and " +
                     std::to_string(g.queue.size()) + " waiting (CHAT_PROXY_BACKEND_MAX_CONCURRENT, " +
                     "CHAT_PROXY_BACKEND_MAX_QUEUE); retry shortly");
    g.queue.push_back(w);
  }
  w->timer.expires_at(deadline);
  handle.timer = &w->timer;
  beast::error_code ec;
  co_await w->timer.async_wait(asio::redirect_error(use_task, ec));
  handle.timer = nullptr;
  {
    std::lock_guard lk(g.mu);
    if (w->granted) co_return BackendSlot(&g);
    for (auto it = g.queue.begin(); it != g.queue.end(); ++it) {
      if (*it == w) {
        g.queue.erase(it);
        break;
      }
    }
  }
  if (ec == asio::error::operation_aborted) {  // cut short by the handle
    cancelled = true;
    co_return BackendSlot();
  }
  throw busy(503, "err_backend_busy",
             "backend " + key + " had no free request slot (CHAT_PROXY_BACKEND_MAX_CONCURRENT=" +
                 std::to_string(limits.max_concurrent) + ") before the backend timeout; retry shortly");
}

BackendLoad backend_load(const std::string& key) {
  BackendGate& g = gate_for(key);
  std::lock_guard lk(g.mu);
  return {g.in_flight, g.queue.size()};
}

}  // namespace imageworks
