// bench_loadgen: HTTP/1.1 load generator for the benchmark (loopback only).
// Posts one fixed body over C keep-alive connections, either closed-loop (each connection
// sends its next request as soon as the previous reply is complete) or open-loop at a fixed
// rate. In rate mode request i is due at start + i/R; latency is measured from that
// scheduled time (so a stall of the server is not hidden by the generator waiting for it:
// no coordinated omission), and also from the actual send time (`*_send_us`).
// --stream: the reply is an SSE stream; ttfe = time to the first `data:` bytes of the body,
// latency = time to the end of the stream, which must contain `data: [DONE]`.
// Prints one JSON line. Every loop is bounded by the duration, --requests and a watchdog.
#include <sys/prctl.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "imageworks/asio.hpp"

namespace {

using namespace imageworks;
using Clock = std::chrono::steady_clock;
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Timer = asio::basic_waitable_timer<Clock, asio::wait_traits<Clock>, Executor>;

struct Options {
  unsigned short port = 0;
  std::string target = "/";
  std::string body;
  std::vector<std::string> headers;  // extra "Name: value" request headers
  int connections = 16;
  double duration_s = 5;
  double rate = 0;  // requests per second; 0 = closed loop
  bool stream = false;
  bool from_connect = false;  // closed loop: time a connection's request from before connect()
  int threads = 1;
  std::uint64_t max_requests = std::numeric_limits<std::uint64_t>::max();
};

// What every connection of every thread shares: the schedule and the stop conditions.
struct Plan {
  const Options& opts;
  std::string request;  // the complete request bytes, sent as they are
  Clock::time_point start{}, deadline{};
  Clock::duration interval{};
  std::atomic<std::uint64_t> next{0};  // the next request slot to claim
};

struct Stats {
  std::vector<std::int64_t> latency_ns, send_latency_ns, ttfe_ns;
  std::uint64_t errors = 0, body_bytes = 0;
  Clock::time_point last_done{};
};

// One event-loop thread with its share of the connections.
struct Loop {
  asio::io_context ioc{1};
  Stats stats;
  Timer watchdog{ioc.get_executor()};
  int live = 0;  // connection_loops still running
};

constexpr std::size_t kBodyChunk = 64 * 1024;
constexpr std::size_t kTailBytes = 32;  // enough for `data: [DONE]` and its line ends

std::int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

// Reads one response; for streams notes when the first `data:` bytes arrive. Returns false
// on a transport error or an incomplete/unsuccessful reply.
struct Reply {
  bool ok = false, keep_alive = false;
  std::optional<Clock::time_point> first_event;
  std::uint64_t body_bytes = 0;
};

asio::awaitable<Reply> read_reply(Socket& s, beast::flat_buffer& buf, char* body, bool stream) {
  Reply r;
  http::response_parser<http::buffer_body> p;
  p.body_limit(std::numeric_limits<std::uint64_t>::max());
  std::string tail;  // the last bytes of the body: for `data: [DONE]` and split `data:` markers
  beast::error_code ec;
  while (!p.is_done()) {
    p.get().body().data = body;
    p.get().body().size = kBodyChunk;
    co_await http::async_read_some(s, buf, p, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return r;
    std::size_t n = kBodyChunk - p.get().body().size;
    if (n == 0) continue;
    r.body_bytes += n;
    if (stream) {
      std::string_view fresh(body, n);
      if (!r.first_event || fresh.size() < kTailBytes) {
        tail.append(fresh);
        if (!r.first_event && tail.find("data:") != std::string::npos) r.first_event = Clock::now();
      } else {
        tail.assign(fresh.substr(fresh.size() - kTailBytes));
      }
      if (tail.size() > kTailBytes) tail.erase(0, tail.size() - kTailBytes);
    }
  }
  r.keep_alive = p.keep_alive();
  r.ok = p.get().result() == http::status::ok &&
         (!stream || (r.first_event && tail.find("data: [DONE]") != std::string::npos));
  co_return r;
}

asio::awaitable<void> connection_loop(Plan& plan, Loop& loop) {
  Stats& st = loop.stats;
  Socket s(loop.ioc.get_executor());
  Timer timer(loop.ioc.get_executor());
  beast::flat_buffer buf;
  buf.reserve(kBodyChunk);
  auto body = std::make_unique<char[]>(kBodyChunk);  // kept out of the coroutine frame
  const tcp::endpoint server{asio::ip::address_v4::loopback(), plan.opts.port};
  const bool rate_mode = plan.opts.rate > 0;
  for (;;) {
    auto slot = plan.next.fetch_add(1, std::memory_order_relaxed);
    if (slot >= plan.opts.max_requests) break;
    Clock::time_point due = Clock::now();
    if (rate_mode) {
      due = plan.start + plan.interval * static_cast<std::int64_t>(slot);
      if (due >= plan.deadline) break;
      if (due > Clock::now()) {
        timer.expires_at(due);
        beast::error_code tec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, tec));
      }
    } else if (due >= plan.deadline) {
      break;
    }
    beast::error_code ec;
    if (!s.is_open()) {
      buf.clear();
      co_await s.async_connect(server, asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) s.set_option(tcp::no_delay(true), ec);
      if (ec) {
        ++st.errors;
        s.close(ec);
        timer.expires_after(std::chrono::milliseconds(10));  // no busy loop against a dead port
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
    }
    const auto sent = Clock::now();
    if (!rate_mode && !plan.opts.from_connect) due = sent;
    co_await asio::async_write(s, asio::buffer(plan.request), asio::redirect_error(asio::use_awaitable, ec));
    Reply r;
    if (!ec) r = co_await read_reply(s, buf, body.get(), plan.opts.stream);
    const auto done = Clock::now();
    if (r.ok) {
      st.latency_ns.push_back(ns_between(due, done));
      st.send_latency_ns.push_back(ns_between(sent, done));
      if (r.first_event) st.ttfe_ns.push_back(ns_between(due, *r.first_event));
      st.body_bytes += r.body_bytes;
      st.last_done = std::max(st.last_done, done);
    } else {
      ++st.errors;
    }
    if (!r.ok || !r.keep_alive) s.close(ec);
  }
  beast::error_code ec;
  s.shutdown(tcp::socket::shutdown_both, ec);
  s.close(ec);
  if (--loop.live == 0) loop.watchdog.cancel();
}

std::int64_t percentile_us(std::vector<std::int64_t>& v, double q) {
  if (v.empty()) return -1;
  auto idx = std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(idx), v.end());
  return v[idx] / 1000;
}

