// The GPU coordinator's queue and lease (§5): concurrency on the holder, one switch per
// change, no starvation, the switch-wait timeout, clients leaving the queue, crashes and
// failed starts. The vLLM control is scripted in-process (process control itself is tested
// against the fake vLLM executable elsewhere); Ollama is an address nobody listens on, which
// the manager reads as "nothing loaded".
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "imageworks/gpu.hpp"
#include "support/chat_rig.hpp"

namespace imageworks {
namespace {

using namespace std::chrono_literals;

// What the scripted vLLM was asked to do, in order, readable from the test thread.
struct VllmScript {
  std::mutex mu;
  std::vector<std::string> calls;               // "activate a", "deactivate"
  std::chrono::milliseconds start_delay{50};
  std::optional<ProxyError> fail_start;         // the next start fails with this
  std::function<void(const std::string&)> crash;  // set by the control: simulate an exit
  std::vector<std::string> snapshot() {
    std::lock_guard lk(mu);
    return calls;
  }
  std::size_t count(const std::string& call) {
    auto c = snapshot();
    return static_cast<std::size_t>(std::count(c.begin(), c.end(), call));
  }
};

class ScriptedVllm final : public VllmControl {
 public:
  ScriptedVllm(Executor ex, VllmScript& s) : ex_(ex), s_(s) {
    s_.crash = [this](const std::string& why) {
      asio::post(ex_, [this, why] {
        st_ = VllmStatus{};
        if (on_unexpected_exit) on_unexpected_exit(why);
      });
    };
  }
  Task<void> recover() override { co_return; }
  Task<void> activate(const ModelEntry& e) override {
    if (st_.state == BackendState::ready && st_.logical_name == e.name) co_return;
    if (st_.state != BackendState::stopped) co_await deactivate();
    std::optional<ProxyError> fail;
    std::chrono::milliseconds delay;
    {
      std::lock_guard lk(s_.mu);
      s_.calls.push_back("activate " + e.name);
      fail = std::exchange(s_.fail_start, std::nullopt);
      delay = s_.start_delay;
    }
    st_.state = BackendState::starting;
    st_.logical_name = e.name;
    asio::steady_timer t(ex_);
    t.expires_after(delay);
    co_await t.async_wait(use_task);
    if (fail) {
      st_ = VllmStatus{};
      throw *fail;
    }
    st_.state = BackendState::ready;
    st_.base_url = "http://127.0.0.1:9/" + e.name;
  }
  Task<void> deactivate() override {
    if (st_.state == BackendState::stopped) co_return;
    {
      std::lock_guard lk(s_.mu);
      s_.calls.push_back("deactivate");
    }
    st_ = VllmStatus{};
    co_return;
  }
  const VllmStatus& status() const override { return st_; }

 private:
  Executor ex_;
  VllmScript& s_;
  VllmStatus st_;
};

// One request as the forwarder makes it: acquire, hold the lease until released.
struct Probe {
  std::mutex mu;
  std::condition_variable cv;
  bool granted = false, finished = false;
  std::optional<ProxyError> error;
  std::string base_url;
  std::chrono::steady_clock::time_point granted_at;
  asio::steady_timer* hold = nullptr;
  asio::io_context* ioc = nullptr;

  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, timeout, [&] { return pred(); });
  }
  bool wait_granted() { return wait([&] { return granted; }); }
  bool wait_finished() { return wait([&] { return finished; }); }
  bool is_granted() {
    std::lock_guard lk(mu);
    return granted;
  }
  void release() {
    asio::post(*ioc, [this] {
      if (hold) hold->cancel();
    });
  }
};

class FakeClient final : public WaitObserver {
 public:
  Task<void> on_wait(std::vector<std::string> steps, bool first) override {
    {
      std::lock_guard lk(mu);
      waits++;
      for (auto& s : steps) seen.push_back(s);
    }
    if (fail_writes) throw beast::system_error(asio::error::broken_pipe);  // the feedback write failed
    co_return;
  }
  bool fail_writes = false;
  void watch_client(void (*wake)(void*), void* ctx) override {
    wake_ = wake;
    ctx_ = ctx;
  }
  bool gone() const override { return gone_; }
  void leave() {  // call on the client's io_context
    gone_ = true;
    if (wake_) wake_(ctx_);
  }
  std::mutex mu;
  int waits = 0;
  std::vector<std::string> seen;

