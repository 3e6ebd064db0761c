#pragma once
// Internals of FakeOllama, shared by fake_ollama.cpp (lifecycle, recording, model set, gate),
// fake_ollama_session.cpp (HTTP exchange, routes, stream writer) and fake_ollama_bodies.cpp
// (JSON shapes).
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include <imageworks/asio.hpp>

#include "fakes/fake_http_core.hpp"
#include "fakes/fake_ollama.hpp"

namespace imageworks::test {

namespace fake_ollama {

using Behavior = FakeOllama::Behavior;
using Clock = std::chrono::steady_clock;

// What a chat reply echoes from its request.
struct ChatContext {
  std::string model;
  std::string id;            // "chatcmpl-N"
  std::int64_t created = 0;  // unix seconds, one value for the whole reply
  bool include_usage = false;
  std::uint64_t sequence = 0;  // seeds the tool-call ids
};

enum class FrameKind { content, finish, usage, done };
struct Frame {
  FrameKind kind;
  std::string bytes;  // a whole SSE frame, "data: ...\n\n"
};

// keep_alive as Ollama reads it: a number of seconds or a Go duration string; true when it
// is zero (then a prompt-less generate is an unload request).
bool keep_alive_is_zero(const nlohmann::json& keep_alive);

// Plain functions, not coroutines: GCC 12 cannot compile braced nlohmann lists in coroutines.
std::string ps_body(const Behavior& b, const std::vector<std::string>& loaded);
std::string tags_body(const Behavior& b);
std::string openai_models_body(const Behavior& b);
std::string generate_body(const std::string& model, std::string_view response,
                          std::string_view done_reason);
std::string native_error_body(std::string_view message);        // {"error":"…"}
std::string openai_error_body(int status, std::string_view message);  // OpenAI-compat routes
std::string chat_completion_body(const Behavior& b, const ChatContext& ctx);
std::vector<Frame> chat_stream_frames(const Behavior& b, const ChatContext& ctx);
ChatContext make_chat_context(const nlohmann::json& request, std::uint64_t sequence);

}  // namespace fake_ollama

struct FakeOllama::Impl : FakeHttpCore<FakeOllama::Impl> {
  // A model in /api/ps; unload_at is set once a keep_alive 0 arrived (Ollama unloads
  // asynchronously), and the model counts as gone from that instant on.
  struct LoadedModel {
    std::string name;
    std::optional<Clock::time_point> unload_at;
  };

  explicit Impl(Behavior b);
  ~Impl() { stop(); }

  // io thread only (the core's accept loop, sessions, disconnect detection, pauses and
  // gate: fake_http_core.hpp).
  asio::awaitable<bool> respond(std::shared_ptr<Conn> c, const Request& req);
  asio::awaitable<bool> generate(Conn& c, const Request& req, const Behavior& b);
  asio::awaitable<bool> chat(Conn& c, const Request& req, const Behavior& b);
  asio::awaitable<bool> stream(Conn& c, const std::vector<fake_ollama::Frame>& frames,
                               const Behavior& b, bool keep_alive);

  // Any thread (they lock mu).
  void record(const Request& req);
  Behavior snapshot() const;
  bool is_installed(const std::string& model) const;
  bool load(const std::string& model);  // true when it was not loaded before
  void request_unload(const std::string& model, const Behavior& b);
  std::vector<std::string> loaded_now();

  // Under mu: drops models whose unload time has come, remembering when they left.
  void purge_locked(Clock::time_point now);
  std::optional<Clock::time_point> next_unload_locked() const;

  std::uint64_t reply_counter = 0;

  // Under mu (the core's):
  Behavior behavior;
  std::vector<LoadedModel> models;  // in load order, like a scheduler's list
  std::map<std::string, Clock::time_point> unload_times;
  std::vector<OllamaCall> call_log;
};

}  // namespace imageworks::test
