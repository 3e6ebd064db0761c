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

struct FakeOpenAI::Impl {
  using Request = http::request<http::string_body>;

  struct Conn {
    explicit Conn(tcp::socket s) : sock(std::move(s)), timer(sock.get_executor()) {}
    tcp::socket sock;
    asio::steady_timer timer;  // delays, stalls and gate waits; cancelled to wake them
    bool responding = false;   // a reply is under way: the client leaving now is a disconnect
    bool client_gone = false;
    std::uint64_t reply_seq = 0;  // tells a stale disconnect watcher from the current one
  };

  explicit Impl(Behavior b);
  ~Impl();

  // Everything below runs on the io thread unless it says otherwise.
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(std::shared_ptr<Conn> c);
  asio::awaitable<bool> respond(std::shared_ptr<Conn> c, const Request& req);
  asio::awaitable<bool> inference_reply(Conn& c, const Request& req, const Behavior& b,
                                        std::string_view path);
  asio::awaitable<bool> stream(Conn& c, const std::vector<fake_openai::Frame>& frames,
                               const Behavior& b, bool keep_alive);
  asio::awaitable<bool> stream_error(Conn& c, const Behavior& b, bool keep_alive);
  asio::awaitable<bool> send_json(Conn& c, int status, std::string body, bool keep_alive);
  asio::awaitable<bool> write_all(Conn& c, std::string_view bytes);
  asio::awaitable<bool> write_chunked(Conn& c, std::string_view bytes, const Behavior& b);
  asio::awaitable<bool> pause(Conn& c, std::chrono::steady_clock::duration d);
  asio::awaitable<bool> stall(Conn& c);
  asio::awaitable<bool> pass_gate(Conn& c);

  bool alive(const Conn& c) const { return !c.client_gone && !stopping; }
  void begin_reply(const std::shared_ptr<Conn>& c);
  void end_reply(Conn& c);
  void client_left(Conn& c);
  void close_conn(Conn& c);
  void wake_all();
  void shutdown();
  void record(const Request& req);          // any thread (locks)
  Behavior snapshot() const;                // any thread (locks)

  asio::io_context ioc;
  tcp::acceptor acceptor;
  unsigned short port = 0;
  bool stopping = false;
  std::map<Conn*, std::shared_ptr<Conn>> conns;  // open connections, closed on shutdown
  std::size_t gate_credits = 0;
  bool gate_open = false;
  std::uint64_t reply_counter = 0;

  mutable std::mutex mu;  // guards behavior, requests, disconnects
  mutable std::condition_variable cv;
  Behavior behavior;
  std::vector<RecordedRequest> requests;
  std::vector<std::chrono::steady_clock::time_point> disconnects;
  std::atomic<std::size_t> accepted{0};
  std::atomic<std::size_t> frames_written{0};

  std::thread thread;  // last: starts after everything above exists
};

}  // namespace imageworks::test
