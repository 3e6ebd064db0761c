#pragma once
// A TCP socket with a coarse deadline instead of a timer per operation. Each event-loop
// thread keeps a timing wheel of its sockets (50 ms slots) and closes those whose deadline
// passed; their pending operations then fail and expired() tells why. Setting a deadline is
// a store, not a timer-queue update (and no timerfd syscall): that is the point, since every
// read and write of the relay sets one. A socket sits in the slot of the deadline it had when
// it was filed; moving the deadline later (the common case) is only the store, and the wheel
// files the socket anew when it reaches that slot. So a tick touches only the sockets due in
// it, not every open one: 10 000 trickling streams cost no sweep of 20 000 sockets 20 times
// a second (bench/streams.py).
#include <chrono>
#include <memory>

#include "imageworks/asio.hpp"

namespace imageworks {

class TimedSocket {
 public:
  using executor_type = Executor;
  using socket_type = asio::basic_stream_socket<tcp, Executor>;
  using lowest_layer_type = socket_type;
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kGranularity{50};

  explicit TimedSocket(Executor ex);
  explicit TimedSocket(socket_type s);
  ~TimedSocket();
  TimedSocket(const TimedSocket&) = delete;
  TimedSocket& operator=(const TimedSocket&) = delete;

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  socket_type& socket() noexcept { return socket_; }
  lowest_layer_type& lowest_layer() noexcept { return socket_; }

  void expires_after(clock::duration d) { expires_at(clock::now() + d); }
  void expires_at(clock::time_point t) {
    deadline_ = t;
    if (t < filed_at_) refile(t);  // earlier than the slot it sits in (or not filed)
  }
  void expires_never() { deadline_ = clock::time_point::max(); }
  // The deadline passed and the socket was closed because of it.
  bool expired() const noexcept { return expired_; }
  void close();
  void cancel();

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& b, Token&& token) {
    return socket_.async_read_some(b, std::forward<Token>(token));
  }
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& b, Token&& token) {
    return socket_.async_write_some(b, std::forward<Token>(token));
  }

  // Writes as much of `b` as the socket takes without waiting and returns the count (0 and
  // would_block in `ec` when it takes nothing). A reply that fits the send buffer, the
  // common case, then costs no asynchronous operation at all.
  template <class ConstBuffers>
  std::size_t write_now(const ConstBuffers& b, beast::error_code& ec) {
    if (!socket_.non_blocking()) {
      socket_.non_blocking(true, ec);  // once per socket; async operations work as before
      if (ec) return 0;
    }
    return socket_.write_some(b, ec);
  }

  // While set, fn(ctx) is called once when the peer closed or reset the connection. For the
  // first second a non-blocking peek every kPeerCheckInterval checks (nothing for requests
  // shorter than that, unlike an armed wait: an epoll_ctl per request); a request that lasts
  // longer (a stream, a model loading) gets one armed wait for readability instead, so the
  // peer's leaving is seen at once and a long stream costs no more peeks.
  void watch_peer(void (*fn)(void*), void* ctx) noexcept;
  void unwatch_peer() noexcept;
  static constexpr std::chrono::milliseconds kPeerCheckInterval{200};
  static constexpr unsigned kPeerPeeksBeforeWait = 5;

  struct Wheel;
  Wheel* owner_ = nullptr;       // the wheel of the thread that made this socket
  TimedSocket* prev_ = nullptr;  // the wheel slot this socket is filed in (intrusive list)
  TimedSocket* next_ = nullptr;
  std::size_t slot_ = 0;
  unsigned era_ = 0;
  clock::time_point filed_at_ = clock::time_point::max();  // that slot's time; max(): not filed

 private:
  friend struct Wheel;
  struct PeerWait;
  void refile(clock::time_point t) noexcept;
  void unfile() noexcept;
  void due(clock::time_point now);  // the wheel reached this socket's slot
  clock::time_point wake_time() const noexcept;
  bool check_peer();  // true when the peer left (fn was called)
  void arm_peer_wait();

  socket_type socket_;
  clock::time_point deadline_ = clock::time_point::max();
  bool expired_ = false;
  void (*peer_gone_)(void*) = nullptr;
  void* peer_ctx_ = nullptr;
  unsigned peer_peeks_ = 0;
  clock::time_point next_peek_ = clock::time_point::max();
  std::shared_ptr<PeerWait> peer_wait_;  // the armed wait's link back here, cut when it ends
};

// Stops this thread's wheel and lets go of its sockets (they may be destroyed later on
// another thread); call on the thread after its io_context stopped running.
void stop_deadline_sweep();

// An operation on `s` failed with `ec`: was it the deadline?
inline bool timed_out(const TimedSocket& s, const beast::error_code& ec) {
  return ec && s.expired();
}

}  // namespace imageworks
