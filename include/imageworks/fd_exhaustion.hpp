#pragma once
// Running out of file descriptors (EMFILE/ENFILE) or socket memory, on accept or on connect
// (issue 12): counted, logged at most every 10 s with how often it happened, and answered
// with a clear 503 instead of a spinning accept loop or a bare 502.
#include <cstdint>
#include <string>
#include <string_view>

#include "imageworks/asio.hpp"

namespace imageworks {

// EMFILE, ENFILE, ENOBUFS, ENOMEM.
bool is_resource_exhaustion(const beast::error_code& ec);

// Counts one occurrence at `where` ("accept", "connect") and logs a warning at most every
// 10 s (with the number of occurrences since the last one). Thread-safe.
void note_resource_exhaustion(std::string_view where, const beast::error_code& ec);

// A client refused because CHAT_PROXY_MAX_CONNECTIONS connections are open: counted in the
// same total and logged at most every 10 s. Thread-safe.
void note_connection_limit(std::size_t limit);

// Occurrences since the process started (imageworks_fd_exhaustion_total).
std::uint64_t resource_exhaustion_count();

// The 503 a client gets when the proxy has no descriptor left for it or its backend.
inline constexpr int kExhaustedRetryAfterS = 1;
inline constexpr std::string_view kExhaustedMessage =
    "the proxy is out of file descriptors (too many open connections); retry shortly";

// A whole error response with `Retry-After` and `Connection: close`, for a client refused
// before it has a session (out of descriptors, CHAT_PROXY_MAX_CONNECTIONS reached).
std::string refusal_response(int status, std::string_view code, std::string_view message, int retry_after_s);

// Sends `response` on the accepted socket `fd` without waiting (it fits the empty send
// buffer), reads what the client already sent so the close does not reset the connection
// (a reset can discard the response before the client reads it), and closes `fd`.
void answer_and_close(int fd, std::string_view response);

// Keeps one descriptor in reserve so that, when accept() fails with EMFILE, the listener can
// still take the next connection off the queue, answer it 503 and close it (instead of
// leaving it waiting or spinning on the error).
class ReserveDescriptor {
 public:
  ReserveDescriptor();
  ~ReserveDescriptor();
  ReserveDescriptor(const ReserveDescriptor&) = delete;
  ReserveDescriptor& operator=(const ReserveDescriptor&) = delete;
  // Frees the reserve, accepts at most one pending connection on `listen_fd`, answers it 503
  // and closes it, then takes the reserve again. True when a client was answered.
  bool answer_one(int listen_fd);

 private:
  int fd_ = -1;
};

}  // namespace imageworks
