// The fake's HTTP side: one coroutine per connection (keep-alive), routing, non-stream
// replies and the scripted SSE stream writer. Each step returns false when the connection
// must not be reused (client gone, socket closed on purpose, Connection: close, shutdown).
#include "fakes/fake_openai_impl.hpp"

namespace imageworks::test {

namespace {

using Clock = std::chrono::steady_clock;
using fake_openai::FrameKind;
constexpr std::string_view kJson = "application/json";

std::string sse_head(bool keep_alive) {
  std::string head =
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n"
      "Transfer-Encoding: chunked\r\n";
  head += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return head;
}

std::string chunk_size_line(std::size_t n) {
  char buf[32];
  const int len = std::snprintf(buf, sizeof buf, "%zx\r\n", n);
  return std::string(buf, static_cast<std::size_t>(len));
}

bool is_stream(const nlohmann::json& body) {
  if (!body.is_object()) return false;
  auto it = body.find("stream");
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

bool authorized(const http::request<http::string_body>& req, const std::string& key) {
  if (key.empty()) return true;
  auto it = req.find(http::field::authorization);
  return it != req.end() && it->value() == "Bearer " + key;
}

}  // namespace

asio::awaitable<bool> FakeOpenAI::Impl::respond(std::shared_ptr<Conn> c, const Request& req) {
  const Behavior b = snapshot();
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  const bool keep_alive = req.keep_alive();

  if (path == "/health") {
    co_return co_await send(*c, b.health_status, kJson, R"({"status":"ok"})", keep_alive);
  }
  if (!authorized(req, b.required_api_key)) {
    co_return co_await send(*c, 401, kJson, fake_openai::unauthorized_body(), keep_alive);
  }
  if (req.method() == http::verb::get && path == "/v1/models") {
    co_return co_await send(*c, 200, kJson, fake_openai::models_body(b), keep_alive);
  }
  if (req.method() != http::verb::post || path.substr(0, 4) != "/v1/") {
    co_return co_await send(*c, 404, kJson, fake_openai::not_found_body(), keep_alive);
  }
  begin_reply(c);
  const bool reusable = co_await inference_reply(*c, req, b, path);
  end_reply(*c);
  co_return reusable;
}

asio::awaitable<bool> FakeOpenAI::Impl::inference_reply(Conn& c, const Request& req, const Behavior& b,
                                                        std::string_view path) {
  const bool keep_alive = req.keep_alive();
  if (b.stall_before_headers) co_return co_await stall(c);
  if (!b.raw_reply.empty() || b.raw_fill_bytes > 0) co_return co_await raw_reply(c, b);
  if (b.response_delay.count() > 0 && !(co_await pause(c, b.response_delay))) co_return false;
  if (b.status != 200) {
    co_return co_await send(c, b.status, kJson, fake_openai::error_body(b, b.status, "fake upstream error"),
                                 keep_alive);
  }
  const auto body = nlohmann::json::parse(req.body(), nullptr, false);
  if (body.is_discarded()) {
    co_return co_await send(c, 400, kJson, fake_openai::error_body(b, 400, "invalid JSON body"), keep_alive);
  }
  const auto ctx = fake_openai::make_context(body, ++reply_counter);
  if (path == "/v1/chat/completions") {
    if (is_stream(body)) {
      // Locals, not temporaries, for by-reference coroutine arguments (GCC 12 coroutine bugs).
      const auto reply_frames = fake_openai::chat_stream_frames(b, ctx);
      co_return co_await stream(c, reply_frames, b, keep_alive);
    }
    co_return co_await send(c, 200, kJson, fake_openai::chat_completion_body(b, ctx), keep_alive);
  }
  if (path == "/v1/completions") {
    if (is_stream(body)) {
      const auto reply_frames = fake_openai::completion_stream_frames(b, ctx);
      co_return co_await stream(c, reply_frames, b, keep_alive);
    }
    co_return co_await send(c, 200, kJson, fake_openai::completion_body(b, ctx), keep_alive);
  }
  if (path == "/v1/embeddings") {
    co_return co_await send(c, 200, kJson, fake_openai::embeddings_body(b, ctx), keep_alive);
  }
  co_return co_await send(c, 200, kJson, fake_openai::echo_body(req.method_string(), path, body), keep_alive);
}

// Frames in order; the cut points count content chunks already sent, so "after 0" cuts
// right after the role chunk.
asio::awaitable<bool> FakeOpenAI::Impl::stream(Conn& c, const std::vector<fake_openai::Frame>& frames,
                                               const Behavior& b, bool keep_alive) {
  const std::string head = sse_head(keep_alive);
  if (!(co_await write_all(c, head))) co_return false;
  int content_sent = 0;
  for (const auto& f : frames) {
    if (f.kind == FrameKind::content || f.kind == FrameKind::finish) {
      if (content_sent == b.stall_after_chunks) co_return co_await stall(c);
      if (content_sent == b.close_after_chunks) {
        c.responding = false;  // our own close is no client disconnect
        close_conn(c);
        co_return false;
      }
      if (content_sent == b.error_after_chunks) co_return co_await stream_error(c, b, keep_alive);
      if (f.kind == FrameKind::content && b.chunk_delay.count() > 0 && !(co_await pause(c, b.chunk_delay))) {
        co_return false;
      }
    }
    ++frames_written;  // before the write: a client holding frame N then sees a count >= N
    if (!(co_await write_chunked(c, f.bytes, b))) co_return false;
    if (f.kind == FrameKind::content) ++content_sent;
    if (b.gate_chunks && f.kind != FrameKind::done && !(co_await pass_gate(c))) co_return false;
  }
  co_return (co_await write_all(c, "0\r\n\r\n")) && keep_alive;
}

asio::awaitable<bool> FakeOpenAI::Impl::stream_error(Conn& c, const Behavior& b, bool keep_alive) {
  const std::string error_frames = fake_openai::stream_error_frames(b);
  ++frames_written;
  if (!(co_await write_chunked(c, error_frames, b))) co_return false;
  co_return (co_await write_all(c, "0\r\n\r\n")) && keep_alive;
}

// Whatever bytes a broken backend might send; the connection is never reused afterwards.
asio::awaitable<bool> FakeOpenAI::Impl::raw_reply(Conn& c, const Behavior& b) {
  if (!b.raw_reply.empty() && !(co_await write_all(c, b.raw_reply))) co_return false;
  const std::string fill(64 * 1024, 'x');
  for (std::size_t left = b.raw_fill_bytes; left > 0;) {
    const std::size_t n = std::min(left, fill.size());
    if (!(co_await write_all(c, std::string_view(fill).substr(0, n)))) co_return false;
    left -= n;
  }
  if (b.raw_stall) co_return co_await stall(c);
  c.responding = false;  // our own close is no client disconnect
  close_conn(c);
  co_return false;
}

// One HTTP chunk per write; with split_every_byte one byte per chunk, pausing briefly at
// line ends and every few bytes so the reader sees the pieces in separate reads.
asio::awaitable<bool> FakeOpenAI::Impl::write_chunked(Conn& c, std::string_view bytes, const Behavior& b) {
  if (!b.split_every_byte) {
    std::string out = chunk_size_line(bytes.size());
    out.append(bytes);
    out += "\r\n";
    co_return co_await write_all(c, out);
  }
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const char ch = bytes[i];
    const std::string piece = std::string("1\r\n") + ch + "\r\n";
    if (!(co_await write_all(c, piece))) co_return false;
    if ((ch == '\n' || ch == '\r' || i % 11 == 0) && !(co_await pause(c, std::chrono::microseconds(300)))) {
      co_return false;
    }
  }
  co_return true;
}

}  // namespace imageworks::test
