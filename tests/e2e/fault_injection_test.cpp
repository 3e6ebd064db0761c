// End-to-end fault injection (issue: "fault-injection suite"): each upstream fault fails
// only the request that met it, with an OpenAI-shaped error (or, once the SSE response is
// open, an error event and [DONE]), while a healthy model on another backend keeps being
// served — during the fault where the fault hangs, right after it otherwise — and the proxy's
// resident memory returns to its warm baseline. GPU faults and clients that leave at every
// stage: fault_injection_gpu_test.cpp.
//
// Faults already covered end to end elsewhere (not repeated here):
//   stall after some chunks → idle timeout event    E2eChat.StalledStreamHitsTheIdleTimeout
//   close between SSE frames → error event + [DONE]  E2eChat.FailureAfterFirstByteEndsWithErrorEventAndDone
//   oversize (newline-terminated) SSE event          E2eRelay.OversizeSseEventBecomesAnErrorEventAndDone
//   client that never reads                          E2eRelay.ClientThatNeverReadsIsDisconnectedAndTheUpstreamClosed
//   client leaving mid-stream → upstream closed      E2eChat.ClientDisconnectClosesTheUpstreamWithinOneSecond
//   broken JSON in a registry layer → last good      E2eReload.EditedLayerChangesTheListAndBrokenJsonKeepsTheOld
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/chat_rig.hpp"
#include "support/sse_client.hpp"

using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {


// ASan keeps freed blocks in a quarantine (256 MiB by default), resident: measured by hand,
// the 50 MiB line under a 64 MiB event limit left the proxy +133 MiB after the stream with
// the default quarantine although everything was freed, and +3 MiB with this one. So the
// faulty proxies run with a 4 MiB quarantine: RSS then measures what the proxy holds.
// Without ASan the variable is ignored.
std::string small_quarantine_asan_options() {
  const char* inherited = std::getenv("ASAN_OPTIONS");
  std::string o = inherited ? inherited : "";
  if (!o.empty()) o += ':';
  return o + "quarantine_size_mb=4:thread_local_quarantine_size_kb=256";
}

// Within this of the warm baseline after the faults. The faults below push up to 50 MiB
// through the proxy; a kept line or body buffer (≥ 16 MiB, the SSE event limit, plus its
// ASan shadow) exceeds it, while allocator and ASan bookkeeping noise stays below a few MiB.
constexpr std::size_t kRssSlackKib = 12 * 1024;

// A faulty backend, a healthy one and one nobody listens on, behind the built proxy.
struct FaultRig {
  FakeOpenAI bad, good;
  TempDir dir;
  std::unique_ptr<ProxyProcess> proxy;

  explicit FaultRig(Env env = {}) {
    const std::string dead = "http://127.0.0.1:" + std::to_string(closed_loopback_port());
    json entries = json::array();
    entries.push_back({{"name", "faulty"}, {"backend", "openai"}, {"backend_config", {{"base_url", bad.base_url()}}}});
    entries.push_back({{"name", "healthy"}, {"backend", "openai"}, {"backend_config", {{"base_url", good.base_url()}}}});
    entries.push_back({{"name", "refused"}, {"backend", "openai"}, {"backend_config", {{"base_url", dead}}}});
    dir.write("registry/model_registry.json", entries.dump(2));
    env.emplace("CHAT_PROXY_REGISTRY_DIR", registry_dir().string());
    env.emplace("CHAT_PROXY_REQUIRE_TEMPLATE", "0");
    env.emplace("CHAT_PROXY_BACKEND_TIMEOUT_MS", "1500");
    env.emplace("CHAT_PROXY_STREAM_IDLE_TIMEOUT_MS", "1000");
    env.emplace("ASAN_OPTIONS", small_quarantine_asan_options());
    proxy = std::make_unique<ProxyProcess>(env);
  }
  ~FaultRig() {
    if (::testing::Test::HasFailure()) std::cerr << "--- proxy log ---\n" << proxy->stderr_text();
  }
  unsigned short port() const { return proxy->port(); }
  fs::path registry_dir() const { return dir.path() / "registry"; }

  // A connection the proxy dropped without a reply (it crashed, say) is status 0, so the
  // expectations fail and the destructor prints the proxy's log.
  HttpReply chat(const std::string& model, bool stream) {
    try {
      return http_call(port(), "POST", "/v1/chat/completions", chat_body(stream, model).dump(), {}, 30s);
    } catch (const std::exception& e) {
      HttpReply r;
      r.body = std::string("no reply: ") + e.what();
      return r;
    }
  }
  // Both kinds of request to the healthy model succeed in full.
  void expect_healthy_served() {
    auto r = chat("healthy", false);
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body, nullptr, false).value("model", ""), "healthy") << r.body;
    SseClient s(port(), "/v1/chat/completions", chat_body(true, "healthy").dump(), 30s);
    EXPECT_EQ(s.status(), 200);
    auto frames = s.rest();
    EXPECT_TRUE(stream_completed(frames)) << (frames.empty() ? "no frames" : frames.back());
  }
  // A few requests of every kind (and an error) so that the baseline includes what any
  // first request allocates for good: pools, thread-local buffers, spdlog, metrics.
  std::size_t warm_baseline_kib() {
    for (int i = 0; i < 3; ++i) expect_healthy_served();
    chat("refused", false);
    return resident_kib(proxy->pid());
  }
  void expect_rss_near(std::size_t baseline_kib, const char* fault) {
    const std::size_t now = resident_kib(proxy->pid());
    std::cerr << "[rss] " << fault << ": baseline " << baseline_kib << " KiB, after " << now << " KiB\n";
    EXPECT_GT(now, 0u);
    EXPECT_LT(now, baseline_kib + kRssSlackKib) << fault << ": the proxy kept memory after the fault";
  }
};

