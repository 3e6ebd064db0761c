#pragma once
// Reading an HTTP/1 message with Beast's parser but without Beast's composed read
// operations: each co_await is one socket read, and everything the buffer holds is parsed
// at once (past the header, the parser is made eager). Beast's async_read_some keeps reading while the
// parser wants more, so it cannot hand a relay each piece of a stream as it arrives; this
// can, and it costs a request a few posts and handler allocations less.
#include <algorithm>
#include <string_view>

#include "imageworks/asio.hpp"

namespace imageworks {

enum class ReadUntil {
  header,    // the header is complete (body bytes stay in the buffer)
  message,   // the whole message is complete
  progress,  // body bytes were parsed (or the message is complete)
};

// Parses what `buffer` already holds. True when that reached `until` or failed (`ec`):
// then no read is needed, and no coroutine frame either.
template <bool isRequest>
bool parse_buffered(beast::flat_buffer& buffer, http::basic_parser<isRequest>& parser, ReadUntil until,
                    beast::error_code& ec) {
  // Reading a header stops at its end: the caller may pick where the body goes first.
  parser.eager(until != ReadUntil::header);
  ec = {};
  bool progressed = false;
  // Boost 1.74's parser asserts (debug builds abort) when it is handed fewer than 5 bytes
  // after it has seen a chunked body's last-chunk line "0\r\n" without the end of the
  // message (boostorg/beast pull 2861, fixed upstream in 2024): a client can send just that
  // in two reads. The parser consumes nothing until "0\r\n\r\n" is whole and no rest of a
  // chunked body is shorter, so holding back fewer than 5 such bytes changes nothing else.
  const bool hold = parser.is_header_done() && parser.chunked() && buffer.size() < 5 &&
                    std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size()).starts_with("0\r\n");
  if (buffer.size() > 0 && !parser.is_done() && !hold) {
    const bool had_header = parser.is_header_done();
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec && ec != http::error::need_more) return true;
    ec = {};
    progressed = used > 0 && (had_header || parser.is_header_done());
  }
  return parser.is_done() || (until == ReadUntil::header && parser.is_header_done()) ||
         (until == ReadUntil::progress && progressed);
}

// Errors as Beast's reads report them: http::error::end_of_stream when the peer closed
// before sending anything, partial_message when it closed mid-message, the parser's own
// errors (header_limit, body_limit, bad_*), and the stream's.
template <class AsyncReadStream, bool isRequest>
Task<void> read_http(AsyncReadStream& stream, beast::flat_buffer& buffer,
                                http::basic_parser<isRequest>& parser, ReadUntil until,
                                beast::error_code& ec) {
  // Reads start small and double while they fill their room, up to kMaxRead: a connection's
  // buffer grows to what its peer sends at once (a few hundred bytes for a trickling stream).
  constexpr std::size_t kMinRead = 1024, kMaxRead = 65536;
  while (!parse_buffered(buffer, parser, until, ec)) {
    if (buffer.size() >= buffer.max_size()) {
      ec = http::error::buffer_overflow;
      co_return;
    }
    const std::size_t room = std::min(buffer.max_size() - buffer.size(),
                                      std::clamp(buffer.capacity() - buffer.size(), kMinRead, kMaxRead));
    const std::size_t n =
        co_await stream.async_read_some(buffer.prepare(room), asio::redirect_error(use_task, ec));
    buffer.commit(n);
    if (n == room && buffer.capacity() < kMaxRead)
      buffer.reserve(std::min({kMaxRead, 2 * buffer.capacity(), buffer.max_size()}));
    if (ec == asio::error::eof) {
      if (!parser.got_some()) {
        ec = http::error::end_of_stream;
        co_return;
      }
      ec = {};
      parser.put_eof(ec);  // completes a body that runs to EOF, else partial_message
      co_return;
    }
    if (ec) co_return;
  }
}

}  // namespace imageworks
