#include <algorithm>
#include <cstdint>

#include "imageworks/request.hpp"

namespace imageworks {

namespace {
std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }
}  // namespace

std::string_view Request::operator[](std::string_view name) const {
  for (const auto& f : fields_) {
    auto n = view(f.name);
    if (n.size() == name.size() && beast::iequals(n, name)) return view(f.value);
  }
  return {};
}

std::string_view Request::operator[](http::field known) const {
  for (const auto& f : fields_) {
    if (f.known == known) return view(f.value);
  }
  return {};
}

void Request::clear() {
  method_ = http::verb::unknown;
  version_ = 11;
  keep_alive_ = true;
  text_.clear();
  method_text_ = target_ = {};
  fields_.clear();
  body_.clear();
}

// The header is bounded by the parser's header limit (16 KiB by default), so offsets fit.
Request::Span Request::store(std::string_view s) {
  Span span{static_cast<std::uint32_t>(text_.size()), static_cast<std::uint32_t>(s.size())};
  text_.append(s);
  return span;
}

RequestParser::RequestParser(Request& r, std::size_t max_fields, std::size_t max_header_bytes)
    : r_(r), max_fields_(max_fields), max_header_bytes_(max_header_bytes) {
  header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(max_header_bytes, UINT32_MAX)));
  r_.clear();
  if (r_.text_.capacity() < 512) r_.text_.reserve(512);
}

// The header's bytes as sent, less optional whitespace around field values.
bool RequestParser::count_header_bytes(std::size_t n, beast::error_code& ec) {
  header_bytes_ += n;
  if (header_bytes_ <= max_header_bytes_) return true;
  ec = http::error::header_limit;
  return false;
}

void RequestParser::on_request_impl(http::verb method, beast::string_view method_str, beast::string_view target,
                                    int version, beast::error_code& ec) {
  // "<method> <target> HTTP/1.1\r\n"
  if (!count_header_bytes(method_str.size() + target.size() + 12, ec)) return;
  r_.method_ = method;
  r_.method_text_ = r_.store(sv(method_str));
  r_.target_ = r_.store(sv(target));
  r_.version_ = static_cast<unsigned>(version);
}

void RequestParser::on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                                  beast::error_code& ec) {
  if (r_.fields_.size() >= max_fields_) {
    too_many_fields_ = true;
    ec = http::error::header_limit;
    return;
  }
  if (!count_header_bytes(name_string.size() + value.size() + 4, ec)) return;  // "<name>: <value>\r\n"
  auto n = r_.store(sv(name_string));
  auto v = r_.store(sv(value));
  r_.fields_.push_back({name, n, v});
}

void RequestParser::on_header_impl(beast::error_code&) { r_.keep_alive_ = keep_alive(); }

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& content_length, beast::error_code&) {
  // The session refuses a Content-Length above the body limit before reading the body.
  if (content_length) r_.body_.reserve(static_cast<std::size_t>(*content_length));
}

std::size_t RequestParser::on_body_impl(beast::string_view body, beast::error_code&) {
  r_.body_.append(body.data(), body.size());
  return body.size();
}

std::size_t RequestParser::on_chunk_body_impl(std::uint64_t, beast::string_view body, beast::error_code&) {
  r_.body_.append(body.data(), body.size());
  return body.size();
}

}  // namespace imageworks
