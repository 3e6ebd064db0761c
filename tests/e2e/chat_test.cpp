// End-to-end: the built daemon relaying chat/completions/embeddings to the in-process fake
// OpenAI-compatible upstream (tests/fakes), streaming and whole, with every failure mode.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fakes/fake_openai.hpp"
#include "imageworks/asio.hpp"
#include "support/chat_rig.hpp"
#include "support/proxy_process.hpp"
#include "support/sse_client.hpp"
#include "support/test_support.hpp"

using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;
namespace beast = boost::beast;

TEST(E2eChat, NonStreamRestoresModelAndSendsServedId) {
  ChatRig rig;
  auto r = rig.chat(chat_body(false));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  auto j = json::parse(r.body);
  EXPECT_EQ(j["model"], "Fake Chat 7b");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
  auto reqs = rig.fake.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].target, "/v1/chat/completions");
  EXPECT_EQ(reqs[0].json()["model"], "served/fake-7b");
  EXPECT_EQ(reqs[0].json()["messages"][0]["content"], "hi");
}

// "stream": null is "not set" (OpenAI's API allows it; some clients serialise every field):
// a whole reply, with the body relayed as the client wrote it. A string is still a 400.
TEST(E2eChat, StreamNullMeansAWholeReply) {
  ChatRig rig;
  auto body = chat_body(false);
  body["stream"] = nullptr;
  auto r = rig.chat(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(json::parse(r.body)["object"], "chat.completion");
  ASSERT_EQ(rig.fake.requests().size(), 1u);
  EXPECT_TRUE(rig.fake.requests()[0].json()["stream"].is_null());
  body["stream"] = "true";
  expect_error(rig.chat(body), 400, "err_bad_request");
  EXPECT_EQ(rig.fake.requests().size(), 1u);
}

// 8 MiB of content: the upstream body comes in many reads and the reply is more than the
// client socket takes at once, so the write finishes asynchronously after the fast attempt.
TEST(E2eChat, LargeWholeReplyArrivesIntact) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.text = std::string(1024, 'x') + "\u00e9\"";  // escapes in the content survive as they are
  b.chunks = 8 * 1024;
  rig.fake.set_behavior(b);
  auto r = http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(false).dump(), {}, 60s);
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
  auto j = json::parse(r.body);
  EXPECT_EQ(j["model"], "Fake Chat 7b");
  const std::string content = j["choices"][0]["message"]["content"];
  std::string expected;
  for (int i = 0; i < b.chunks; ++i) expected += std::string(1024, 'x') + "\u00e9\"";
  EXPECT_EQ(content.size(), expected.size());
  EXPECT_TRUE(content == expected);
}

