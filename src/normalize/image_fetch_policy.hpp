#pragma once
// The pure side of fetching image URLs (image_fetch.cpp does the I/O): which addresses are
// off limits, URL and redirect parsing, which Content-Types pass. Internal to src/normalize.
#include <string>
#include <string_view>

#include "imageworks/errors.hpp"
#include "imageworks/image_fetch.hpp"

namespace imageworks::image_fetch {

// local: loopback and private ranges, allowed only with ImageFetchLimits::allow_private.
enum class AddressClass { global, local, never };
AddressClass classify(const asio::ip::address& a);

inline ProxyError bad_request(const std::string& message) {
  return ProxyError(400, "err_bad_request", message);
}

struct FetchUrl {
  bool tls = false;
  std::string host;         // name or IP literal without brackets, lower case
  std::string port;
  std::string origin;       // "https://host:port" as written (brackets kept)
  std::string host_header;  // "host" or "host:port"
  std::string target;       // "/path?query", fragment removed, spaces and non-ASCII escaped
  std::string text() const {  // for messages, bounded
    std::string s = origin + target;
    return s.size() > 200 ? s.substr(0, 200) + "..." : s;
  }
};

// http(s) only, no credentials, a valid host and port; else ProxyError 400.
FetchUrl parse_fetch_url(std::string_view url);
// Where a Location header leads from `from` (absolute, scheme-relative, path or relative).
FetchUrl redirect_target(const FetchUrl& from, std::string_view location);
// image/*, application/octet-stream (and S3's binary/octet-stream) or none.
bool acceptable_content_type(std::string_view value);

}  // namespace imageworks::image_fetch
