// Fetching image URLs for Ollama (§6). The SSRF defence: resolve once, refuse the host when
// any of its addresses is forbidden, then connect to exactly those endpoints (so a DNS answer
// that changes between check and connect cannot matter); redirects go through the same path.
#include <algorithm>
#include <array>
#include <cctype>
#include <limits>
#include <optional>
#include <vector>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

#include "imageworks/errors.hpp"
#include "imageworks/image_fetch.hpp"

namespace imageworks {

namespace {

using Clock = std::chrono::steady_clock;
using Plain = beast::basic_stream<tcp, Executor>;
using Secure = beast::ssl_stream<Plain>;
using Resolver = asio::ip::basic_resolver<tcp, Executor>;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;

constexpr int kMaxRedirects = 3;

enum class AddressClass { global, local, never };  // local: refused unless allow_private

struct V4Range {
  std::uint32_t net;
  int bits;
  AddressClass cls;
};
constexpr std::array<V4Range, 15> kV4Ranges{{
    {0x7f000000, 8, AddressClass::local},   // 127/8 loopback
    {0x0a000000, 8, AddressClass::local},   // 10/8
    {0xac100000, 12, AddressClass::local},  // 172.16/12
    {0xc0a80000, 16, AddressClass::local},  // 192.168/16
    {0x64400000, 10, AddressClass::local},  // 100.64/10 carrier-grade NAT
    {0xa9fe0000, 16, AddressClass::local},  // 169.254/16 link-local (cloud metadata)
    {0x00000000, 8, AddressClass::never},   // 0/8 "this network", 0.0.0.0
    {0xc0000000, 24, AddressClass::never},  // 192.0.0/24 IETF protocol assignments
    {0xc0000200, 24, AddressClass::never},  // 192.0.2/24 TEST-NET-1
    {0xc0586300, 24, AddressClass::never},  // 192.88.99/24 6to4 relay anycast
    {0xc6120000, 15, AddressClass::never},  // 198.18/15 benchmarking
    {0xc6336400, 24, AddressClass::never},  // 198.51.100/24 TEST-NET-2
    {0xcb007100, 24, AddressClass::never},  // 203.0.113/24 TEST-NET-3
    {0xe0000000, 4, AddressClass::never},   // 224/4 multicast
    {0xf0000000, 4, AddressClass::never},   // 240/4 reserved, 255.255.255.255 broadcast
}};

AddressClass classify_v4(const asio::ip::address_v4& a) {
  const std::uint32_t v = a.to_uint();
  for (const auto& r : kV4Ranges)
    if ((v >> (32 - r.bits)) == (r.net >> (32 - r.bits))) return r.cls;
  return AddressClass::global;
}

AddressClass classify_v6(const asio::ip::address_v6& a) {
  const auto b = a.to_bytes();
  if (a.is_v4_mapped()) return classify_v4(asio::ip::make_address_v4(asio::ip::v4_mapped, a));
  if (a.is_loopback() || a.is_link_local() || (b[0] & 0xfe) == 0xfc) return AddressClass::local;
  static constexpr std::array<unsigned char, 12> kNat64{0x00, 0x64, 0xff, 0x9b};  // 64:ff9b::/96
  if (std::equal(kNat64.begin(), kNat64.end(), b.begin())) {  // only for a public IPv4 address
    const asio::ip::address_v4 v4({b[12], b[13], b[14], b[15]});
    return classify_v4(v4) == AddressClass::global ? AddressClass::global : AddressClass::never;
  }
  // Outside 2000::/3 (global unicast) lie ::, ::1, IPv4-compatible ::/96, discard 100::/64,
  // site-local fec0::/10 and multicast ff00::/8.
  if ((b[0] & 0xe0) != 0x20) return AddressClass::never;
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02) return AddressClass::never;  // 2001::/23 incl. Teredo
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return AddressClass::never;  // 2001:db8::/32
  if (b[0] == 0x20 && b[1] == 0x02) return AddressClass::never;  // 2002::/16 6to4 embeds any IPv4
  return AddressClass::global;
}

AddressClass classify(const asio::ip::address& a) {
  return a.is_v4() ? classify_v4(a.to_v4()) : classify_v6(a.to_v6());
}

bool allowed(const asio::ip::address& a, const ImageFetchLimits& limits) {
  const AddressClass c = classify(a);
  return c == AddressClass::global || (limits.allow_private && c == AddressClass::local);
}

ProxyError bad_request(const std::string& message) {
  return ProxyError(400, "err_bad_request", message);
}

// ---- URLs ---------------------------------------------------------------------------------

struct FetchUrl {
  bool tls = false;
  std::string host;         // name or IP literal without brackets, lower case
  std::string port;
  std::string origin;       // "https://host:port" as written (brackets kept)
  std::string host_header;  // "host" or "host:port"
  std::string target;       // "/path?query", fragment removed
  std::string text() const {  // for messages, bounded
    std::string s = origin + target;
    return s.size() > 200 ? s.substr(0, 200) + "…" : s;
  }
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool host_char(char c, bool bracketed) {
  if (bracketed) return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
}

FetchUrl parse_fetch_url(std::string_view url) {
  const std::string shown(url.substr(0, 200));
  auto bad = [&](const std::string& why) { return bad_request("image URL '" + shown + "' " + why); };
  FetchUrl u;
  const std::string scheme = lower(url.substr(0, url.find(':')));
  if (scheme == "https") {
    u.tls = true;
  } else if (scheme != "http") {
    throw bad("is not an http:// or https:// URL");
  }
  if (url.substr(scheme.size(), 3) != "://") throw bad("is not an http:// or https:// URL");
  std::string_view rest = url.substr(scheme.size() + 3);
  rest = rest.substr(0, rest.find('#'));
  const auto end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  if (authority.find('@') != std::string_view::npos) throw bad("carries credentials (user@host), refused");
  std::string_view host = authority, port;
  const bool bracketed = !authority.empty() && authority.front() == '[';
  if (bracketed) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw bad("has an unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] != ':') throw bad("has junk after the IPv6 address");
    if (close + 1 < authority.size()) port = authority.substr(close + 2);
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) throw bad("has no host");
  if (!std::all_of(host.begin(), host.end(), [&](char c) { return host_char(c, bracketed); }))
    throw bad("has an invalid host");
  if (authority.find(':') != std::string_view::npos && !bracketed && port.empty()) throw bad("has an empty port");
  const bool digits = std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || port.size() > 5 || (!port.empty() && (std::stoi(std::string(port)) == 0 || std::stoi(std::string(port)) > 65535)))
    throw bad("has an invalid port");
  u.host = lower(host);
  u.port = port.empty() ? (u.tls ? "443" : "80") : std::string(port);
  u.origin = scheme + "://" + std::string(authority);
  u.host_header = lower(authority);
  if (target.empty() || target.front() == '?') u.target = "/";
  for (char c : target) {  // spaces and non-ASCII bytes are escaped, other controls refused
    const auto uc = static_cast<unsigned char>(c);
    if (uc < 0x20 || uc == 0x7f) throw bad("contains control characters");
    if (uc == ' ' || uc >= 0x80) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      u.target += '%';
      u.target += kHex[uc >> 4];
      u.target += kHex[uc & 15];
    } else {
      u.target += c;
    }
  }
  return u;
}

