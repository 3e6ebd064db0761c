#pragma once
// Beast client side: where a backend lives (UpstreamTarget), keep-alive connections to it
// pooled per event-loop thread (no locks), plain TCP or TLS (system CA store, SNI, host
// name verification).
#include <chrono>
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
  beast::flat_buffer buffer;  // reserved once; holds bytes read past a response
  bool reused = false;        // came from the pool (may have been closed by the peer)
  const std::string& pool_key() const { return key_; }

 private:
  UpstreamTcp tcp_;
  std::unique_ptr<UpstreamTls> tls_;
  std::string key_;
};

// Connect (resolve, TCP, TLS handshake) or reuse a pooled connection on this thread.
// Errors: ProxyError 502 err_backend_unavailable, 504 err_backend_timeout.
asio::awaitable<std::unique_ptr<UpstreamConnection>> acquire_connection(
    const UpstreamTarget& t, std::chrono::steady_clock::time_point deadline);
// Return a connection whose last response was read completely and allows keep-alive.
void release_connection(std::unique_ptr<UpstreamConnection> c);
// Close this thread's idle connections; call before its io_context goes away.
void clear_connection_pool();

}  // namespace imageworks
