#pragma once
// Beast client side: where a backend lives (UpstreamTarget), keep-alive connections to it
// pooled per event-loop thread (no locks), plain TCP or TLS (system CA store, SNI, host
// name verification).
#include <array>
#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include "imageworks/asio.hpp"
#include "imageworks/http.hpp"

namespace imageworks {

struct UpstreamTarget {
  bool tls = false;
  std::string host;       // "127.0.0.1", "api.openai.com"
  std::string port;       // "8000"
  std::string base_path;  // "/v1" (always ends in /v1, no trailing slash)
  std::string host_header;
  std::string pool_key;   // "https://host:port"
};

// Parse `http(s)://host[:port][/path]`; §3: "/v1" is appended unless the path ends in it.
// Throws ProxyError 502 for an unusable URL.
UpstreamTarget parse_base_url(std::string_view url);

using UpstreamTcp = TimedSocket;
using UpstreamTls = beast::ssl_stream<UpstreamTcp>;

class UpstreamConnection {
 public:
  UpstreamConnection(Executor ex, const UpstreamTarget& t);
  UpstreamTcp& tcp() { return tls_ ? beast::get_lowest_layer(*tls_) : tcp_; }
  bool is_tls() const { return static_cast<bool>(tls_); }
  UpstreamTls& tls() { return *tls_; }
  // Apply f to the stream that carries HTTP (TLS or plain); both branches return the same type.
  template <class F>
  auto with_stream(F&& f) {
    return tls_ ? f(*tls_) : f(tcp_);
  }
  void close();
  beast::flat_buffer buffer;  // grows with the reads (read_http); holds bytes read past a response
  bool reused = false;        // came from the pool (may have been closed by the peer)
  const std::string& pool_key() const { return key_; }

 private:
  UpstreamTcp tcp_;
  std::unique_ptr<UpstreamTls> tls_;
  std::string key_;
};

// The upstream's reply as Beast's parser reads it: the status, the few header fields the
// relay uses, and body bytes appended to a string the caller picks (the whole reply, or what
// one read of a stream brought). No allocation per field, unlike http::response_parser.
class UpstreamResponseParser : public http::basic_parser<false> {
 public:
  // A backend's whole header, status line and fields as sent: more fails the read with
  // http::error::header_limit. (Beast's own limit bounds one put() only, so a header sent a
  // field per read would pass it at any length.)
  static constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
  UpstreamResponseParser();
  int status() const { return status_; }
  std::string_view content_type() const { return {content_type_.data(), content_type_size_}; }
  const std::string& retry_after() const { return retry_after_; }
  bool event_stream() const;
  // Body bytes go to `*sink` from now on; more than `limit` bytes in all fail the read with
  // http::error::body_limit.
  void body_to(std::string* sink, std::uint64_t limit = std::numeric_limits<std::uint64_t>::max()) {
    sink_ = sink;
    limit_ = limit;
  }

 private:
  void on_request_impl(http::verb, beast::string_view, beast::string_view, int, beast::error_code&) override {}
  void on_response_impl(int code, beast::string_view reason, int, beast::error_code& ec) override;
  void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                     beast::error_code& ec) override;
  bool count_header_bytes(std::size_t n, beast::error_code& ec);
  void on_header_impl(beast::error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length, beast::error_code& ec) override;
  std::size_t on_body_impl(beast::string_view body, beast::error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, beast::error_code& ec) override {
    return on_body_impl(body, ec);
  }
  void on_finish_impl(beast::error_code&) override {}

  int status_ = 0;
  std::size_t header_bytes_ = 0;
  std::array<char, 128> content_type_{};  // longer values are cut (then not JSON/SSE anyway)
  std::size_t content_type_size_ = 0;
  std::string retry_after_;
  std::string* sink_ = nullptr;
  std::uint64_t limit_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t received_ = 0;
};

// The backend refused the connection (or could not be reached), or closed or reset it before
// its reply's head: a 502 err_backend_unavailable with nothing relayed yet. For a managed
// vLLM server it may mean the server has just died (its port closes a moment before its
// exit is seen): ChatForwarder then checks, and retries once.
struct BackendUnreachable : ProxyError {
  explicit BackendUnreachable(ProxyError e) : ProxyError(std::move(e)) {}
};

// Connect (resolve, TCP, TLS handshake) or reuse a pooled connection on this thread.
// Errors: BackendUnreachable (502 err_backend_unavailable), 504 err_backend_timeout, 503
// err_backend_busy when the proxy is out of descriptors.
// `pooled == false` always connects anew (the retry after a pooled connection proved dead).
Task<std::unique_ptr<UpstreamConnection>> acquire_connection(
    const UpstreamTarget& t, std::chrono::steady_clock::time_point deadline, bool pooled = true);
// A pooled connection to this backend was found closed: the backend restarted (a model
// switch on the same port, a crash) or times idle connections out. Drop the other idle ones
// too rather than try each.
void drop_idle_connections(const std::string& pool_key);
// Return a connection whose last response was read completely and allows keep-alive.
void release_connection(std::unique_ptr<UpstreamConnection> c);
// Close this thread's idle connections; call before its io_context goes away.
void clear_connection_pool();
// At most `max_idle` idle connections per backend and thread (0 = no pooling); one idle for
// `idle_timeout` is closed by its thread's deadline sweep. Call once at startup.
void set_upstream_pool_limits(std::size_t max_idle, std::chrono::milliseconds idle_timeout);

// The TLS client context every outgoing HTTPS connection uses: the system CA store
// (SSL_CERT_FILE / SSL_CERT_DIR honoured, read once), peer verification on.
asio::ssl::context& client_tls_context();

}  // namespace imageworks
