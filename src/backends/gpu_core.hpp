#pragma once
// The GPU coordinator's inside (see gpu.hpp): the Ticket a waiting request shares with it,
// and the Core — queue, holder, switches — that runs only on the coordinator's thread.
// Private to src/backends/gpu_coordinator.cpp (the public API and leases), which needs the
// Core complete; kept apart so each file reads in one sitting.
#include <cstdio>

#include <spdlog/spdlog.h>

#include "imageworks/gpu.hpp"

namespace imageworks {

namespace gpu_detail {
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
inline constexpr auto kExpiryCheck = 100ms;
inline constexpr std::size_t kSwitchHistory = 20;
inline constexpr int kBusyRetryAfterS = 5;

inline std::string seconds_text(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", ms / 1000.0);
  return buf;
}
}  // namespace gpu_detail

using namespace gpu_detail;

// The GPU coordinator's queue and switches (see gpu.hpp). Everything in Core runs on the
// coordinator's own thread; a Ticket is shared with one waiting request, whose fields are
// split by owner: the coordinator's (queued, granted_here) and the request's (the rest,
// written only by handlers posted to the request's executor).
struct GpuCoordinator::Ticket {
  explicit Ticket(Executor home) : home(home) {}
  Executor home;
  GpuTarget target;
  ModelEntry entry;  // a copy: the switch outlives the request's snapshot if it must
  Clock::time_point enqueued = Clock::now();
  std::chrono::system_clock::time_point enqueued_wall = std::chrono::system_clock::now();
  // coordinator's
  bool granted_here = false;
  bool force = false;      // switch even when the target already holds the GPU (deactivate)
  std::string free_only;   // deactivate: "vllm" / "ollama" = only when that backend holds it
  int last_told_in_flight = -1;
  // request's. The timer exists only while the request waits and is made and destroyed on
  // its executor: a ticket the coordinator frees later (or never runs a handler for) has no
  // timer left to touch another thread's (or a destroyed) io_context.
  std::optional<asio::steady_timer> wake;
  void wake_up() {
    if (wake) wake->cancel();
  }
  bool granted = false;
  std::optional<ProxyError> error;
  std::string base_url;
  std::vector<std::string> steps;
  bool waiting = false;  // the coordinator queued it (loading feedback may begin)
};

struct GpuCoordinator::Core {
  Core(GpuCoordinator& o, const ProxyConfig& cfg, std::unique_ptr<VllmControl> v, std::unique_ptr<OllamaManager> ol)
      : owner(o), cfg(cfg), vllm(std::move(v)), ollama(std::move(ol)), expiry(o.ioc_) {}
  GpuCoordinator& owner;
  const ProxyConfig& cfg;
  std::unique_ptr<VllmControl> vllm;
  std::unique_ptr<OllamaManager> ollama;
  std::deque<std::shared_ptr<Ticket>> queue;
  GpuTarget holder;
  std::chrono::system_clock::time_point holder_since = std::chrono::system_clock::now();
  bool switching = false;
  GpuTarget switching_to;
  int in_flight = 0;
  bool stopping = false;
  std::deque<SwitchRecord> history;
  std::uint64_t switches_total = 0;
  std::string ollama_model;
  asio::steady_timer expiry;

  // ---- telling the waiting request ------------------------------------------------------
  static void tell(const std::shared_ptr<Ticket>& t, std::string step) {
    asio::post(t->home, [t, step = std::move(step)]() mutable {
      t->waiting = true;
      if (!step.empty()) t->steps.push_back(std::move(step));
      t->wake_up();
    });
  }
  void tell_all(const GpuTarget& to, const std::string& step) {
    for (auto& t : queue)
      if (t->target == to) tell(t, step);
  }
  void grant(const std::shared_ptr<Ticket>& t) {
    ++in_flight;
    t->granted_here = true;
    if (t->target.kind == GpuTarget::Kind::ollama) ollama_model = t->entry.name;
    publish();  // before the grant: whoever is granted reads a state that shows it
    std::string url = holder.kind == GpuTarget::Kind::vllm ? vllm->status().base_url : std::string();
    asio::post(t->home, [t, url = std::move(url)]() mutable {
      t->granted = true;
      t->base_url = std::move(url);
      t->wake_up();
    });
  }
  static void fail(const std::shared_ptr<Ticket>& t, ProxyError e) {
    asio::post(t->home, [t, e = std::move(e)]() mutable {
      t->error.emplace(std::move(e));
      t->wake_up();
    });
  }

  // ---- the queue ------------------------------------------------------------------------
  void enqueue(std::shared_ptr<Ticket> t) {
    if (stopping) return fail(t, ProxyError(503, "err_backend_unavailable", "proxy shutting down"));
    if (t->force && !t->free_only.empty()) {  // "free vLLM" / "free Ollama": only if it holds the GPU
      const bool holds = t->free_only == "vllm"
                             ? holder.kind == GpuTarget::Kind::vllm || vllm->status().state != BackendState::stopped
                             : holder.kind == GpuTarget::Kind::ollama;
      if (!holds) return grant(t);  // nothing to free: done at once
    }
    if (!switching && queue.empty() && holder == t->target && !t->force) return grant(t);
    queue.push_back(t);
    tell(t, "");  // the request may open its SSE response now
    pump();
  }

  void withdraw(const std::shared_ptr<Ticket>& t) {
    if (t->granted_here) {
      release();
      return;
    }
    std::erase(queue, t);
    pump();
  }

  void release() {
    if (in_flight > 0) --in_flight;
    pump();
  }