 private:
  bool gone_ = false;
  void (*wake_)(void*) = nullptr;
  void* ctx_ = nullptr;
};

struct Rig {
  VllmScript script;
  ProxyConfig cfg;
  std::unique_ptr<GpuCoordinator> gpu;
  asio::io_context client{1};
  asio::executor_work_guard<Executor> work{client.get_executor()};
  std::thread client_thread;
  std::vector<std::unique_ptr<Probe>> probes;

  explicit Rig(int switch_wait_ms = 10000) {
    cfg.switch_wait_timeout_ms = switch_wait_ms;
    cfg.ollama_base_url = "http://127.0.0.1:" + std::to_string(test::closed_loopback_port());
    cfg.ollama_unload_timeout_ms = 1000;
    gpu = std::make_unique<GpuCoordinator>(cfg, [this](Executor ex) { return std::make_unique<ScriptedVllm>(ex, script); });
    gpu->start();
    client_thread = std::thread([this] { client.run(); });
  }
  ~Rig() {
    for (auto& p : probes) p->release();
    work.reset();
    client.stop();
    client_thread.join();
    gpu->stop(false);
  }

  static ModelEntry vllm(const std::string& name) {
    ModelEntry e;
    e.name = name;
    e.backend = "vllm";
    return e;
  }
  static ModelEntry ollama(const std::string& name) {
    ModelEntry e;
    e.name = name;
    e.backend = "ollama";
    return e;
  }

  Probe& request(ModelEntry entry, FakeClient* observer = nullptr) {
    probes.push_back(std::make_unique<Probe>());
    Probe* p = probes.back().get();
    p->ioc = &client;
    asio::co_spawn(
        client,
        [this, p, entry = std::move(entry), observer]() -> Task<void> {
          asio::steady_timer hold(client);
          try {
            auto lease = co_await gpu->acquire(entry, observer);
            {
              std::lock_guard lk(p->mu);
              p->granted = true;
              p->granted_at = std::chrono::steady_clock::now();
              p->base_url = lease.base_url();
              p->hold = &hold;
            }
            p->cv.notify_all();
            hold.expires_after(1h);
            beast::error_code ec;
            co_await hold.async_wait(asio::redirect_error(use_task, ec));
            std::lock_guard lk(p->mu);
            p->hold = nullptr;
          } catch (const ProxyError& e) {
            std::lock_guard lk(p->mu);
            p->error = e;
          } catch (const ClientGone&) {
          } catch (const beast::system_error&) {  // a failed feedback write ends the request
          }
          {
            std::lock_guard lk(p->mu);
            p->finished = true;
          }
          p->cv.notify_all();
        },
        asio::detached);
    return *p;
  }

  // Waits until the coordinator's published state satisfies pred (bounded).
  template <class Pred>
  bool state_becomes(Pred pred, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred(*gpu->state())) return true;
      std::this_thread::sleep_for(2ms);  // another thread's state: polled, bounded
    }
    return false;
  }
};

TEST(GpuCoordinator, RequestsForTheHolderRunTogether) {
  Rig rig;
  auto& a1 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a1.wait_granted());
  EXPECT_EQ(a1.base_url, "http://127.0.0.1:9/a");
  auto& a2 = rig.request(Rig::vllm("a"));
  auto& a3 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a2.wait_granted());
  ASSERT_TRUE(a3.wait_granted());
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.in_flight == 3; }));
  EXPECT_EQ(rig.script.count("activate a"), 1u);
}

TEST(GpuCoordinator, ThreeColdRequestsStartOneServer) {
  Rig rig;
  rig.script.start_delay = 300ms;
  auto& a = rig.request(Rig::vllm("a"));
  auto& b = rig.request(Rig::vllm("a"));
  auto& c = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted() && b.wait_granted() && c.wait_granted());
  EXPECT_EQ(rig.script.snapshot(), std::vector<std::string>{"activate a"});
}

