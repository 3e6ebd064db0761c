// JSON bodies and SSE frames of the fake Ollama, shaped like Ollama 0.5/0.6 (server/routes.go
// for /api/*, openai/openai.go for the OpenAI-compatible layer). Deliberate quirks the proxy
// must cope with: every stream chunk repeats `role`, tool calls arrive whole in one chunk and
// all carry `"index":0`, `system_fingerprint` is "fp_ollama".
#include <cctype>
#include <cstdio>
#include <ctime>

#include "fakes/fake_ollama_impl.hpp"

namespace imageworks::test::fake_ollama {

using nlohmann::json;

namespace {

constexpr int kPromptTokens = 7;

std::string iso_utc(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json details() {
  return {{"parent_model", ""}, {"format", "gguf"}, {"family", "llama"}, {"families", {"llama"}},
          {"parameter_size", "3.2B"}, {"quantization_level", "Q4_K_M"}};
}

// A stable fake sha256 per name, so digests differ between models and runs agree.
std::string digest(const std::string& name) {
  const std::size_t h = std::hash<std::string>{}(name);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016zx", h);
  std::string out;
  for (int i = 0; i < 4; ++i) out += buf;
  return out;
}

// "call_" + 8 lower-case letters/digits, like Ollama's toolCallId().
std::string call_id(std::uint64_t seed) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = "call_";
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (int i = 0; i < 8; ++i) {
    id += kAlphabet[x % 36];
    x = x / 36 + (x << 7) + 0x2545F4914F6CDD1Dull;
  }
  return id;
}

json tool_calls(const Behavior& b, const ChatContext& ctx) {
  json calls = json::array();
  std::uint64_t n = 0;
  for (const auto& name : b.tool_names) {
    calls.push_back({{"id", call_id(ctx.sequence * 131 + n++)},
                     {"index", 0},  // Ollama 0.5/0.6 leaves every index at 0
                     {"type", "function"},
                     {"function", {{"name", name}, {"arguments", b.tool_arguments}}}});
  }
  return calls;
}

json usage(int completion_tokens) {
  return {{"prompt_tokens", kPromptTokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", kPromptTokens + completion_tokens}};
}

json head(const ChatContext& ctx, const char* object) {
  return {{"id", ctx.id}, {"object", object}, {"created", ctx.created}, {"model", ctx.model},
          {"system_fingerprint", "fp_ollama"}};
}

std::string frame(std::string_view payload) {
  std::string out = "data: ";
  out += payload;
  out += "\n\n";
  return out;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

bool keep_alive_is_zero(const json& keep_alive) {
  if (keep_alive.is_number()) return keep_alive.get<double>() == 0.0;
  if (!keep_alive.is_string()) return false;
  // A Go duration ("0", "0s", "0m", "0.0h"): zero when no digit other than 0 appears.
  const std::string s = keep_alive.get<std::string>();
  bool digit = false;
  for (char ch : s) {
    if (std::isdigit(static_cast<unsigned char>(ch))) {
      digit = true;
      if (ch != '0') return false;
    } else if (ch == '-') {
      return false;  // negative: keep loaded for ever
    }
  }
  return digit;
}

std::string ps_body(const Behavior& b, const std::vector<std::string>& loaded) {
  json models = json::array();
  const std::string expires = iso_utc(std::chrono::system_clock::now() + std::chrono::minutes(5));
  for (const auto& name : loaded) {
    models.push_back({{"name", name}, {"model", name}, {"size", b.model_size}, {"digest", digest(name)},
                      {"details", details()}, {"expires_at", expires}, {"size_vram", b.model_size}});
  }
  return json{{"models", models}}.dump();
}

std::string tags_body(const Behavior& b) {
  json models = json::array();
  for (const auto& name : b.installed) {
    models.push_back({{"name", name}, {"model", name}, {"modified_at", "2025-01-15T10:00:00Z"},
                      {"size", 2019393189}, {"digest", digest(name)}, {"details", details()}});
  }
  return json{{"models", models}}.dump();
}

std::string openai_models_body(const Behavior& b) {
  json data = json::array();
  for (const auto& name : b.installed) {
    data.push_back({{"id", name}, {"object", "model"}, {"created", 1736935200}, {"owned_by", "library"}});
  }
  return json{{"object", "list"}, {"data", data}}.dump();
}

std::string generate_body(const std::string& model, std::string_view response, std::string_view done_reason) {
  json body = {{"model", model}, {"created_at", iso_utc(std::chrono::system_clock::now())},
               {"response", response}, {"done", true}, {"done_reason", done_reason}};
  if (done_reason == "stop") {
    body["context"] = {1, 2, 3};
    body["total_duration"] = 1000000;
    body["prompt_eval_count"] = kPromptTokens;
    body["eval_count"] = 3;
  }
  return body.dump();
}

std::string native_error_body(std::string_view message) { return json{{"error", message}}.dump(); }

std::string openai_error_body(int status, std::string_view message) {
  const char* type = status == 400 ? "invalid_request_error" : status == 404 ? "not_found_error" : "api_error";
  return json{{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}}.dump();
}

ChatContext make_chat_context(const json& request, std::uint64_t sequence) {
  ChatContext ctx;
  if (auto m = request.find("model"); m != request.end() && m->is_string()) ctx.model = m->get<std::string>();
  if (auto so = request.find("stream_options"); so != request.end() && so->is_object()) {
    auto iu = so->find("include_usage");
    ctx.include_usage = iu != so->end() && iu->is_boolean() && iu->get<bool>();
  }
  ctx.id = "chatcmpl-" + std::to_string(sequence);
  ctx.sequence = sequence;
  ctx.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  return ctx;
}

std::string chat_completion_body(const Behavior& b, const ChatContext& ctx) {
  json message = {{"role", "assistant"}, {"content", b.tool_calls ? "" : repeat(b.text, b.chunks)}};
  if (b.tool_calls) message["tool_calls"] = tool_calls(b, ctx);
  json body = head(ctx, "chat.completion");
  body["choices"] = json::array({{{"index", 0}, {"message", message},
                                  {"finish_reason", b.tool_calls ? "tool_calls" : "stop"}}});
  body["usage"] = usage(b.chunks);
  return body.dump();
}

// Content chunks (or one chunk holding every tool call), the final chunk with
// finish_reason "stop", the usage chunk when asked, [DONE]. No separate role chunk.
std::vector<Frame> chat_stream_frames(const Behavior& b, const ChatContext& ctx) {
  auto chunk = [&](json delta, json finish_reason) {
    json c = head(ctx, "chat.completion.chunk");
    c["choices"] = json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish_reason)}}});
    return frame(c.dump());
  };
  std::vector<Frame> frames;
  const int n = std::max(b.chunks, 0);
  if (b.tool_calls) {
    json delta = {{"role", "assistant"}, {"content", ""}, {"tool_calls", tool_calls(b, ctx)}};
    frames.push_back({FrameKind::content, chunk(std::move(delta), nullptr)});
  } else {
    for (int i = 0; i < n; ++i) {
      frames.push_back({FrameKind::content, chunk({{"role", "assistant"}, {"content", b.text}}, nullptr)});
    }
  }
  frames.push_back({FrameKind::finish, chunk({{"role", "assistant"}, {"content", ""}}, "stop")});
  if (ctx.include_usage) {
    json u = head(ctx, "chat.completion.chunk");
    u["choices"] = json::array();
    u["usage"] = usage(b.tool_calls ? 1 : n);
    frames.push_back({FrameKind::usage, frame(u.dump())});
  }
  frames.push_back({FrameKind::done, frame("[DONE]")});
  return frames;
}

}  // namespace imageworks::test::fake_ollama
