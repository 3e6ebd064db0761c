// Fetching image URLs for Ollama (§6). The SSRF defence: resolve once, refuse the host when
// any of its addresses is forbidden, then connect to exactly those endpoints (so a DNS answer
// that changes between check and connect cannot matter); redirects go through the same path.
#include <limits>
#include <optional>
#include <vector>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

#include "imageworks/upstream.hpp"
#include "normalize/image_fetch_policy.hpp"

namespace imageworks {

namespace {

using namespace image_fetch;
using Clock = std::chrono::steady_clock;
using Plain = beast::basic_stream<tcp, Executor>;
using Secure = beast::ssl_stream<Plain>;
using Resolver = asio::ip::basic_resolver<tcp, Executor>;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;

constexpr int kMaxRedirects = 3;

bool allowed(const asio::ip::address& a, const ImageFetchLimits& limits) {
  const AddressClass c = classify(a);
  return c == AddressClass::global || (limits.allow_private && c == AddressClass::local);
}

// getaddrinfo cannot be interrupted, so the wait is for "resolved or deadline", whichever
// comes first; a late answer lands in the shared state and is dropped.
struct PendingResolve {
  explicit PendingResolve(const Executor& ex) : resolver(ex), wake(ex) {}
  Resolver resolver;
  Timer wake;
  beast::error_code ec;
  Resolver::results_type results;
  bool done = false;
};

Task<std::vector<tcp::endpoint>> checked_endpoints(const FetchUrl& u, const ImageFetchLimits& limits,
                                                   Clock::time_point deadline) {
  const auto port = static_cast<unsigned short>(std::stoi(u.port));
  std::vector<tcp::endpoint> endpoints;
  beast::error_code literal_ec;
  if (const auto literal = asio::ip::make_address(u.host, literal_ec); !literal_ec) {
    endpoints.emplace_back(literal, port);
  } else {
    const Executor ex = co_await asio::this_coro::executor;
    auto p = std::make_shared<PendingResolve>(ex);
    p->wake.expires_at(deadline);
    p->resolver.async_resolve(u.host, u.port, [p](const beast::error_code& ec, Resolver::results_type r) {
      p->ec = ec;
      p->results = std::move(r);
      p->done = true;
      p->wake.cancel();
    });
    beast::error_code ignored;
    co_await p->wake.async_wait(asio::redirect_error(use_task, ignored));
    if (!p->done) {
      p->resolver.cancel();
      throw bad_request("image URL " + u.text() + " did not answer within " +
                        std::to_string(limits.timeout.count()) + " ms (name lookup)");
    }
    if (p->ec) throw bad_request("image URL " + u.text() + ": cannot resolve the host: " + p->ec.message());
    for (const auto& entry : p->results) endpoints.emplace_back(entry.endpoint().address(), port);
  }
  for (const auto& e : endpoints)
    if (!allowed(e.address(), limits))
      throw bad_request("image URL refused: " + u.host.substr(0, 200) + " resolves to a private/loopback address");
  if (endpoints.empty()) throw bad_request("image URL " + u.text() + ": the host has no address");
  co_return endpoints;
}

struct Reply {
  std::optional<std::string> location;  // a redirect
  std::string body;
};

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

ProxyError io_error(const FetchUrl& u, const ImageFetchLimits& limits, Clock::time_point deadline,
                    const beast::error_code& ec, const char* during) {
  if (ec == beast::error::timeout || Clock::now() >= deadline)
    return bad_request("image URL " + u.text() + " did not answer within " + std::to_string(limits.timeout.count()) + " ms");
  return bad_request("image URL " + u.text() + ": " + during + " failed: " + ec.message());
}

template <class Stream>
Task<Reply> exchange(Stream& stream, const FetchUrl& u, const ImageFetchLimits& limits, Clock::time_point deadline) {
  http::request<http::empty_body> req{http::verb::get, u.target, 11};
  req.set(http::field::host, u.host_header);
  req.set(http::field::user_agent, "imageworks-chat-proxy");
  req.set(http::field::accept, "image/*");
  req.keep_alive(false);
  beast::error_code ec;
  co_await http::async_write(stream, req, asio::redirect_error(use_task, ec));
  if (ec) throw io_error(u, limits, deadline, ec, "sending the request");
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  // Content-Length is checked below, with a 413 of our own. Not boost::none: Beast 1.74
  // compares a Content-Length with an empty limit as "over the limit".
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_task, ec));
  if (ec) throw io_error(u, limits, deadline, ec, "reading the reply");
  const auto& head = parser.get();
  const int status = static_cast<int>(head.result_int());
  if (is_redirect(status)) {
    if (head[http::field::location].empty()) throw bad_request("image URL " + u.text() + " redirected without a Location");
    co_return Reply{std::string(head[http::field::location]), {}};
  }
  if (status < 200 || status > 299)
    throw bad_request("image URL " + u.text() + " answered HTTP " + std::to_string(status));
  if (!acceptable_content_type(head[http::field::content_type]))
    throw bad_request("image URL " + u.text() + " is not an image (Content-Type: " +
                      std::string(head[http::field::content_type].substr(0, 100)) + ")");
  const auto too_large = [&] {
    return ProxyError(413, "err_payload_too_large", "image URL " + u.text() + " is larger than " +
                                                        std::to_string(limits.max_bytes) + " bytes");
  };
  if (parser.content_length() && *parser.content_length() > limits.max_bytes) throw too_large();
  parser.body_limit(limits.max_bytes);  // chunked or until-close bodies stop at the limit
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_task, ec));
  if (ec == http::error::body_limit) throw too_large();
  if (ec) throw io_error(u, limits, deadline, ec, "reading the body");
  co_return Reply{std::nullopt, std::move(parser.get().body())};
}