TEST(GpuCoordinator, AnotherModelWaitsForTheRunningRequestsThenOneSwitch) {
  Rig rig;
  auto& a1 = rig.request(Rig::vllm("a"));
  auto& a2 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a1.wait_granted() && a2.wait_granted());
  FakeClient client;
  auto& b = rig.request(Rig::vllm("b"), &client);
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 1; }));
  a1.release();
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.in_flight == 1; }));
  EXPECT_FALSE(b.is_granted()) << "b must not run while a request on a is in flight";
  EXPECT_EQ(rig.script.count("activate b"), 0u);
  a2.release();
  ASSERT_TRUE(b.wait_granted());
  EXPECT_EQ(rig.script.snapshot(), (std::vector<std::string>{"activate a", "deactivate", "activate b"}));
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.switches_total == 2; }));
  std::lock_guard lk(client.mu);
  EXPECT_GE(client.waits, 1);
  EXPECT_NE(std::find_if(client.seen.begin(), client.seen.end(),
                         [](const std::string& s) { return s.starts_with("Waiting for 2 running request(s)"); }),
            client.seen.end());
}

// Once b waits, new requests for a queue behind it: b is served after the requests that
// were running when it came, plus one switch — steady traffic on a cannot starve it.
TEST(GpuCoordinator, NewRequestsForTheHolderQueueBehindAWaitingSwitch) {
  Rig rig;
  auto& a1 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a1.wait_granted());
  auto& b = rig.request(Rig::vllm("b"));
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 1; }));
  auto& a2 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 2; }));
  EXPECT_FALSE(a2.is_granted()) << "a2 jumped the pending switch to b";
  a1.release();
  ASSERT_TRUE(b.wait_granted());
  EXPECT_FALSE(a2.is_granted());
  b.release();
  ASSERT_TRUE(a2.wait_granted());
  EXPECT_EQ(rig.script.snapshot(),
            (std::vector<std::string>{"activate a", "deactivate", "activate b", "deactivate", "activate a"}));
}

// Requests queued for the same model are admitted together after its switch, even when
// another model's request queued between them.
TEST(GpuCoordinator, QueuedRequestsForTheNewHolderAreAdmittedTogether) {
  Rig rig;
  auto& a = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted());
  auto& b1 = rig.request(Rig::vllm("b"));
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 1; }));
  auto& c = rig.request(Rig::ollama("c"));
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 2; }));
  auto& b2 = rig.request(Rig::vllm("b"));
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 3; }));
  a.release();
  ASSERT_TRUE(b1.wait_granted() && b2.wait_granted());
  EXPECT_FALSE(c.is_granted());
  EXPECT_EQ(rig.script.count("activate b"), 1u);
  b1.release();
  b2.release();
  ASSERT_TRUE(c.wait_granted());
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.holder.kind == GpuTarget::Kind::ollama; }));
}

TEST(GpuCoordinator, WaitingLongerThanTheSwitchWaitTimeoutIs503Busy) {
  Rig rig(300);
  auto& a = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted());
  auto& b = rig.request(Rig::vllm("b"));
  ASSERT_TRUE(b.wait_finished());
  ASSERT_TRUE(b.error.has_value());
  EXPECT_EQ(b.error->status, 503);
  EXPECT_EQ(b.error->code, "err_backend_busy");
  EXPECT_GT(b.error->retry_after_s, 0);
  EXPECT_EQ(rig.script.count("activate b"), 0u);
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.empty() && s.in_flight == 1; }));
}

TEST(GpuCoordinator, AClientThatLeavesWhileQueuedLeavesTheQueue) {
  Rig rig;
  auto& a = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted());
  FakeClient client;
  auto& b = rig.request(Rig::vllm("b"), &client);
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 1; }));
  asio::post(rig.client, [&client] { client.leave(); });
  ASSERT_TRUE(b.wait_finished());
  EXPECT_FALSE(b.error.has_value());
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.empty(); }));
  a.release();
  auto& a2 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a2.wait_granted());
  EXPECT_EQ(rig.script.count("activate b"), 0u) << "nobody waits for b any more";
}

