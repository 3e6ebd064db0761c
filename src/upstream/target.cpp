#include <algorithm>

#include "imageworks/upstream.hpp"

namespace imageworks {

UpstreamTarget parse_base_url(std::string_view url) {
  auto bad = [&](const char* why) {
    return ProxyError(502, "err_backend_unavailable",
                      "backend URL '" + std::string(url) + "' is unusable: " + why);
  };
  UpstreamTarget t;
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    t.tls = true;
    rest = url.substr(8);
  } else {
    throw bad("it must start with http:// or https://");
  }
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string path = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  if (authority.empty()) throw bad("no host");
  if (authority.find('@') != std::string_view::npos) throw bad("credentials in URLs are not supported");
  std::string_view host = authority, port;
  if (authority.front() == '[') {  // [::1]:8000
    auto close = authority.find(']');
    if (close == std::string_view::npos) throw bad("unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') throw bad("junk after IPv6 address");
      port = authority.substr(close + 2);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) throw bad("no host");
  if (!port.empty() && !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw bad("port is not a number");
  t.host = std::string(host);
  t.port = port.empty() ? (t.tls ? "443" : "80") : std::string(port);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (auto q = path.find_first_of("?#"); q != std::string::npos) throw bad("query strings are not supported");
  if (!path.ends_with("/v1")) path += "/v1";
  t.base_path = path;
  bool default_port = port.empty() || (t.tls && t.port == "443") || (!t.tls && t.port == "80");
  std::string host_part = authority.front() == '[' ? "[" + t.host + "]" : t.host;
  t.host_header = default_port ? host_part : host_part + ":" + t.port;
  t.pool_key = std::string(t.tls ? "https://" : "http://") + host_part + ":" + t.port;
  return t;
}

}  // namespace imageworks