[[noreturn]] void usage_exit(const char* argv0, const char* why = nullptr) {
  if (why) std::fprintf(stderr, "%s: %s\n", argv0, why);
  std::fprintf(stderr,
               "usage: %s --url http://127.0.0.1:PORT/PATH (--body JSON | --body-file FILE)\n"
               "          [--connections C=16] [--duration S=5] [--rate R (0 = closed loop)]\n"
               "          [--stream] [--header 'Name: value']... [--threads 1|2] [--requests N]\n"
               "          [--from-connect (closed loop: latency and ttfe include connecting)]\n",
               argv0);
  std::exit(2);
}

void parse_url(Options& o, std::string_view url, const char* argv0) {
  constexpr std::string_view prefix = "http://127.0.0.1:";
  if (!url.starts_with(prefix)) usage_exit(argv0, "the URL must start with http://127.0.0.1:PORT");
  url.remove_prefix(prefix.size());
  auto slash = url.find('/');
  o.port = static_cast<unsigned short>(std::atoi(std::string(url.substr(0, slash)).c_str()));
  o.target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (o.port == 0) usage_exit(argv0, "bad port in the URL");
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool have_url = false, have_body = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_exit(argv[0], "missing value");
      return argv[++i];
    };
    if (a == "--url") parse_url(o, value(), argv[0]), have_url = true;
    else if (a == "--body") o.body = value(), have_body = true;
    else if (a == "--body-file") {
      std::ifstream in(value(), std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      if (!in) usage_exit(argv[0], "cannot read the body file");
      o.body = ss.str();
      have_body = true;
    } else if (a == "--connections") o.connections = std::max(1, std::atoi(value()));
    else if (a == "--duration") o.duration_s = std::atof(value());
    else if (a == "--rate") o.rate = std::atof(value());
    else if (a == "--stream") o.stream = true;
    else if (a == "--from-connect") o.from_connect = true;
    else if (a == "--header") o.headers.emplace_back(value());
    else if (a == "--threads") o.threads = std::clamp(std::atoi(value()), 1, 64);
    else if (a == "--requests") o.max_requests = std::strtoull(value(), nullptr, 10);
    else usage_exit(argv[0], "unknown argument");
  }
  if (!have_url || !have_body) usage_exit(argv[0], "--url and a body are required");
  if (!(o.duration_s > 0) || o.duration_s > 3600) usage_exit(argv[0], "--duration must be in (0, 3600]");
  o.threads = std::min(o.threads, o.connections);
  return o;
}