// RFC 9110 §10.2.2: Location is absolute, scheme-relative, absolute-path or relative.
FetchUrl redirect_target(const FetchUrl& from, std::string_view location) {
  const auto colon = location.find(':');
  const auto first_sep = location.find_first_of("/?#");
  if (colon != std::string_view::npos && (first_sep == std::string_view::npos || colon < first_sep))
    return parse_fetch_url(location);  // has a scheme; anything but http(s) is refused there
  if (location.starts_with("//")) return parse_fetch_url((from.tls ? "https:" : "http:") + std::string(location));
  if (location.starts_with("/")) return parse_fetch_url(from.origin + std::string(location));
  std::string base = from.target.substr(0, from.target.find('?'));
  if (location.starts_with("?")) return parse_fetch_url(from.origin + base + std::string(location));
  base.erase(base.rfind('/') + 1);
  return parse_fetch_url(from.origin + base + std::string(location));
}

bool acceptable_content_type(std::string_view value) {
  const std::string type = lower(value.substr(0, value.find(';')));
  const auto b = type.find_first_not_of(" \t"), e = type.find_last_not_of(" \t");
  const std::string_view t = b == std::string::npos ? std::string_view{} : std::string_view(type).substr(b, e - b + 1);
  return t.empty() || t.starts_with("image/") || t == "application/octet-stream" || t == "binary/octet-stream";
}

// ---- I/O ----------------------------------------------------------------------------------

asio::ssl::context& tls_context() {
  static asio::ssl::context ctx = [] {
    asio::ssl::context c(asio::ssl::context::tls_client);
    c.set_default_verify_paths();  // the system CA store (honours SSL_CERT_FILE / SSL_CERT_DIR)
    c.set_verify_mode(asio::ssl::verify_peer);
    return c;
  }();
  return ctx;
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
    if (p->ec) throw bad_request("image URL " + u.text() + ": cannot resolve " + u.host + ": " + p->ec.message());
    for (const auto& entry : p->results) endpoints.emplace_back(entry.endpoint().address(), port);
  }
  for (const auto& e : endpoints)
    if (!allowed(e.address(), limits))
      throw bad_request("image URL refused: " + u.host + " resolves to a private/loopback address");
  if (endpoints.empty()) throw bad_request("image URL " + u.text() + ": " + u.host + " has no address");
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
    secure = std::make_unique<Secure>(ex, tls_context());
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

bool is_forbidden_fetch_address(const asio::ip::address& a) {
  return classify(a) != AddressClass::global;
}

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
