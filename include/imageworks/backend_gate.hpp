#pragma once
// Upstream requests in flight per backend (its pool key: scheme, host and port), across all
// event-loop threads, with a bounded FIFO of requests waiting for a slot (issue 12): a burst
// larger than a backend can take waits in order instead of piling onto it, and one larger
// than the queue is told at once to come back (429 err_rate_limited, Retry-After: 1).
// CHAT_PROXY_BACKEND_MAX_CONCURRENT / CHAT_PROXY_BACKEND_MAX_QUEUE; 0 concurrent = no limit.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "imageworks/asio.hpp"

namespace imageworks {

struct BackendLimits {
  std::size_t max_concurrent = 0;  // 0: no limit (no queue either)
  std::size_t max_queue = 0;       // waiting requests per backend beyond max_concurrent
};

// Set once at start-up, before serving (not thread-safe against acquirers).
void set_backend_limits(BackendLimits limits);
BackendLimits backend_limits();

struct BackendGate;

// A slot held for one upstream request; released (to the next waiter, if any) on destruction.
class BackendSlot {
 public:
  BackendSlot() = default;
  explicit BackendSlot(BackendGate* g) : gate_(g) {}
  BackendSlot(BackendSlot&& o) noexcept : gate_(std::exchange(o.gate_, nullptr)) {}
  BackendSlot& operator=(BackendSlot&& o) noexcept;
  ~BackendSlot();

 private:
  BackendGate* gate_ = nullptr;
};

// Something that can cut a wait short (the client leaving, a shutdown): it calls
// cancel_wait() on the waiting thread, and the wait ends without a slot.
struct SlotWaitHandle {
  asio::steady_timer* timer = nullptr;
  void cancel_wait() {
    if (timer) timer->cancel();
  }
};

// A slot for backend `key` when one is free now, without waiting (no limit: an empty slot);
// nullopt when the caller must wait for one with acquire_backend_slot.
std::optional<BackendSlot> try_backend_slot(const std::string& key);

// A slot for backend `key`: at once when one is free; else in the backend's queue until one
// frees or `deadline` passes. Throws ProxyError 429 err_rate_limited (Retry-After: 1) when
// the queue is full, 503 err_backend_busy (Retry-After: 1) when the deadline passed while
// waiting. When `handle` cancelled the wait, returns an empty slot (the caller knows why).
Task<BackendSlot> acquire_backend_slot(const std::string& key, std::chrono::steady_clock::time_point deadline,
                                       SlotWaitHandle& handle, bool& cancelled);

// Requests in flight and waiting for `key` (tests, status).
struct BackendLoad {
  std::size_t in_flight = 0, waiting = 0;
};
BackendLoad backend_load(const std::string& key);

}  // namespace imageworks
