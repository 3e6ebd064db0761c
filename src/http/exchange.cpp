#include "imageworks/http.hpp"

namespace imageworks {

bool Exchange::remote_is_loopback() const { return remote_.address().is_loopback(); }

template <class Fields>
void Exchange::apply_common_headers(Fields& fields, std::string_view content_type) {
  fields.set(http::field::server, "imageworks-chat-proxy");
  fields.set(http::field::content_type, content_type);
  fields.set("x-request-id", request_id_);
  for (auto& [name, value] : extra_headers_) fields.set(name, value);
  extra_headers_.clear();
}

asio::awaitable<void> Exchange::send(http::status status, std::string body,
                                     std::string_view content_type) {
  http::response<http::string_body> res{status, req_.version()};
  apply_common_headers(res, content_type);
  res.keep_alive(keep_alive_);
  res.body() = std::move(body);
  res.prepare_payload();
  head_sent_ = true;
  status_ = static_cast<int>(status);
  stream_.expires_after(write_timeout_);
  auto n = co_await http::async_write(stream_, res, asio::use_awaitable);
  bytes_out_ += n;
}

asio::awaitable<void> Exchange::send_error(const ProxyError& e) {
  if (e.retry_after_s > 0) add_header("Retry-After", std::to_string(e.retry_after_s));
  // A client whose request we could not read completely must not be reused.
  return send(static_cast<http::status>(e.status), error_body(e));
}

static void append_chunk(std::string& out, std::string_view data) {
  if (data.empty()) return;
  char size[20];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  out.append(size, static_cast<std::size_t>(n));
  out.append(data);
  out.append("\r\n");
}

asio::awaitable<void> Exchange::start_stream(http::status status, std::string_view content_type,
                                             std::string_view first_chunk) {
  http::response<http::empty_body> res{status, req_.version()};
  apply_common_headers(res, content_type);
  res.set(http::field::cache_control, "no-cache");
  res.set("x-accel-buffering", "no");
  res.keep_alive(keep_alive_);
  res.chunked(true);
  http::response_serializer<http::empty_body> sr{res};
  sr.split(true);
  head_sent_ = true;
  status_ = static_cast<int>(status);
  // Serialise the head into scratch_ so head + first chunk leave in one write.
  scratch_.clear();
  beast::error_code ec;
  while (!sr.is_header_done()) {
    sr.next(ec, [&](beast::error_code&, auto const& buffers) {
      std::size_t n = 0;
      for (auto b : beast::buffers_range_ref(buffers)) {
        scratch_.append(static_cast<const char*>(b.data()), b.size());
        n += b.size();
      }
      sr.consume(n);
    });
    if (ec) throw beast::system_error(ec);
  }
  append_chunk(scratch_, first_chunk);
  stream_.expires_after(write_timeout_);
  auto n = co_await asio::async_write(stream_, asio::buffer(scratch_), asio::use_awaitable);
  bytes_out_ += n;
}

asio::awaitable<void> Exchange::write_chunk(std::string_view data) {
  if (data.empty()) co_return;
  scratch_.clear();
  append_chunk(scratch_, data);
  stream_.expires_after(write_timeout_);
  auto n = co_await asio::async_write(stream_, asio::buffer(scratch_), asio::use_awaitable);
  bytes_out_ += n;
}

asio::awaitable<void> Exchange::end_stream(std::string_view last_data) {
  scratch_.clear();
  append_chunk(scratch_, last_data);
  scratch_.append("0\r\n\r\n");
  stream_.expires_after(write_timeout_);
  auto n = co_await asio::async_write(stream_, asio::buffer(scratch_), asio::use_awaitable);
  bytes_out_ += n;
}

}  // namespace imageworks
