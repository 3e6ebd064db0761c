#include "imageworks/http.hpp"

#include <array>

namespace imageworks {

using namespace std::string_view_literals;

bool Exchange::remote_is_loopback() const { return remote_.address().is_loopback(); }

// Response heads are written by hand into one reused buffer and leave together with the
// body in a single gather write: Beast's generic serializer costs more than the relay itself.
void Exchange::append_head(http::status status, std::string_view content_type, bool chunked,
                           std::size_t content_length) {
  auto& h = scratch_;
  h.clear();
  h += req_.version() == 10 ? "HTTP/1.0 "sv : "HTTP/1.1 "sv;
  h += std::to_string(static_cast<unsigned>(status));
  h += ' ';
  h += http::obsolete_reason(status);
  h += "\r\nServer: imageworks-chat-proxy\r\nContent-Type: "sv;
  h += content_type;
  h += "\r\nx-request-id: "sv;
  h += request_id_;
  h += "\r\n"sv;
  for (auto& [name, value] : extra_headers_) {
    h += name;
    h += ": "sv;
    h += value;
    h += "\r\n"sv;
  }
  extra_headers_.clear();
  if (chunked) {
    h += "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n"sv;
  } else {
    h += "Content-Length: "sv;
    h += std::to_string(content_length);
    h += "\r\n"sv;
  }
  if (!keep_alive_) h += "Connection: close\r\n"sv;
  else if (req_.version() == 10) h += "Connection: keep-alive\r\n"sv;
  h += "\r\n"sv;
  head_sent_ = true;
  status_ = static_cast<int>(status);
}

// Writing to the client: what the socket takes at once goes without an asynchronous
// operation (or coroutine frame); only a rest waits, under the write deadline. Failures
// throw, like async_write.
template <std::size_t N>
bool Exchange::write_now(const std::array<asio::const_buffer, N>& bufs, std::size_t& done) {
  const std::size_t total = asio::buffer_size(bufs);
  bytes_out_ += total;
  beast::error_code ec;
  done = stream_.write_now(bufs, ec);
  if (ec && ec != asio::error::would_block) throw beast::system_error(ec);
  return done == total;
}

// The deadline measures the client's silence, not the length of the reply: every write that
// takes bytes re-arms it, so a slow reader is served at its pace (and the relay, waiting
// here, reads nothing more from the backend), while one that takes nothing for the write
// timeout is cut off.
template <std::size_t N>
Task<void> Exchange::write_rest(std::array<asio::const_buffer, N> bufs, std::size_t done) {
  beast::buffers_suffix<std::array<asio::const_buffer, N>> rest(bufs);
  rest.consume(done);
  while (beast::buffer_bytes(rest) > 0) {
    stream_.expires_after(write_timeout_);
    rest.consume(co_await stream_.async_write_some(rest, use_task));
  }
  stream_.expires_never();
}

Task<void> Exchange::send(http::status status, std::string body, std::string_view content_type) {
  append_head(status, content_type, false, body.size());
  // A reply to HEAD has the head only (RFC 9110 §9.3.2): the client reads no body, so body
  // bytes would become the start of the next reply on a keep-alive connection.
  const bool head_only = req_.method() == http::verb::head;
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(scratch_),
                                               head_only ? asio::const_buffer() : asio::buffer(body)};
  if (std::size_t done; !write_now(bufs, done)) co_await write_rest(bufs, done);
}

Task<void> Exchange::send_error(const ProxyError& e) {
  if (e.retry_after_s > 0) add_header("Retry-After", std::to_string(e.retry_after_s));
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

Task<void> Exchange::start_stream(http::status status, std::string_view content_type,
                                             std::string_view first_chunk) {
  append_head(status, content_type, true, 0);
  sse_open_ = content_type == "text/event-stream";
  append_chunk(scratch_, first_chunk);  // head and first chunk in one write
  const std::array<asio::const_buffer, 1> bufs{asio::buffer(scratch_)};
  if (std::size_t done; !write_now(bufs, done)) co_await write_rest(bufs, done);
}

Task<void> Exchange::write_chunk(std::string_view data) {
  if (data.empty()) co_return;
  scratch_.clear();
  append_chunk(scratch_, data);
  const std::array<asio::const_buffer, 1> bufs{asio::buffer(scratch_)};
  if (std::size_t done; !write_now(bufs, done)) co_await write_rest(bufs, done);
}

Task<void> Exchange::end_stream(std::string_view last_data) {
  sse_open_ = false;
  scratch_.clear();
  append_chunk(scratch_, last_data);
  scratch_.append("0\r\n\r\n");
  const std::array<asio::const_buffer, 1> bufs{asio::buffer(scratch_)};
  if (std::size_t done; !write_now(bufs, done)) co_await write_rest(bufs, done);
}

Task<void> Exchange::fail_stream(const ProxyError& e) {
  std::string frames;
  append_sse_error(frames, e);
  co_await end_stream(frames);
}

}  // namespace imageworks