// Client headers pass through to the backend, except hop-by-hop ones and those the proxy
// sets itself (its own Host, Content-Length, Accept, request id; no client Authorization).
TEST(E2eChat, ClientHeadersPassThroughButHopByHopOnesDoNot) {
  ChatRig rig;
  auto r = http_call(rig.port(), "POST", "/v1/chat/completions", chat_body(false).dump(),
                     {{"X-OpenWebUI-Chat-Id", "chat-42"}, {"X-Custom", "a b"}, {"TE", "trailers"},
                      {"Accept-Encoding", "gzip"}, {"Authorization", "Bearer client-secret"},
                      {"Proxy-Authorization", "Basic xyz"}, {"x-request-id", "client-req-7"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-request-id"), "client-req-7");
  auto reqs = rig.fake.requests();
  ASSERT_EQ(reqs.size(), 1u);
  const auto& up = reqs[0];
  EXPECT_EQ(up.header("x-openwebui-chat-id"), "chat-42");
  EXPECT_EQ(up.header("x-custom"), "a b");
  EXPECT_EQ(up.header("x-request-id"), "client-req-7");
  EXPECT_EQ(up.header("te"), "");
  EXPECT_EQ(up.header("accept-encoding"), "");
  EXPECT_EQ(up.header("authorization"), "");
  EXPECT_EQ(up.header("proxy-authorization"), "");
  EXPECT_EQ(up.header("accept"), "application/json");
  int hosts = 0, request_ids = 0;
  for (const auto& [name, value] : up.headers) {
    hosts += beast::iequals(name, "host");
    request_ids += beast::iequals(name, "x-request-id");
  }
  EXPECT_EQ(hosts, 1);
  EXPECT_EQ(request_ids, 1);
}

TEST(E2eChat, ModelResolvesByLogicalDisplayAndServedNames) {
  ChatRig rig;
  for (std::string name : {"fake-chat", "FAKE-CHAT", "served/fake-7b", "fake chat 7b", "Fake Chat"}) {
    auto r = rig.chat(chat_body(false, name));
    ASSERT_EQ(r.status, 200) << name << ": " << r.body;
    EXPECT_EQ(json::parse(r.body)["model"], name) << "the response names the model as the client did";
  }
  expect_error(rig.chat(chat_body(false, "nope")), 404, "err_model_not_found");
}

TEST(E2eChat, StreamOf200ChunksArrivesCompleteAndInOrder) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 200;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  ASSERT_EQ(c.status(), 200);
  EXPECT_EQ(c.header("content-type"), "text/event-stream");
  auto frames = c.rest();
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto payloads = data_payloads(frames);
  std::string text;
  std::string id;
  for (auto& p : payloads) {
    auto j = json::parse(p);  // one line of JSON per frame
    EXPECT_EQ(j["model"], "Fake Chat 7b");
    EXPECT_FALSE(j.contains("usage") && j["choices"].empty()) << "usage chunk the client did not ask for";
    if (id.empty()) id = j["id"];
    EXPECT_EQ(j["id"], id);
    auto& d = j["choices"][0]["delta"];
    if (d.contains("content") && d["content"].is_string()) text += d["content"].get<std::string>();
  }
  std::string expected;
  for (int i = 0; i < 200; ++i) expected += b.text;
  EXPECT_EQ(text, expected);
  auto up = rig.fake.requests().at(0).json();
  EXPECT_EQ(up["stream_options"]["include_usage"], true) << "the proxy asks for usage upstream";
}

TEST(E2eChat, UsageChunkKeptWhenTheClientAskedForIt) {
  ChatRig rig;
  auto body = chat_body(true);
  body["stream_options"] = {{"include_usage", true}};
  SseClient c(rig.port(), "/v1/chat/completions", body.dump());
  auto payloads = data_payloads(c.rest());
  ASSERT_FALSE(payloads.empty());
  auto last = json::parse(payloads.back());
  EXPECT_TRUE(last["choices"].empty());
  EXPECT_EQ(last["usage"]["prompt_tokens"], 7);
}

TEST(E2eChat, FirstChunkReachesTheClientBeforeTheUpstreamSendsTheSecond) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 3;
  b.gate_chunks = true;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  // The fake sent the role chunk and now waits for release_chunk(): it reaches us anyway.
  auto first = c.next_frame();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(rig.fake.frames_sent(), 1u);
  EXPECT_EQ(json::parse(first->substr(6))["choices"][0]["delta"]["role"], "assistant");
  rig.fake.release_chunk();
  auto second = c.next_frame();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(rig.fake.frames_sent(), 2u);
  rig.fake.release_all();
  auto frames = c.rest();
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back(), "data: [DONE]");
}

TEST(E2eChat, EventsSplitAtEveryByteAndCrlfAreReassembled) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 5;
  b.split_every_byte = true;
  b.crlf = true;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  auto frames = c.rest();
  auto payloads = data_payloads(frames);
  ASSERT_EQ(payloads.size(), 7u);  // role + 5 content + finish
  for (auto& p : payloads) EXPECT_EQ(json::parse(p)["model"], "Fake Chat 7b");
  EXPECT_EQ(frames.back(), "data: [DONE]");
}

TEST(E2eChat, LlamaCppPerChunkCreatedIsPinned) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 4;
  b.chunk_delay = 1100ms / 4;  // llama.cpp stamps each chunk with the current second
  b.llamacpp_style = true;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "fake-llama").dump());
  auto payloads = data_payloads(c.rest());
  ASSERT_GE(payloads.size(), 3u);
  auto created = json::parse(payloads.front())["created"];
  for (auto& p : payloads) EXPECT_EQ(json::parse(p)["created"], created);
  EXPECT_EQ(rig.fake.requests().at(0).target, "/v1/chat/completions") << "base_url ending in /v1/ is not doubled";
}

TEST(E2eChat, UnreachableBackendIs502) {
  ChatRig rig;
  expect_error(rig.chat(chat_body(false, "dead")), 502, "err_backend_unavailable");
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "dead").dump());
  EXPECT_EQ(c.status(), 502);
}

TEST(E2eChat, NoFirstByteInTimeIs504) {
  ChatRig rig(Env{{"CHAT_PROXY_BACKEND_TIMEOUT_MS", "300"}});
  FakeOpenAI::Behavior b;
  b.stall_before_headers = true;
  rig.fake.set_behavior(b);
  expect_error(rig.chat(chat_body(false)), 504, "err_backend_timeout");
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  EXPECT_EQ(c.status(), 504);
}

