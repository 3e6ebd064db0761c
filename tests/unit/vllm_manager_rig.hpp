#pragma once
// The local VllmManager against real fake_vllm children: each manager on an event loop of its
// own (as the GPU coordinator runs it), its coroutines called from the test thread through
// futures, its status read on its loop. The fixture kills every process group the fakes
// reported (events file) in TearDown, so a failing test leaves no server behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "imageworks/vllm_manager.hpp"
#include "support/chat_rig.hpp"
#include "support/fake_vllm_events.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {

using namespace std::chrono_literals;
using nlohmann::json;

// One manager on its own loop thread. Destroying it stops the loop first and does NOT stop
// the server: that is what a crashed proxy leaves behind.
class ManagerLoop {
 public:
  explicit ManagerLoop(const ProxyConfig& cfg) : control_(make_local_vllm(ioc_.get_executor(), cfg)) {
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~ManagerLoop() {
    work_.reset();
    ioc_.stop();
    thread_.join();
    control_.reset();  // before the loop (and the coroutines still parked on it) go
  }
  ManagerLoop(const ManagerLoop&) = delete;
  ManagerLoop& operator=(const ManagerLoop&) = delete;

  std::future<void> activate(ModelEntry e) {
    return asio::co_spawn(
        ioc_, [c = control_.get(), e = std::move(e)]() -> Task<void> { co_await c->activate(e); }, asio::use_future);
  }
  std::future<void> deactivate() { return asio::co_spawn(ioc_, control_->deactivate(), asio::use_future); }
  std::future<void> recover() { return asio::co_spawn(ioc_, control_->recover(), asio::use_future); }

  // A copy of the status, read on the manager's loop (it owns the state; no locks).
  VllmStatus status() {
    return asio::co_spawn(
               ioc_, [c = control_.get()]() -> Task<VllmStatus> { co_return c->status(); }, asio::use_future)
        .get();
  }
  void on_unexpected_exit(std::function<void(const std::string&)> f) {
    asio::co_spawn(
        ioc_,
        [c = control_.get(), f = std::move(f)]() mutable -> Task<void> {
          c->on_unexpected_exit = std::move(f);
          co_return;
        },
        asio::use_future)
        .get();
  }

 private:
  asio::io_context ioc_{1};
  asio::executor_work_guard<Executor> work_{ioc_.get_executor()};
  std::unique_ptr<VllmControl> control_;
  std::thread thread_;
};

// The future completes within `timeout` (a hung manager fails the test instead of hanging it).
inline bool settles(std::future<void>& f, std::chrono::milliseconds timeout = 20s) {
  return f.wait_for(timeout) == std::future_status::ready;
}

// The ProxyError the future ends with; nullopt when it succeeded.
inline std::optional<ProxyError> error_of(std::future<void>& f) {
  try {
    f.get();
  } catch (const ProxyError& e) {
    return e;
  }
  return std::nullopt;
}

// Fully gone: not even a zombie waiting for its parent (kill(2) would still find one).
inline bool reaped(pid_t pid) { return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH; }

inline std::optional<json> read_json_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

inline std::string slurp_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::int64_t epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class VllmManagerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg.vllm_command = fake_vllm_binary();
    cfg.vllm_port = closed_loopback_port();
    cfg.vllm_state_path = (dir.path() / "state" / "active_vllm.json").string();
    cfg.vllm_start_timeout_s = 20;
    cfg.vllm_stop_grace_s = 5;
    cfg.template_dir = (dir.path() / "templates").string();
  }

  void TearDown() override {
    managers.clear();  // loops stopped first: nothing reaps behind our back below
    std::vector<pid_t> leaders = extra_pids;
    for (const auto& e : events.all("started")) leaders.push_back(e.at("pid").get<pid_t>());
    for (pid_t pid : leaders) {
      if (process_alive(pid)) ::killpg(pid, SIGKILL);
    }
    for (const auto& e : events.all("worker_spawned")) {
      const pid_t w = e.at("worker_pid").get<pid_t>();
      if (process_alive(w)) ::kill(w, SIGKILL);
    }
    for (pid_t pid : leaders) {
      wait_process_gone(pid, 5s);
      ::waitpid(pid, nullptr, WNOHANG);  // ours and not reaped yet (e.g. adopted by a manager)
    }
  }

  ManagerLoop& manager() {
    managers.push_back(std::make_unique<ManagerLoop>(cfg));
    return *managers.back();
  }

  // A managed vLLM entry served by fake_vllm (default command), reporting to `events`.
  ModelEntry entry(const std::string& name, const std::string& served, std::vector<std::string> fake_flags = {}) {
    ModelEntry e;
    e.name = name;
    e.backend = "vllm";
    e.served_model_id = served;
    e.backend_config.model_path = "/models/" + name;
    e.backend_config.extra_args = {"--fake-events", events.path().string(), "--fake-max-lifetime-s", "120"};
    for (auto& f : fake_flags) e.backend_config.extra_args.push_back(std::move(f));
    return e;
  }

  // Activates `fake_flags` + --fake-spawn-worker and returns {leader, worker} pids once the
  // worker is up; a failure is recorded and pids stay 0 (callers ASSERT on the result).
  std::pair<pid_t, pid_t> activate_with_worker(ManagerLoop& m, std::vector<std::string> fake_flags = {}) {
    fake_flags.push_back("--fake-spawn-worker");
    auto up = m.activate(entry("alpha", "alpha", std::move(fake_flags)));
    if (!settles(up)) {
      ADD_FAILURE() << "activate did not settle";
      return {0, 0};
    }
    up.get();
    const auto worker_event = events.wait_for("worker_spawned", 5s);
    if (!worker_event) {
      ADD_FAILURE() << "no worker_spawned event";
      return {0, 0};
    }
    return {worker_event->at("pid").get<pid_t>(), worker_event->at("worker_pid").get<pid_t>()};
  }

  std::filesystem::path state_path() const { return cfg.vllm_state_path; }
  std::filesystem::path log_path(const std::string& name) const {
    return state_path().parent_path() / "logs" / ("vllm-" + name + ".log");
  }

  // The nth "started"/"exit"/… event of the fake serving `served`.
  std::optional<json> event_of(const std::string& event, const std::string& served,
                               std::chrono::milliseconds timeout = 10s) const {
    return events.wait_for(
        [&](const json& e) { return e.value("event", "") == event && e.value("served_model_name", "") == served; },
        timeout);
  }

  TempDir dir;
  ProxyConfig cfg;  // outlives the managers (they keep a reference)
  FakeVllmEvents events{dir.path() / "events.jsonl"};
  std::vector<pid_t> extra_pids;  // other processes a test started (killed as groups too)
  std::vector<std::unique_ptr<ManagerLoop>> managers;
};

}  // namespace imageworks::test
