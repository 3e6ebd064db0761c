// Image fetch policy (§6, SSRF guard): address classes, URLs, redirects, content types.
#include <algorithm>
#include <array>
#include <cctype>

#include "normalize/image_fetch_policy.hpp"

namespace imageworks {
namespace image_fetch {

namespace {

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

}  // namespace

AddressClass classify(const asio::ip::address& a) {
  return a.is_v4() ? classify_v4(a.to_v4()) : classify_v6(a.to_v6());
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool host_char(char c, bool bracketed) {
  if (bracketed) return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
}

}  // namespace

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
  const bool bracketed = !authority.empty() && authority.front() == '[';
  std::string_view host = authority, port;
  bool has_port = false;
  if (bracketed) {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw bad("has an unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') throw bad("has junk after the IPv6 address");
    has_port = !after.empty();
    port = after.substr(has_port ? 1 : 0);
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    has_port = true;
  }
  if (host.empty()) throw bad("has no host");
  if (!std::all_of(host.begin(), host.end(), [&](char c) { return host_char(c, bracketed); }))
    throw bad("has an invalid host");
  const bool digits = std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (has_port && (port.empty() || port.size() > 5 || !digits || std::stoi(std::string(port)) == 0 ||
                   std::stoi(std::string(port)) > 65535))
    throw bad("has an invalid port");
  u.host = lower(host);
  u.port = has_port ? std::string(port) : (u.tls ? "443" : "80");
  u.origin = scheme + "://" + std::string(authority);
  u.host_header = lower(authority);
  if (target.empty() || target.front() == '?') u.target = "/";
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : target) {  // spaces and non-ASCII bytes are escaped, other controls refused
    const auto uc = static_cast<unsigned char>(c);
    if (uc < 0x20 || uc == 0x7f) throw bad("contains control characters");
    if (uc == ' ' || uc >= 0x80) u.target += {'%', kHex[uc >> 4], kHex[uc & 15]};
    else u.target += c;
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

}  // namespace image_fetch

bool is_forbidden_fetch_address(const asio::ip::address& a) {
  return image_fetch::classify(a) != image_fetch::AddressClass::global;
}

}  // namespace imageworks
