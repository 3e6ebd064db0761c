// One keep-alive connection: read a request under a deadline and the size limits, hand it
// to the router, repeat. Requests we cannot read get a JSON error and the connection closes.
#include <spdlog/spdlog.h>

#include "imageworks/http_read.hpp"
#include "imageworks/server.hpp"

namespace imageworks {

namespace {

// The read buffer a connection keeps between requests; one that grew past this (a large
// body) is freed once the request is parsed.
constexpr std::size_t kKeptReadBuffer = 4096;

Task<void> reply_and_close(Stream& stream, int status, std::string_view code, std::string message,
                           std::string_view request_id, std::chrono::milliseconds timeout) {
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "imageworks-chat-proxy");
  res.set(http::field::content_type, "application/json");
  res.set("x-request-id", request_id);
  res.keep_alive(false);
  res.body() = error_body(status, code, message);
  res.prepare_payload();
  stream.expires_after(timeout);
  beast::error_code ec;
  co_await http::async_write(stream, res, asio::redirect_error(use_task, ec));
}

// Maps a failed read to the reply it deserves, or none (timeout, EOF, reset: just close).
struct ReadFailure {
  int status = 0;
  std::string_view code;
  std::string message;
};
ReadFailure classify_read_error(const beast::error_code& ec) {
  if (ec == http::error::header_limit)
    return {431, "err_headers_too_large", "request headers exceed the 16 KiB limit"};
  if (ec == http::error::body_limit)
    return {413, "err_payload_too_large", "request body exceeds CHAT_PROXY_MAX_BODY_BYTES"};
  if (ec == http::error::end_of_stream || ec == asio::error::bad_descriptor ||
      ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
      ec == asio::error::eof || ec == http::error::partial_message)
    return {};
  if (ec.category() == http::make_error_code(http::error::bad_method).category())
    return {400, "err_bad_request", "malformed HTTP request: " + ec.message()};
  return {};
}

// The path of a request, for the record: the canonical route is set by the router; before
// routing (or for a request that never reached it) the raw path, cut to a sane length.
void raw_route(RequestRecord& r, std::string_view target) {
  r.route.assign(target.substr(0, std::min<std::size_t>(target.find('?'), 256)));
}

void start_record(RequestRecord& r, const std::string& client, const std::string& request_id) {
  r.reset();
  r.ts = std::chrono::system_clock::now();
  r.started = std::chrono::steady_clock::now();
  r.client = client;
  r.request_id = request_id;
}

// What the client got: the status of the head that went out, or 499 (nginx's "client
// closed request") when the handler ended without one, which only the client leaving does.
void finish_record(RequestRecord& r, const Exchange& ex) {
  if (ex.head_sent()) {
    r.status = ex.status();
  } else {
    r.status = 499;
    r.client_gone = true;
  }
  if (r.client_gone && r.error_code.empty()) r.error_code = "err_client_closed";
  r.latency_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - r.started).count();
  r.bytes_out = ex.bytes_out();
}

}  // namespace

// A request refused before it became an exchange (413, 431, malformed) is recorded too.
Task<void> Server::refuse(Stream& stream, SessionBuffers& buffers, const std::string& client, const Request& req,
                          int status, std::string_view code, std::string message) {
  make_request_id(req["x-request-id"], buffers.request_id);
  auto& rec = buffers.record;
  start_record(rec, client, buffers.request_id);
  raw_route(rec, req.target());
  rec.status = status;
  rec.error_code = code;
  if (opts_.on_exchange_end) opts_.on_exchange_end(rec, req);
  co_await reply_and_close(stream, status, code, std::move(message), buffers.request_id, opts_.write_timeout);
}

