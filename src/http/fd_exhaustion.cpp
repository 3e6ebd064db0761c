#include "imageworks/fd_exhaustion.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "imageworks/errors.hpp"

namespace imageworks {

namespace {

std::atomic<std::uint64_t> g_total{0};
std::mutex g_log_mu;
std::chrono::steady_clock::time_point g_last_log{};
std::uint64_t g_logged_total = 0;

constexpr std::chrono::seconds kLogEvery{10};

}  // namespace

bool is_resource_exhaustion(const beast::error_code& ec) {
  if (ec.category() != asio::error::get_system_category()) return false;
  const int v = ec.value();
  return v == EMFILE || v == ENFILE || v == ENOBUFS || v == ENOMEM;
}

void note_resource_exhaustion(std::string_view where, const beast::error_code& ec) {
  const auto total = g_total.fetch_add(1, std::memory_order_relaxed) + 1;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lk(g_log_mu);
  if (g_last_log != std::chrono::steady_clock::time_point{} && now - g_last_log < kLogEvery) return;
  spdlog::error("[server] out of descriptors on {}: {} ({} time(s) since the last report, {} in all); "
                "clients get 503 — raise the open-file limit (ulimit -n, systemd LimitNOFILE)",
                where, ec.message(), total - g_logged_total, total);
  g_last_log = now;
  g_logged_total = total;
}

std::uint64_t resource_exhaustion_count() { return g_total.load(std::memory_order_relaxed); }

ReserveDescriptor::ReserveDescriptor() : fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

ReserveDescriptor::~ReserveDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

bool ReserveDescriptor::answer_one(int listen_fd) {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  const int client = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (client >= 0) {
    static const std::string response = [] {
      const std::string body = error_body(503, "err_backend_busy", kExhaustedMessage);
      return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: " +
             std::to_string(kExhaustedRetryAfterS) + "\r\nConnection: close\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body;
    }();
    (void)::send(client, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(client, SHUT_WR);
    // Read what the client already sent, so closing does not reset the connection (a reset
    // can discard the 503 before the client reads it). Bounded: a few reads, non-blocking.
    char sink[4096];
    for (int i = 0; i < 16 && ::recv(client, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
    }
    ::close(client);
  }
  fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return client >= 0;
}

}  // namespace imageworks
