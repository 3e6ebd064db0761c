// fake_vllm: a stand-in for `vllm serve` that VllmManager spawns as a real child process.
// One thread, one io_context. Its life, scripted by --fake-* flags: started → (bind delay:
// connections refused) → listening (/health 503) → healthy (/health 200) → [crash: _exit(3)]
// → SIGTERM → exit 0 after the stop delay. Each step is appended to the events file so
// tests can follow the process from outside. See fake_vllm.hpp for the flags.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <ctime>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake_vllm/fake_vllm.hpp"

namespace imageworks::fake_vllm {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::int64_t epoch_ms() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// vLLM's EngineCore stand-in: a child in our process group that holds "the GPU" until it is
// killed. It does not die with its parent on purpose (no PR_SET_PDEATHSIG): a manager that
// signals only the pid leaves it behind, which is what the group-kill tests must catch.
// Bounded by max_lifetime so a leaked one still goes away.
pid_t spawn_worker(std::chrono::seconds lifetime) {
  const pid_t pid = fork();
  if (pid != 0) return pid;  // parent (or -1)
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  prctl(PR_SET_NAME, "fake_vllm_wrk", 0, 0, 0);
  const auto deadline = Clock::now() + lifetime;
  while (Clock::now() < deadline) {
    timespec ts{1, 0};
    nanosleep(&ts, nullptr);  // EINTR just loops; the deadline bounds it
  }
  _exit(0);
}

class Lifecycle {
 public:
  Lifecycle(asio::io_context& ioc, const Options& o, EventLog& events, pid_t worker)
      : ioc_(ioc), opts_(o), events_(events), worker_(worker), start_(Clock::now()),
        signals_(ioc, SIGTERM, SIGINT), bind_timer_(ioc), health_timer_(ioc), crash_timer_(ioc),
        stop_timer_(ioc), lifetime_timer_(ioc) {
    state_.opts = &opts_;
    state_.events = &events_;
    state_.created = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  }

  void start() {
    wait_signal();
    bind_timer_.expires_at(start_ + opts_.bind_delay);
    bind_timer_.async_wait([this](beast::error_code ec) { if (!ec) listen(); });
    lifetime_timer_.expires_at(start_ + opts_.max_lifetime);
    lifetime_timer_.async_wait([this](beast::error_code ec) {
      if (!ec) finish(4, "max_lifetime");
    });
  }

  int exit_code() const { return exit_code_; }

 private:
  void listen() {
    if (stopping_) return;
    beast::error_code ec;
    acceptor_.emplace(ioc_);
    const tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), opts_.port};
    acceptor_->open(ep.protocol(), ec);
    if (!ec) acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_->bind(ep, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {  // vLLM dies when its port is taken; so does the fake
      std::fprintf(stderr, "fake_vllm: cannot listen on port %u: %s\n", opts_.port, ec.message().c_str());
      finish(1, "bind_failed: " + ec.message());
      return;
    }
    const auto port = acceptor_->local_endpoint().port();
    events_.emit("listening", {{"port", port}});
    std::fprintf(stderr, "INFO:     Uvicorn running on http://127.0.0.1:%u\n", port);
    accept();
    if (opts_.never_healthy) return;
    health_timer_.expires_at(std::max(Clock::now(), start_ + opts_.load));
    health_timer_.async_wait([this](beast::error_code ec) { if (!ec) become_healthy(); });
  }

  void accept() {
    acceptor_->async_accept([this](beast::error_code ec, tcp::socket sock) {
      if (stopping_ || !acceptor_->is_open()) return;
      if (!ec) asio::co_spawn(ioc_, serve_connection(std::move(sock), state_), asio::detached);
      accept();
    });
  }

