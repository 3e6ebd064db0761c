#include "imageworks/timed_socket.hpp"

#include <array>
#include <cerrno>
#include <memory>

#include <sys/socket.h>

namespace imageworks {

namespace {
using clock = TimedSocket::clock;
constexpr std::size_t kSlots = 1024;  // 51.2 s ahead; a later deadline is filed anew when reached
}  // namespace

// One per event-loop thread. Tick k covers [epoch + k·G, epoch + (k+1)·G); a socket due at t
// is filed in the slot of the first tick starting at or after t, never further than
// kSlots - 1 ticks ahead, so each slot holds the sockets of exactly one tick.
struct TimedSocket::Wheel {
  std::array<TimedSocket*, kSlots> slots{};
  clock::time_point epoch = clock::now();
  std::uint64_t tick = 0;  // the last tick processed (or being processed)
  std::size_t filed = 0;
  std::unique_ptr<asio::steady_timer> timer;
  bool running = false;
  unsigned era = 0;  // stop_deadline_sweep() lets go of the sockets of earlier eras

  clock::time_point time_of(std::uint64_t k) const { return epoch + k * TimedSocket::kGranularity; }

  void file(TimedSocket& s, clock::time_point t, const Executor& ex) {
    if (!running && filed == 0) {  // idle: nothing is filed, so the clock may jump ahead
      const auto now = static_cast<std::uint64_t>((clock::now() - epoch) / TimedSocket::kGranularity);
      tick = std::max(tick, now);
    }
    std::uint64_t k = tick + 1;
    if (t > time_of(k)) {
      const auto ahead = (t - epoch + TimedSocket::kGranularity - clock::duration(1)) / TimedSocket::kGranularity;
      k = std::min<std::uint64_t>(static_cast<std::uint64_t>(ahead), tick + kSlots - 1);
    }
    s.slot_ = k % kSlots;
    s.filed_at_ = time_of(k);
    s.prev_ = nullptr;
    s.next_ = slots[s.slot_];
    if (s.next_) s.next_->prev_ = &s;
    slots[s.slot_] = &s;
    ++filed;
    if (!running) {
      timer = std::make_unique<asio::steady_timer>(ex);
      running = true;
      arm();
    }
  }

  void unlink(TimedSocket& s) {
    if (s.prev_) s.prev_->next_ = s.next_;
    else slots[s.slot_] = s.next_;
    if (s.next_) s.next_->prev_ = s.prev_;
    s.prev_ = s.next_ = nullptr;
    s.filed_at_ = clock::time_point::max();
    --filed;
  }

  void arm() {
    timer->expires_at(time_of(tick + 1));
    timer->async_wait([this](const beast::error_code& ec) {
      if (ec) return;
      advance(clock::now());
      if (filed > 0) {
        arm();
      } else {
        // Idle: let go of the timer while its io_context surely lives (a thread may run
        // another one later; the next socket filed makes a timer on its own).
        running = false;
        timer.reset();  // (its wait completed: destroying it in the handler is fine)
      }
    });
  }