  // Admit what may run now; start the one switch the queue's head needs once the GPU's
  // current users are done.
  void pump() {
    if (!switching) {
      while (!queue.empty() && queue.front()->target == holder && !queue.front()->force) {
        grant(queue.front());
        queue.pop_front();
      }
      if (!queue.empty()) {
        const GpuTarget next = queue.front()->target;
        if (in_flight > 0) {
          for (auto& t : queue) {
            if (t->target != next || t->last_told_in_flight == in_flight) continue;
            t->last_told_in_flight = in_flight;
            tell(t, "Waiting for " + std::to_string(in_flight) + " running request(s) on " + holder.label() +
                        " to finish…");
          }
        } else if (!stopping) {
          switching = true;
          switching_to = next;
          asio::co_spawn(owner.ioc_, run_switch(queue.front()->entry, next), asio::detached);
        }
      }
    }
    publish();
  }

  Task<void> run_switch(ModelEntry entry, GpuTarget to) {
    const GpuTarget from = holder;
    const auto began = Clock::now();
    std::optional<ProxyError> failure;
    spdlog::info("[gpu] switch {} -> {}", from.label(), to.label());
    auto check_stopping = [this] {
      if (stopping) throw ProxyError(503, "err_backend_unavailable", "proxy shutting down");
    };
    try {
      if (to.kind != GpuTarget::Kind::vllm && vllm->status().state != BackendState::stopped) {
        tell_all(to, "Stopping vLLM " + vllm->status().logical_name + "…");
        co_await vllm->deactivate();
      }
      check_stopping();
      if (to.kind != GpuTarget::Kind::ollama) {
        tell_all(to, "Unloading Ollama models…");
        co_await ollama->unload_all();
      }
      check_stopping();
      if (to.kind == GpuTarget::Kind::vllm) {
        tell_all(to, "Starting " + entry.name + " on vLLM…");
        co_await vllm->activate(entry);
      }
    } catch (const ProxyError& e) {
      failure = e;
    } catch (const std::exception& e) {
      failure = ProxyError(502, "err_backend_unavailable", std::string("switch failed: ") + e.what());
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - began).count();
    record(from, to, ms, failure ? failure->what() : "ok");
    switching = false;
    if (failure) {
      spdlog::error("[gpu] switch {} -> {} failed after {:.0f} ms: {}", from.label(), to.label(), ms, failure->what());
      holder = vllm->status().state == BackendState::ready
                   ? GpuTarget{GpuTarget::Kind::vllm, vllm->status().logical_name}
                   : GpuTarget{};
      publish();
      for (auto& t : queue)
        if (t->target == to) fail(t, *failure);
      std::erase_if(queue, [&](const auto& t) { return t->target == to; });
    } else {
      spdlog::info("[gpu] switch {} -> {} done in {:.0f} ms", from.label(), to.label(), ms);
      holder = to;
      holder_since = std::chrono::system_clock::now();
      // Everything queued for the new holder is admitted together, wherever it queued.
      for (auto& t : queue) {
        if (t->target != to) continue;
        tell(t, "Loaded in " + seconds_text(ms) + " s");  // the request names its model
        grant(t);
      }
      std::erase_if(queue, [&](const auto& t) { return t->target == to; });
    }
    pump();
  }

  void record(const GpuTarget& from, const GpuTarget& to, double ms, std::string result) {
    ++switches_total;
    const bool ok = result == "ok";
    history.push_front(SwitchRecord{from.label(), to.label(), ms, std::chrono::system_clock::now(), std::move(result)});
    if (history.size() > kSwitchHistory) history.pop_back();
    if (owner.on_switch) owner.on_switch(from, to, ms, ok);
  }

  // A request waiting for running requests longer than CHAT_PROXY_SWITCH_WAIT_TIMEOUT_MS
  // gets 503 err_backend_busy; one whose switch is under way waits for the switch (the
  // start has its own timeout).
  void expire() {
    const auto limit = std::chrono::milliseconds(cfg.switch_wait_timeout_ms);
    const auto now = Clock::now();
    bool changed = false;
    for (auto it = queue.begin(); it != queue.end();) {
      auto& t = *it;
      if ((switching && t->target == switching_to) || now - t->enqueued < limit) {
        ++it;
        continue;
      }
      fail(t, ProxyError(503, "err_backend_busy",
                         "waited " + std::to_string(limit.count()) + " ms for " + t->target.label() +
                             " (requests on " + holder.label() + " still running; CHAT_PROXY_SWITCH_WAIT_TIMEOUT_MS)",
                         {}, kBusyRetryAfterS));
      it = queue.erase(it);
      changed = true;
    }
    if (changed) pump();
  }
  void arm_expiry() {
    expiry.expires_after(kExpiryCheck);
    expiry.async_wait([this](const beast::error_code& ec) {
      if (ec) return;
      if (!queue.empty()) expire();
      arm_expiry();
    });
  }

  void publish() {
    auto s = std::make_shared<GpuState>();
    s->holder = holder;
    s->switching = switching;
    s->switching_to = switching ? switching_to.label() : std::string();
    s->in_flight = in_flight;
    s->since = holder_since;
    for (auto& t : queue) s->queue.push_back(QueuedRequest{t->entry.name, t->target.label(), t->enqueued_wall});
    s->last_switches = history;
    s->switches_total = switches_total;
    s->ollama_model = ollama_model;
    s->vllm = vllm->status();
    s->ollama = ollama->status();
    owner.publish(std::move(s));
  }

  void on_vllm_exit(const std::string& why) {
    if (holder.kind == GpuTarget::Kind::vllm) {
      holder = GpuTarget{};
      holder_since = std::chrono::system_clock::now();
    }
    pump();
  }
};

}  // namespace imageworks
