// bench_fake_upstream: a fast OpenAI-compatible upstream for the load benchmark.
// POST /v1/chat/completions answers a fixed chat.completion, or — when the body asks for
// "stream":true — a chunked SSE stream of N chat.completion.chunk events (one write per
// event unless --batch), a usage chunk when "include_usage":true is present, then [DONE].
// All reply bytes are precomputed; the request body is only scanned for those two flags.
// A request header `x-bench-event-interval-us: N` paces the events N µs apart (the first
// goes out at once), like a model generating tokens; without it they go back to back.
// A request header `x-bench-dialect: legacy-tools` makes a stream use OpenAI's deprecated
// `function_call` deltas instead of content (same event count and framing): the first event
// names the function, the middle ones carry ~20-byte fragments of its JSON arguments, the
// last has an empty delta and finish_reason "function_call" — what the proxy normalises.
#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "imageworks/asio.hpp"

namespace {

using namespace imageworks;
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Executor>;

struct Options {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  int threads = 1;
  int events = 64;
  bool batch = false;  // the whole stream in one write (a server that buffers)
};

// One precomputed stream reply. Events are HTTP/1.1 chunks, each a slice of `bytes`.
struct StreamReply {
  std::string bytes;                          // head, then every event chunk back to back
  std::vector<std::string_view> event_chunks;  // [0] includes the head
};

// The precomputed replies.
struct Replies {
  std::string completion;  // full response: head + body
  StreamReply stream;      // content deltas
  StreamReply legacy_tools;  // legacy function_call deltas (x-bench-dialect: legacy-tools)
  std::string usage_chunk;
  std::string done_chunk;                     // data: [DONE] and the last (empty) chunk
  std::string not_found;
};

std::string chunk(std::string_view payload) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", payload.size());
  return std::string(size) + std::string(payload) + "\r\n";
}

std::string sse(std::string_view json) { return "data: " + std::string(json) + "\n\n"; }

// A JSON string's contents (without the quotes) for ASCII text.
std::string json_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// Fills `out.bytes` with `head` then one chunk per event JSON and slices it into event_chunks.
// Built in place: the views point into `out.bytes`, which must not be reallocated afterwards.
void build_stream(StreamReply& out, const std::string& head, const std::vector<std::string>& event_json) {
  std::vector<std::size_t> ends;
  out.bytes = head;
  for (const auto& json : event_json) {
    out.bytes += chunk(sse(json));
    ends.push_back(out.bytes.size());
  }
  std::size_t begin = 0;
  for (auto end : ends) {
    out.event_chunks.emplace_back(out.bytes.data() + begin, end - begin);
    begin = end;
  }
}

// The arguments of the legacy function call: a JSON object of about 20 bytes per middle event,
// cut into that many fragments (escaped separately, so no escape sequence is split).
std::vector<std::string> argument_fragments(int count) {
  if (count <= 0) return {};
  constexpr std::size_t kFragment = 20;
  const std::size_t target = static_cast<std::size_t>(count) * kFragment;
  std::string args = R"({"location":"Paris, France","unit":"celsius","days":3,"notes":")";
  const std::string_view filler = "fast fake upstream arguments for the tool-call benchmark. ";
  const std::string_view close = R"("})";
  for (std::size_t i = 0; args.size() + close.size() < target; ++i) args += filler[i % filler.size()];
  args += close;
  std::vector<std::string> out;
  const std::size_t n = static_cast<std::size_t>(count);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t b = args.size() * i / n, e = args.size() * (i + 1) / n;
    out.push_back(json_escape(std::string_view(args).substr(b, e - b)));
  }
  return out;
}