FakeOpenAI::Behavior raw(std::string reply, std::size_t fill = 0, bool stall = false) {
  FakeOpenAI::Behavior b;
  b.raw_reply = std::move(reply);
  b.raw_fill_bytes = fill;
  b.raw_stall = stall;
  return b;
}

const std::string kSseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
const std::string kChunkedSseHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

std::string chunk_frame(const std::string& content) {
  json c = {{"id", "chatcmpl-raw"}, {"object", "chat.completion.chunk"}, {"created", 1700000000}, {"model", "served"}};
  c["choices"] = json::array({{{"index", 0}, {"delta", {{"content", content}}}, {"finish_reason", nullptr}}});
  return "data: " + c.dump() + "\n\n";
}

std::string http_chunk(const std::string& bytes) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  return size + bytes + "\r\n";
}

// The stream's last error event's code ("" when none) and whether [DONE] came last.
struct Ending {
  std::string error_code;
  bool done_last = false;
  std::vector<std::string> contents;
};
Ending ending(const std::vector<std::string>& frames) {
  Ending e;
  for (const auto& p : data_payloads(frames)) {
    auto j = json::parse(p, nullptr, false);
    if (j.is_object() && j.contains("error")) e.error_code = j["error"].value("code", "?");
    if (j.is_object() && j.contains("choices") && !j["choices"].empty())
      e.contents.push_back(j["choices"][0]["delta"].value("content", ""));
  }
  e.done_last = !frames.empty() && frames.back() == "data: [DONE]";
  return e;
}

// Every line of every frame the client got is a comment or a `data:` line (a non-JSON
// event of several lines stays one event of several `data:` lines): framing survived.
void expect_clean_framing(const std::vector<std::string>& frames) {
  for (const auto& f : frames) {
    for (std::size_t at = 0; at <= f.size();) {
      const std::size_t nl = std::min(f.find('\n', at), f.size());
      const std::string line = f.substr(at, nl - at);
      EXPECT_TRUE(line.rfind(":", 0) == 0 || line.rfind("data: ", 0) == 0) << line.substr(0, 200);
      at = nl + 1;
    }
  }
}

}  // namespace

// 1. Connection refused: 502 for whole and streamed requests; the healthy model is unaffected.
TEST(E2eFault, RefusedConnectionIs502AndOthersAreServed) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  for (int i = 0; i < 20; ++i) {
    expect_error(rig.chat("refused", false), 502, "err_backend_unavailable");
    expect_error(rig.chat("refused", true), 502, "err_backend_unavailable");
  }
  rig.expect_healthy_served();
  rig.expect_rss_near(baseline, "refused");
}

