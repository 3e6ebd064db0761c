#pragma once
// Fetching an http(s) image URL for a backend that takes only inline data (Ollama, §6, with
// CHAT_PROXY_FETCH_IMAGE_URLS=1). The URL comes from the client, so this is an SSRF surface:
// every address a host resolves to is checked, and the connection goes to exactly the
// addresses checked (no second lookup), for the first URL and for each redirect.
#include <chrono>
#include <cstdint>
#include <string>

#include "imageworks/asio.hpp"

namespace imageworks {

struct ImageFetchLimits {
  std::uint64_t max_bytes = 20u << 20;       // a larger body → 413 err_payload_too_large
  std::chrono::milliseconds timeout{10000};  // the whole fetch, redirects included → 400
  // Tests only: loopback and private addresses are not refused (unspecified, multicast and
  // reserved ones still are). Production never sets it.
  bool allow_private = false;
};

// Pure: an address the proxy must never fetch from — loopback, unspecified, link-local,
// private (RFC 1918, CGNAT, unique-local), multicast, broadcast, documentation/reserved
// ranges, IPv6 outside 2000::/3, 6to4/Teredo, and IPv4-mapped/NAT64 forms of any of these.
bool is_forbidden_fetch_address(const asio::ip::address& a);

// GET `url` (http:// or https://, certificates checked against the system store, SNI),
// following at most 3 redirects, and return the body. Throws ProxyError 400 err_bad_request
// (bad URL or scheme, credentials in the URL, forbidden address, connection or TLS failure,
// timeout, non-2xx status, a Content-Type other than image/*, application/octet-stream or
// none) and 413 err_payload_too_large (Content-Length or the bytes read over max_bytes; the
// read stops at the limit).
Task<std::string> fetch_image_url(std::string url, ImageFetchLimits limits);

}  // namespace imageworks
