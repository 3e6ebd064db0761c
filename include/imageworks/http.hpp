#pragma once
// The downstream side of one HTTP exchange: the parsed request and the means to answer it,
// either whole (send) or as a chunked stream (start_stream / write_chunk / end_stream).
// One Exchange per request; it lives on the session's coroutine frame.
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "imageworks/asio.hpp"
#include "imageworks/errors.hpp"
#include "imageworks/request.hpp"
#include "imageworks/request_record.hpp"
#include "imageworks/timed_socket.hpp"

namespace imageworks {

using Stream = TimedSocket;

// Buffers a session reuses for every request, so a warm connection allocates little.
struct SessionBuffers {
  std::string request_id;
  std::string response_head;  // the response head and chunk framing
  std::string upstream_head;  // the head of the request sent upstream
  RequestRecord record;       // what the exchange did, for the log and the metrics
};

class Exchange {
 public:
  Exchange(Stream& stream, Request& req, const tcp::endpoint& remote, SessionBuffers& buffers,
           std::chrono::milliseconds write_timeout, bool server_stopping)
      : stream_(stream), req_(req), remote_(remote), request_id_(buffers.request_id),
        scratch_(buffers.response_head), upstream_head_(buffers.upstream_head), record_(buffers.record),
        write_timeout_(write_timeout), keep_alive_(req.keep_alive() && !server_stopping) {}

  Request& request() { return req_; }
  const Request& request() const { return req_; }
  const std::string& request_id() const { return request_id_; }
  const tcp::endpoint& remote() const { return remote_; }
  bool remote_is_loopback() const;
  Stream& stream() { return stream_; }
  // The exchange's record (telemetry): the pipeline fills it, the session emits it once.
  RequestRecord& record() { return record_; }
  // The client closed the connection before the exchange ended: recorded, and the
  // connection is not reused.
  void client_left() {
    record_.client_gone = true;
    keep_alive_ = false;
  }
  // Where the forwarder builds the upstream request head (kept until the exchange ends).
  std::string& upstream_head_buffer() { return upstream_head_; }
  bool head_sent() const { return head_sent_; }
  // The response is an SSE stream whose head went out and which has not ended: an error now
  // becomes a last event + [DONE] (fail_stream), not an HTTP status (STYLE "One response state").
  bool sse_open() const { return sse_open_; }
  bool keep_alive() const { return keep_alive_; }
  void set_close() { keep_alive_ = false; }
  int status() const { return status_; }
  std::uint64_t bytes_out() const { return bytes_out_; }

  // Ending the exchange from outside (the server's shutdown): abort() records why and runs
  // the hook the current step installed (the relay closes its upstream, so its pending read
  // fails at once and it answers with `why`). The hook's owner clears it before it goes away.
  void on_abort(void (*fn)(void*), void* ctx) noexcept {
    abort_fn_ = fn;
    abort_ctx_ = ctx;
  }
  void abort(ProxyError why) {
    if (aborted_) return;
    aborted_.emplace(std::move(why));
    keep_alive_ = false;
    if (abort_fn_) abort_fn_(abort_ctx_);
  }
  const std::optional<ProxyError>& aborted() const { return aborted_; }
  // After an operation failed: if the exchange was aborted, that (not the failure) is the error.
  void throw_if_aborted() const {
    if (aborted_) throw *aborted_;
  }

  // Extra header for the next response head (e.g. Retry-After).
  void add_header(std::string name, std::string value) {
    extra_headers_.emplace_back(std::move(name), std::move(value));
  }

  Task<void> send(http::status status, std::string body,
                             std::string_view content_type = "application/json");
  Task<void> send_json(http::status status, std::string body) {
    return send(status, std::move(body), "application/json");
  }
  Task<void> send_error(const ProxyError& e);

  // Chunked streaming response. `first_chunk` (may be empty) goes out in the same write
  // as the head, saving a syscall on the hot path.
  Task<void> start_stream(http::status status, std::string_view content_type,
                                     std::string_view first_chunk = {});
  Task<void> write_chunk(std::string_view data);
  Task<void> end_stream(std::string_view last_data = {});
  // Ends an open SSE stream with the error event and [DONE].
  Task<void> fail_stream(const ProxyError& e);

 private:
  template <std::size_t N>
  bool write_now(const std::array<asio::const_buffer, N>& bufs, std::size_t& done);
  template <std::size_t N>
  Task<void> write_rest(std::array<asio::const_buffer, N> bufs, std::size_t done);
  void append_head(http::status status, std::string_view content_type, bool chunked, std::size_t content_length);

  Stream& stream_;
  Request& req_;
  const tcp::endpoint& remote_;
  const std::string& request_id_;
  std::string& scratch_;  // the response head and chunk framing
  std::string& upstream_head_;
  RequestRecord& record_;
  std::chrono::milliseconds write_timeout_;
  bool keep_alive_;
  bool head_sent_ = false;
  bool sse_open_ = false;
  int status_ = 0;
  std::uint64_t bytes_out_ = 0;
  std::vector<std::pair<std::string, std::string>> extra_headers_;
  std::optional<ProxyError> aborted_;
  void (*abort_fn_)(void*) = nullptr;
  void* abort_ctx_ = nullptr;
};

}  // namespace imageworks
