// FakeOpenAI lifecycle and bookkeeping: the io thread, accepting, request recording,
// client-disconnect detection and the chunk gate. The HTTP exchange is in
// fake_openai_session.cpp, the bodies in fake_openai_bodies.cpp.
#include <future>

#include <boost/algorithm/string/predicate.hpp>

#include "fakes/fake_openai_impl.hpp"

namespace imageworks::test {

using Clock = std::chrono::steady_clock;

std::string RecordedRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (boost::algorithm::iequals(k, name)) return v;
  }
  return {};
}

nlohmann::json RecordedRequest::json() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

// ---- Impl: lifecycle ----

FakeOpenAI::Impl::Impl(Behavior b)
    : acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0}), behavior(std::move(b)) {
  port = acceptor.local_endpoint().port();
  asio::co_spawn(ioc, accept_loop(), asio::detached);
  thread = std::thread([this] { ioc.run(); });
}

// Closing every socket and cancelling every timer makes each coroutine end by its own
// error path, so run() returns once the last one is gone and nothing leaks.
FakeOpenAI::Impl::~Impl() {
  asio::post(ioc, [this] { shutdown(); });
  thread.join();
}

void FakeOpenAI::Impl::shutdown() {
  stopping = true;
  beast::error_code ignored;
  acceptor.close(ignored);
  for (auto& [ptr, conn] : conns) close_conn(*conn);
}

asio::awaitable<void> FakeOpenAI::Impl::accept_loop() {
  for (;;) {
    beast::error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping || !acceptor.is_open()) co_return;
    if (ec) continue;  // a failed accept (e.g. the peer reset) does not stop the server
    ++accepted;
    socket.set_option(tcp::no_delay(true), ec);  // each write its own segment (split tests)
    auto conn = std::make_shared<Conn>(std::move(socket));
    conns.emplace(conn.get(), conn);
    asio::co_spawn(ioc, session(conn), asio::detached);
  }
}

void FakeOpenAI::Impl::close_conn(Conn& c) {
  beast::error_code ignored;
  c.timer.cancel();
  c.sock.shutdown(tcp::socket::shutdown_both, ignored);
  c.sock.close(ignored);
}

// ---- Impl: disconnect detection ----

// While a reply is under way the client has nothing more to send, so readability means EOF
// or reset: the client left. Stale watchers (an earlier reply) are told apart by reply_seq.
void FakeOpenAI::Impl::begin_reply(const std::shared_ptr<Conn>& c) {
  c->responding = true;
  const std::uint64_t seq = ++c->reply_seq;
  c->sock.async_wait(tcp::socket::wait_read, [this, c, seq](beast::error_code ec) {
    if (ec || stopping || !c->responding || seq != c->reply_seq) return;
    beast::error_code avail_ec;
    if (c->sock.available(avail_ec) > 0 && !avail_ec) return;  // pipelined bytes, not a leave
    client_left(*c);
  });
}

void FakeOpenAI::Impl::end_reply(Conn& c) {
  c.responding = false;
  beast::error_code ignored;
  c.sock.cancel(ignored);  // only the watcher is pending here; the next read starts afresh
}

void FakeOpenAI::Impl::client_left(Conn& c) {
  if (c.client_gone || !c.responding || stopping) return;
  c.client_gone = true;
  {
    std::lock_guard lock(mu);
    disconnects.push_back(Clock::now());
  }
  cv.notify_all();
  close_conn(c);  // wakes a stalled or gated reply and aborts a pending write
}

// ---- Impl: waits that end early when the client leaves or the server stops ----

