#pragma once
// What every in-process fake HTTP backend (FakeOpenAI, FakeOllama) shares: its own io thread
// on 127.0.0.1:0, keep-alive connections, client-disconnect detection while a reply is under
// way, waits that end early when the client leaves or the server stops, and the chunk gate.
// A fake derives from FakeHttpCore<Impl> and supplies record(request) and respond(conn,
// request); it calls start() last in its constructor and stop() first in its destructor.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <imageworks/asio.hpp>

namespace imageworks::test {

template <class Derived>
class FakeHttpCore {
 public:
  using Clock = std::chrono::steady_clock;
  using Request = http::request<http::string_body>;

  struct Conn {
    explicit Conn(tcp::socket s) : sock(std::move(s)), timer(sock.get_executor()) {}
    tcp::socket sock;
    asio::steady_timer timer;  // delays, stalls and gate waits; cancelled to wake them
    bool responding = false;   // a reply is under way: the client leaving now is a disconnect
    bool client_gone = false;
    std::uint64_t reply_seq = 0;  // tells a stale disconnect watcher from the current one
  };

  FakeHttpCore() : acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0}) {
    port = acceptor.local_endpoint().port();
  }

  // ---- any thread -------------------------------------------------------------------------
  // The n-th client disconnect during a reply; nullopt after `timeout`.
  std::optional<Clock::time_point> wait_for_client_disconnect(std::chrono::milliseconds timeout,
                                                              std::size_t n) const {
    if (n == 0) n = 1;
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, timeout, [&] { return disconnects.size() >= n; })) return std::nullopt;
    return disconnects[n - 1];
  }
  std::size_t client_disconnects() const {
    std::lock_guard lock(mu);
    return disconnects.size();
  }
  void release_chunk(int n) {
    asio::post(ioc, [this, n] {
      gate_credits += static_cast<std::size_t>(std::max(n, 0));
      wake_all();
    });
  }
  void release_all() {
    asio::post(ioc, [this] {
      gate_open = true;
      wake_all();
    });
  }

  // ---- io thread only -----------------------------------------------------------------------
  bool alive(const Conn& c) const { return !c.client_gone && !stopping; }

  void close_conn(Conn& c) {
    beast::error_code ignored;
    c.timer.cancel();
    c.sock.shutdown(tcp::socket::shutdown_both, ignored);
    c.sock.close(ignored);
  }

  // While a reply is under way the client has nothing more to send, so readability means
  // EOF or reset: the client left. Stale watchers (an earlier reply) are told apart by reply_seq.
  void begin_reply(const std::shared_ptr<Conn>& c) {
    c->responding = true;
    const std::uint64_t seq = ++c->reply_seq;
    c->sock.async_wait(tcp::socket::wait_read, [this, c, seq](beast::error_code ec) {
      if (ec || stopping || !c->responding || seq != c->reply_seq) return;
      beast::error_code avail_ec;
      if (c->sock.available(avail_ec) > 0 && !avail_ec) return;  // pipelined bytes, not a leave
      client_left(*c);
    });
  }
  void end_reply(Conn& c) {
    c.responding = false;
    beast::error_code ignored;
    c.sock.cancel(ignored);  // only the watcher is pending here; the next read starts afresh
  }
  void client_left(Conn& c) {
    if (c.client_gone || !c.responding || stopping) return;
    c.client_gone = true;
    {
      std::lock_guard lock(mu);
      disconnects.push_back(Clock::now());
    }
    cv.notify_all();
    close_conn(c);  // wakes a stalled, delayed or gated reply and aborts a pending write
  }

  asio::awaitable<bool> pause(Conn& c, Clock::duration d) {
    const auto deadline = Clock::now() + d;
    while (alive(c) && Clock::now() < deadline) {
      beast::error_code ec;
      c.timer.expires_at(deadline);
      co_await c.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return alive(c);
  }
  asio::awaitable<bool> stall(Conn& c) {
    while (alive(c)) {
      beast::error_code ec;
      c.timer.expires_at(Clock::time_point::max());
      co_await c.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return false;
  }
  asio::awaitable<bool> pass_gate(Conn& c) {
    while (alive(c) && !gate_open && gate_credits == 0) {
      beast::error_code ec;
      c.timer.expires_at(Clock::time_point::max());
      co_await c.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!alive(c)) co_return false;
    if (!gate_open) --gate_credits;
    co_return true;
  }
  // A whole reply; false when the connection must not be reused (client gone, close).
  asio::awaitable<bool> send(Conn& c, int status, std::string_view content_type, std::string body,
                             bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, content_type);
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    beast::error_code ec;
    co_await http::async_write(c.sock, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) client_left(c);
    co_return !ec && keep_alive && alive(c);
  }
  asio::awaitable<bool> write_all(Conn& c, std::string_view bytes) {
    beast::error_code ec;
    co_await asio::async_write(c.sock, asio::buffer(bytes.data(), bytes.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) client_left(c);  // a failed write while replying: the client is gone
    co_return !ec && alive(c);
  }

  // Pauses re-arm until their deadline, so waking every timer is harmless to them.
  void wake_all() {
    for (auto& [ptr, conn] : conns) conn->timer.cancel();
  }

  asio::io_context ioc;
  tcp::acceptor acceptor;
  unsigned short port = 0;
  bool stopping = false;
  std::map<Conn*, std::shared_ptr<Conn>> conns;  // open connections, closed on shutdown
  std::size_t gate_credits = 0;
  bool gate_open = false;
  std::atomic<std::size_t> accepted{0};

  mutable std::mutex mu;  // guards `disconnects` and the derived fake's recorded state
  mutable std::condition_variable cv;
  std::vector<Clock::time_point> disconnects;
  std::size_t idle_closes = 0;  // keep-alive connections the client closed between requests (mu)

 protected:
  // The last step of the derived constructor: everything the io thread touches exists.
  void start() {
    asio::co_spawn(ioc, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc.run(); });
  }
  // The first step of the derived destructor. Closing every socket and cancelling every
  // timer ends each coroutine by its own error path, so run() returns and nothing leaks.
  void stop() {
    if (!thread_.joinable()) return;
    asio::post(ioc, [this] {
      stopping = true;
      beast::error_code ignored;
      acceptor.close(ignored);
      for (auto& [ptr, conn] : conns) close_conn(*conn);
    });
    thread_.join();
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping || !acceptor.is_open()) co_return;
      if (ec) continue;  // a failed accept (the peer reset) does not stop the server
      ++accepted;
      socket.set_option(tcp::no_delay(true), ec);  // each write its own segment (split tests)
      auto conn = std::make_shared<Conn>(std::move(socket));
      conns.emplace(conn.get(), conn);
      asio::co_spawn(ioc, session(conn), asio::detached);
    }
  }

  asio::awaitable<void> session(std::shared_ptr<Conn> c) {
    beast::flat_buffer buffer;
    while (!stopping) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(256u << 20);  // image payloads up to the proxy's own limit and beyond
      parser.header_limit(64u << 10);
      beast::error_code ec;
      co_await http::async_read(c->sock, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::end_of_stream && !stopping) {  // the client closed a keep-alive connection
        std::lock_guard lk(mu);
        ++idle_closes;
        cv.notify_all();
      }
      if (ec || stopping) break;
      const Request req = parser.release();
      self().record(req);
      if (!(co_await self().respond(c, req))) break;
    }
    close_conn(*c);
    conns.erase(c.get());
  }

  std::thread thread_;
};

}  // namespace imageworks::test