std::string build_request(const Options& o) {
  std::string r = "POST " + o.target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(o.port) +
                  "\r\nUser-Agent: bench_loadgen\r\nContent-Type: application/json\r\nAccept: " +
                  (o.stream ? "text/event-stream" : "application/json") +
                  "\r\nContent-Length: " + std::to_string(o.body.size()) + "\r\n";
  for (const auto& h : o.headers) r += h + "\r\n";
  return r + "\r\n" + o.body;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opts = parse_args(argc, argv);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake up on schedule, not up to 50 µs later
  Plan plan{opts, build_request(opts)};
  if (opts.rate > 0)
    plan.interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / opts.rate));

  std::vector<std::unique_ptr<Loop>> loops;
  for (int t = 0; t < opts.threads; ++t) {
    loops.push_back(std::make_unique<Loop>());
    // Growing the sample vectors mid-run would stall a loop: reserve a typical run's worth.
    for (auto* v : {&loops.back()->stats.latency_ns, &loops.back()->stats.send_latency_ns})
      v->reserve(1 << 18);
    if (opts.stream) loops.back()->stats.ttfe_ns.reserve(1 << 16);
  }
  // Rate mode: a moment for the connections to open before the first scheduled request.
  plan.start = Clock::now() + (opts.rate > 0 ? std::chrono::milliseconds(20) : std::chrono::milliseconds(0));
  // The wall clock at plan.start, for scripts that line this run up with their own samples.
  const auto start_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      (std::chrono::system_clock::now() + (plan.start - Clock::now())).time_since_epoch()).count();
  plan.deadline = plan.start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opts.duration_s));
  for (int c = 0; c < opts.connections; ++c) {
    auto& loop = *loops[static_cast<std::size_t>(c % opts.threads)];
    ++loop.live;
    asio::co_spawn(loop.ioc, connection_loop(plan, loop), asio::detached);
  }
  // Watchdog: a server that stops answering must not hang the benchmark. The last worker
  // of a loop cancels it.
  std::atomic<bool> timed_out{false};
  for (auto& l : loops) {
    l->watchdog.expires_at(plan.deadline + std::chrono::seconds(10));
    l->watchdog.async_wait([&timed_out, ioc = &l->ioc](const beast::error_code& ec) {
      if (ec) return;
      timed_out = true;
      ioc->stop();
    });
  }
  std::vector<std::thread> threads;
  for (std::size_t t = 1; t < loops.size(); ++t) threads.emplace_back([&loops, t] { loops[t]->ioc.run(); });
  loops.front()->ioc.run();
  for (auto& t : threads) t.join();

  Stats all;
  for (auto& l : loops) {
    const Stats& s = l->stats;
    all.latency_ns.insert(all.latency_ns.end(), s.latency_ns.begin(), s.latency_ns.end());
    all.send_latency_ns.insert(all.send_latency_ns.end(), s.send_latency_ns.begin(), s.send_latency_ns.end());
    all.ttfe_ns.insert(all.ttfe_ns.end(), s.ttfe_ns.begin(), s.ttfe_ns.end());
    all.errors += s.errors;
    all.body_bytes += s.body_bytes;
    all.last_done = std::max(all.last_done, s.last_done);
  }
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const double cpu_s = static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
                       static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6;
  const auto n = all.latency_ns.size();
  const double elapsed = n ? std::chrono::duration<double>(all.last_done - plan.start).count() : opts.duration_s;
  std::printf(
      "{\"mode\":\"%s\",\"stream\":%s,\"connections\":%d,\"threads\":%d,\"target_rate\":%.1f,"
      "\"requests\":%zu,\"errors\":%llu,\"timed_out\":%s,\"duration_s\":%.3f,\"rps\":%.1f,"
      "\"p50_us\":%lld,\"p90_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld,"
      "\"p50_send_us\":%lld,\"p99_send_us\":%lld,\"ttfe_p50_us\":%lld,\"ttfe_p99_us\":%lld,"
      "\"ttfe_max_us\":%lld,\"start_unix_ms\":%lld,"
      "\"body_bytes_avg\":%.1f,\"cpu_s\":%.3f,\"latency_from\":\"%s\"}\n",
      opts.rate > 0 ? "rate" : "closed", opts.stream ? "true" : "false", opts.connections, opts.threads,
      opts.rate, n, static_cast<unsigned long long>(all.errors), timed_out ? "true" : "false", elapsed,
      elapsed > 0 ? static_cast<double>(n) / elapsed : 0.0,
      static_cast<long long>(percentile_us(all.latency_ns, 0.50)),
      static_cast<long long>(percentile_us(all.latency_ns, 0.90)),
      static_cast<long long>(percentile_us(all.latency_ns, 0.99)),
      static_cast<long long>(percentile_us(all.latency_ns, 1.0)),
      static_cast<long long>(percentile_us(all.send_latency_ns, 0.50)),
      static_cast<long long>(percentile_us(all.send_latency_ns, 0.99)),
      static_cast<long long>(percentile_us(all.ttfe_ns, 0.50)),
      static_cast<long long>(percentile_us(all.ttfe_ns, 0.99)),
      static_cast<long long>(percentile_us(all.ttfe_ns, 1.0)), static_cast<long long>(start_unix_ms),
      n ? static_cast<double>(all.body_bytes) / static_cast<double>(n) : 0.0, cpu_s,
      opts.rate > 0 ? "scheduled" : "send");
  return all.errors == 0 && n > 0 ? 0 : 1;
}
