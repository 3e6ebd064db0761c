#include "imageworks/server.hpp"
#include "imageworks/fd_exhaustion.hpp"

#include <csignal>
#include <random>

#include <sys/resource.h>

#include <spdlog/spdlog.h>

namespace imageworks {

namespace {

bool sane_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

}  // namespace

void make_request_id(std::string_view client_supplied, std::string& out) {
  if (sane_request_id(client_supplied)) {
    out.assign(client_supplied);
    return;
  }
  // A random per-thread base stepped by an odd constant: unique, unguessable enough for
  // correlation, and no RNG call or printf per request.
  thread_local std::uint64_t state = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
  state += 0x9E3779B97F4A7C15ull;
  static constexpr char hex[] = "0123456789abcdef";
  out.assign("req-0000000000000000");
  std::uint64_t v = state;
  for (int i = 19; i >= 4; --i, v >>= 4) out[static_cast<std::size_t>(i)] = hex[v & 15];
}

std::string make_request_id(std::string_view client_supplied) {
  std::string id;
  make_request_id(client_supplied, id);
  return id;
}

Server::Server(ServerOptions opts, Handler handler)
    : opts_(std::move(opts)), handler_(std::move(handler)),
      contexts_([&] {
        std::vector<std::unique_ptr<asio::io_context>> v;
        int n = std::max(1, opts_.threads);
        for (int i = 0; i < n; ++i) v.push_back(std::make_unique<asio::io_context>(1));
        return v;
      }()),
      signals_(*contexts_.front(), SIGINT, SIGTERM) {
  for (auto& c : contexts_) guards_.emplace_back(c->get_executor());
}

Server::~Server() = default;

unsigned short Server::listen() {
  auto& ioc = *contexts_.front();
  tcp::endpoint ep{asio::ip::make_address(opts_.host), opts_.port};
  acceptor_.emplace(ioc);
  acceptor_->open(ep.protocol());
  acceptor_->set_option(asio::socket_base::reuse_address(true));
  acceptor_->bind(ep);
  acceptor_->listen(asio::socket_base::max_listen_connections);
  return acceptor_->local_endpoint().port();
}

void Server::run() {
  if (!acceptor_) listen();
  signals_.async_wait([this](const beast::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("[server] signal {} received: stopping", sig);
    begin_stop();
  });
  asio::co_spawn(*contexts_.front(), accept_loop(), asio::detached);
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < contexts_.size(); ++i)
    threads.emplace_back([this, i] {
      contexts_[i]->run();
      thread_exit();
    });
  contexts_.front()->run();
  thread_exit();
  for (auto& c : contexts_) c->stop();
  for (auto& t : threads) t.join();
  std::lock_guard lk(sessions_mu_);
  sessions_.clear();
}

void Server::thread_exit() {
  if (opts_.on_thread_exit) opts_.on_thread_exit();
  stop_deadline_sweep();
}

void Server::stop() {
  asio::post(*contexts_.front(), [this] { begin_stop(); });
}

void Server::begin_stop() {
  if (stopping_.exchange(true)) return;
  beast::error_code ec;
  signals_.cancel(ec);
  if (acceptor_) acceptor_->close(ec);
  if (on_stop_) on_stop_();
  // Close idle keep-alive connections now; busy ones close after their response.
  std::lock_guard lk(sessions_mu_);
  for (auto& s : sessions_) {
    asio::post(s->stream.get_executor(), [s] {
      if (!s->busy) s->stream.cancel();
    });
  }
  asio::co_spawn(*contexts_.front(), drain(), asio::detached);
}

std::size_t Server::open_sessions() {
  std::lock_guard lk(sessions_mu_);
  return sessions_.size();
}

// Each exchange still open is ended on its own thread: its relay closes the upstream and
// answers with the error (an SSE error event and [DONE] once the stream has started).
void Server::abort_open_exchanges() {
  std::lock_guard lk(sessions_mu_);
  for (auto& s : sessions_) {
    asio::post(s->stream.get_executor(), [s] {
      if (s->exchange) s->exchange->abort(ProxyError(503, "err_backend_unavailable", "proxy shutting down"));
      else if (!s->busy) s->stream.cancel();
    });
  }
}

Task<void> Server::drain() {
  auto deadline = std::chrono::steady_clock::now() + opts_.shutdown_grace;
  bool aborted = false;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    const std::size_t open = open_sessions();
    if (open == 0) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      if (aborted) {
        spdlog::warn("[server] {} connection(s) still open after their streams were ended: stopping", open);
        break;
      }
      spdlog::warn("[server] grace period over with {} connection(s) still open: ending them", open);
      abort_open_exchanges();
      aborted = true;
      deadline = std::chrono::steady_clock::now() + opts_.abort_grace;
    }
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(use_task);
  }
  guards_.clear();
  for (auto& c : contexts_) c->stop();
}

std::size_t default_max_connections() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 0;
  // Two descriptors per relayed request (client and backend), less a few for the listener,
  // log files, the registry watch and the backends' managers.
  const auto fds = static_cast<std::size_t>(rl.rlim_cur);
  return fds > 128 ? (fds - 64) / 2 : 32;
}

// Over CHAT_PROXY_MAX_CONNECTIONS: a clear 503 now, not a connection left waiting. Counted
// and logged like running out of descriptors (rate-limited), which it prevents.
void Server::refuse_connection(TimedSocket::socket_type& socket) {
  if (refusal_.empty())
    refusal_ = refusal_response(503, "err_backend_busy",
                                "the proxy has CHAT_PROXY_MAX_CONNECTIONS (" +
                                    std::to_string(opts_.max_connections) +
                                    ") client connections open; retry shortly",
                                kExhaustedRetryAfterS);
  note_connection_limit(opts_.max_connections);
  beast::error_code ec;
  answer_and_close(socket.release(ec), refusal_);
}

Task<void> Server::accept_loop() {
  ReserveDescriptor reserve;  // answers a client 503 when no descriptor is left for it
  asio::steady_timer backoff(acceptor_->get_executor());
  auto pause = std::chrono::milliseconds(10);
  while (!stopping()) {
    auto& target = *contexts_[next_context_++ % contexts_.size()];
    beast::error_code ec;
    auto socket = co_await acceptor_->async_accept(target, asio::redirect_error(use_task, ec));
    if (ec) {
      if (stopping() || ec == asio::error::operation_aborted) break;
      if (is_resource_exhaustion(ec)) {
        note_resource_exhaustion("accept", ec);
        if (reserve.answer_one(acceptor_->native_handle())) continue;
      } else {
        spdlog::warn("[server] accept failed: {}", ec.message());
      }
      // Nothing taken off the queue: wait instead of spinning on the same error.
      backoff.expires_after(pause);
      co_await backoff.async_wait(asio::redirect_error(use_task, ec));
      pause = std::min(pause * 2, std::chrono::milliseconds(1000));
      continue;
    }
    pause = std::chrono::milliseconds(10);
    if (opts_.max_connections > 0 && open_sessions() >= opts_.max_connections) {
      refuse_connection(socket);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    // The session is made on its own thread: its socket joins that thread's deadline sweep.
    asio::co_spawn(target, run_session(std::move(socket)), asio::detached);
  }
}

}  // namespace imageworks
