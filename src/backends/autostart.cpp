#include "imageworks/autostart.hpp"

#include <csignal>
#include <fstream>

#include <sys/wait.h>

#include <spdlog/spdlog.h>

#include "imageworks/errors.hpp"
#include "imageworks/process.hpp"
#include "imageworks/simple_http.hpp"
#include "imageworks/time_format.hpp"
#include "imageworks/upstream.hpp"

namespace imageworks {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr auto kProbeTimeout = 1000ms;
constexpr auto kProbeEvery = 200ms;

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// A command line split at spaces; "double quotes" group words. No shell, no expansion.
std::vector<std::string> split_command(const std::string& line) {
  std::vector<std::string> argv;
  std::string word;
  bool quoted = false, any = false;
  for (char c : line) {
    if (c == '"') {
      quoted = !quoted;
      any = true;
    } else if ((c == ' ' || c == '\t') && !quoted) {
      if (any) argv.push_back(std::move(word));
      word.clear();
      any = false;
    } else {
      word += c;
      any = true;
    }
  }
  if (any) argv.push_back(std::move(word));
  return argv;
}

// Where a backend's server says it is up: Ollama's /api/version, else the OpenAI /models.
std::pair<std::string, std::string> health_probe(const std::string& backend, const std::string& base_url) {
  const UpstreamTarget t = parse_base_url(base_url);
  const std::string root = "http://" + t.host + ":" + t.port;
  if (backend == "ollama") return {root, "/api/version"};
  return {root, t.base_path + "/models"};
}

}  // namespace

std::map<std::string, std::vector<std::string>> parse_autostart_map(const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const std::string item = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    start = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (item.empty()) continue;
    const auto sep = item.find_first_of("=:");
    if (sep == std::string::npos || sep == 0)
      throw ConfigError("CHAT_PROXY_AUTOSTART_MAP", "expected backend=command, got \"" + item + "\"");
    auto argv = split_command(trim(item.substr(sep + 1)));
    if (argv.empty()) throw ConfigError("CHAT_PROXY_AUTOSTART_MAP", "no command for \"" + item + "\"");
    out[trim(item.substr(0, sep))] = std::move(argv);
  }
  return out;
}

namespace {

Task<bool> answers(const std::string& root, const std::string& path) {
  try {
    auto r = co_await simple_http(root, http::verb::get, path, {}, kProbeTimeout);
    co_return r.status == 200;
  } catch (const SimpleHttpError&) {
    co_return false;
  }
}

}  // namespace

struct AutostartManager::Service {
  std::vector<std::string> argv;
  pid_t pid = 0;
  bool starting = false;
  bool last_ok = false;
  std::string last_error;
  std::chrono::system_clock::time_point last_start{};
  std::vector<asio::steady_timer*> waiters;  // requests waiting for the start under way
  std::unique_ptr<ProcessExitWatch> watch;
};

// The only waiter on the service's pidfd: reaps it, so an autostarted process that exits
// leaves no zombie, and the next request starts it again.
Task<void> AutostartManager::reap_when_done(std::shared_ptr<Service> s, int pid) {
  co_await s->watch->wait();
  reap_child(pid);
  if (s->pid == pid) s->pid = 0;
}

AutostartManager::AutostartManager(const ProxyConfig& cfg)
    : enabled_(cfg.autostart_enabled), grace_(cfg.autostart_grace_s),
      dir_((fs::path(cfg.vllm_state_path).parent_path() / "autostart").string()),
      commands_(cfg.autostart_enabled ? parse_autostart_map(cfg.autostart_map) : decltype(commands_){}) {
  for (auto& [backend, argv] : commands_) {
    auto s = std::make_shared<Service>();
    s->argv = argv;
    services_[backend] = s;
  }
  thread_ = std::thread([this] { ioc_.run(); });
}