Replies build_replies(int events) {
  Replies r;
  const std::string body =
      R"({"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion","created":1700000000,)"
      R"("model":"bench-model","system_fingerprint":"fp_bench","choices":[{"index":0,"message":)"
      R"({"role":"assistant","content":"Hello! This is a fixed reply from the benchmark upstream. )"
      R"(It is about as long as a short answer."},"logprobs":null,"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":9,"completion_tokens":21,"total_tokens":30}})";
  r.completion = "HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nContent-Type: application/json\r\n"
                 "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;

  const std::string head =
      "HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nContent-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string prefix =
      R"({"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"bench-model","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":)";
  std::vector<std::string> plain, tools;
  for (int i = 0; i < events; ++i) {
    std::string delta = i == 0 ? R"({"role":"assistant","content":"tok0"})"
                               : R"({"content":" tok)" + std::to_string(i) + R"("})";
    std::string finish = i + 1 == events ? R"("stop")" : "null";
    plain.push_back(prefix + delta + R"(,"logprobs":null,"finish_reason":)" + finish + "}]}");
  }
  // Legacy dialect: the same envelope, with function_call deltas instead of content.
  const auto fragments = argument_fragments(events - 2);
  for (int i = 0; i < events; ++i) {
    std::string delta =
        i == 0 ? R"({"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":""}})"
        : i + 1 == events ? "{}"
                          : R"({"function_call":{"arguments":")" + fragments[static_cast<std::size_t>(i - 1)] + R"("}})";
    std::string finish = i + 1 == events ? R"("function_call")" : "null";
    tools.push_back(prefix + delta + R"(,"logprobs":null,"finish_reason":)" + finish + "}]}");
  }
  build_stream(r.stream, head, plain);
  build_stream(r.legacy_tools, head, tools);
  r.usage_chunk = chunk(sse(
      R"({"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"bench-model","system_fingerprint":"fp_bench","choices":[],)"
      R"("usage":{"prompt_tokens":9,"completion_tokens":)" + std::to_string(events) +
      R"(,"total_tokens":)" + std::to_string(events + 9) + "}}"));
  r.done_chunk = chunk("data: [DONE]\n\n") + "0\r\n\r\n";
  const std::string nf = R"({"error":{"message":"not found","type":"invalid_request_error","param":null,"code":"not_found"}})";
  r.not_found = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(nf.size()) + "\r\n\r\n" + nf;
  return r;
}

