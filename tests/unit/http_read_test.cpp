// read_http / parse_buffered with RequestParser and UpstreamResponseParser over Beast's
// in-memory test stream: every split of the bytes, chunked bodies, limits, EOF rules, and the
// relay's "each piece as it arrives" reads.
#include <gtest/gtest.h>

#include <boost/beast/_experimental/test/stream.hpp>

#include <optional>
#include <string>

#include "imageworks/http_read.hpp"
#include "imageworks/request.hpp"
#include "imageworks/upstream.hpp"

namespace imageworks {
namespace {

using TestStream = beast::test::stream;

// Runs one read to completion on `ioc` and returns its error.
template <class Parser>
beast::error_code run_read(asio::io_context& ioc, TestStream& s, beast::flat_buffer& buf, Parser& p,
                           ReadUntil until) {
  beast::error_code ec;
  bool finished = false;
  asio::co_spawn(
      ioc,
      [&]() -> Task<void> {
        co_await read_http(s, buf, p, until, ec);
        finished = true;
      },
      asio::detached);
  ioc.restart();
  ioc.run();
  EXPECT_TRUE(finished);
  return ec;
}

constexpr std::string_view kRequest =
    "POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
    "Host: 127.0.0.1:8100\r\n"
    "Content-Type: application/json\r\n"
    "X-OpenWebUI-Chat-Id: abc\r\n"
    "x-request-id: my-id-1\r\n"
    "Content-Length: 14\r\n"
    "\r\n"
    "{\"model\":\"m1\"}";

TEST(RequestParser, ReadsEveryFieldAndTheBodyForAnyReadSize) {
  for (std::size_t read_size : {1u, 2u, 7u, 64u, 4096u}) {
    asio::io_context ioc;
    TestStream s(ioc, std::string(kRequest));
    s.close_remote();  // a read wanting more fails instead of waiting forever
    s.read_size(read_size);
    beast::flat_buffer buf;
    Request req;
    RequestParser p(req, 100);
    ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::message)) << read_size;
    EXPECT_EQ(req.method(), http::verb::post);
    EXPECT_EQ(req.method_string(), "POST");
    EXPECT_EQ(req.target(), "/v1/chat/completions?x=1");
    EXPECT_EQ(req.version(), 11u);
    EXPECT_TRUE(req.keep_alive());
    EXPECT_EQ(req.field_count(), 5u);
    EXPECT_EQ(req[http::field::content_type], "application/json");
    EXPECT_EQ(req["X-REQUEST-ID"], "my-id-1");
    EXPECT_EQ(req["x-openwebui-chat-id"], "abc");
    EXPECT_EQ(req["absent"], "");
    EXPECT_EQ(req.body(), R"({"model":"m1"})");
    std::string names;
    for (const auto& f : req) names += std::string(f.name_string()) + ";";
    EXPECT_EQ(names, "Host;Content-Type;X-OpenWebUI-Chat-Id;x-request-id;Content-Length;");
  }
}

TEST(RequestParser, HeaderReadLeavesTheBodyForParseBuffered) {
  asio::io_context ioc;
  TestStream s(ioc, std::string(kRequest));
  s.close_remote();
  beast::flat_buffer buf;
  Request req;
  RequestParser p(req, 100);
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::header));
  EXPECT_TRUE(p.is_header_done());
  EXPECT_FALSE(p.is_done());
  EXPECT_EQ(req.body(), "");
  beast::error_code ec;
  EXPECT_TRUE(parse_buffered(buf, p, ReadUntil::message, ec));  // no read needed
  EXPECT_FALSE(ec);
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(req.body(), R"({"model":"m1"})");
  EXPECT_EQ(buf.size(), 0u);
}

TEST(RequestParser, ChunkedBodyAndConnectionClose) {
  asio::io_context ioc;
  TestStream s(ioc,
               "POST /v1/embeddings HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\r\n");
  s.close_remote();
  s.read_size(3);
  beast::flat_buffer buf;
  Request req;
  RequestParser p(req, 100);
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::message));
  EXPECT_EQ(req.body(), "{\"a\":1}\n");
  EXPECT_FALSE(req.keep_alive());
}

TEST(RequestParser, ReusedRequestForgetsThePreviousOne) {
  asio::io_context ioc;
  TestStream s(ioc, std::string(kRequest) + "GET /v1/models HTTP/1.0\r\n\r\n");
  s.close_remote();
  beast::flat_buffer buf;
  Request req;
  {
    RequestParser p(req, 100);
    ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::message));
  }
  RequestParser p(req, 100);
  beast::error_code ec;
  EXPECT_TRUE(parse_buffered(buf, p, ReadUntil::message, ec));  // pipelined: already here
  EXPECT_FALSE(ec);
  EXPECT_EQ(req.method(), http::verb::get);
  EXPECT_EQ(req.target(), "/v1/models");
  EXPECT_EQ(req.version(), 10u);
  EXPECT_FALSE(req.keep_alive());
  EXPECT_EQ(req.field_count(), 0u);
  EXPECT_EQ(req["x-request-id"], "");
  EXPECT_EQ(req.body(), "");
}

TEST(RequestParser, TooManyFieldsStopsTheRead) {
  std::string head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 5; ++i) head += "X-F" + std::to_string(i) + ": v\r\n";
  asio::io_context ioc;
  TestStream s(ioc, head + "\r\n");
  s.close_remote();
  beast::flat_buffer buf;
  Request req;
  RequestParser p(req, 4);
  EXPECT_EQ(run_read(ioc, s, buf, p, ReadUntil::header), http::error::header_limit);
  EXPECT_TRUE(p.too_many_fields());
}