  void become_healthy() {
    if (stopping_) return;
    state_.healthy = true;
    events_.emit("healthy");
    if (!opts_.crash_after) return;
    crash_timer_.expires_after(*opts_.crash_after);
    crash_timer_.async_wait([this](beast::error_code ec) {
      if (ec) return;
      events_.emit("crash", {{"code", 3}});
      std::fprintf(stderr, "fake_vllm: simulated crash\n");
      if (opts_.crash_linger.count() > 0) {  // the sockets go first, the process a moment later
        close_sockets();
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.crash_linger).count();
        timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
      }
      _exit(3);  // no cleanup, no exit event, the worker left behind: a real crash
    });
  }

  // Every socket descriptor of the process (listener and connections), closed as the kernel
  // closes them when a process dies.
  static void close_sockets() {
    for (int fd = 3; fd < 1024; ++fd) {
      struct stat st {};
      if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) ::close(fd);
    }
  }

  void wait_signal() {
    signals_.async_wait([this](beast::error_code ec, int sig) {
      if (ec) return;
      const bool ignored = sig == SIGTERM && opts_.ignore_sigterm;
      const bool already = stopping_;
      // Stop first: a test that sees the event may rely on the listener being closed.
      if (!ignored && !already) stop();
      events_.emit("sigterm", {{"signal", sig}, {"ignored", ignored}, {"already_stopping", already}});
      wait_signal();  // keep listening: a second signal is recorded too
    });
  }

  // Like uvicorn: stop accepting at once, let replies under way run, exit after the delay.
  void stop() {
    stopping_ = true;
    bind_timer_.cancel();
    health_timer_.cancel();
    crash_timer_.cancel();
    beast::error_code ignored;
    if (acceptor_) acceptor_->close(ignored);
    stop_timer_.expires_after(opts_.stop_delay);
    stop_timer_.async_wait([this](beast::error_code ec) { if (!ec) finish(0, "sigterm"); });
  }

  // A clean shutdown takes the worker down too (vLLM stops its engine core).
  void finish(int code, const std::string& reason) {
    if (worker_ > 0) {
      kill(worker_, SIGKILL);
      waitpid(worker_, nullptr, 0);  // SIGKILL cannot be caught: this returns at once
      worker_ = -1;
    }
    events_.emit("exit", {{"code", code}, {"reason", reason}});
    exit_code_ = code;
    ioc_.stop();  // open connections die with the process, as they would with vLLM
  }

  asio::io_context& ioc_;
  const Options& opts_;
  EventLog& events_;
  pid_t worker_;
  const Clock::time_point start_;
  ServerState state_;
  asio::signal_set signals_;
  std::optional<tcp::acceptor> acceptor_;
  asio::steady_timer bind_timer_, health_timer_, crash_timer_, stop_timer_, lifetime_timer_;
  bool stopping_ = false;
  int exit_code_ = 0;
};

json started_fields(const Options& o) {
  return {{"pgid", getpgrp()}, {"port", o.port}, {"model_path", o.model_path}, {"argv", o.argv},
          {"ignored_args", o.ignored}, {"gpu_memory_utilization", o.gpu_memory_utilization},
          {"max_model_len", o.max_model_len}, {"chat_template", o.chat_template}};
}

}  // namespace

EventLog::EventLog(const std::string& path, std::string served) : served_(std::move(served)) {
  if (path.empty()) return;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) std::fprintf(stderr, "fake_vllm: cannot open events file %s\n", path.c_str());
}

EventLog::~EventLog() {
  if (fd_ >= 0) ::close(fd_);
}

void EventLog::emit(const std::string& event, json fields) {
  if (fd_ < 0) return;
  fields["event"] = event;
  fields["pid"] = getpid();
  fields["served_model_name"] = served_;
  fields["t_ms"] = epoch_ms();
  const std::string line = fields.dump() + "\n";
  // One write() per line: with O_APPEND the line lands whole even when processes share a file.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (::write(fd_, line.data(), line.size()) >= 0 || errno != EINTR) break;
  }
}

}  // namespace imageworks::fake_vllm

int main(int argc, char** argv) {
  using namespace imageworks::fake_vllm;
  std::string error;
  const auto opts = parse_options(argc, argv, error);
  if (!opts) {
    std::fprintf(stderr, "fake_vllm: %s\n", error.c_str());
    return 2;
  }
  EventLog events(opts->events_path, opts->served_model_name);
  events.emit("started", started_fields(*opts));
  std::fprintf(stderr, "INFO: fake vLLM serving %s as %s\n", opts->model_path.c_str(), opts->served_model_name.c_str());
  pid_t worker = -1;
  if (opts->spawn_worker) {  // before any Asio state exists, so the child inherits none of it
    worker = spawn_worker(opts->max_lifetime);
    if (worker > 0) events.emit("worker_spawned", {{"worker_pid", worker}});
  }
  imageworks::asio::io_context ioc;
  Lifecycle life(ioc, *opts, events, worker);
  life.start();
  ioc.run();
  return life.exit_code();
}