// `"key"` followed by optional blanks, a colon, optional blanks and `true`. Good enough for
// the benchmark's own request bodies; no JSON parsing on the hot path.
bool flag_is_true(std::string_view body, std::string_view quoted_key) {
  for (auto pos = body.find(quoted_key); pos != std::string_view::npos; pos = body.find(quoted_key, pos + 1)) {
    auto i = pos + quoted_key.size();
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (i >= body.size() || body[i] != ':') continue;
    ++i;
    while (i < body.size() && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r')) ++i;
    if (body.substr(i, 4) == "true") return true;
  }
  return false;
}

asio::awaitable<void> write_all(Socket& s, std::string_view bytes, beast::error_code& ec) {
  co_await asio::async_write(s, asio::buffer(bytes.data(), bytes.size()),
                             asio::redirect_error(asio::use_awaitable, ec));
}

struct StreamPlan {
  bool usage = false, batch = false, legacy_tools = false;
  std::chrono::microseconds interval{0};
};

asio::awaitable<void> send_stream(Socket& s, Timer& timer, const Replies& r, const StreamPlan& plan,
                                  beast::error_code& ec) {
  const StreamReply& events = plan.legacy_tools ? r.legacy_tools : r.stream;
  if (plan.batch && plan.interval.count() == 0) {
    std::string_view tail = plan.usage ? std::string_view(r.usage_chunk) : std::string_view();
    std::array<asio::const_buffer, 3> bufs{asio::buffer(events.bytes), asio::buffer(tail.data(), tail.size()),
                                           asio::buffer(r.done_chunk)};
    co_await asio::async_write(s, bufs, asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  for (std::size_t i = 0; i < events.event_chunks.size(); ++i) {
    if (i > 0 && plan.interval.count() > 0) {
      timer.expires_after(plan.interval);
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
    co_await write_all(s, events.event_chunks[i], ec);
    if (ec) co_return;
  }
  if (plan.usage) {
    co_await write_all(s, r.usage_chunk, ec);
    if (ec) co_return;
  }
  co_await write_all(s, r.done_chunk, ec);
}

std::chrono::microseconds event_interval(const http::request<http::string_body>& req) {
  auto v = req["x-bench-event-interval-us"];
  if (v.empty()) return std::chrono::microseconds(0);
  return std::chrono::microseconds(std::clamp(std::atol(std::string(v).c_str()), 0L, 10'000'000L));
}

asio::awaitable<void> serve_connection(Socket s, const Replies& r, bool batch) {
  Timer timer(s.get_executor());
  beast::flat_buffer buffer;
  buffer.reserve(16 * 1024);
  beast::error_code ec;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(64 << 20);
    co_await http::async_read(s, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    auto& req = parser.get();
    if (req.method() != http::verb::post || req.target() != "/v1/chat/completions") {
      co_await write_all(s, r.not_found, ec);
    } else if (flag_is_true(req.body(), "\"stream\"")) {
      StreamPlan plan{flag_is_true(req.body(), "\"include_usage\""), batch,
                      req["x-bench-dialect"] == "legacy-tools", event_interval(req)};
      co_await send_stream(s, timer, r, plan, ec);
    } else {
      co_await write_all(s, r.completion, ec);
    }
    if (ec || !req.keep_alive()) break;
  }
  s.shutdown(tcp::socket::shutdown_send, ec);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, std::vector<std::unique_ptr<asio::io_context>>& loops,
                                  const Replies& r, bool batch) {
  Timer backoff(loops.front()->get_executor());
  for (std::size_t next = 0;; ++next) {
    auto& loop = *loops[next % loops.size()];
    beast::error_code ec;
    Socket s = co_await acceptor.async_accept(loop, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // EMFILE and friends: keep serving the connections we have, retry a little later.
      backoff.expires_after(std::chrono::milliseconds(10));
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    s.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(loop, serve_connection(std::move(s), r, batch), asio::detached);
  }
}

[[noreturn]] void usage_exit(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--port P (0 = any)] [--host 127.0.0.1] [--threads N] [--events N=64]\n"
               "          [--batch (each stream in one write, unless paced by x-bench-event-interval-us)]\n",
               argv0);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_exit(argv[0]);
      return argv[++i];
    };
    if (a == "--port") o.port = static_cast<unsigned short>(std::atoi(value()));
    else if (a == "--host") o.host = value();
    else if (a == "--threads") o.threads = std::max(1, std::atoi(value()));
    else if (a == "--events") o.events = std::max(1, std::atoi(value()));
    else if (a == "--batch") o.batch = true;
    else usage_exit(argv[0]);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opts = parse_args(argc, argv);
  const Replies replies = build_replies(opts.events);
  std::vector<std::unique_ptr<asio::io_context>> loops;
  for (int i = 0; i < opts.threads; ++i) loops.push_back(std::make_unique<asio::io_context>(1));
  tcp::acceptor acceptor(*loops.front());
  tcp::endpoint ep{asio::ip::make_address(opts.host), opts.port};
  acceptor.open(ep.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(ep);
  acceptor.listen(asio::socket_base::max_listen_connections);
  std::printf("listening on http://%s:%u\n", opts.host.c_str(), acceptor.local_endpoint().port());
  std::fflush(stdout);

  asio::signal_set signals(*loops.front(), SIGINT, SIGTERM);
  signals.async_wait([&](const beast::error_code&, int) {
    for (auto& l : loops) l->stop();
  });
  asio::co_spawn(*loops.front(), accept_loop(acceptor, loops, replies, opts.batch), asio::detached);
  std::vector<asio::executor_work_guard<Executor>> guards;
  for (auto& l : loops) guards.emplace_back(l->get_executor());
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < loops.size(); ++i) threads.emplace_back([&, i] { loops[i]->run(); });
  loops.front()->run();
  for (auto& l : loops) l->stop();
  for (auto& t : threads) t.join();
  return 0;
}