TEST(E2eChat, UpstreamErrorsKeepStatusAndMessageWithStringCodes) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.status = 400;
  b.error_body = R"({"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400})";
  rig.fake.set_behavior(b);
  auto r = rig.chat(chat_body(false));
  expect_error(r, 400, "err_bad_request");
  EXPECT_EQ(json::parse(r.body)["error"]["message"], "max_tokens is too large");
  b.status = 500;
  b.error_body = R"({"error":{"message":"CUDA out of memory","type":"server_error","code":500}})";
  rig.fake.set_behavior(b);
  r = rig.chat(chat_body(true));
  expect_error(r, 500, "err_backend_error");
  EXPECT_EQ(json::parse(r.body)["error"]["message"], "CUDA out of memory");
  b.status = 503;
  b.error_body = R"({"error":{"message":"Loading model","type":"unavailable_error","code":503}})";
  rig.fake.set_behavior(b);
  expect_error(rig.chat(chat_body(false)), 503, "err_backend_unavailable");
}

TEST(E2eChat, FailureAfterFirstByteEndsWithErrorEventAndDone) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 10;
  b.close_after_chunks = 2;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  ASSERT_EQ(c.status(), 200);
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto err = json::parse(frames[frames.size() - 2].substr(6));
  EXPECT_EQ(err["error"]["code"], "err_backend_unavailable");
}

TEST(E2eChat, StalledStreamHitsTheIdleTimeout) {
  ChatRig rig(Env{{"CHAT_PROXY_STREAM_IDLE_TIMEOUT_MS", "300"}});
  FakeOpenAI::Behavior b;
  b.chunks = 10;
  b.stall_after_chunks = 2;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  EXPECT_EQ(json::parse(frames[frames.size() - 2].substr(6))["error"]["code"], "err_backend_timeout");
}

TEST(E2eChat, LlamaCppErrorLineBecomesAnErrorEvent) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 5;
  b.error_after_chunks = 1;
  b.llamacpp_style = true;
  rig.fake.set_behavior(b);
  SseClient c(rig.port(), "/v1/chat/completions", chat_body(true, "fake-llama").dump());
  auto frames = c.rest();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back(), "data: [DONE]");
  auto err = json::parse(frames[frames.size() - 2].substr(6));
  ASSERT_TRUE(err.contains("error")) << frames[frames.size() - 2];
  EXPECT_TRUE(err["error"]["code"].is_string());
}

TEST(E2eChat, ClientDisconnectClosesTheUpstreamWithinOneSecond) {
  ChatRig rig;
  FakeOpenAI::Behavior b;
  b.chunks = 1000;
  b.chunk_delay = 20ms;
  rig.fake.set_behavior(b);
  auto c = std::make_unique<SseClient>(rig.port(), "/v1/chat/completions", chat_body(true).dump());
  ASSERT_TRUE(c->next_frame().has_value());
  auto left = std::chrono::steady_clock::now();
  c->close();
  auto noticed = rig.fake.wait_for_client_disconnect(5s);
  ASSERT_TRUE(noticed.has_value()) << "the upstream never saw the proxy close its connection";
  EXPECT_LT(*noticed - left, 1s);
  // Also while the upstream is still silent (no chunk to fail a write on).
  b.stall_before_headers = true;
  rig.fake.set_behavior(b);
  imageworks::asio::io_context ioc;
  imageworks::tcp::socket raw(ioc);
  raw.connect({imageworks::asio::ip::make_address("127.0.0.1"), rig.port()});
  std::string body = chat_body(false).dump();
  std::string request = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  imageworks::asio::write(raw, imageworks::asio::buffer(request));
  ASSERT_TRUE(rig.fake.wait_for_requests(2, 5s));
  left = std::chrono::steady_clock::now();
  raw.close();
  noticed = rig.fake.wait_for_client_disconnect(5s, 2);
  ASSERT_TRUE(noticed.has_value());
  EXPECT_LT(*noticed - left, 1s);
}