Task<Reply> fetch_once(const FetchUrl& u, const ImageFetchLimits& limits, Clock::time_point deadline) {
  const std::vector<tcp::endpoint> endpoints = co_await checked_endpoints(u, limits, deadline);
  const Executor ex = co_await asio::this_coro::executor;
  std::optional<Plain> plain;
  std::unique_ptr<Secure> secure;
  if (u.tls) {
    secure = std::make_unique<Secure>(ex, client_tls_context());
  } else {
    plain.emplace(ex);
  }
  Plain& tcp_stream = secure ? beast::get_lowest_layer(*secure) : *plain;
  tcp_stream.expires_at(deadline);
  beast::error_code ec;
  co_await tcp_stream.async_connect(endpoints, asio::redirect_error(use_task, ec));
  if (ec) throw io_error(u, limits, deadline, ec, "connecting");
  if (!secure) co_return co_await exchange(*plain, u, limits, deadline);
  beast::error_code literal_ec;
  asio::ip::make_address(u.host, literal_ec);
  if (literal_ec && !SSL_set_tlsext_host_name(secure->native_handle(), u.host.c_str()))  // no SNI for IPs
    throw bad_request("image URL " + u.text() + ": cannot set TLS SNI");
  secure->set_verify_callback(asio::ssl::host_name_verification(u.host));
  co_await secure->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(use_task, ec));
  if (ec) throw io_error(u, limits, deadline, ec, "the TLS handshake");
  co_return co_await exchange(*secure, u, limits, deadline);
}

}  // namespace

Task<std::string> fetch_image_url(std::string url, ImageFetchLimits limits) {
  const Clock::time_point deadline = Clock::now() + limits.timeout;
  FetchUrl where = parse_fetch_url(url);
  for (int redirects = 0;; ++redirects) {
    Reply reply = co_await fetch_once(where, limits, deadline);
    if (!reply.location) co_return std::move(reply.body);
    if (redirects == kMaxRedirects)
      throw bad_request("image URL " + std::string(url.substr(0, 200)) + " redirected more than " +
                        std::to_string(kMaxRedirects) + " times");
    const std::string location = std::move(*reply.location);
    where = redirect_target(where, location);
  }
}

}  // namespace imageworks
