// VllmManager, local single-port mode (§8): the server is a child process in its own group,
// its output in <state dir>/logs/, its pid in the state file (written atomically) so a
// restarted proxy adopts it — children outlive a crashed proxy on purpose (no parent-death
// signal). Its exit is an event on the owner's loop (pidfd), so a crash is noticed at once.
#include <algorithm>
#include <csignal>
#include <ctime>
#include <fstream>

#include <sys/wait.h>
#include <iomanip>
#include <sstream>

#include <spdlog/spdlog.h>

#include "imageworks/private_files.hpp"
#include "imageworks/process.hpp"
#include "imageworks/simple_http.hpp"
#include "imageworks/time_format.hpp"
#include "imageworks/vllm_manager.hpp"

namespace imageworks {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Between /health probes while starting: a twentieth of the time waited so far, 5–250 ms. A
// quick start is seen within ~5 % of its load time, a 60 s load costs a few hundred probes.
constexpr auto kHealthPollMin = 5ms;
constexpr auto kHealthPollMax = 250ms;
constexpr auto kHealthTimeout = 2000ms;   // one probe
constexpr auto kKillWait = 5000ms;        // after SIGKILL, for the kernel to take it down

std::string sanitized(std::string_view name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  return out.empty() ? "model" : out;
}

// A running server process and the means to learn that it exited.
struct Child {
  Child(Executor ex, pid_t pid, bool ours) : pid(pid), ours(ours), watch(ex, pid), exit_event(ex) {}
  pid_t pid;
  bool ours;  // our child (reaped by us), or adopted from the state file
  ProcessExitWatch watch;
  asio::steady_timer exit_event;  // cancelled when the process exits
  bool exited = false;
  int exit_code = -1;
};

std::string state_json(const VllmStatus& s, unsigned long long start_ticks) {
  nlohmann::json j = nlohmann::json::object();
  j["logical_name"] = s.logical_name;
  j["served_model_id"] = s.served_model_id;
  j["pid"] = s.pid;
  j["port"] = s.port;
  j["started_at"] = iso8601(s.started_at);
  j["state"] = to_string(s.state);
  j["log_path"] = s.log_path;
  j["start_ticks"] = start_ticks;
  return j.dump(2) + "\n";
}

// A state file's content. Fields of the wrong type (a hand edit, another version) make it
// unreadable rather than fatal: recover() runs at startup and must not stop the proxy.
struct Recorded {
  pid_t pid = 0;
  unsigned long long start_ticks = 0;
  std::string logical_name, served_model_id, log_path;
  int port = 0;
  std::optional<std::chrono::system_clock::time_point> started_at;
};

std::optional<std::chrono::system_clock::time_point> parse_iso8601(const std::string& text) {
  std::tm tm{};
  std::istringstream in(text);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  if (in.fail()) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::optional<Recorded> parse_recorded(const nlohmann::json& j, int default_port) {
  try {
    Recorded r;
    r.pid = j.value("pid", 0);
    r.start_ticks = j.value("start_ticks", 0ull);
    r.logical_name = j.value("logical_name", "");
    r.served_model_id = j.value("served_model_id", "");
    r.log_path = j.value("log_path", "");
    r.port = j.value("port", default_port);
    r.started_at = parse_iso8601(j.value("started_at", ""));
    return r;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

class LocalVllm final : public VllmControl {
 public:
  LocalVllm(Executor owner, const ProxyConfig& cfg)
      : ex_(owner), cfg_(cfg), state_path_(cfg.vllm_state_path) {}

  const VllmStatus& status() const override { return st_; }

  Task<void> recover() override {
    const auto file = read_state_file();
    if (!file) co_return;
    const auto recorded = parse_recorded(*file, cfg_.vllm_port);
    if (!recorded) {
      spdlog::warn("[vllm-manager] {} has fields of the wrong type: ignored and removed", state_path_.string());
      remove_state_file();
      co_return;
    }
    const pid_t pid = recorded->pid;
    const auto ticks = recorded->start_ticks;
    if (pid <= 0 || !process_alive(pid) || (ticks && process_start_ticks(pid) != ticks)) {
      spdlog::info("[vllm-manager] recorded server (pid {}) is gone: removing {}", pid, state_path_.string());
      remove_state_file();
      co_return;
    }
    child_ = std::make_shared<Child>(ex_, pid, false);
    st_ = VllmStatus{};
    st_.logical_name = recorded->logical_name;
    st_.served_model_id = recorded->served_model_id;
    st_.pid = pid;
    st_.port = recorded->port;
    st_.log_path = recorded->log_path;
    st_.base_url = "http://127.0.0.1:" + std::to_string(st_.port);
    st_.started_at = recorded->started_at.value_or(std::chrono::system_clock::now());  // the server's, not ours
    st_.adopted = true;
    start_ticks_ = ticks;
    asio::co_spawn(ex_, monitor(child_), asio::detached);
    const bool healthy = co_await probe_health();
    st_.state = healthy ? BackendState::ready : BackendState::starting;
    spdlog::info("[vllm-manager] adopted running server '{}' (pid {}, port {}, {})", st_.logical_name, pid,
                 st_.port, healthy ? "healthy" : "not healthy yet");
  }

  Task<void> activate(const ModelEntry& entry) override {
    if (child_ && !child_->exited && st_.logical_name == entry.name) {
      if (st_.state == BackendState::ready) co_return;
      if (st_.state == BackendState::starting) {  // an adopted server still loading
        co_await wait_until_healthy(entry, std::chrono::steady_clock::now() + start_timeout());
        co_return;
      }
    }
    if (child_) co_await deactivate();
    co_await start(entry);
  }

  Task<void> deactivate() override {
    auto c = child_;
    if (!c) {
      remove_state_file();
      co_return;
    }
    st_.state = BackendState::stopping;
    changed();
    const auto grace = std::chrono::seconds(cfg_.vllm_stop_grace_s);
    spdlog::info("[vllm-manager] stopping '{}' (pid {}): SIGTERM, SIGKILL after {} s", st_.logical_name, c->pid,
                 cfg_.vllm_stop_grace_s);
    signal_group(c->pid, SIGTERM);
    if (!co_await wait_exit(c, grace)) {
      spdlog::warn("[vllm-manager] '{}' (pid {}) ignored SIGTERM for {} s: SIGKILL", st_.logical_name, c->pid,
                   cfg_.vllm_stop_grace_s);
      signal_group(c->pid, SIGKILL);
      co_await wait_exit(c, kKillWait);
    }
    signal_group(c->pid, SIGKILL);  // workers left in the group would hold VRAM
    if (!co_await group_gone(c->pid, kKillWait))
      spdlog::error("[vllm-manager] processes of group {} survived SIGKILL for {} ms", c->pid, kKillWait.count());
    finish_stop(c, "stopped");
  }

 private:
  std::chrono::seconds start_timeout() const { return std::chrono::seconds(cfg_.vllm_start_timeout_s); }
  int port_for(const ModelEntry& e) const {
    return !cfg_.vllm_single_port && e.backend_config.port > 0 ? e.backend_config.port : cfg_.vllm_port;
  }

  Task<void> start(const ModelEntry& entry) {
    const int port = port_for(entry);
    const std::string base = "http://127.0.0.1:" + std::to_string(port);
    if (co_await port_answers(base))
      throw ProxyError(502, "err_backend_unavailable",
                       "port " + std::to_string(port) + " is already in use by a process this proxy does not manage; "
                       "stop it or set CHAT_PROXY_VLLM_PORT");
    const auto argv = vllm_command(entry, cfg_, port);
    st_ = VllmStatus{};
    st_.logical_name = entry.name;
    st_.served_model_id = entry.upstream_model();
    st_.port = port;
    st_.base_url = base;
    st_.log_path = (state_path_.parent_path() / "logs" / ("vllm-" + sanitized(entry.name) + ".log")).string();
    st_.started_at = st_.last_start = std::chrono::system_clock::now();
    st_.state = BackendState::starting;
    pid_t pid;
    try {
      pid = spawn_in_own_group(argv, st_.log_path);
    } catch (const std::exception& e) {
      st_.state = BackendState::stopped;
      st_.last_error = e.what();
      throw ProxyError(502, "err_backend_unavailable", std::string("vLLM for '") + entry.name + "': " + e.what());
    }
    try {
      child_ = std::make_shared<Child>(ex_, pid, true);
    } catch (const std::exception& e) {  // no pidfd (EMFILE…): do not leave an untracked server
      signal_group(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      st_ = VllmStatus{};
      st_.last_error = std::string("cannot watch the vLLM process: ") + e.what();
      changed();
      throw ProxyError(502, "err_backend_unavailable", st_.last_error);
    }
    st_.pid = pid;
    start_ticks_ = process_start_ticks(pid).value_or(0);
    write_state_file();
    changed();
    asio::co_spawn(ex_, monitor(child_), asio::detached);
    spdlog::info("[vllm-manager] starting '{}' (pid {}, port {}): {} (log {})", entry.name, pid, port,
                 argv.front(), st_.log_path);
    co_await wait_until_healthy(entry, std::chrono::steady_clock::now() + start_timeout());
  }

  Task<void> wait_until_healthy(const ModelEntry& entry, std::chrono::steady_clock::time_point deadline) {
    auto c = child_;
    start_loop_running_ = true;
    struct Running {
      bool& flag;
      ~Running() { flag = false; }
    } running{start_loop_running_};
    asio::steady_timer pause(ex_);
    const auto began = std::chrono::steady_clock::now();
    for (;;) {
      if (child_ != c || st_.state == BackendState::stopping)  // deactivate() (shutdown, a switch) won
        throw ProxyError(503, "err_backend_unavailable", "the start of vLLM for '" + entry.name + "' was cancelled");
      if (c->exited) {
        const std::string why = "vLLM for '" + entry.name + "' exited with code " + std::to_string(c->exit_code) +
                                " while starting; see " + st_.log_path;
        signal_group(c->pid, SIGKILL);
        finish_stop(c, why);
        throw ProxyError(502, "err_backend_unavailable", why);
      }
      // A 200 counts only if nothing happened meanwhile (exit, deactivate): checked above.
      if (co_await probe_health() && child_ == c && !c->exited && st_.state == BackendState::starting) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        st_.last_error = "vLLM for '" + entry.name + "' did not become ready within " +
                         std::to_string(cfg_.vllm_start_timeout_s) + " s (CHAT_PROXY_VLLM_START_TIMEOUT_S); see " +
                         st_.log_path;
        const std::string why = st_.last_error;
        co_await deactivate();
        st_.last_error = why;
        throw ProxyError(503, "err_model_start_timeout", why);
      }
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
      pause.expires_after(std::clamp<std::chrono::milliseconds>(waited / 20, kHealthPollMin, kHealthPollMax));
      co_await pause.async_wait(use_task);
    }
    st_.state = BackendState::ready;
    write_state_file();
    changed();
    spdlog::info("[vllm-manager] '{}' ready after {:.1f} s", entry.name,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
  }

  // 200 from /health; refused, 503 (still loading) or no answer: not yet.
  Task<bool> probe_health() {
    try {
      auto r = co_await simple_http(st_.base_url, http::verb::get, "/health", {}, kHealthTimeout);
      co_return r.status == 200;
    } catch (const SimpleHttpError&) {
      co_return false;
    }
  }

  Task<bool> port_answers(const std::string& base) {
    try {
      co_await simple_http(base, http::verb::get, "/health", {}, kHealthTimeout);
      co_return true;
    } catch (const SimpleHttpError& e) {
      co_return !e.refused;
    }
  }

  // The only waiter on the pidfd: records the exit and wakes whoever waits for it.
  Task<void> monitor(std::shared_ptr<Child> c) {
    const bool exited = co_await c->watch.wait();
    if (exited && !c->exited) handle_exit(c);  // (c->exited: wait_for_exit saw it first)
  }

  Task<bool> wait_for_exit(std::chrono::milliseconds limit) override {
    const auto c = child_;
    if (!c) co_return true;  // not running (its exit was handled already)
    // An exit the pidfd shows already is handled now, not after the monitor's turn comes;
    // else the monitor handles it. Polled, not c->exit_event: that timer's expiry belongs to
    // wait_exit (a stop).
    if (!c->exited && c->watch.exited_now()) handle_exit(c);
    asio::steady_timer pause(ex_);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!c->exited && std::chrono::steady_clock::now() < deadline) {
      pause.expires_after(kHealthPollMin);
      co_await pause.async_wait(use_task);
    }
    co_return c->exited;
  }

  void handle_exit(std::shared_ptr<Child> c) {
    c->exited = true;
    if (c->ours) c->exit_code = reap_child(c->pid).value_or(-1);
    c->exit_event.cancel();
    if (child_ != c || st_.state == BackendState::stopping) return;
    const std::string why = "vLLM server '" + st_.logical_name + "' (pid " + std::to_string(c->pid) +
                            ") exited on its own with code " + std::to_string(c->exit_code) + "; see " + st_.log_path;
    spdlog::error("[vllm-manager] {}", why);
    if (start_loop_running_) return;  // wait_until_healthy reports it
    signal_group(c->pid, SIGKILL);
    finish_stop(c, why);
    if (on_unexpected_exit) on_unexpected_exit(why);
  }

  // The group's other members (vLLM's engine workers) are not our children: no pidfd or
  // waitpid for them, so the group is polled until empty before the GPU counts as free.
  Task<bool> group_gone(pid_t pgid, std::chrono::milliseconds timeout) {
    asio::steady_timer pause(ex_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (group_has_members(pgid)) {
      if (std::chrono::steady_clock::now() >= deadline) co_return false;
      pause.expires_after(kHealthPollMin);
      co_await pause.async_wait(use_task);
    }
    co_return true;
  }

  Task<bool> wait_exit(const std::shared_ptr<Child>& c, std::chrono::milliseconds timeout) {
    if (c->exited) co_return true;
    c->exit_event.expires_after(timeout);
    beast::error_code ec;
    co_await c->exit_event.async_wait(asio::redirect_error(use_task, ec));
    co_return c->exited;
  }

  void finish_stop(const std::shared_ptr<Child>& c, const std::string& why) {
    if (child_ != c) return;
    child_.reset();
    const std::string error = why == "stopped" ? std::string() : why;
    st_.state = BackendState::stopped;
    st_.pid = 0;
    st_.last_stop = std::chrono::system_clock::now();
    st_.last_error = error;
    st_.adopted = false;
    remove_state_file();
    changed();
  }

  std::optional<nlohmann::json> read_state_file() {
    // It names a process group this manager would adopt and later signal: only a file no
    // other user could have written is believed.
    if (auto problem = untrusted_file_problem(state_path_)) {
      spdlog::error("[vllm-manager] not adopting from {}: {}", state_path_.string(), *problem);
      return std::nullopt;
    }
    std::ifstream in(state_path_);
    if (!in) return std::nullopt;
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object()) {
      spdlog::warn("[vllm-manager] {} is not a JSON object: ignored and removed", state_path_.string());
      remove_state_file();
      return std::nullopt;
    }
    return j;
  }

  // Written whole to a temporary file (owner-only, in an owner-only directory when this
  // creates it), then renamed over the old one: a reader (or a proxy that crashed mid-write)
  // never sees half a file.
  void write_state_file() {
    if (auto e = write_private_file(state_path_, state_json(st_, start_ticks_)))
      spdlog::error("[vllm-manager] cannot write the state file: {}", *e);
  }

  void remove_state_file() {
    std::error_code ec;
    fs::remove(state_path_, ec);
  }

  Executor ex_;
  const ProxyConfig& cfg_;
  fs::path state_path_;
  VllmStatus st_;
  std::shared_ptr<Child> child_;
  unsigned long long start_ticks_ = 0;
  bool start_loop_running_ = false;  // wait_until_healthy is watching child_
};

}  // namespace

std::unique_ptr<VllmControl> make_local_vllm(Executor owner, const ProxyConfig& cfg) {
  return std::make_unique<LocalVllm>(owner, cfg);
}

std::unique_ptr<VllmControl> make_vllm_control(Executor owner, const ProxyConfig& cfg) {
  return cfg.vllm_remote_url.empty() ? make_local_vllm(owner, cfg) : make_remote_vllm(owner, cfg);
}

}  // namespace imageworks
