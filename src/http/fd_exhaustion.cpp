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

namespace {

// Counts one occurrence; calls report(since_last_report, total) at most every kLogEvery.
template <class Report>
void count_and_report(Report&& report) {
  const auto total = g_total.fetch_add(1, std::memory_order_relaxed) + 1;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lk(g_log_mu);
  if (g_last_log != std::chrono::steady_clock::time_point{} && now - g_last_log < kLogEvery) return;
  report(total - g_logged_total, total);
  g_last_log = now;
  g_logged_total = total;
}

}  // namespace

void note_resource_exhaustion(std::string_view where, const beast::error_code& ec) {
  count_and_report([&](std::uint64_t since, std::uint64_t total) {
    spdlog::error("[server] out of descriptors on {}: {} ({} time(s) since the last report, {} in all); "
                  "clients get 503 — raise the open-file limit (ulimit -n, systemd LimitNOFILE)",
                  where, ec.message(), since, total);
  });
}

void note_connection_limit(std::size_t limit) {
  count_and_report([&](std::uint64_t since, std::uint64_t) {
    spdlog::warn("[server] {} client connections open (CHAT_PROXY_MAX_CONNECTIONS): refusing more with 503 "
                 "({} refusal(s) or descriptor shortage(s) since the last report)",
                 limit, since);
  });
}

std::uint64_t resource_exhaustion_count() { return g_total.load(std::memory_order_relaxed); }

std::string refusal_response(int status, std::string_view code, std::string_view message, int retry_after_s) {
  const std::string body = error_body(status, code, std::string(message));
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(http::obsolete_reason(static_cast<http::status>(status))) +
         "\r\nServer: imageworks-chat-proxy\r\nContent-Type: application/json\r\nRetry-After: " +
         std::to_string(retry_after_s) + "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

void answer_and_close(int fd, std::string_view response) {
  (void)::send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  char sink[4096];  // bounded: a few non-blocking reads
  for (int i = 0; i < 16 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  ::close(fd);
}

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
    static const std::string response =
        refusal_response(503, "err_backend_busy", kExhaustedMessage, kExhaustedRetryAfterS);
    answer_and_close(client, response);
  }
  fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return client >= 0;
}

}  // namespace imageworks
