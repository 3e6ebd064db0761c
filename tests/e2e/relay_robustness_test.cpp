// End-to-end: the relay under clients and backends that misbehave (issue 7) — slow readers,
// clients that never read, ambiguous or ill-formed bodies, shutdown with streams open, and
// oversize SSE events. Each case goes through the built binary.
#include <csignal>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/chat_rig.hpp"
#include "support/sse_client.hpp"

using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// A backend that writes a long stream as fast as the proxy takes it.
FakeOpenAI::Behavior flood(int chunks, std::size_t chunk_bytes) {
  FakeOpenAI::Behavior b;
  b.chunks = chunks;
  b.text = std::string(chunk_bytes, 'x');
  return b;
}

struct StreamSummary {
  std::size_t content_chunks = 0, content_bytes = 0;
  std::vector<json> errors;
  bool done_last = false;
};

StreamSummary summarize(const std::vector<std::string>& frames) {
  StreamSummary s;
  for (const auto& p : data_payloads(frames)) {
    auto j = json::parse(p, nullptr, false);
    if (j.contains("error")) {
      s.errors.push_back(j);
      continue;
    }
    if (!j.contains("choices") || j["choices"].empty()) continue;
    const auto& delta = j["choices"][0]["delta"];
    if (delta.contains("content") && delta["content"].is_string() &&
        !delta["content"].get<std::string>().empty()) {
      ++s.content_chunks;
      s.content_bytes += delta["content"].get<std::string>().size();
    }
  }
  s.done_last = !frames.empty() && frames.back() == "data: [DONE]";
  return s;
}

}  // namespace

// §5 "Slow clients": the idle timeout measures the backend's silence only. The client stops
// reading for 4× the idle timeout while the backend floods 16 MiB; the proxy waits for it
// (holding the backend back, not buffering) and the whole stream arrives with [DONE].
TEST(E2eRelay, SlowReaderGetsTheWholeStreamAndNoBackendTimeout) {
  ChatRig rig(Env{{"CHAT_PROXY_STREAM_IDLE_TIMEOUT_MS", "500"}, {"CHAT_PROXY_THREADS", "1"}});
  constexpr int kChunks = 4096;
  constexpr std::size_t kChunkBytes = 4096;
  rig.fake.set_behavior(flood(kChunks, kChunkBytes));
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump(), 60s);
  ASSERT_EQ(c.status(), 200);
  const std::size_t rss_before = resident_kib(rig.proxy->pid());
  // The scenario itself: a client that pauses for 4 × the idle timeout. Once the socket
  // buffers are full the backend is held back: no frame goes out in the second half.
  std::this_thread::sleep_for(1000ms);
  const std::size_t frames_mid_pause = rig.fake.frames_sent();
  std::this_thread::sleep_for(1000ms);
  const std::size_t frames_end_pause = rig.fake.frames_sent();
  const std::size_t rss_after = resident_kib(rig.proxy->pid());
  EXPECT_EQ(frames_mid_pause, frames_end_pause) << "the backend kept writing while the client did not read";
  EXPECT_LT(frames_end_pause, static_cast<std::size_t>(kChunks));
  EXPECT_LT(rss_after, rss_before + 4 * 1024) << "the proxy buffered what the client did not take";

  auto s = summarize(c.rest());
  EXPECT_TRUE(s.errors.empty()) << s.errors.front().dump();
  EXPECT_EQ(s.content_chunks, static_cast<std::size_t>(kChunks));
  EXPECT_EQ(s.content_bytes, kChunks * kChunkBytes);
  EXPECT_TRUE(s.done_last);
  EXPECT_EQ(rig.fake.client_disconnects(), 0u);
}

// A client that takes no bytes for CHAT_PROXY_CLIENT_WRITE_TIMEOUT_MS is disconnected and its
// upstream request closed; the proxy goes on serving others.
TEST(E2eRelay, ClientThatNeverReadsIsDisconnectedAndTheUpstreamClosed) {
  ChatRig rig(Env{{"CHAT_PROXY_CLIENT_WRITE_TIMEOUT_MS", "1000"}, {"CHAT_PROXY_THREADS", "1"}});
  rig.fake.set_behavior(flood(4096, 4096));
  const auto started = std::chrono::steady_clock::now();
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump(), 60s);
  ASSERT_EQ(c.status(), 200);
  auto gone = rig.fake.wait_for_client_disconnect(30s);
  ASSERT_TRUE(gone.has_value()) << "the proxy kept the upstream open for a client that never reads";
  EXPECT_GE(*gone - started, 1000ms) << "cut off before the write timeout";
  EXPECT_TRUE(rig.proxy->wait_for_log("accepted no bytes for 1000 ms", 10s));

  auto s = summarize(c.rest());  // what the kernel still held, then the closed connection
  EXPECT_FALSE(s.done_last);
  EXPECT_LT(s.content_chunks, 4096u);

  rig.fake.set_behavior(FakeOpenAI::Behavior{});
  auto r = rig.chat(chat_body(false));
  EXPECT_EQ(r.status, 200) << r.body;
}

