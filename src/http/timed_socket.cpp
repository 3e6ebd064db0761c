#include "imageworks/timed_socket.hpp"

#include <cerrno>
#include <memory>

#include <sys/socket.h>

namespace imageworks {

// One per event-loop thread: the live sockets and the timer that sweeps them.
struct TimedSocket::Sweep {
  TimedSocket* head = nullptr;
  std::unique_ptr<asio::steady_timer> timer;
  bool running = false;

  void arm() {
    timer->expires_after(TimedSocket::kGranularity);
    timer->async_wait([this](const beast::error_code& ec) {
      if (ec) return;
      const auto now = TimedSocket::clock::now();
      for (TimedSocket* s = head; s;) {
        TimedSocket* next = s->next_;  // sweep() never unlinks, but keep the walk simple
        s->sweep(now);
        s = next;
      }
      if (head) arm();
      else running = false;
    });
  }
};

namespace {

TimedSocket::Sweep& this_thread_sweep() {
  thread_local TimedSocket::Sweep sweep;
  return sweep;
}

}  // namespace

TimedSocket::TimedSocket(Executor ex) : socket_(ex) { enlist(); }

TimedSocket::TimedSocket(socket_type s) : socket_(std::move(s)) { enlist(); }

void TimedSocket::enlist() {
  auto& sw = this_thread_sweep();
  owner_ = &sw;
  next_ = sw.head;
  if (sw.head) sw.head->prev_ = this;
  sw.head = this;
  if (!sw.running) {
    if (!sw.timer) sw.timer = std::make_unique<asio::steady_timer>(socket_.get_executor());
    sw.running = true;
    sw.arm();
  }
}

TimedSocket::~TimedSocket() {
  if (!owner_) return;  // its thread's sweep already let go of it
  if (prev_) prev_->next_ = next_;
  else owner_->head = next_;
  if (next_) next_->prev_ = prev_;
}

void TimedSocket::close() {
  beast::error_code ec;
  socket_.close(ec);
}

void TimedSocket::cancel() {
  beast::error_code ec;
  socket_.cancel(ec);
}

void TimedSocket::check_peer() {
  if (!socket_.is_open()) return;
  char byte;
  const auto n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const bool gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  if (!gone) return;  // nothing to read, or pipelined bytes of a next request: still there
  auto fn = peer_gone_;
  peer_gone_ = nullptr;
  fn(peer_ctx_);
}

void TimedSocket::sweep(clock::time_point now) {
  if (peer_gone_ && ++peer_ticks_ % kPeerCheckEvery == 0) check_peer();
  if (now < deadline_) return;
  deadline_ = clock::time_point::max();
  if (!socket_.is_open()) return;
  expired_ = true;
  close();  // pending operations complete with an error; later ones fail at once
}

void stop_deadline_sweep() {
  auto& sw = this_thread_sweep();
  for (TimedSocket* s = sw.head; s;) {
    TimedSocket* next = s->next_;
    s->owner_ = nullptr;
    s->prev_ = s->next_ = nullptr;
    s = next;
  }
  sw.head = nullptr;
  sw.timer.reset();
  sw.running = false;
}

}  // namespace imageworks
