// Upstream connections: connect (resolve, TCP, TLS) under a deadline, and a per-thread
// keep-alive pool. Each event-loop thread has its own pool, so no locks are needed and a
// pooled connection is always used on the io_context it belongs to.
#include <atomic>
#include <deque>
#include <unordered_map>
#include <vector>

#include <openssl/ssl.h>

#include "imageworks/fd_exhaustion.hpp"
#include "imageworks/upstream.hpp"

namespace imageworks {

namespace {


// CHAT_PROXY_UPSTREAM_MAX_IDLE / _IDLE_TIMEOUT_MS, set once at startup.
std::atomic<std::size_t> g_max_idle{64};
std::atomic<std::int64_t> g_idle_timeout_ms{60000};

// Per backend: idle connections, oldest first (a connection is reused newest first).
using Pool = std::unordered_map<std::string, std::deque<std::unique_ptr<UpstreamConnection>>>;
Pool& thread_pool() {
  thread_local Pool pool;
  return pool;
}

// A pooled connection with unread bytes is out of step with its peer. One the peer has
// closed meanwhile is found on use: the relay retries once on a fresh connection, which is
// cheaper than a peek syscall before every request.
bool still_usable(UpstreamConnection& c) {
  return c.tcp().socket().is_open() && c.buffer.size() == 0;
}

[[noreturn]] void throw_connect_error(const UpstreamTarget& t, const TimedSocket& s, const beast::error_code& ec) {
  if (is_resource_exhaustion(ec)) {  // the proxy's own limit, not the backend's fault
    note_resource_exhaustion("connect", ec);
    throw ProxyError(503, "err_backend_busy", std::string(kExhaustedMessage), {}, kExhaustedRetryAfterS);
  }
  if (timed_out(s, ec))
    throw ProxyError(504, "err_backend_timeout", "backend " + t.pool_key + " did not accept a connection in time");
  throw BackendUnreachable(
      ProxyError(502, "err_backend_unavailable", "backend " + t.pool_key + " is unavailable: " + ec.message()));
}

}  // namespace

asio::ssl::context& client_tls_context() {
  static asio::ssl::context ctx = [] {
    asio::ssl::context c(asio::ssl::context::tls_client);
    c.set_default_verify_paths();  // the system CA store (honours SSL_CERT_FILE / SSL_CERT_DIR)
    c.set_verify_mode(asio::ssl::verify_peer);
    return c;
  }();
  return ctx;
}

UpstreamConnection::UpstreamConnection(Executor ex, const UpstreamTarget& t)
    : tcp_(ex), key_(t.pool_key) {
  if (t.tls) tls_ = std::make_unique<UpstreamTls>(ex, client_tls_context());
}

void UpstreamConnection::close() {
  beast::error_code ec;
  tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
  tcp().close();
}

Task<std::unique_ptr<UpstreamConnection>> acquire_connection(
    const UpstreamTarget& t, std::chrono::steady_clock::time_point deadline, bool pooled) {
  auto& idle = thread_pool()[t.pool_key];
  while (pooled && !idle.empty()) {
    auto c = std::move(idle.back());
    idle.pop_back();
    if (still_usable(*c)) {
      c->reused = true;
      c->tcp().expires_never();  // its idle deadline no longer applies: the caller sets its own
      co_return c;
    }
  }
  const Executor loop = co_await asio::this_coro::executor;
  auto c = std::make_unique<UpstreamConnection>(loop, t);
  beast::error_code ec;
  auto& stream = c->tcp();
  stream.expires_at(deadline);
  beast::error_code addr_ec;
  auto addr = asio::ip::make_address(t.host, addr_ec);
  if (!addr_ec) {
    co_await stream.socket().async_connect(tcp::endpoint(addr, static_cast<unsigned short>(std::stoi(t.port))),
                                           asio::redirect_error(use_task, ec));
  } else {
    tcp::resolver resolver(loop);
    auto results = co_await resolver.async_resolve(t.host, t.port, asio::redirect_error(use_task, ec));
    if (!ec) co_await asio::async_connect(stream.socket(), results, asio::redirect_error(use_task, ec));
  }
  if (!ec && stream.expired()) ec = asio::error::timed_out;  // a range connect may outlive a sweep
  if (ec) throw_connect_error(t, stream, ec);
  stream.socket().set_option(tcp::no_delay(true), ec);
  ec = {};
  if (c->is_tls()) {
    auto& tls = c->tls();
    if (!SSL_set_tlsext_host_name(tls.native_handle(), t.host.c_str()))
      throw ProxyError(502, "err_backend_unavailable", "cannot set TLS SNI for " + t.host);
    tls.set_verify_callback(asio::ssl::host_name_verification(t.host));
    co_await tls.async_handshake(asio::ssl::stream_base::client, asio::redirect_error(use_task, ec));
    if (ec) throw_connect_error(t, stream, ec);
  }
  co_return c;
}

void set_upstream_pool_limits(std::size_t max_idle, std::chrono::milliseconds idle_timeout) {
  g_max_idle.store(max_idle, std::memory_order_relaxed);
  g_idle_timeout_ms.store(idle_timeout.count(), std::memory_order_relaxed);
}

void release_connection(std::unique_ptr<UpstreamConnection> c) {
  if (!c || !c->tcp().socket().is_open()) return;
  auto& idle = thread_pool()[c->pool_key()];
  // The oldest ones the thread's deadline sweep has closed (idle too long) go first.
  while (!idle.empty() && !idle.front()->tcp().socket().is_open()) idle.pop_front();
  if (idle.size() >= g_max_idle.load(std::memory_order_relaxed)) return;  // closed as it goes
  // Unused this long, the sweep closes it: its descriptor and the backend's slot are freed.
  c->tcp().expires_after(std::chrono::milliseconds(g_idle_timeout_ms.load(std::memory_order_relaxed)));
  idle.push_back(std::move(c));
}

void clear_connection_pool() { thread_pool().clear(); }

void drop_idle_connections(const std::string& pool_key) {
  auto it = thread_pool().find(pool_key);
  if (it != thread_pool().end()) it->second.clear();
}


}  // namespace imageworks