TEST(ReadHttp, PeerClosingEarlyIsEndOfStreamOrPartialMessage) {
  {
    asio::io_context ioc;
    TestStream s(ioc);
    s.close_remote();
    beast::flat_buffer buf;
    Request req;
    RequestParser p(req, 100);
    EXPECT_EQ(run_read(ioc, s, buf, p, ReadUntil::header), http::error::end_of_stream);
  }
  {
    asio::io_context ioc;
    TestStream s(ioc, std::string(kRequest.substr(0, kRequest.size() - 4)));
    s.close_remote();
    beast::flat_buffer buf;
    Request req;
    RequestParser p(req, 100);
    EXPECT_EQ(run_read(ioc, s, buf, p, ReadUntil::message), http::error::partial_message);
  }
}

TEST(UpstreamResponseParser, WholeReplyWithHeadersKept) {
  asio::io_context ioc;
  TestStream s(ioc,
               "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
               "Content-Length: 11\r\n\r\n{\"error\":1}");
  s.close_remote();
  s.read_size(5);
  beast::flat_buffer buf;
  UpstreamResponseParser p;
  std::string body;
  p.body_to(&body, 1024);
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::message));
  EXPECT_EQ(p.status(), 429);
  EXPECT_EQ(p.content_type(), "application/json");
  EXPECT_EQ(p.retry_after(), "7");
  EXPECT_FALSE(p.event_stream());
  EXPECT_TRUE(p.keep_alive());
  EXPECT_EQ(body, "{\"error\":1}");
}

TEST(UpstreamResponseParser, BodyLimitHoldsForLengthAndForChunks) {
  // The whole reply `wire` read into a body limited to 10 bytes.
  auto read_limited = [](std::string wire) {
    asio::io_context ioc;
    TestStream s(ioc, std::move(wire));
    s.close_remote();
    beast::flat_buffer buf;
    UpstreamResponseParser p;
    std::string body;
    p.body_to(&body, 10);
    return run_read(ioc, s, buf, p, ReadUntil::message);
  };
  EXPECT_EQ(read_limited("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"error\":1}"), http::error::body_limit);
  EXPECT_EQ(read_limited("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "6\r\n123456\r\n6\r\n123456\r\n0\r\n\r\n"),
            http::error::body_limit);
  // Within the limit, the same chunked reply reads fine.
  EXPECT_FALSE(read_limited("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\n12345\r\n5\r\n12345\r\n0\r\n\r\n"));
}

TEST(UpstreamResponseParser, BodyUntilEofCompletesOnClose) {
  asio::io_context ioc;
  TestStream s(ioc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n");
  s.close_remote();
  beast::flat_buffer buf;
  UpstreamResponseParser p;
  std::string body;
  p.body_to(&body);
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::message));
  EXPECT_TRUE(p.is_done());
  EXPECT_TRUE(p.event_stream());
  EXPECT_FALSE(p.keep_alive());
  EXPECT_EQ(body, "data: 1\n\n");
}

// A Content-Length is the backend's word: an unlimited sink (a stream's) reserves a bounded
// head start, not the 1 TiB announced (which aborted the proxy under ASan, bad_alloc without).
TEST(UpstreamResponseParser, AnnouncedLengthIsNotReservedWhole) {
  asio::io_context ioc;
  TestStream s(ioc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1099511627776\r\n\r\n"
                    "data: 1\n\n");
  s.close_remote();
  beast::flat_buffer buf;
  UpstreamResponseParser p;
  std::string body;
  p.body_to(&body);
  EXPECT_EQ(run_read(ioc, s, buf, p, ReadUntil::message), http::error::partial_message);
  EXPECT_EQ(body, "data: 1\n\n");
  EXPECT_LE(body.capacity(), 2u << 20);
}

// The stream relay's reads: each read returns what arrived, not waiting for more.
TEST(UpstreamResponseParser, ProgressReadsHandOverEachPieceAsItArrives) {
  asio::io_context ioc;
  TestStream upstream(ioc);
  TestStream s(ioc);
  s.connect(upstream);
  upstream.write_some(asio::buffer(std::string_view(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")));
  beast::flat_buffer buf;
  UpstreamResponseParser p;
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::header));
  std::string got;
  p.body_to(&got);
  const std::string events[] = {"data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n", "data: [DONE]\n\n"};
  for (const auto& e : events) {
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", e.size());
    upstream.write_some(asio::buffer(std::string(size) + e + "\r\n"));
    ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::progress));
    EXPECT_EQ(got, e);  // this event, and nothing waited for the next
    got.clear();
  }
  EXPECT_FALSE(p.is_done());
  upstream.write_some(asio::buffer(std::string_view("0\r\n\r\n")));
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::progress));
  EXPECT_TRUE(p.is_done());
  EXPECT_TRUE(p.keep_alive());
}

TEST(UpstreamResponseParser, ProgressReadAfterPartialStreamCloseIsPartialMessage) {
  asio::io_context ioc;
  TestStream s(ioc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\ndata: {\"n\":1}\n\n");
  s.close_remote();
  beast::flat_buffer buf;
  UpstreamResponseParser p;
  ASSERT_FALSE(run_read(ioc, s, buf, p, ReadUntil::header));
  std::string got;
  p.body_to(&got);
  EXPECT_FALSE(run_read(ioc, s, buf, p, ReadUntil::progress));  // the bytes that came
  EXPECT_EQ(got, "data: {\"n\":1}\n\n");
  EXPECT_EQ(run_read(ioc, s, buf, p, ReadUntil::progress), http::error::partial_message);
}

}  // namespace
}  // namespace imageworks