// 2. A backend that accepts and never answers: 504 after CHAT_PROXY_BACKEND_TIMEOUT_MS, its
// connection closed; while it hangs, the healthy model is served.
TEST(E2eFault, AcceptedButNeverAnsweredIs504AndOthersAreServedMeanwhile) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  FakeOpenAI::Behavior b;
  b.stall_before_headers = true;
  rig.bad.set_behavior(b);
  auto whole = std::async(std::launch::async, [&] { return rig.chat("faulty", false); });
  auto streamed = std::async(std::launch::async, [&] { return rig.chat("faulty", true); });
  ASSERT_TRUE(rig.bad.wait_for_requests(2, 10s));
  rig.expect_healthy_served();  // while both hang
  expect_error(whole.get(), 504, "err_backend_timeout");
  expect_error(streamed.get(), 504, "err_backend_timeout");
  EXPECT_TRUE(rig.bad.wait_for_client_disconnect(5s, 2).has_value()) << "the hung connections were not closed";
  rig.expect_rss_near(baseline, "never answers");
}

// 3. Headers, then silence: a stream is a 504 (nothing had gone to the client yet), a whole
// reply too (its body never completes within the backend timeout).
TEST(E2eFault, HeadersThenSilenceIs504AndOthersAreServedMeanwhile) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  rig.bad.set_behavior(raw(kChunkedSseHead, 0, true));
  auto streamed = std::async(std::launch::async, [&] { return rig.chat("faulty", true); });
  ASSERT_TRUE(rig.bad.wait_for_requests(1, 10s));
  rig.expect_healthy_served();
  expect_error(streamed.get(), 504, "err_backend_timeout");

  rig.bad.set_behavior(raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":", 0, true));
  auto whole = std::async(std::launch::async, [&] { return rig.chat("faulty", false); });
  ASSERT_TRUE(rig.bad.wait_for_requests(2, 10s));
  rig.expect_healthy_served();
  expect_error(whole.get(), 504, "err_backend_timeout");
  EXPECT_TRUE(rig.bad.wait_for_client_disconnect(5s, 2).has_value());
  rig.expect_rss_near(baseline, "headers then silence");
}

// 4 + 5. Malformed SSE (unknown fields, lines without a colon, bare CR line ends, binary
// bytes, an event cut off by EOF) and data that is not JSON: the valid chunks arrive, the
// framing the client sees stays `data:` lines and comments, and the stream ends with [DONE].
TEST(E2eFault, MalformedSseAndInvalidJsonChunksKeepTheFramingAndEndWithDone) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  std::string body = kSseHead;
  body += ": a comment\n\nevent:\nid: 7\nretry: banana\n" + chunk_frame("one");
  body += "data:\n\nno colon on this line\n\n\xff\xfe\x01 binary: \x02\n\n";
  body += "data: {\"choices\":[{\"delta\":{\"content\":\"cut\"\n\n";  // truncated JSON
  body += "data: not json at all\ndata: second line\n\n";
  body += "data: {\"choices\": [}\r\r";                                  // invalid, CR line ends
  body += chunk_frame("two");
  body += "data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"three\"}}]}";  // no blank line: EOF ends it
  rig.bad.set_behavior(raw(body));
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "faulty").dump(), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  expect_clean_framing(frames);
  auto e = ending(frames);
  EXPECT_TRUE(e.done_last);
  EXPECT_EQ(e.error_code, "");
  EXPECT_EQ(e.contents, (std::vector<std::string>{"one", "two", "three"}));
  for (const auto& p : data_payloads(frames)) {
    auto j = json::parse(p, nullptr, false);
    if (j.is_object() && j.contains("model")) {
      EXPECT_EQ(j["model"], "faulty");
    }
  }
  // A whole reply that is not JSON is passed on as the backend sent it, not a crash.
  const std::string junk = "{\"choices\": [oops";
  rig.bad.set_behavior(raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(junk.size()) + "\r\n\r\n" + junk));
  auto r = rig.chat("faulty", false);
  EXPECT_NE(r.status, 0) << "no reply";
  rig.expect_healthy_served();
  rig.expect_rss_near(baseline, "malformed SSE");
}

