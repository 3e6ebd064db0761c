// JSON bodies and SSE frames of the fake upstream, shaped like vLLM / llama.cpp / OpenAI.
#include <chrono>

#include "fakes/fake_openai_impl.hpp"

namespace imageworks::test::fake_openai {

using nlohmann::json;

namespace {

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

json usage(const Behavior& b, int completion_tokens) {
  return {{"prompt_tokens", b.prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", b.prompt_tokens + completion_tokens}};
}

std::string frame(const Behavior& b, std::string_view payload) {
  const char* eol = b.crlf ? "\r\n" : "\n";
  std::string out = "data: ";
  out += payload;
  out += eol;
  out += eol;
  return out;
}

// n splits of `s` at proportional points: exactly n pieces, some empty when s is short.
std::vector<std::string> split_in(const std::string& s, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    const std::size_t a = s.size() * i / n, z = s.size() * (i + 1) / n;
    out.push_back(s.substr(a, z - a));
  }
  return out;
}

json tool_call_full(const Behavior& b) {
  return {{"id", "call_fake_0"},
          {"type", "function"},
          {"function", {{"name", b.tool_name}, {"arguments", b.tool_arguments}}}};
}

// Stream delta of content chunk `i`: text, or a tool-call fragment carrying its index.
json content_delta(const Behavior& b, int i, const std::vector<std::string>& fragments) {
  if (!b.tool_call) return {{"content", b.text}};
  json call = {{"index", 0}, {"function", {{"arguments", fragments[i]}}}};
  if (i == 0) {
    call["id"] = "call_fake_0";
    call["type"] = "function";
    call["function"]["name"] = b.tool_name;
  }
  return {{"tool_calls", json::array({call})}};
}

json chunk_head(const Behavior& b, const ReplyContext& ctx, const char* object, int n) {
  // llama.cpp stamps every chunk anew; the proxy must pin `created` (SPEC §5).
  const std::int64_t created = ctx.created + (b.llamacpp_style ? n : 0);
  return {{"id", ctx.id}, {"object", object}, {"created", created}, {"model", ctx.model}};
}

const char* error_type(int status) {
  switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 404: return "NotFoundError";
    case 413: return "RequestEntityTooLarge";
    case 429: return "RateLimitError";
    case 503: return "ServiceUnavailableError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

}  // namespace

ReplyContext make_context(const json& request, std::uint64_t sequence) {
  ReplyContext ctx;
  ctx.model = "fake-model";
  if (request.is_object()) {
    if (auto m = request.find("model"); m != request.end() && m->is_string()) ctx.model = *m;
    if (auto so = request.find("stream_options"); so != request.end() && so->is_object()) {
      auto iu = so->find("include_usage");
      ctx.include_usage = iu != so->end() && iu->is_boolean() && iu->get<bool>();
    }
    if (auto in = request.find("input"); in != request.end() && in->is_array()) ctx.inputs = in->size();
  }
  ctx.id = "chatcmpl-fake-" + std::to_string(sequence);
  ctx.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  return ctx;
}

std::string chat_completion_body(const Behavior& b, const ReplyContext& ctx) {
  if (!b.script_reply.empty()) return b.script_reply;
  json message = {{"role", "assistant"}, {"content", repeat(b.text, b.chunks)}};
  if (b.tool_call) {
    message["content"] = nullptr;
    message["tool_calls"] = json::array({tool_call_full(b)});
  }
  json choice = {{"index", 0}, {"message", message}, {"logprobs", nullptr},
                 {"finish_reason", b.tool_call ? "tool_calls" : "stop"}};
  json body = chunk_head(b, ctx, "chat.completion", 0);
  body["choices"] = json::array({choice});
  body["usage"] = usage(b, b.chunks);
  return body.dump();
}

std::string completion_body(const Behavior& b, const ReplyContext& ctx) {
  json choice = {{"index", 0}, {"text", repeat(b.text, b.chunks)}, {"logprobs", nullptr},
                 {"finish_reason", "stop"}};
  json body = chunk_head(b, ctx, "text_completion", 0);
  body["id"] = "cmpl-" + ctx.id.substr(ctx.id.find('-') + 1);
  body["choices"] = json::array({choice});
  body["usage"] = usage(b, b.chunks);
  return body.dump();
}

std::string embeddings_body(const Behavior& b, const ReplyContext& ctx) {
  json data = json::array();
  for (std::size_t i = 0; i < ctx.inputs; ++i) {
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", {0.1, 0.2, 0.3, 0.4}}});
  }
  json body = {{"object", "list"}, {"data", data}, {"model", ctx.model},
               {"usage", {{"prompt_tokens", b.prompt_tokens}, {"total_tokens", b.prompt_tokens}}}};
  return body.dump();
}

std::string models_body(const Behavior& b) {
  json data = json::array();
  for (const auto& id : b.models) {
    data.push_back({{"id", id}, {"object", "model"}, {"created", 1700000000}, {"owned_by", "fake"}});
  }
  return json{{"object", "list"}, {"data", data}}.dump();
}

std::string echo_body(std::string_view method, std::string_view path, const json& request) {
  json model = nullptr;
  if (request.is_object() && request.contains("model")) model = request["model"];
  return json{{"echo_path", path}, {"method", method}, {"model", model}}.dump();
}

std::string error_body(const Behavior& b, int status, std::string_view message) {
  if (!b.error_body.empty()) return b.error_body;
  if (b.llamacpp_style) {
    const char* type = status >= 500 ? "server_error" : "invalid_request_error";
    return json{{"error", {{"code", status}, {"message", message}, {"type", type}}}}.dump();
  }
  return json{{"object", "error"}, {"message", message}, {"type", error_type(status)},
              {"param", nullptr}, {"code", status}}.dump();
}

std::string unauthorized_body() {
  return json{{"error", {{"message", "Incorrect API key provided."},
                         {"type", "invalid_request_error"},
                         {"param", nullptr},
                         {"code", "invalid_api_key"}}}}.dump();
}

std::string not_found_body() { return R"({"detail":"Not Found"})"; }

std::vector<Frame> chat_stream_frames(const Behavior& b, const ReplyContext& ctx) {
  std::vector<Frame> frames;
  if (!b.script_events.empty()) {
    for (const auto& e : b.script_events) frames.push_back({FrameKind::content, frame(b, e)});
    frames.push_back({FrameKind::done, frame(b, "[DONE]")});
    return frames;
  }
  auto chunk = [&](json delta, json finish_reason, int n) {
    json c = chunk_head(b, ctx, "chat.completion.chunk", n);
    c["choices"] = json::array({{{"index", 0}, {"delta", std::move(delta)},
                                 {"logprobs", nullptr}, {"finish_reason", std::move(finish_reason)}}});
    return c.dump();
  };
  const int n = std::max(b.chunks, 0);
  const auto fragments = split_in(b.tool_arguments, std::max(n, 1));
  frames.push_back({FrameKind::role, frame(b, chunk({{"role", "assistant"}, {"content", ""}}, nullptr, 0))});
  for (int i = 0; i < n; ++i) {
    frames.push_back({FrameKind::content, frame(b, chunk(content_delta(b, i, fragments), nullptr, i + 1))});
  }
  frames.push_back({FrameKind::finish,
                    frame(b, chunk(json::object(), b.tool_call ? "tool_calls" : "stop", n + 1))});
  if (ctx.include_usage) {
    json u = chunk_head(b, ctx, "chat.completion.chunk", n + 2);
    u["choices"] = json::array();
    u["usage"] = usage(b, n);
    frames.push_back({FrameKind::usage, frame(b, u.dump())});
  }
  frames.push_back({FrameKind::done, frame(b, "[DONE]")});
  return frames;
}

std::vector<Frame> completion_stream_frames(const Behavior& b, const ReplyContext& ctx) {
  std::vector<Frame> frames;
  auto chunk = [&](const std::string& text, json finish_reason, int n) {
    json c = chunk_head(b, ctx, "text_completion", n);
    c["choices"] = json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr},
                                 {"finish_reason", std::move(finish_reason)}}});
    return c.dump();
  };
  const int n = std::max(b.chunks, 0);
  for (int i = 0; i < n; ++i) frames.push_back({FrameKind::content, frame(b, chunk(b.text, nullptr, i))});
  frames.push_back({FrameKind::finish, frame(b, chunk("", "stop", n))});
  if (ctx.include_usage) {
    json u = chunk_head(b, ctx, "text_completion", n + 1);
    u["choices"] = json::array();
    u["usage"] = usage(b, n);
    frames.push_back({FrameKind::usage, frame(b, u.dump())});
  }
  frames.push_back({FrameKind::done, frame(b, "[DONE]")});
  return frames;
}

std::string stream_error_frames(const Behavior& b) {
  const char* eol = b.crlf ? "\r\n" : "\n";
  if (b.llamacpp_style) {  // legacy llama.cpp: an `error:` field line, then the stream ends
    json e = {{"code", 500}, {"message", "fake stream error"}, {"type", "server_error"}};
    return "error: " + e.dump() + eol + eol;
  }
  json e = {{"error", {{"object", "error"}, {"message", "fake stream error"},
                       {"type", "InternalServerError"}, {"param", nullptr}, {"code", 500}}}};
  return frame(b, e.dump()) + frame(b, "[DONE]");
}

}  // namespace imageworks::test::fake_openai
