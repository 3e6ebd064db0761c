// FakeOllama's HTTP side: one coroutine per connection (keep-alive), Ollama's routes, the
// generate (load/unload) and OpenAI-compatible chat replies, the SSE writer. Each step
// returns false when the connection must not be reused (client gone, Connection: close,
// shutdown).
#include "fakes/fake_ollama_impl.hpp"

namespace imageworks::test {

namespace {

using fake_ollama::FrameKind;

constexpr std::string_view kJson = "application/json; charset=utf-8";  // what gin sends
constexpr std::string_view kText = "text/plain; charset=utf-8";

std::string sse_head(bool keep_alive) {
  std::string head =
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/event-stream\r\n"
      "Transfer-Encoding: chunked\r\n";
  head += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return head;
}

std::string chunked(std::string_view bytes) {
  char size[32];
  const int len = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  std::string out(size, static_cast<std::size_t>(len));
  out.append(bytes);
  out += "\r\n";
  return out;
}

// A string member, "" when absent or of another type (value() would throw on the type).
std::string string_field(const nlohmann::json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool wants_stream(const nlohmann::json& body) {
  auto it = body.find("stream");
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace

// Ollama's gin router: exact method + path, anything else is its plain-text 404 (there is
// no /api/stop; unloading is a generate with keep_alive 0).
asio::awaitable<bool> FakeOllama::Impl::respond(std::shared_ptr<Conn> c, const Request& req) {
  const Behavior b = snapshot();
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  const bool keep_alive = req.keep_alive();
  const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
  const bool post = req.method() == http::verb::post;

  if (get && path == "/") co_return co_await send(*c, 200, kText, "Ollama is running", keep_alive);
  if (get && path == "/api/version") {
    co_return co_await send(*c, 200, kJson, R"({"version":"0.6.2"})", keep_alive);
  }
  if (get && path == "/api/ps") {
    co_return co_await send(*c, 200, kJson, fake_ollama::ps_body(b, loaded_now()), keep_alive);
  }
  if (get && path == "/api/tags") co_return co_await send(*c, 200, kJson, fake_ollama::tags_body(b), keep_alive);
  if (get && path == "/v1/models") {
    co_return co_await send(*c, 200, kJson, fake_ollama::openai_models_body(b), keep_alive);
  }
  if (post && (path == "/api/generate" || path == "/v1/chat/completions")) {
    begin_reply(c);
    bool reusable = false;
    if (path == "/api/generate") reusable = co_await generate(*c, req, b);
    else reusable = co_await chat(*c, req, b);
    end_reply(*c);
    co_return reusable;
  }
  co_return co_await send(*c, 404, kText, "404 page not found", keep_alive);
}

// keep_alive 0 without a prompt: answer at once and unload asynchronously (the model stays
// in /api/ps for unload_delay, or for ever with ignore_unload). Otherwise load (waiting
// load_delay when it was not loaded) and answer one non-stream reply.
asio::awaitable<bool> FakeOllama::Impl::generate(Conn& c, const Request& req, const Behavior& b) {
  const bool keep_alive = req.keep_alive();
  const auto body = nlohmann::json::parse(req.body(), nullptr, false);
  if (!body.is_object()) {
    co_return co_await send(c, 400, kJson, fake_ollama::native_error_body("invalid request body"), keep_alive);
  }
  const std::string model = string_field(body, "model");
  if (model.empty()) {
    co_return co_await send(c, 400, kJson, fake_ollama::native_error_body("model is required"), keep_alive);
  }
  if (!is_installed(model)) {
    const std::string message = "model '" + model + "' not found";
    co_return co_await send(c, 404, kJson, fake_ollama::native_error_body(message), keep_alive);
  }
  const bool unload_after =
      body.contains("keep_alive") && fake_ollama::keep_alive_is_zero(body["keep_alive"]);
  const std::string prompt = string_field(body, "prompt");
  if (unload_after && prompt.empty()) {
    if (b.stall_unload) co_return co_await stall(c);
    const std::string reply = fake_ollama::generate_body(model, "", "unload");
    const bool reusable = co_await send(c, 200, kJson, reply, keep_alive);
    request_unload(model, b);  // after the reply: the real unload finishes after it too
    co_return reusable;
  }
  if (b.status != 200) {
    co_return co_await send(c, b.status, kJson, fake_ollama::native_error_body("fake ollama error"), keep_alive);
  }
  if (load(model) && b.load_delay.count() > 0 && !(co_await pause(c, b.load_delay))) co_return false;
  std::string text;
  if (!prompt.empty()) {
    for (int i = 0; i < b.chunks; ++i) text += b.text;
  }
  const std::string reply = fake_ollama::generate_body(model, text, prompt.empty() ? "load" : "stop");
  const bool reusable = co_await send(c, 200, kJson, reply, keep_alive);
  if (unload_after) request_unload(model, b);
  co_return reusable;
}

// Ollama's OpenAI layer: an unknown model is 404, a known one is loaded (listed in /api/ps
// from now on) and answered after load_delay when it was not loaded yet.
asio::awaitable<bool> FakeOllama::Impl::chat(Conn& c, const Request& req, const Behavior& b) {
  const bool keep_alive = req.keep_alive();
  const auto body = nlohmann::json::parse(req.body(), nullptr, false);
  if (!body.is_object()) {
    co_return co_await send(c, 400, kJson, fake_ollama::openai_error_body(400, "invalid request"), keep_alive);
  }
  const std::string model = string_field(body, "model");
  if (!is_installed(model)) {
    const std::string message = "model \"" + model + "\" not found, try pulling it first";
    co_return co_await send(c, 404, kJson, fake_ollama::openai_error_body(404, message), keep_alive);
  }
  if (b.status != 200) {
    co_return co_await send(c, b.status, kJson, fake_ollama::openai_error_body(b.status, "fake ollama error"),
                            keep_alive);
  }
  if (load(model) && b.load_delay.count() > 0 && !(co_await pause(c, b.load_delay))) co_return false;
  const auto ctx = fake_ollama::make_chat_context(body, ++reply_counter);
  if (wants_stream(body)) {
    // A local, not a temporary, for the by-reference coroutine argument (GCC 12).
    const auto frames = fake_ollama::chat_stream_frames(b, ctx);
    co_return co_await stream(c, frames, b, keep_alive);
  }
  co_return co_await send(c, 200, kJson, fake_ollama::chat_completion_body(b, ctx), keep_alive);
}

asio::awaitable<bool> FakeOllama::Impl::stream(Conn& c, const std::vector<fake_ollama::Frame>& frames,
                                               const Behavior& b, bool keep_alive) {
  const std::string head = sse_head(keep_alive);
  if (!(co_await write_all(c, head))) co_return false;
  for (const auto& f : frames) {
    if (f.kind == FrameKind::content && b.chunk_delay.count() > 0 && !(co_await pause(c, b.chunk_delay))) {
      co_return false;
    }
    const std::string piece = chunked(f.bytes);  // a local: it must outlive the write
    if (!(co_await write_all(c, piece))) co_return false;
    if (b.gate_chunks && f.kind != FrameKind::done && !(co_await pass_gate(c))) co_return false;
  }
  co_return (co_await write_all(c, "0\r\n\r\n")) && keep_alive;
}

}  // namespace imageworks::test