// 6. One 50 MiB SSE line without a newline, after a good chunk: the stream ends with an
// err_backend_error event and [DONE] once the line passes CHAT_PROXY_MAX_SSE_EVENT_BYTES
// (16 MiB by default) — the proxy closes the backend instead of reading the rest — and the
// buffer is gone afterwards.
TEST(E2eFault, FiftyMebibyteLineIsAnErrorEventAndItsBufferIsFreed) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  rig.bad.set_behavior(raw(kSseHead + chunk_frame("before") + "data: {\"x\":\"", 50u << 20));
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "faulty").dump(), 60s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  auto e = ending(frames);
  EXPECT_EQ(e.contents, std::vector<std::string>{"before"});
  EXPECT_EQ(e.error_code, "err_backend_error");
  EXPECT_TRUE(e.done_last);
  EXPECT_LT(c.raw_body().size(), 64u * 1024) << "the line reached the client";
  EXPECT_TRUE(rig.bad.wait_for_client_disconnect(10s).has_value()) << "the proxy read the whole line";
  rig.expect_healthy_served();
  rig.expect_rss_near(baseline, "50 MiB line (default limit)");
}

// 6b. The same line with the event limit raised above it: the proxy holds the whole line
// (as configured), the backend then goes silent, the idle timeout ends the stream — and the
// 50 MiB are given back.
TEST(E2eFault, FiftyMebibyteLineUnderARaisedLimitIsFreedAfterTheStream) {
  FaultRig rig(Env{{"CHAT_PROXY_MAX_SSE_EVENT_BYTES", std::to_string(64u << 20)}});
  const auto baseline = rig.warm_baseline_kib();
  rig.bad.set_behavior(raw(kSseHead + chunk_frame("before") + "data: {\"x\":\"", 50u << 20, true));
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "faulty").dump(), 60s);
  ASSERT_EQ(c.status(), 200);
  auto e = ending(c.rest());
  EXPECT_EQ(e.error_code, "err_backend_timeout");
  EXPECT_TRUE(e.done_last);
  rig.expect_healthy_served();
  rig.expect_rss_near(baseline, "50 MiB line (limit 64 MiB)");
}

// 7. The backend closes in the middle of an HTTP chunk (and of an SSE event): what arrived
// whole is relayed, then an err_backend_unavailable event and [DONE].
TEST(E2eFault, CloseMidChunkIsAnErrorEventAfterTheWholeChunks) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  const std::string partial = chunk_frame("lost");
  rig.bad.set_behavior(raw(kChunkedSseHead + http_chunk(chunk_frame("kept")) + "400\r\n" + partial.substr(0, 30)));
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "faulty").dump(), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  expect_clean_framing(frames);
  auto e = ending(frames);
  EXPECT_EQ(e.contents, std::vector<std::string>{"kept"});
  EXPECT_EQ(e.error_code, "err_backend_unavailable");
  EXPECT_TRUE(e.done_last);
  // A whole reply cut short of its Content-Length is a 502, not a truncated 200.
  rig.bad.set_behavior(raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"id\":\"x\""));
  expect_error(rig.chat("faulty", false), 502, "err_backend_unavailable");
  rig.expect_healthy_served();
  rig.expect_rss_near(baseline, "close mid-chunk");
}

// 8. Bytes that are not HTTP at all, and HTTP with a broken head: 502 for both kinds of
// request; the connection is not pooled (the next request works).
TEST(E2eFault, GarbageInsteadOfHttpIs502) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  const std::vector<std::string> garbage = {
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello to a plain-HTTP client"s,
      "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
      "\0\0\0\0\0\0\0\0\0\0\0\0"s,
      "HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\nzz\r\n",
      "HTTP/9.9 999999 What\r\n\r\n",
  };
  for (const auto& g : garbage) {
    rig.bad.set_behavior(raw(g));
    auto whole = rig.chat("faulty", false);
    auto streamed = rig.chat("faulty", true);
    expect_error(whole, 502, "err_backend_unavailable");
    expect_error(streamed, 502, "err_backend_unavailable");
  }
  rig.expect_healthy_served();
  rig.bad.set_behavior(FakeOpenAI::Behavior{});
  EXPECT_EQ(rig.chat("faulty", false).status, 200) << "the faulty backend, healthy again, is served";
  rig.expect_rss_near(baseline, "garbage HTTP");
}

