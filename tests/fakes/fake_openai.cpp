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

// ---- Impl: lifecycle (the io thread, accepting, disconnects and the gate: fake_http_core.hpp) ----

FakeOpenAI::Impl::Impl(Behavior b) : behavior(std::move(b)) { start(); }

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
  return impl_->wait_for_client_disconnect(timeout, n);
}

std::size_t FakeOpenAI::client_disconnects() const { return impl_->client_disconnects(); }

std::size_t FakeOpenAI::connections_accepted() const { return impl_->accepted.load(); }

bool FakeOpenAI::wait_for_idle_closes(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lk(impl_->mu);
  return impl_->cv.wait_for(lk, timeout, [&] { return impl_->idle_closes >= n; });
}
std::size_t FakeOpenAI::frames_sent() const { return impl_->frames_written.load(); }

void FakeOpenAI::release_chunk(int n) { impl_->release_chunk(n); }
void FakeOpenAI::release_all() { impl_->release_all(); }

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