  // Processes every tick that has started by `now`. A socket handled here is unlinked first
  // and, if it still has something to wait for, filed again at tick + 1 or later.
  void advance(clock::time_point now) {
    const auto target = static_cast<std::uint64_t>((now - epoch) / TimedSocket::kGranularity);
    // Every filed socket is within kSlots - 1 ticks: after a long stall one lap covers all.
    if (target > tick + kSlots) tick = target - kSlots;
    while (tick < target) {
      ++tick;
      auto& head = slots[tick % kSlots];
      while (TimedSocket* s = head) {
        unlink(*s);
        s->due(now);
        const auto wake = s->wake_time();
        if (wake != clock::time_point::max() && s->owner_) file(*s, wake, s->socket_.get_executor());
      }
    }
  }
};

// The armed wait's way back to its socket; cut when the watch ends or the socket goes.
struct TimedSocket::PeerWait {
  TimedSocket* self;
};

namespace {

TimedSocket::Wheel& this_thread_wheel() {
  thread_local TimedSocket::Wheel wheel;
  return wheel;
}

}  // namespace

TimedSocket::TimedSocket(Executor ex) : owner_(&this_thread_wheel()), era_(owner_->era), socket_(ex) {}

TimedSocket::TimedSocket(socket_type s)
    : owner_(&this_thread_wheel()), era_(owner_->era), socket_(std::move(s)) {}

TimedSocket::~TimedSocket() {
  if (peer_wait_) peer_wait_->self = nullptr;
  unfile();
}

void TimedSocket::refile(clock::time_point t) noexcept {
  if (owner_ && owner_->era != era_) owner_ = nullptr;
  if (!owner_) return;  // its thread's wheel already let go of it
  unfile();
  owner_->file(*this, t, socket_.get_executor());
}

void TimedSocket::unfile() noexcept {
  if (owner_ && filed_at_ != clock::time_point::max()) owner_->unlink(*this);
}

clock::time_point TimedSocket::wake_time() const noexcept {
  if (peer_gone_ && !peer_wait_ && next_peek_ < deadline_) return next_peek_;
  return deadline_;
}

void TimedSocket::close() {
  beast::error_code ec;
  socket_.close(ec);
}

void TimedSocket::cancel() {
  beast::error_code ec;
  socket_.cancel(ec);
}

void TimedSocket::watch_peer(void (*fn)(void*), void* ctx) noexcept {
  unwatch_peer();
  peer_gone_ = fn;
  peer_ctx_ = ctx;
  peer_peeks_ = 0;
  next_peek_ = clock::now() + kPeerCheckInterval;
  if (next_peek_ < filed_at_) refile(next_peek_);
}

void TimedSocket::unwatch_peer() noexcept {
  peer_gone_ = nullptr;
  next_peek_ = clock::time_point::max();
  if (peer_wait_) {  // the wait stays queued until the socket is readable or closed: harmless
    peer_wait_->self = nullptr;
    peer_wait_.reset();
  }
}

bool TimedSocket::check_peer() {
  if (!socket_.is_open()) return false;
  char byte;
  const auto n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const bool gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  if (!gone) return false;  // nothing to read, or pipelined bytes of a next request: still there
  auto fn = peer_gone_;
  auto ctx = peer_ctx_;
  unwatch_peer();
  fn(ctx);
  return true;
}

// One wait for readability: the reactor tells when the peer's FIN or RST arrives. Its only
// cost is an epoll_ctl, once per long request. Readable with bytes to read (a pipelined next
// request) is not the peer leaving: peeks on the wheel take over then, once a second.
void TimedSocket::arm_peer_wait() {
  peer_wait_ = std::make_shared<PeerWait>(PeerWait{this});
  socket_.async_wait(socket_type::wait_read, [w = peer_wait_](const beast::error_code& ec) {
    TimedSocket* s = w->self;
    if (!s) return;  // the watch ended (or the socket went) meanwhile
    s->peer_wait_.reset();
    if (!ec && s->check_peer()) return;
    if (!s->peer_gone_) return;
    s->next_peek_ = clock::now() + 5 * kPeerCheckInterval;
    if (s->next_peek_ < s->filed_at_) s->refile(s->next_peek_);
  });
}

void TimedSocket::due(clock::time_point now) {
  if (peer_gone_ && !peer_wait_ && now >= next_peek_) {
    if (!check_peer()) {
      if (++peer_peeks_ >= kPeerPeeksBeforeWait && socket_.is_open()) arm_peer_wait();
      else next_peek_ = now + kPeerCheckInterval;
    }
  }
  if (now < deadline_) return;
  deadline_ = clock::time_point::max();
  if (!socket_.is_open()) return;
  expired_ = true;
  close();  // pending operations complete with an error; later ones fail at once
}

void stop_deadline_sweep() {
  auto& w = this_thread_wheel();
  for (auto& head : w.slots) {
    while (TimedSocket* s = head) {
      w.unlink(*s);
      s->owner_ = nullptr;
    }
  }
  w.timer.reset();
  w.running = false;
  ++w.era;  // sockets not filed now let go at their next deadline
}

}  // namespace imageworks