TEST(E2eChat, ApiKeyFromTheEntryAndFromItsEnvVariable) {
  ChatRig rig({}, R"(, "api_key": "sk-right")");
  FakeOpenAI::Behavior b;
  b.required_api_key = "sk-right";
  rig.fake.set_behavior(b);
  EXPECT_EQ(rig.chat(chat_body(false)).status, 200);
  EXPECT_EQ(rig.fake.requests().at(0).header("authorization"), "Bearer sk-right");

  ChatRig by_env(Env{{"FAKE_UPSTREAM_KEY", "sk-env"}}, R"(, "api_key_env": "FAKE_UPSTREAM_KEY")");
  b.required_api_key = "sk-env";
  by_env.fake.set_behavior(b);
  EXPECT_EQ(by_env.chat(chat_body(false)).status, 200);
  b.required_api_key = "sk-other";
  by_env.fake.set_behavior(b);
  expect_error(by_env.chat(chat_body(false)), 401, "err_unauthorized");
}

TEST(E2eChat, CompletionsEmbeddingsAndGenericRelay) {
  ChatRig rig;
  auto r = http_call(rig.port(), "POST", "/v1/completions", R"({"model":"fake-chat","prompt":"hi"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["model"], "fake-chat");
  r = http_call(rig.port(), "POST", "/v1/embeddings", R"({"model":"fake-chat","input":["a","b"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["data"].size(), 2u);
  r = http_call(rig.port(), "POST", "/v1/audio/speech", R"({"model":"fake-chat","input":"x"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto reqs = rig.fake.requests();
  EXPECT_EQ(reqs.back().target, "/v1/audio/speech");
  EXPECT_EQ(reqs.back().json()["model"], "served/fake-7b");
  r = http_call(rig.port(), "POST", "/chat/completions", chat_body(false).dump());
  EXPECT_EQ(r.status, 200) << "bare-URL alias";
}

TEST(E2eChat, KeepAliveConnectionsToTheUpstreamArePooled) {
  ChatRig rig(Env{{"CHAT_PROXY_THREADS", "1"}});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(rig.chat(chat_body(i % 2 == 0)).status, 200);
  EXPECT_EQ(rig.fake.connections_accepted(), 1u);
}

TEST(E2eChat, BadInputGetsClear400s) {
  ChatRig rig;
  auto post = [&](const std::string& body) { return http_call(rig.port(), "POST", "/v1/chat/completions", body); };
  expect_error(post(""), 400, "err_bad_request");
  expect_error(post("{\"model\": "), 400, "err_bad_request");
  expect_error(post("[1,2]"), 400, "err_bad_request");
  expect_error(post(R"({"messages":[]})"), 400, "err_bad_request");
  auto r = post(R"({"model": 42, "messages": []})");
  expect_error(r, 400, "err_bad_request");
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "model");
  expect_error(post(R"({"model": "fake-chat", "messages": "hi"})"), 400, "err_bad_request");
  expect_error(post(R"({"model": "fake-chat", "messages": [], "stream": "yes"})"), 400, "err_bad_request");
  expect_error(post("\xff\xfe garbage"), 400, "err_bad_request");
  EXPECT_TRUE(rig.fake.requests().empty()) << "bad requests never reach the backend";
  EXPECT_EQ(http_call(rig.port(), "GET", "/v1/health").status, 200);
}

TEST(E2eChat, ExpectContinueIsAnsweredAtOnce) {
  ChatRig rig;
  imageworks::asio::io_context ioc;
  imageworks::tcp::socket sock(ioc);
  sock.connect({imageworks::asio::ip::make_address("127.0.0.1"), rig.port()});
  std::string body = chat_body(false).dump();
  std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Expect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  imageworks::asio::write(sock, imageworks::asio::buffer(head));
  // The interim reply arrives before any body byte was sent (the read blocks until it does).
  std::string got(25, '\0');
  imageworks::asio::read(sock, imageworks::asio::buffer(got));
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  imageworks::asio::write(sock, imageworks::asio::buffer(body));
  imageworks::beast::flat_buffer buf;
  imageworks::http::response<imageworks::http::string_body> res;
  imageworks::http::read(sock, buf, res);
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(json::parse(res.body())["model"], "Fake Chat 7b");
}

TEST(E2eChat, PooledConnectionClosedByTheBackendIsRetriedOnAFreshOne) {
  ChatRig rig(Env{{"CHAT_PROXY_THREADS", "1"}});
  ASSERT_EQ(rig.chat(chat_body(false)).status, 200);
  ASSERT_EQ(rig.fake.connections_accepted(), 1u);
  rig.fake.close_idle_connections();
  for (bool stream : {false, true}) {
    auto r = rig.chat(chat_body(stream));
    EXPECT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(rig.fake.connections_accepted(), 2u);
  EXPECT_EQ(rig.fake.requests().size(), 3u) << "each request reached the backend once";
}