Task<void> Server::run_session(TimedSocket::socket_type socket) {
  auto s = std::make_shared<Session>(std::move(socket));
  {
    std::lock_guard lk(sessions_mu_);
    sessions_.insert(s);
  }
  auto& stream = s->stream;
  beast::error_code rec;
  const auto remote = stream.socket().remote_endpoint(rec);  // once per connection, not per request
  const std::string client = remote.address().to_string();
  // Every buffer of the connection starts empty and grows to what its requests need
  // (read_http doubles a read that filled its room): an open stream holds a few hundred
  // bytes here, not pages (bench/streams.py).
  beast::flat_buffer buffer;
  Request req;            // reused for every request on the connection, like the two strings
  SessionBuffers buffers;
  bool first = true;
  try {
    while (!stopping()) {
      RequestParser parser(req, opts_.max_header_fields, opts_.max_header_bytes);
      parser.header_limit(static_cast<std::uint32_t>(opts_.max_header_bytes));
      parser.body_limit(opts_.max_body_bytes);
      // One deadline covers the idle wait and the whole request: a client that sends half
      // a request and stalls is cut off when it passes.
      stream.expires_after(first ? opts_.request_timeout : opts_.keepalive_timeout);
      const bool first_request = first;
      first = false;
      beast::error_code ec;
      if (!parse_buffered(buffer, parser, ReadUntil::header, ec)) {  // a pipelined request may be here
        // The reply just went out and the client cannot have answered yet: reading now
        // would cost a recv() that finds nothing. Let the loop serve others first.
        if (!first_request) {
          co_await asio::post(stream.get_executor(), use_task);
          if (stopping()) break;  // a stop that came meanwhile found no read to cancel
        }
        co_await read_http(stream, buffer, parser, ReadUntil::header, ec);
      }
      if (ec && parser.too_many_fields()) {
        co_await refuse(stream, buffers, client, req, 431, "err_headers_too_large",
                        "request has more than " + std::to_string(opts_.max_header_fields) + " header fields");
        break;
      }
      if (!ec) {
        auto len = parser.content_length();
        if (len && *len > opts_.max_body_bytes) {
          co_await refuse(stream, buffers, client, req, 413, "err_payload_too_large",
                          "request body exceeds CHAT_PROXY_MAX_BODY_BYTES");
          break;
        }
        if (!parser.is_done() && beast::iequals(req[http::field::expect], "100-continue")) {
          // curl sends this for bodies over 1 KiB and would otherwise wait a second.
          static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
          co_await asio::async_write(stream, asio::buffer(kContinue), asio::redirect_error(use_task, ec));
        }
        if (!ec && !parser.is_done()) {
          stream.expires_after(opts_.request_timeout);
          if (!parse_buffered(buffer, parser, ReadUntil::message, ec))  // the body came with the header?
            co_await read_http(stream, buffer, parser, ReadUntil::message, ec);
        }
      }
      if (ec) {
        auto f = classify_read_error(ec);
        if (f.status) co_await refuse(stream, buffers, client, req, f.status, f.code, f.message);
        break;
      }
      stream.expires_never();  // the handler sets deadlines for its own writes
      // A large request grew the read buffer: give it back for the (maybe long) reply.
      if (buffer.size() == 0 && buffer.capacity() > kKeptReadBuffer) buffer.shrink_to_fit();
      make_request_id(req["x-request-id"], buffers.request_id);
      start_record(buffers.record, client, buffers.request_id);
      buffers.record.bytes_in = req.body().size();
      raw_route(buffers.record, req.target());
      Exchange ex(stream, req, remote, buffers, opts_.write_timeout, stopping());
      s->busy = true;
      s->exchange = &ex;
      struct Unpublish {  // however the handler ends, the server must not see a dead exchange
        Session& s;
        ~Unpublish() { s.exchange = nullptr; }
      } unpublish{*s};
      // However the exchange ends (a write to a vanished client throws), it is recorded once.
      struct RecordOnExit {
        const ServerOptions& opts;
        Exchange& ex;
        ~RecordOnExit() {
          finish_record(ex.record(), ex);
          try {
            if (opts.on_exchange_end) opts.on_exchange_end(ex.record(), ex.request());
          } catch (const std::exception& e) {  // (bad_alloc) a destructor must not throw
            spdlog::error("[http] {}: recording the exchange failed: {}", ex.request_id(), e.what());
          }
        }
      } record_on_exit{opts_, ex};
      std::optional<ProxyError> failure;  // co_await is not allowed inside a catch block
      try {
        co_await handler_(ex);
      } catch (const ProxyError& e) {
        ex.record().error_code = e.code;
        if (ex.head_sent() && !ex.sse_open()) throw;
        failure = e;
      } catch (const beast::system_error&) {
        ex.client_left();
        throw;  // the client connection itself failed: nothing more to say on it
      } catch (const std::exception& e) {
        ex.record().error_code = "err_internal";
        if (ex.head_sent() && !ex.sse_open()) throw;
        spdlog::error("[http] {} {}: internal error: {}", ex.request_id(), std::string(req.target()), e.what());
        failure = ProxyError(500, "err_internal", std::string("internal error: ") + e.what());
      }
      if (failure && ex.sse_open()) co_await ex.fail_stream(*failure);
      else if (failure) co_await ex.send_error(*failure);
      s->busy = false;
      if (!ex.keep_alive()) break;
    }
  } catch (const std::exception& e) {
    if (stream.expired())
      spdlog::warn("[http] client {} accepted no bytes for {} ms: disconnected", remote.address().to_string(),
                   opts_.write_timeout.count());
    else
      spdlog::debug("[http] connection ended: {}", e.what());
  }
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.close();
  std::lock_guard lk(sessions_mu_);
  sessions_.erase(s);
}

}  // namespace imageworks
