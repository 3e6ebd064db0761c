#pragma once
// A TCP socket with a coarse deadline instead of a timer per operation. Every event-loop
// thread sweeps its sockets' deadlines a few times a second and closes the sockets whose
// deadline passed; their pending operations then fail and expired() tells why. Setting a
// deadline is a store, not a timer-queue update (and no timerfd syscall): that is the point,
// since every read and write of the relay sets one.
#include <chrono>

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
  void expires_at(clock::time_point t) { deadline_ = t; }
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

  // While set, every few sweeps a non-blocking peek checks whether the peer closed or reset
  // the connection and, if so, calls fn(ctx) once. It costs nothing for requests shorter
  // than a sweep, unlike an armed wait (an epoll_ctl per request).
  void watch_peer(void (*fn)(void*), void* ctx) noexcept {
    peer_gone_ = fn;
    peer_ctx_ = ctx;
    peer_ticks_ = 0;
  }
  void unwatch_peer() noexcept { peer_gone_ = nullptr; }
  static constexpr unsigned kPeerCheckEvery = 4;  // sweeps: a departed peer is noticed within ~0.25 s

  // Called by the thread's sweep: close if the deadline passed; check a watched peer.
  void sweep(clock::time_point now);
  struct Sweep;
  Sweep* owner_ = nullptr;       // the sweep of the thread that made this socket
  TimedSocket* prev_ = nullptr;  // that thread's list of live sockets (intrusive)
  TimedSocket* next_ = nullptr;

 private:
  void enlist();
  socket_type socket_;
  clock::time_point deadline_ = clock::time_point::max();
  bool expired_ = false;
  void (*peer_gone_)(void*) = nullptr;
  void* peer_ctx_ = nullptr;
  unsigned peer_ticks_ = 0;
  void check_peer();
};

// Stops this thread's sweep and lets go of its sockets (they may be destroyed later on
// another thread); call on the thread after its io_context stopped running.
void stop_deadline_sweep();

// An operation on `s` failed with `ec`: was it the deadline?
inline bool timed_out(const TimedSocket& s, const beast::error_code& ec) {
  return ec && s.expired();
}

}  // namespace imageworks