// A wait that ends by an exception (here a loading-feedback write to a vanished client)
// leaves the queue: its grant, had it come, would otherwise hold the GPU for good.
TEST(GpuCoordinator, AFailedFeedbackWriteGivesTheTicketBack) {
  Rig rig;
  auto& a = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted());
  FakeClient client;
  client.fail_writes = true;
  auto& b = rig.request(Rig::vllm("b"), &client);
  ASSERT_TRUE(b.wait_finished());
  EXPECT_FALSE(b.is_granted());
  a.release();
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.empty() && s.in_flight == 0; }));
  auto& c = rig.request(Rig::vllm("c"));
  ASSERT_TRUE(c.wait_granted());
  EXPECT_EQ(rig.script.count("activate b"), 0u);
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.in_flight == 1; }));
}

TEST(GpuCoordinator, AFailedStartFailsItsWaitersAndTheQueueGoesOn) {
  Rig rig;
  rig.script.fail_start = ProxyError(503, "err_model_start_timeout", "never became ready");
  auto& b1 = rig.request(Rig::vllm("b"));
  auto& b2 = rig.request(Rig::vllm("b"));
  ASSERT_TRUE(b1.wait_finished() && b2.wait_finished());
  ASSERT_TRUE(b1.error && b2.error);
  EXPECT_EQ(b1.error->code, "err_model_start_timeout");
  EXPECT_EQ(rig.script.count("activate b"), 1u);
  auto& c = rig.request(Rig::ollama("c"));
  ASSERT_TRUE(c.wait_granted());
  auto& b3 = rig.request(Rig::vllm("b"));  // the next request tries a fresh start
  c.release();
  ASSERT_TRUE(b3.wait_granted());
  EXPECT_EQ(rig.script.count("activate b"), 2u);
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.last_switches.size() == 3; }));
}

TEST(GpuCoordinator, ACrashedServerIsStartedAfreshByTheNextRequest) {
  Rig rig;
  auto& a = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted());
  rig.script.crash("killed");
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.holder.kind == GpuTarget::Kind::none; }));
  a.release();  // its stream ended with the broken connection
  auto& a2 = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a2.wait_granted());
  EXPECT_EQ(rig.script.count("activate a"), 2u);
}

TEST(GpuCoordinator, DeactivateWaitsForRunningRequestsAndFreesTheGpu) {
  Rig rig;
  auto& a = rig.request(Rig::vllm("a"));
  ASSERT_TRUE(a.wait_granted());
  std::atomic<bool> freed{false};
  asio::co_spawn(rig.client, [&]() -> Task<void> {
    co_await rig.gpu->deactivate("");
    freed = true;
  }, asio::detached);
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.size() == 1; }));
  EXPECT_FALSE(freed.load());
  a.release();
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.queue.empty() && s.in_flight == 0; }));
  for (int i = 0; i < 1000 && !freed; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_TRUE(freed.load());
  EXPECT_EQ(rig.script.snapshot(), (std::vector<std::string>{"activate a", "deactivate"}));
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) { return s.vllm.state == BackendState::stopped; }));
}

// "Free vLLM" while Ollama holds the GPU frees nothing: decided on the coordinator, so no
// switch runs and Ollama keeps its models; "free Ollama" then does free it.
TEST(GpuCoordinator, DeactivateOneBackendOnlyWhenItHoldsTheGpu) {
  Rig rig;
  auto& c = rig.request(Rig::ollama("c"));
  ASSERT_TRUE(c.wait_granted());
  c.release();
  ASSERT_TRUE(rig.state_becomes([](const GpuState& s) { return s.in_flight == 0 && s.switches_total == 1; }));
  auto free = [&](std::string backend) {
    auto f = asio::co_spawn(rig.client, rig.gpu->deactivate(std::move(backend)), asio::use_future);
    return f.wait_for(10s) == std::future_status::ready;
  };
  ASSERT_TRUE(free("vllm"));
  EXPECT_EQ(rig.gpu->state()->switches_total, 1u);
  EXPECT_EQ(rig.gpu->state()->holder.kind, GpuTarget::Kind::ollama);
  ASSERT_TRUE(free("ollama"));
  EXPECT_TRUE(rig.state_becomes([](const GpuState& s) {
    return s.switches_total == 2 && s.holder.kind == GpuTarget::Kind::none;
  }));
}

}  // namespace
}  // namespace imageworks
