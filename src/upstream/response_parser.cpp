#include "imageworks/upstream.hpp"

#include <algorithm>

namespace imageworks {

UpstreamResponseParser::UpstreamResponseParser() {
  // Not boost::none: Beast 1.74 rejects any Content-Length against an empty optional.
  // Whole replies get their limit from body_to().
  body_limit(std::numeric_limits<std::uint64_t>::max());
  header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
}

bool UpstreamResponseParser::event_stream() const {
  auto ct = content_type();
  return ct.size() >= 17 && beast::iequals(ct.substr(0, 17), "text/event-stream");
}

bool UpstreamResponseParser::count_header_bytes(std::size_t n, beast::error_code& ec) {
  header_bytes_ += n;
  if (header_bytes_ <= kMaxHeaderBytes) return true;
  ec = http::error::header_limit;
  return false;
}

void UpstreamResponseParser::on_response_impl(int code, beast::string_view reason, int, beast::error_code& ec) {
  status_ = code;
  count_header_bytes(reason.size() + 15, ec);  // "HTTP/1.1 200 <reason>\r\n"
}

void UpstreamResponseParser::on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                                           beast::error_code& ec) {
  if (!count_header_bytes(name_string.size() + value.size() + 4, ec)) return;  // "<name>: <value>\r\n"
  if (name == http::field::content_type) {
    content_type_size_ = std::min(value.size(), content_type_.size());
    std::copy_n(value.data(), content_type_size_, content_type_.data());
  } else if (name == http::field::retry_after) {
    retry_after_.assign(value.data(), value.size());
  }
}

void UpstreamResponseParser::on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                                               beast::error_code& ec) {
  if (!content_length || !sink_) return;
  if (*content_length > limit_) {
    ec = http::error::body_limit;
    return;
  }
  // The length is the backend's word, not bytes at hand: reserve a bounded head start only.
  // (A stream's sink has no limit, and a 1 TiB Content-Length reserved for it aborted the
  // process; a whole reply under its 256 MiB limit still grows by doubling past this.)
  constexpr std::uint64_t kMaxReserveBytes = 1u << 20;
  sink_->reserve(sink_->size() + static_cast<std::size_t>(std::min(*content_length, kMaxReserveBytes)));
}

std::size_t UpstreamResponseParser::on_body_impl(beast::string_view body, beast::error_code& ec) {
  received_ += body.size();
  if (received_ > limit_) {
    ec = http::error::body_limit;
    return 0;
  }
  if (sink_) sink_->append(body.data(), body.size());
  return body.size();
}

}  // namespace imageworks