asio::awaitable<bool> FakeOpenAI::Impl::pause(Conn& c, Clock::duration d) {
  const auto deadline = Clock::now() + d;
  while (alive(c) && Clock::now() < deadline) {
    beast::error_code ec;
    c.timer.expires_at(deadline);
    co_await c.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return alive(c);
}

asio::awaitable<bool> FakeOpenAI::Impl::stall(Conn& c) {
  while (alive(c)) {
    beast::error_code ec;
    c.timer.expires_at(Clock::time_point::max());
    co_await c.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return false;
}

asio::awaitable<bool> FakeOpenAI::Impl::pass_gate(Conn& c) {
  while (alive(c) && !gate_open && gate_credits == 0) {
    beast::error_code ec;
    c.timer.expires_at(Clock::time_point::max());
    co_await c.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!alive(c)) co_return false;
  if (!gate_open) --gate_credits;
  co_return true;
}

// Pauses re-arm until their deadline, so waking every timer is harmless to them.
void FakeOpenAI::Impl::wake_all() {
  for (auto& [ptr, conn] : conns) conn->timer.cancel();
}

// ---- Impl: shared state ----

void FakeOpenAI::Impl::record(const Request& req) {
  RecordedRequest r;
  r.method = std::string(req.method_string());
  r.target = std::string(req.target());
  for (const auto& field : req) r.headers.emplace_back(field.name_string(), field.value());
  r.body = req.body();
  {
    std::lock_guard lock(mu);
    requests.push_back(std::move(r));
  }
  cv.notify_all();
}

FakeOpenAI::Behavior FakeOpenAI::Impl::snapshot() const {
  std::lock_guard lock(mu);
  return behavior;
}

// ---- FakeOpenAI ----

FakeOpenAI::FakeOpenAI() : FakeOpenAI(Behavior{}) {}
FakeOpenAI::FakeOpenAI(Behavior behavior) : impl_(std::make_unique<Impl>(std::move(behavior))) {}
FakeOpenAI::~FakeOpenAI() = default;

unsigned short FakeOpenAI::port() const { return impl_->port; }
std::string FakeOpenAI::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

void FakeOpenAI::set_behavior(Behavior behavior) {
  std::lock_guard lock(impl_->mu);
  impl_->behavior = std::move(behavior);
}

FakeOpenAI::Behavior FakeOpenAI::behavior() const { return impl_->snapshot(); }

std::vector<RecordedRequest> FakeOpenAI::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->requests;
}

bool FakeOpenAI::wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return impl_->requests.size() >= n; });
}

std::optional<Clock::time_point> FakeOpenAI::wait_for_client_disconnect(
    std::chrono::milliseconds timeout, std::size_t n) const {
  if (n == 0) n = 1;
  std::unique_lock lock(impl_->mu);
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->disconnects.size() >= n; })) {
    return std::nullopt;
  }
  return impl_->disconnects[n - 1];
}

std::size_t FakeOpenAI::client_disconnects() const {
  std::lock_guard lock(impl_->mu);
  return impl_->disconnects.size();
}

std::size_t FakeOpenAI::connections_accepted() const { return impl_->accepted.load(); }
std::size_t FakeOpenAI::frames_sent() const { return impl_->frames_written.load(); }

void FakeOpenAI::release_chunk(int n) {
  Impl* impl = impl_.get();
  asio::post(impl->ioc, [impl, n] {
    impl->gate_credits += static_cast<std::size_t>(std::max(n, 0));
    impl->wake_all();
  });
}

void FakeOpenAI::release_all() {
  Impl* impl = impl_.get();
  asio::post(impl->ioc, [impl] {
    impl->gate_open = true;
    impl->wake_all();
  });
}

}  // namespace imageworks::test

namespace imageworks::test {

void FakeOpenAI::close_idle_connections() {
  Impl* impl = impl_.get();
  std::promise<void> done;
  asio::post(impl->ioc, [impl, &done] {
    // Every connection: the caller has no request in flight (a reply just written may still
    // count as "responding" here, which is why idleness is not checked).
    for (auto& [ptr, conn] : impl->conns) impl->close_conn(*conn);
    done.set_value();
  });
  done.get_future().wait();
}

}  // namespace imageworks::test
