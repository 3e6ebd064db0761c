#pragma once
// HTTP/1.1 server: one io_context per thread, a single acceptor handing connections out
// round-robin, keep-alive sessions with header/body limits and read deadlines, and a
// graceful stop (stop accepting, close idle connections, let in-flight requests finish up
// to a grace period, then end the rest with an error: a stream's last event says why).
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "imageworks/http.hpp"

namespace imageworks {

struct ServerOptions {
  std::string host = "127.0.0.1";
  unsigned short port = 8100;
  int threads = 1;
  std::uint64_t max_body_bytes = 32ull << 20;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_header_fields = 100;
  std::chrono::milliseconds request_timeout{30000};
  std::chrono::milliseconds keepalive_timeout{60000};
  std::chrono::milliseconds write_timeout{60000};  // longest a client may accept no bytes
  std::chrono::milliseconds shutdown_grace{10000};
  // Open client connections at most (0 = no limit); one more is answered 503 and closed.
  std::size_t max_connections = 0;
  // After the grace period, exchanges still open are ended (streams get an error event and
  // [DONE]); this bounds how long their last words may take before the loops stop.
  std::chrono::milliseconds abort_grace{2000};
  // Runs on each event-loop thread after its loop ended (e.g. to close pooled sockets).
  std::function<void()> on_thread_exit;
  // Runs on the session's thread once per request when its exchange ended, however it
  // ended (a reply, an error before routing, the client leaving): the request log and the
  // metrics. The request's head is still readable; the record is reused afterwards.
  std::function<void(RequestRecord&, const Request&)> on_exchange_end;
};

using Handler = std::function<Task<void>(Exchange&)>;

class Server {
 public:
  Server(ServerOptions opts, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Bind and listen; returns the bound port (useful with port 0).
  unsigned short listen();
  // Serve until SIGINT/SIGTERM or stop(), then drain. Blocks the calling thread.
  void run();
  // Begin a graceful stop; safe from any thread.
  void stop();
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
  // Called once on the first context when a stop begins (e.g. to stop backends).
  void on_stop(std::function<void()> fn) { on_stop_ = std::move(fn); }
  asio::io_context& context(std::size_t i) { return *contexts_.at(i); }
  std::size_t context_count() const { return contexts_.size(); }

 private:
  struct Session {
    explicit Session(TimedSocket::socket_type s) : stream(std::move(s)) {}
    Stream stream;
    // Touched only on the session's context: a request is being handled, and its exchange.
    bool busy = false;
    Exchange* exchange = nullptr;
  };
  Task<void> accept_loop();
  Task<void> run_session(TimedSocket::socket_type socket);
  Task<void> refuse(Stream& stream, SessionBuffers& buffers, const std::string& client, const Request& req,
                    int status, std::string_view code, std::string message);
  Task<void> drain();
  void refuse_connection(TimedSocket::socket_type& socket);
  std::size_t open_sessions();
  void abort_open_exchanges();
  void begin_stop();
  void thread_exit();

  ServerOptions opts_;
  Handler handler_;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<Executor>> guards_;
  std::optional<tcp::acceptor> acceptor_;
  asio::signal_set signals_;
  std::atomic<bool> stopping_{false};
  std::size_t next_context_ = 0;
  std::string refusal_;  // the over-the-limit 503, made on first use
  std::mutex sessions_mu_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::function<void()> on_stop_;
};

// CHAT_PROXY_MAX_CONNECTIONS=0: half the open-file limit (two descriptors per relayed request).
std::size_t default_max_connections();

// A request id: the client's x-request-id when sane, else a fresh one.
std::string make_request_id(std::string_view client_supplied);
void make_request_id(std::string_view client_supplied, std::string& out);  // reuses out's buffer

}  // namespace imageworks