// §9: a top-level member given twice is refused before anything goes upstream — a backend
// that reads the first "model" would otherwise reach a model the registry does not offer.
TEST(E2eRelay, DuplicateTopLevelMembersAre400AndNothingGoesUpstream) {
  ChatRig rig;
  const std::string msgs = R"("messages":[{"role":"user","content":"hi"}])";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"model":"dead",)" + msgs + R"(,"model":"Fake Chat 7b"})", "model"},
      {R"({"model":"Fake Chat 7b","mod\u0065l":"dead",)" + msgs + "}", "model"},
      {R"({"model":"Fake Chat 7b",)" + msgs + "," + msgs + "}", "messages"},
      {R"({"model":"Fake Chat 7b",)" + msgs + R"(,"stream":false,"stream":true})", "stream"},
      {R"({"model":"Fake Chat 7b",)" + msgs +
           R"(,"stream":true,"stream_options":{"include_usage":false},"stream_options":{}})",
       "stream_options"},
      {R"({"model":"Fake Chat 7b",)" + msgs + R"(,"tools":[],"tools":[]})", "tools"},
      {R"({"model":"Fake Chat 7b",)" + msgs + R"(,"temperature":1,"temperature":0})", "temperature"},
  };
  for (const auto& [body, key] : cases) {
    auto r = http_call(rig.port(), "POST", "/v1/chat/completions", body);
    expect_error(r, 400, "err_bad_request");
    auto j = json::parse(r.body, nullptr, false);
    EXPECT_EQ(j["error"]["param"], key) << body;
    EXPECT_NE(j["error"]["message"].get<std::string>().find("'" + key + "' occurs more than once"),
              std::string::npos)
        << r.body;
  }
  // The same key nested inside a value is no duplicate.
  auto ok = http_call(rig.port(), "POST", "/v1/chat/completions",
                      R"({"model":"Fake Chat 7b","metadata":{"model":"x"},)" + msgs + "}");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(rig.fake.requests().size(), 1u) << "only the valid request reached the backend";
}

// RFC 8259 §8.1: strings that are not UTF-8 are not JSON; the proxy answers 400 itself.
TEST(E2eRelay, InvalidUtf8Is400AndNothingGoesUpstream) {
  ChatRig rig;
  const std::vector<std::string> bad = {
      "\xC3\x28",          // a lead byte without its continuation
      "\xC0\xAF",          // overlong '/'
      "\xE0\x80\xAF",      // overlong, 3 bytes
      "\xF0\x80\x80\xAF",  // overlong, 4 bytes
      "\xED\xA0\x80",      // a UTF-16 surrogate
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "\xE2\x82",          // truncated before the closing quote
      "\x80",              // a stray continuation byte
  };
  for (const auto& seq : bad) {
    const std::string body =
        R"({"model":"Fake Chat 7b","messages":[{"role":"user","content":"hi )" + seq + R"( there"}]})";
    auto r = http_call(rig.port(), "POST", "/v1/chat/completions", body);
    expect_error(r, 400, "err_bad_request");
    EXPECT_NE(r.body.find("not valid UTF-8"), std::string::npos) << r.body;
  }
  // Cut off at the very end of the body, inside a 4-byte sequence.
  auto cut = http_call(rig.port(), "POST", "/v1/chat/completions",
                       std::string(R"({"model":"Fake Chat 7b","messages":[{"role":"user","content":"x)") + "\xF0\x9F\x98");
  expect_error(cut, 400, "err_bad_request");
  EXPECT_TRUE(rig.fake.requests().empty());

  // Well-formed multi-byte text of every length goes through byte for byte.
  const std::string text = "h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF";
  auto good = http_call(rig.port(), "POST", "/v1/chat/completions",
                        R"({"model":"Fake Chat 7b","messages":[{"role":"user","content":")" + text + R"("}]})");
  EXPECT_EQ(good.status, 200) << good.body;
  ASSERT_EQ(rig.fake.requests().size(), 1u);
  EXPECT_EQ(rig.fake.requests()[0].json()["messages"][0]["content"], text);
}

// SIGTERM with a stream that outlives the grace period: the client's stream ends with an
// error event saying why and [DONE], the backend's connection is closed, and the exit is clean.
TEST(E2eRelay, ShutdownEndsAStreamThatOutlivesTheGraceWithAnErrorEventAndDone) {
  ChatRig rig(Env{{"CHAT_PROXY_SHUTDOWN_GRACE_MS", "300"}});
  FakeOpenAI::Behavior b;
  b.chunks = 5;
  b.gate_chunks = true;  // the backend sends the role chunk, then waits (for ever)
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump(), 30s);
  ASSERT_EQ(c.status(), 200);
  ASSERT_TRUE(c.next_frame().has_value());
  rig.proxy->signal(SIGTERM);
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto err = json::parse(frames[frames.size() - 2].substr(6), nullptr, false);
  ASSERT_TRUE(err.contains("error")) << frames[frames.size() - 2];
  EXPECT_EQ(err["error"]["code"], "err_backend_unavailable");
  EXPECT_EQ(err["error"]["message"], "proxy shutting down");
  EXPECT_TRUE(rig.fake.wait_for_client_disconnect(10s).has_value());
  auto code = rig.proxy->wait_exit(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  rig.fake.release_all();
}

// An SSE event over CHAT_PROXY_MAX_SSE_EVENT_BYTES ends the stream like any failure after
// the first byte: an error event and [DONE], never a dropped connection.
TEST(E2eRelay, OversizeSseEventBecomesAnErrorEventAndDone) {
  ChatRig rig(Env{{"CHAT_PROXY_MAX_SSE_EVENT_BYTES", "4096"}});
  FakeOpenAI::Behavior b;
  b.chunks = 3;
  b.text = std::string(8192, 'y');
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump(), 30s);
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  auto s = summarize(frames);
  EXPECT_TRUE(s.done_last);
  ASSERT_EQ(s.errors.size(), 1u);
  EXPECT_EQ(s.errors[0]["error"]["code"], "err_backend_error");
  EXPECT_NE(s.errors[0]["error"]["message"].get<std::string>().find("larger than 4096 bytes"), std::string::npos);
  EXPECT_EQ(s.content_chunks, 0u);
  // The proxy is fine afterwards.
  rig.fake.set_behavior(FakeOpenAI::Behavior{});
  EXPECT_EQ(rig.chat(chat_body(false)).status, 200);
}