AutostartManager::~AutostartManager() {
  work_.reset();
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

Task<void> AutostartManager::ensure(const std::string& backend, const std::string& base_url) {
  if (!covers(backend)) co_return;
  std::string b = backend, u = base_url;  // copies into the service thread's coroutine
  co_await asio::co_spawn(ioc_, ensure_here(b, u), use_task);
}

Task<void> AutostartManager::ensure_here(std::string backend, std::string base_url) {
  auto svc = services_.at(backend);
  const auto [root, path] = health_probe(backend, base_url);
  if (!svc->starting && co_await answers(root, path)) co_return;
  if (svc->starting) {  // share the start another request began
    asio::steady_timer wait(ioc_, asio::steady_timer::time_point::max());
    svc->waiters.push_back(&wait);
    beast::error_code ec;
    co_await wait.async_wait(asio::redirect_error(use_task, ec));
    if (!svc->last_ok) throw ProxyError(503, "err_model_start_timeout", svc->last_error);
    co_return;
  }
  svc->starting = true;
  std::optional<ProxyError> failure;
  if (svc->pid <= 0 || !process_alive(svc->pid)) {
    const auto log = fs::path(dir_) / (backend + ".log");
    try {
      svc->pid = spawn_in_own_group(svc->argv, log);
      svc->last_start = std::chrono::system_clock::now();
      std::ofstream(fs::path(dir_) / (backend + ".pid")) << svc->pid << "\n";
      try {
        svc->watch = std::make_unique<ProcessExitWatch>(ioc_.get_executor(), svc->pid);
      } catch (const std::exception&) {  // no pidfd: do not leave a process nobody reaps
        signal_group(svc->pid, SIGKILL);
        ::waitpid(svc->pid, nullptr, 0);
        svc->pid = 0;
        throw;
      }
      asio::co_spawn(ioc_, reap_when_done(svc, svc->pid), asio::detached);
      spdlog::info("[autostart] {} did not answer {}{}: started '{}' (pid {}, log {})", backend, root, path,
                   svc->argv.front(), svc->pid, log.string());
    } catch (const std::exception& e) {
      failure = ProxyError(503, "err_model_start_timeout", "autostart of " + backend + " failed: " + e.what());
    }
  }
  if (!failure) {
    const auto deadline = std::chrono::steady_clock::now() + grace_;
    asio::steady_timer pause(ioc_);
    bool up = false;
    while (!(up = co_await answers(root, path)) && std::chrono::steady_clock::now() < deadline && svc->pid > 0) {
      pause.expires_after(kProbeEvery);
      co_await pause.async_wait(use_task);
    }
    if (!up)
      failure = ProxyError(503, "err_model_start_timeout",
                           "autostarted " + backend + " did not answer " + root + path + " within " +
                               std::to_string(grace_.count()) + " s (CHAT_PROXY_AUTOSTART_GRACE_S); see " +
                               (fs::path(dir_) / (backend + ".log")).string());
  }
  svc->starting = false;
  svc->last_ok = !failure;
  svc->last_error = failure ? failure->what() : "";
  for (auto* w : svc->waiters) w->cancel();
  svc->waiters.clear();
  {
    std::lock_guard lk(status_mu_);
    json s = json::object();
    s["command"] = svc->argv;
    s["pid"] = svc->pid > 0 ? json(svc->pid) : json(nullptr);
    s["running"] = svc->pid > 0 && process_alive(svc->pid);
    s["last_start"] = svc->last_start == std::chrono::system_clock::time_point{} ? json(nullptr) : json(iso8601(svc->last_start));
    s["last_error"] = svc->last_error.empty() ? json(nullptr) : json(svc->last_error);
    status_[backend] = std::move(s);
  }
  if (failure) {
    spdlog::error("[autostart] {}", failure->what());
    throw *failure;
  }
}

json AutostartManager::status() const {
  std::lock_guard lk(status_mu_);
  json s = json::object();
  s["enabled"] = enabled_;
  s["services"] = status_;
  json commands = json::object();
  for (auto& [backend, argv] : commands_) commands[backend] = argv;
  s["commands"] = std::move(commands);
  return s;
}

}  // namespace imageworks
