#pragma once
// Internals of FakeOpenAI, shared by fake_openai.cpp (lifecycle, recording, gate),
// fake_openai_session.cpp (HTTP exchange, stream writer) and fake_openai_bodies.cpp (JSON).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>

#include <imageworks/asio.hpp>

#include "fakes/fake_http_core.hpp"
#include "fakes/fake_openai.hpp"

namespace imageworks::test {

namespace fake_openai {

using Behavior = FakeOpenAI::Behavior;

// What a reply echoes from its request.
struct ReplyContext {
  std::string model;         // the request's "model" (or "fake-model")
  std::string id;            // "chatcmpl-fake-N"
  std::int64_t created = 0;  // unix seconds
  bool include_usage = false;  // stream_options.include_usage == true
  std::size_t inputs = 1;      // embeddings: number of inputs
};
ReplyContext make_context(const nlohmann::json& request, std::uint64_t sequence);

enum class FrameKind { role, content, finish, usage, done };
struct Frame {
  FrameKind kind;
  std::string bytes;  // a whole SSE frame, "data: ...\n\n"
};

// Plain functions, not coroutines: GCC 12 cannot compile braced nlohmann lists in coroutines.
std::string chat_completion_body(const Behavior& b, const ReplyContext& ctx);
std::string completion_body(const Behavior& b, const ReplyContext& ctx);
std::string embeddings_body(const Behavior& b, const ReplyContext& ctx);
std::string models_body(const Behavior& b);
std::string echo_body(std::string_view method, std::string_view path, const nlohmann::json& request);
std::string error_body(const Behavior& b, int status, std::string_view message);
std::string unauthorized_body();
std::string not_found_body();
std::vector<Frame> chat_stream_frames(const Behavior& b, const ReplyContext& ctx);
std::vector<Frame> completion_stream_frames(const Behavior& b, const ReplyContext& ctx);
// The mid-stream error (error_after_chunks): llama.cpp `error:` line, or vLLM data + [DONE].
std::string stream_error_frames(const Behavior& b);

}  // namespace fake_openai

struct FakeOpenAI::Impl : FakeHttpCore<FakeOpenAI::Impl> {
  explicit Impl(Behavior b);
  ~Impl() { stop(); }

  // Everything below runs on the io thread unless it says otherwise (the core's accept loop,
  // sessions, disconnect detection, pauses and gate: fake_http_core.hpp).
  asio::awaitable<bool> respond(std::shared_ptr<Conn> c, const Request& req);
  asio::awaitable<bool> inference_reply(Conn& c, const Request& req, const Behavior& b,
                                        std::string_view path);
  asio::awaitable<bool> stream(Conn& c, const std::vector<fake_openai::Frame>& frames,
                               const Behavior& b, bool keep_alive);
  asio::awaitable<bool> stream_error(Conn& c, const Behavior& b, bool keep_alive);
  asio::awaitable<bool> raw_reply(Conn& c, const Behavior& b);
  asio::awaitable<bool> write_chunked(Conn& c, std::string_view bytes, const Behavior& b);
  void record(const Request& req);          // any thread (locks)
  Behavior snapshot() const;                // any thread (locks)

  std::uint64_t reply_counter = 0;
  Behavior behavior;                        // under mu
  std::vector<RecordedRequest> requests;    // under mu
  std::atomic<std::size_t> frames_written{0};
};

}  // namespace imageworks::test