// 9. A 10 GB Content-Length: a whole reply is refused at once (over the 256 MiB reply
// limit) without waiting for or reserving the body; a stream that announces it relays what
// comes and ends with an error event when the backend closes early.
TEST(E2eFault, TenGigabyteContentLengthIsRefusedWithoutReservingIt) {
  FaultRig rig;
  const auto baseline = rig.warm_baseline_kib();
  const std::string ten_gb = "10737418240";
  rig.bad.set_behavior(raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + ten_gb +
                               "\r\n\r\n{\"id\":",
                           0, true));
  const auto asked = std::chrono::steady_clock::now();
  auto r = rig.chat("faulty", false);
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 1500ms) << "waited for a body it would refuse";
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_NE(r.body.find("err_backend"), std::string::npos) << r.body;

  // 10 GB, and 1 TiB (more than any machine could reserve for it).
  for (const std::string& length : {ten_gb, std::string("1099511627776")}) {
    rig.bad.set_behavior(raw("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + length +
                             "\r\n\r\n" + chunk_frame("small")));
    std::vector<std::string> frames;
    try {
      SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "faulty").dump(), 30s);
      EXPECT_EQ(c.status(), 200) << length;
      frames = c.rest();
    } catch (const std::exception& ex) {
      ADD_FAILURE() << length << ": no reply: " << ex.what();
    }
    auto e = ending(frames);
    EXPECT_EQ(e.contents, std::vector<std::string>{"small"}) << length;
    EXPECT_EQ(e.error_code, "err_backend_unavailable") << length;
    EXPECT_TRUE(e.done_last) << length;
  }
  rig.expect_healthy_served();
  rig.expect_rss_near(baseline, "10 GB Content-Length");
}

// 13. The registry file replaced by a directory, then the whole registry directory removed,
// while serving: each is reported (/v1/health degraded, naming the problem) and the last good
// registry keeps serving. (A layer file deleted on purpose is gone with its entries: that is
// documented in docs/registry.md and tested in RegistryLoader.RemovedLayerIsGoneNotBroken.)
TEST(E2eFault, RegistryReplacedByADirectoryOrRemovedKeepsTheLastGood) {
  FaultRig rig(Env{{"CHAT_PROXY_REGISTRY_POLL_MS", "50"}});
  rig.expect_healthy_served();
  // The reload logs its issues; /v1/health then reports them.
  auto health_error = [&](const std::string& expected) {
    if (!rig.proxy->wait_for_log(expected, 10s)) return json(nullptr);
    auto h = json::parse(http_call(rig.port(), "GET", "/v1/health").body, nullptr, false);
    const auto reg = h.value("registry", json::object());
    if (!reg.value("error", json(nullptr)).is_string() ||
        reg["error"].get<std::string>().find(expected) == std::string::npos)
      return json(nullptr);
    return h;
  };
  const fs::path file = rig.registry_dir() / "model_registry.json";
  fs::remove(file);
  fs::create_directory(file);
  auto h = health_error("not a regular file");
  ASSERT_TRUE(h.is_object()) << "a layer replaced by a directory was not reported";
  EXPECT_EQ(h["status"], "degraded");
  EXPECT_EQ(h["registry"]["models"], 3) << h.dump();
  rig.expect_healthy_served();

  fs::remove_all(rig.registry_dir());
  h = health_error("registry directory not found");
  ASSERT_TRUE(h.is_object()) << "a vanished registry directory was not reported";
  EXPECT_EQ(h["registry"]["models"], 3) << h.dump();
  rig.expect_healthy_served();
  auto models = json::parse(http_call(rig.port(), "GET", "/v1/models").body, nullptr, false);
  EXPECT_EQ(models["data"].size(), 3u) << models.dump();
}
