// The per-backend request gate (CHAT_PROXY_BACKEND_MAX_CONCURRENT / _MAX_QUEUE): slots
// handed out up to the limit, then a FIFO of waiters up to the queue size, then 429; a slot
// released on one thread wakes a waiter on another; a cancelled or timed-out waiter leaves
// the queue.
#include <chrono>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "imageworks/backend_gate.hpp"
#include "imageworks/errors.hpp"

using namespace imageworks;
using namespace std::chrono_literals;

namespace {

struct Limits {
  BackendLimits saved = backend_limits();
  Limits(std::size_t concurrent, std::size_t queue) { set_backend_limits({concurrent, queue}); }
  ~Limits() { set_backend_limits(saved); }
};

// One waiter's outcome.
struct Outcome {
  std::optional<BackendSlot> slot;
  bool cancelled = false;
  std::optional<ProxyError> error;
  bool done = false;
};

Task<void> acquire_into(std::string key, std::chrono::steady_clock::time_point deadline, SlotWaitHandle* h,
                        Outcome* out) {
  try {
    bool cancelled = false;
    auto slot = co_await acquire_backend_slot(key, deadline, *h, cancelled);
    out->cancelled = cancelled;
    out->slot.emplace(std::move(slot));
  } catch (const ProxyError& e) {
    out->error = e;
  }
  out->done = true;
}

auto far() { return std::chrono::steady_clock::now() + 60s; }

// Runs what is ready (an io_context that ran out of work stops: restart it first).
void pump(asio::io_context& ioc) {
  ioc.restart();
  ioc.poll();
}

}  // namespace

TEST(BackendGate, SlotsUpToTheLimitThenAQueueThen429AndReleasePassesTheSlotOnInOrder) {
  Limits limits(2, 2);
  const std::string key = "http://gate-test-1:1";
  asio::io_context ioc;
  SlotWaitHandle h[5];
  Outcome o[5];
  for (int i = 0; i < 5; ++i) asio::co_spawn(ioc, acquire_into(key, far(), &h[i], &o[i]), asio::detached);
  pump(ioc);
  EXPECT_TRUE(o[0].done && o[0].slot);
  EXPECT_TRUE(o[1].done && o[1].slot);
  EXPECT_FALSE(o[2].done);
  EXPECT_FALSE(o[3].done);
  ASSERT_TRUE(o[4].done);
  ASSERT_TRUE(o[4].error);
  EXPECT_EQ(o[4].error->status, 429);
  EXPECT_EQ(o[4].error->code, "err_rate_limited");
  EXPECT_EQ(o[4].error->retry_after_s, 1);
  EXPECT_EQ(backend_load(key).in_flight, 2u);
  EXPECT_EQ(backend_load(key).waiting, 2u);

  o[1].slot.reset();  // the slot passes to the first waiter, not the second
  pump(ioc);
  EXPECT_TRUE(o[2].done && o[2].slot && !o[2].cancelled);
  EXPECT_FALSE(o[3].done);
  EXPECT_EQ(backend_load(key).in_flight, 2u);
  o[0].slot.reset();
  pump(ioc);
  EXPECT_TRUE(o[3].done && o[3].slot);
  o[2].slot.reset();
  o[3].slot.reset();
  EXPECT_EQ(backend_load(key).in_flight, 0u);
  EXPECT_EQ(backend_load(key).waiting, 0u);
}

TEST(BackendGate, ACancelledWaiterLeavesTheQueueAndMakesRoom) {
  Limits limits(1, 1);
  const std::string key = "http://gate-test-2:1";
  asio::io_context ioc;
  SlotWaitHandle h[3];
  Outcome o[3];
  asio::co_spawn(ioc, acquire_into(key, far(), &h[0], &o[0]), asio::detached);
  asio::co_spawn(ioc, acquire_into(key, far(), &h[1], &o[1]), asio::detached);
  pump(ioc);
  ASSERT_TRUE(o[0].slot);
  ASSERT_FALSE(o[1].done);
  h[1].cancel_wait();  // the client left
  pump(ioc);
  ASSERT_TRUE(o[1].done);
  EXPECT_TRUE(o[1].cancelled);
  EXPECT_EQ(backend_load(key).waiting, 0u);
  asio::co_spawn(ioc, acquire_into(key, far(), &h[2], &o[2]), asio::detached);
  pump(ioc);
  EXPECT_FALSE(o[2].done) << "queued, not refused: the cancelled waiter's place is free";
  o[0].slot.reset();
  pump(ioc);
  EXPECT_TRUE(o[2].done && o[2].slot);
}

TEST(BackendGate, AWaitPastTheDeadlineIs503BackendBusy) {
  Limits limits(1, 4);
  const std::string key = "http://gate-test-3:1";
  asio::io_context ioc;
  SlotWaitHandle h[2];
  Outcome o[2];
  asio::co_spawn(ioc, acquire_into(key, far(), &h[0], &o[0]), asio::detached);
  asio::co_spawn(ioc, acquire_into(key, std::chrono::steady_clock::now() + 50ms, &h[1], &o[1]), asio::detached);
  ioc.run_for(5s);  // ends when the second waiter's timer fired (the first holds no work)
  ASSERT_TRUE(o[1].done);
  ASSERT_TRUE(o[1].error);
  EXPECT_EQ(o[1].error->status, 503);
  EXPECT_EQ(o[1].error->code, "err_backend_busy");
  EXPECT_EQ(backend_load(key).waiting, 0u);
  o[0].slot.reset();
  EXPECT_EQ(backend_load(key).in_flight, 0u);
}

TEST(BackendGate, ASlotReleasedOnOneThreadWakesAWaiterOnAnother) {
  Limits limits(1, 1);
  const std::string key = "http://gate-test-4:1";
  asio::io_context a, b;
  SlotWaitHandle h[2];
  Outcome o[2];
  asio::co_spawn(a, acquire_into(key, far(), &h[0], &o[0]), asio::detached);
  pump(a);
  ASSERT_TRUE(o[0].slot);
  asio::co_spawn(b, acquire_into(key, far(), &h[1], &o[1]), asio::detached);
  std::thread tb([&] { b.run_for(30s); });  // returns once the waiter completed
  // Until b's thread has queued the waiter (bounded: a loaded machine may start it late).
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (backend_load(key).waiting == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  const auto waiting = backend_load(key).waiting;
  o[0].slot.reset();  // released here; the waiter wakes on b's thread
  tb.join();
  ASSERT_EQ(waiting, 1u);
  ASSERT_TRUE(o[1].done);
  EXPECT_TRUE(o[1].slot && !o[1].cancelled);
  o[1].slot.reset();
  EXPECT_EQ(backend_load(key).in_flight, 0u);
}

TEST(BackendGate, NoLimitMeansNoWaitAndNoCount) {
  Limits limits(0, 0);
  const std::string key = "http://gate-test-5:1";
  asio::io_context ioc;
  SlotWaitHandle h[3];
  Outcome o[3];
  for (int i = 0; i < 3; ++i) asio::co_spawn(ioc, acquire_into(key, far(), &h[i], &o[i]), asio::detached);
  pump(ioc);
  for (auto& x : o) EXPECT_TRUE(x.done && x.slot);
  EXPECT_EQ(backend_load(key).in_flight, 0u);
}
