// fake_vllm's HTTP side, shaped like vLLM's OpenAI server (FastAPI): /health (empty body),
// /v1/models, /v1/chat/completions and /v1/completions (whole or SSE over chunked transfer
// encoding), vLLM's error object, FastAPI's {"detail":"Not Found"} for unknown routes.
#include <cstdio>

#include <unistd.h>

#include "fake_vllm/fake_vllm.hpp"

namespace imageworks::fake_vllm {

using nlohmann::json;

namespace {

constexpr int kPromptTokens = 7;

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

const char* error_type(int status) {
  switch (status) {
    case 400: return "BadRequestError";
    case 404: return "NotFoundError";
    case 503: return "ServiceUnavailableError";
    default: return "InternalServerError";
  }
}

Reply error_reply(int status, const std::string& message) {
  json e = {{"object", "error"}, {"message", message}, {"type", error_type(status)},
            {"param", nullptr}, {"code", status}};
  return {status, "application/json", e.dump()};
}

std::string models_body(const ServerState& st) {
  const Options& o = *st.opts;
  json max_len = nullptr;
  if (!o.max_model_len.empty()) max_len = std::atoll(o.max_model_len.c_str());
  json model = {{"id", o.served_model_name}, {"object", "model"}, {"created", st.created},
                {"owned_by", "vllm"}, {"root", o.model_path}, {"parent", nullptr},
                {"max_model_len", max_len}};
  return json{{"object", "list"}, {"data", json::array({model})}}.dump();
}

json usage(int completion_tokens) {
  return {{"prompt_tokens", kPromptTokens}, {"total_tokens", kPromptTokens + completion_tokens},
          {"completion_tokens", completion_tokens}, {"prompt_tokens_details", nullptr}};
}

// What one completion request produces: an id, the served name, the text pieces.
struct Exchange {
  bool chat = true;
  bool stream = false;
  bool include_usage = false;
  std::string id;
  std::string model;
  std::int64_t created = 0;
  std::vector<std::string> pieces;
};

json stream_choice(const Exchange& x, json delta_or_text, json finish_reason) {
  json choice = {{"index", 0}};
  if (x.chat) choice["delta"] = std::move(delta_or_text);
  else choice["text"] = std::move(delta_or_text);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = std::move(finish_reason);
  if (!choice["finish_reason"].is_null()) choice["stop_reason"] = nullptr;
  return choice;
}

std::string sse(const json& payload) { return "data: " + payload.dump() + "\n\n"; }

// vLLM's order: role chunk (chat), one chunk per piece, the finish chunk, the usage chunk
// when stream_options.include_usage, [DONE]. `created` is the same in every chunk.
std::vector<std::string> stream_frames(const Exchange& x) {
  const char* object = x.chat ? "chat.completion.chunk" : "text_completion";
  auto chunk = [&](json choice) {
    return sse({{"id", x.id}, {"object", object}, {"created", x.created}, {"model", x.model},
                {"choices", json::array({std::move(choice)})}});
  };
  std::vector<std::string> frames;
  if (x.chat) frames.push_back(chunk(stream_choice(x, {{"role", "assistant"}, {"content", ""}}, nullptr)));
  for (const auto& p : x.pieces) {
    frames.push_back(chunk(x.chat ? stream_choice(x, {{"content", p}}, nullptr) : stream_choice(x, p, nullptr)));
  }
  frames.push_back(chunk(stream_choice(x, x.chat ? json::object() : json(""), "stop")));
  if (x.include_usage) {
    frames.push_back(sse({{"id", x.id}, {"object", object}, {"created", x.created}, {"model", x.model},
                          {"choices", json::array()}, {"usage", usage(static_cast<int>(x.pieces.size()))}}));
  }
  frames.push_back("data: [DONE]\n\n");
  return frames;
}

std::string whole_body(const Exchange& x) {
  std::string text;
  for (const auto& p : x.pieces) text += p;
  json choice = {{"index", 0}};
  if (x.chat) {
    choice["message"] = {{"role", "assistant"}, {"reasoning_content", nullptr}, {"content", text},
                         {"tool_calls", json::array()}};
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = "stop";
  choice["stop_reason"] = nullptr;
  json body = {{"id", x.id}, {"object", x.chat ? "chat.completion" : "text_completion"},
               {"created", x.created}, {"model", x.model}, {"choices", json::array({choice})},
               {"usage", usage(static_cast<int>(x.pieces.size()))}};
  return body.dump();
}

// Validates the request and fills the exchange; a Reply when it is answered with an error.
std::optional<Reply> prepare(const std::string& body, bool chat, ServerState& st, Exchange& x) {
  const auto req = json::parse(body, nullptr, false);
  if (!req.is_object()) return error_reply(400, "Invalid JSON body");
  std::string model = st.opts->served_model_name;  // absent: vLLM uses its served model
  if (auto m = req.find("model"); m != req.end() && !m->is_null()) {
    if (!m->is_string()) return error_reply(400, "model must be a string");
    model = m->get<std::string>();
  }
  x.model = model;  // also what the "request" event records for a 404
  if (model != st.opts->served_model_name) {
    return error_reply(404, "The model `" + model + "` does not exist.");
  }
  x.chat = chat;
  x.created = st.created;
  if (auto s = req.find("stream"); s != req.end() && s->is_boolean()) x.stream = s->get<bool>();
  if (auto so = req.find("stream_options"); so != req.end() && so->is_object()) {
    auto iu = so->find("include_usage");
    x.include_usage = iu != so->end() && iu->is_boolean() && iu->get<bool>();
  }
  char id[48];
  std::snprintf(id, sizeof id, "%s-%08x%024llx", chat ? "chatcmpl" : "cmpl", static_cast<unsigned>(getpid()),
                static_cast<unsigned long long>(++st.replies));
  x.id = id;
  x.pieces.assign(static_cast<std::size_t>(st.opts->chunks), st.opts->text);
  return std::nullopt;
}

Reply route(const http::request<http::string_body>& req, std::string_view path, ServerState& st, Exchange& x) {
  const bool get = req.method() == http::verb::get;
  const bool post = req.method() == http::verb::post;
  if (get && path == "/health") return {st.healthy ? 200 : 503, "", ""};  // no body, no type
  if (get && path == "/version") return {200, "application/json", R"({"version":"0.8.5"})"};
  const bool known = (get && path == "/v1/models") ||
                     (post && (path == "/v1/chat/completions" || path == "/v1/completions"));
  if (!known) return {404, "application/json", R"({"detail":"Not Found"})"};
  // The real server serves nothing before its engine is up; a fake that listens early says so.
  if (!st.healthy) return error_reply(503, "The model is still loading");
  if (get) return {200, "application/json", models_body(st)};
  if (auto err = prepare(req.body(), path == "/v1/chat/completions", st, x)) return *err;
  if (!x.stream) return {200, "application/json", whole_body(x)};
  return {200, "text/event-stream", ""};  // the stream itself is written by the session
}

std::string chunk_of(const std::string& bytes) {
  char size[24];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  return std::string(size, static_cast<std::size_t>(n)) + bytes + "\r\n";
}

// A plain function: GCC 12 cannot compile braced nlohmann lists in coroutine bodies.
void log_request(ServerState& st, std::string_view method, std::string_view path, const std::string& model,
                 int status) {
  st.events->emit("request", {{"method", method}, {"path", path}, {"model", model}, {"status", status}});
}

asio::awaitable<bool> write(tcp::socket& sock, const std::string& bytes) {
  beast::error_code ec;
  co_await asio::async_write(sock, asio::buffer(bytes), asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

asio::awaitable<bool> write_stream(tcp::socket& sock, const Exchange& x, const Options& o, bool keep_alive) {
  std::string head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                     "transfer-encoding: chunked\r\n";
  head += keep_alive ? "\r\n" : "connection: close\r\n\r\n";
  if (!(co_await write(sock, head))) co_return false;
  const auto frames = stream_frames(x);
  asio::steady_timer timer(sock.get_executor());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const bool content = x.chat ? (i >= 1 && i <= x.pieces.size()) : i < x.pieces.size();
    if (content && o.chunk_delay.count() > 0) {
      beast::error_code ec;
      timer.expires_after(o.chunk_delay);
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    const std::string piece = chunk_of(frames[i]);
    if (!(co_await write(sock, piece))) co_return false;
  }
  const std::string last = "0\r\n\r\n";
  co_return co_await write(sock, last);
}

}  // namespace

asio::awaitable<void> serve_connection(tcp::socket sock, ServerState& st) {
  beast::flat_buffer buffer;
  beast::error_code ec;
  sock.set_option(tcp::no_delay(true), ec);
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    co_await http::async_read(sock, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    const auto req = parser.release();
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    const bool keep_alive = req.keep_alive();
    Exchange x;
    const Reply reply = route(req, path, st, x);
    if (path != "/health") log_request(st, req.method_string(), path, x.model, reply.status);
    bool ok = false;
    if (reply.status == 200 && x.stream) {
      ok = co_await write_stream(sock, x, *st.opts, keep_alive);
    } else {
      http::response<http::string_body> res{static_cast<http::status>(reply.status), 11};
      if (!reply.content_type.empty()) res.set(http::field::content_type, reply.content_type);
      res.keep_alive(keep_alive);
      res.body() = reply.body;
      res.prepare_payload();
      co_await http::async_write(sock, res, asio::redirect_error(asio::use_awaitable, ec));
      ok = !ec;
    }
    if (!ok || !keep_alive) break;
  }
  sock.shutdown(tcp::socket::shutdown_both, ec);
  sock.close(ec);
}

}  // namespace imageworks::fake_vllm
