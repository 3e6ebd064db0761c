// Send the prepared request upstream and relay the reply (§5). Local error replies are
// possible only until the response head went out; after that an SSE error event and a
// clean end are all that is left. The client leaving closes the upstream at once.
#include <spdlog/spdlog.h>

#include <array>

#include "forwarder/relay.hpp"
#include "imageworks/backend_gate.hpp"
#include "imageworks/http_read.hpp"
#include "imageworks/json_splice.hpp"
#include "imageworks/sse.hpp"

namespace imageworks {

using namespace std::string_view_literals;

namespace {

constexpr std::uint64_t kMaxWholeReplyBytes = 256ull << 20;

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

// Fields the upstream request must not inherit: hop-by-hop ones and those we set ourselves.
bool hop_by_hop_or_ours(const Request::Field& f) {
  switch (f.known) {
    case http::field::host: case http::field::connection: case http::field::keep_alive:
    case http::field::proxy_connection: case http::field::proxy_authorization: case http::field::te:
    case http::field::trailer: case http::field::transfer_encoding: case http::field::upgrade:
    case http::field::content_length: case http::field::authorization: case http::field::accept_encoding:
    case http::field::content_type: case http::field::accept: case http::field::expect:
      return true;
    case http::field::unknown:
      return f.name.size() == 12 && beast::iequals(f.name, "x-request-id");
    default:
      return false;
  }
}

// The upstream request head, written by hand (the body goes out beside it, uncopied).
// Unknown client headers (X-OpenWebUI-*, custom ones) pass through; hop-by-hop ones do not.
void build_upstream_request_head(Exchange& ex, const ForwardRequest& fr, const BackendRoute& route) {
  std::string& h = ex.upstream_head_buffer();
  h.clear();
  h += "POST "sv;
  h += route.target->base_path;
  h += '/';
  h += fr.route;
  h += " HTTP/1.1\r\nHost: "sv;
  h += route.target->host_header;
  h += "\r\nContent-Type: application/json\r\nAccept: "sv;
  h += fr.stream ? "text/event-stream"sv : "application/json"sv;
  h += "\r\nx-request-id: "sv;
  h += ex.request_id();
  h += "\r\n"sv;
  if (!route.api_key.empty()) {
    h += "Authorization: Bearer "sv;
    h += route.api_key;
    h += "\r\n"sv;
  }
  for (const auto& f : ex.request()) {
    if (hop_by_hop_or_ours(f)) continue;
    h += f.name_string();
    h += ": "sv;
    h += f.value();
    h += "\r\n"sv;
  }
  h += "Content-Length: "sv;
  h += std::to_string(fr.payload.bytes().size());
  h += "\r\n\r\n"sv;
}

// While the upstream works, the client socket is watched (TimedSocket::watch_peer): when
// the client closed or reset the connection, the upstream is closed at once and the
// backend stops generating. A client write failing during a stream ends the relay too.
// An abort of the exchange (shutdown) closes the upstream the same way; the relay then
// answers with the abort's error instead of a transport error.
struct ClientWatch {
  UpstreamConnection* conn = nullptr;
  SlotWaitHandle slot_wait;  // waiting for one of the backend's request slots
  bool client_gone = false;
  static void on_gone(void* self) {
    auto* w = static_cast<ClientWatch*>(self);
    w->client_gone = true;
    if (w->conn) w->conn->close();
    w->slot_wait.cancel_wait();
  }
  static void on_abort(void* self) {
    auto* w = static_cast<ClientWatch*>(self);
    if (w->conn) w->conn->close();
    w->slot_wait.cancel_wait();
  }
};

// Ends the watch and the abort hook when the relay ends, however it ends.
struct WatchGuard {
  Exchange& ex;
  ~WatchGuard() {
    ex.stream().unwatch_peer();
    ex.on_abort(nullptr, nullptr);
  }
};

bool stale_connection_error(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == http::error::partial_message;
}

ProxyError transport_error(const BackendRoute& route, UpstreamConnection& conn, const beast::error_code& ec,
                           bool before_reply, const RelaySettings& s) {
  if (timed_out(conn.tcp(), ec)) {
    if (before_reply)
      return ProxyError(504, "err_backend_timeout",
                        "backend " + route.target->pool_key + " sent no reply within " +
                            std::to_string(s.backend_timeout.count()) + " ms");
    return ProxyError(504, "err_backend_timeout",
                      "backend " + route.target->pool_key + " sent nothing for " +
                          std::to_string(s.idle_timeout.count()) + " ms");
  }
  return ProxyError(502, "err_backend_unavailable",
                    "backend " + route.target->pool_key + " failed: " + ec.message());
}

// Not a coroutine: the awaitable it returns refers only to what the caller keeps alive.
Task<void> read_upstream(UpstreamConnection& c, UpstreamResponseParser& p, ReadUntil until,
                                    beast::error_code& ec) {
  return c.with_stream([&](auto& s) { return read_http(s, c.buffer, p, until, ec); });
}

// Restore the model in a whole reply and pick up its usage, in one scan of the body; a chat
// reply that a §7 rule could change (one pass over its `choices`) is normalised first.
void finish_reply(std::string& body, const std::string& model_json, bool chat, bool normalize_tools,
                  RequestRecord& out) {
  static constexpr std::string_view keys[] = {"model", "usage", "choices"};
  std::optional<std::string_view> v[3];
  if (!scan_backend_object(body, keys, v)) return;
  if (chat && v[2] && mentions_response_trigger(*v[2], true)) {
    if (auto normalised = normalise_reply(body, normalize_tools)) {
      body = std::move(*normalised);
      if (!scan_backend_object(body, keys, v)) return;
    }
  }
  if (v[1] && v[1]->front() == '{') read_usage(*v[1], out.prompt_tokens, out.completion_tokens);
  if (v[0] && v[0]->front() == '"') {
    auto offset = static_cast<std::size_t>(v[0]->data() - body.data());
    body.replace(offset, v[0]->size(), model_json);
  }
}

// The whole (non-stream or error) reply: read it under the request deadline, restore the
// model, send it; upstream errors keep their status in our error shape.
Task<void> relay_whole(Exchange& ex, const ForwardRequest& fr, const BackendRoute& route,
                                          std::unique_ptr<UpstreamConnection>& conn, UpstreamResponseParser& p,
                                          ClientWatch* watch, const RelaySettings& s) {
  std::string body;
  p.body_to(&body, kMaxWholeReplyBytes);
  beast::error_code ec;
  if (!parse_buffered(conn->buffer, p, ReadUntil::message, ec)) {  // usually it came with the head
    const auto t0 = std::chrono::steady_clock::now();
    co_await read_upstream(*conn, p, ReadUntil::message, ec);
    ex.record().upstream_wait_ms += ms_since(t0);
  }
  conn->tcp().expires_never();  // the backend's deadline does not run while the client reads
  if (watch->client_gone) {
    ex.client_left();
    co_return;
  }
  if (ec) {
    ex.throw_if_aborted();
    throw transport_error(route, *conn, ec, true, s);
  }
  watch->conn = nullptr;
  if (p.keep_alive()) release_connection(std::move(conn));
  const int status = p.status();
  if (status >= 400) {
    auto err = upstream_error(status, body);
    if (!p.retry_after().empty()) ex.add_header("Retry-After", p.retry_after());
    throw err;
  }
  if (ex.head_sent())  // the SSE response opened for loading feedback cannot carry a whole reply
    throw ProxyError(502, "err_backend_error",
                     "backend " + route.target->pool_key + " answered a streaming request with a whole reply");
  finish_reply(body, json_quote(fr.requested_model), fr.route == "chat/completions", s.normalize_tools, ex.record());
  if (s.capture_reply) append_whole_reply(body, ex.record().reply);
  auto ct = p.content_type();
  co_await ex.send(static_cast<http::status>(status), std::move(body), ct.empty() ? "application/json" : ct);
}

// The SSE stream: each upstream read becomes one client write of the rewritten events.
Task<void> relay_stream(Exchange& ex, const ForwardRequest& fr, const BackendRoute& route,
                                           std::unique_ptr<UpstreamConnection>& conn,
                                           UpstreamResponseParser& p, ClientWatch* watch,
                                           const RelaySettings& s) {
  // Neither buffer is reserved: a trickling stream's reads and writes are a few hundred
  // bytes, and 10 000 open streams must not hold two 16 KiB buffers each (bench/streams.py);
  // a fast stream grows them in a few reads and keeps them for the stream.
  std::string got;  // the body bytes of one upstream read
  p.body_to(&got);
  SseParser sse(s.max_event_bytes);
  std::optional<StreamRules> rules;
  if (fr.route == "chat/completions") rules.emplace(s.normalize_tools);
  StreamRewriter rw(fr.requested_model, fr.usage_added, std::move(rules));
  std::string out;
  RequestRecord& rec = ex.record();  // TTFT, tokens and a mid-stream error go here
  std::optional<ProxyError> failure;
  auto on_event = [&](const SseEvent& ev) {
    if (s.capture_reply && !ev.comment) append_stream_reply(ev.data, rec.reply);
    rw.on_event(ev.event, ev.data, ev.comment, out);
  };

  while (!p.is_done()) {
    beast::error_code ec;
    // All complete chunks at hand make one client write. The idle deadline covers the wait
    // for the backend only: it is disarmed before the proxy waits for the client to take
    // the bytes, so a slow reader is never blamed on the backend (§5 "Slow clients").
    if (!parse_buffered(conn->buffer, p, ReadUntil::progress, ec)) {
      conn->tcp().expires_after(s.idle_timeout);
      const auto t0 = std::chrono::steady_clock::now();
      co_await read_upstream(*conn, p, ReadUntil::progress, ec);
      rec.upstream_wait_ms += ms_since(t0);
      conn->tcp().expires_never();
    }
    if (watch->client_gone) break;
    try {
      if (!got.empty()) sse.feed(got, on_event);
      if (!ec && p.is_done()) sse.finish(on_event);
    } catch (const SseTooLarge&) {
      failure = ProxyError(502, "err_backend_error",
                           "backend " + route.target->pool_key + " sent an SSE event larger than " +
                               std::to_string(s.max_event_bytes) + " bytes (CHAT_PROXY_MAX_SSE_EVENT_BYTES)");
    }
    got.clear();
    if (failure) break;
    if (ec) {
      if (ex.aborted()) failure = *ex.aborted();
      else if (ec == http::error::partial_message || ec == http::error::end_of_stream || ec == asio::error::eof)
        failure = ProxyError(502, "err_backend_unavailable", "backend " + route.target->pool_key +
                                                                 " closed the stream before it ended");
      else failure = transport_error(route, *conn, ec, false, s);
      break;
    }
    if (out.empty()) continue;
    if (!rec.ttft_ms) rec.ttft_ms = ms_since(rec.started);  // the client's wait, switch included
    if (!ex.head_sent()) {  // (loading feedback may have opened the response already)
      co_await ex.start_stream(http::status::ok, "text/event-stream", out);
    } else {
      co_await ex.write_chunk(out);
    }
    out.clear();
  }
  if (watch->client_gone) {
    ex.client_left();
    co_return;
  }
  // Nothing went out and nothing is waiting to: a real HTTP error.
  if (failure && !ex.head_sent() && out.empty()) throw *failure;
  if (failure) {
    rw.fail(*failure, out);
    rec.error_code = failure->code;  // the stream ended with an error event
  } else {
    rw.finish(out);
    watch->conn = nullptr;
    if (p.keep_alive()) release_connection(std::move(conn));
  }
  if (!ex.head_sent()) {
    co_await ex.start_stream(http::status::ok, "text/event-stream", out);
    co_await ex.end_stream();
  } else {
    co_await ex.end_stream(out);
  }
  rec.prompt_tokens = rw.prompt_tokens;
  rec.completion_tokens = rw.completion_tokens;
}

}  // namespace

Task<void> relay(Exchange& ex, const ForwardRequest& fr, const BackendRoute& route,
                                    const RelaySettings& s) {
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + s.backend_timeout;
  build_upstream_request_head(ex, fr, route);
  const std::array<asio::const_buffer, 2> request_bufs{asio::buffer(ex.upstream_head_buffer()),
                                                       asio::buffer(fr.payload.bytes())};
  ClientWatch watch_state;  // lives on this frame for the whole relay
  ClientWatch* watch = &watch_state;
  ex.stream().watch_peer(&ClientWatch::on_gone, watch);
  ex.on_abort(&ClientWatch::on_abort, watch);
  WatchGuard guard{ex};

  // One of the backend's request slots (CHAT_PROXY_BACKEND_MAX_CONCURRENT), held until the
  // reply is relayed; queued in order while all are taken, 429 when the queue is full too.
  // The common case (a slot is free, or no limit) costs no coroutine of its own.
  auto free_slot = try_backend_slot(route.target->pool_key);
  BackendSlot slot = free_slot ? std::move(*free_slot) : BackendSlot();
  if (!free_slot) {
    bool cancelled = false;
    slot = co_await acquire_backend_slot(route.target->pool_key, deadline, watch->slot_wait, cancelled);
    if (watch->client_gone) {
      ex.client_left();
      co_return;
    }
    ex.throw_if_aborted();
  }

  for (int attempt = 0;; ++attempt) {
    ex.throw_if_aborted();
    const auto waiting_since = std::chrono::steady_clock::now();  // connect, send, the reply's head
    auto conn = co_await acquire_connection(*route.target, deadline, attempt == 0);
    ex.throw_if_aborted();  // it came while connecting: the hook had no connection to close
    watch->conn = conn.get();
    conn->tcp().expires_at(deadline);
    beast::error_code ec;
    // Plain TCP: the request usually fits the send buffer and goes without waiting.
    std::size_t sent = 0;
    if (!conn->is_tls()) {
      sent = conn->tcp().write_now(request_bufs, ec);
      if (ec == asio::error::would_block) ec = {};
    }
    if (!ec && sent < asio::buffer_size(request_bufs)) {
      beast::buffers_suffix<std::array<asio::const_buffer, 2>> rest(request_bufs);
      rest.consume(sent);
      co_await conn->with_stream([&](auto& st) {
        return asio::async_write(st, rest, asio::redirect_error(use_task, ec));
      });
    }
    UpstreamResponseParser head;
    if (!ec) {
      // The backend cannot have answered yet: serve others first instead of a recv() that
      // would find nothing (Asio reads speculatively).
      co_await asio::post(conn->tcp().get_executor(), use_task);
      co_await read_upstream(*conn, head, ReadUntil::header, ec);
    }
    ex.record().upstream_wait_ms += ms_since(waiting_since);
    if (watch->client_gone) {
      ex.client_left();
      co_return;
    }
    if (ec) {
      watch->conn = nullptr;
      ex.throw_if_aborted();
      // A pooled connection the backend closed meanwhile: one retry on a fresh one.
      if (conn->reused && attempt == 0 && stale_connection_error(ec)) {
        drop_idle_connections(route.target->pool_key);
        continue;
      }
      auto failure = transport_error(route, *conn, ec, true, s);
      if (failure.status == 502 && stale_connection_error(ec)) throw BackendUnreachable(std::move(failure));
      throw failure;
    }
    bool streaming = fr.stream && head.status() == 200 && head.event_stream();
    if (streaming) co_await relay_stream(ex, fr, route, conn, head, watch, s);
    else co_await relay_whole(ex, fr, route, conn, head, watch, s);
    co_return;
  }
}

}  // namespace imageworks
