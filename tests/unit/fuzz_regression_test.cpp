// Regression tests for what the fuzz targets (fuzz/) found: each input, reduced, against the
// function that failed. The inputs themselves are in fuzz/corpus/<target>/regress_*.
#include <gtest/gtest.h>

#include <boost/beast/_experimental/test/stream.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "imageworks/http_read.hpp"
#include "imageworks/request.hpp"
#include "imageworks/upstream.hpp"

namespace imageworks {
namespace {

// http_front_door: a chunked body whose last-chunk line "0\r\n" ends one read and whose next
// read brings a single byte made Boost 1.74's parser assert (abort in debug builds).
template <class Parser>
void parse_in_pieces(Parser& p, const std::vector<std::string>& pieces) {
  beast::flat_buffer buf;
  beast::error_code ec;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    auto room = buf.prepare(pieces[i].size());
    std::memcpy(room.data(), pieces[i].data(), pieces[i].size());
    buf.commit(pieces[i].size());
    const bool finished = parse_buffered(buf, p, ReadUntil::message, ec);
    ASSERT_FALSE(ec) << "piece " << i << ": " << ec.message();
    EXPECT_EQ(finished, i + 1 == pieces.size()) << "piece " << i;
  }
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(buf.size(), 0u);
}

TEST(FuzzRegression, EmptyChunkedBodyLastChunkLineThenOneByte) {
  Request req;
  RequestParser p(req, 100);
  parse_in_pieces(p, {"POST /v1/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
                      "\r", "\n"});
  EXPECT_EQ(req.body(), "");
}

TEST(FuzzRegression, EmptyChunkedBodyOneByteAtATime) {
  Request req;
  RequestParser p(req, 100);
  parse_in_pieces(p, {"POST /v1/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", "0",
                      "\r", "\n", "\r", "\n"});
  EXPECT_EQ(req.body(), "");
}

TEST(FuzzRegression, LastChunkLineThenTrailerByteByByte) {
  Request req;
  RequestParser p(req, 100);
  parse_in_pieces(p, {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", "X", "-", "T", ":", " ", "1",
                      "\r", "\n", "\r", "\n"});
}

TEST(FuzzRegression, UpstreamEmptyChunkedReplyLastChunkLineThenOneByte) {
  UpstreamResponseParser p;
  std::string body;
  p.body_to(&body, 1024);
  parse_in_pieces(p, {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", "\r", "\n"});
  EXPECT_EQ(body, "");
}

// What the fix holds back (fewer than 5 bytes starting "0\r\n") may be chunk data: it still
// arrives whole once more bytes do.
TEST(FuzzRegression, ChunkDataThatLooksLikeALastChunkLine) {
  Request req;
  RequestParser p(req, 100);
  parse_in_pieces(p, {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n", "0\r\n", "\r\n0\r\n\r\n"});
  EXPECT_EQ(req.body(), "0\r\n");
}

// The same through read_http, one byte per socket read, as a slow client sends it.
TEST(FuzzRegression, ChunkedRequestReadOneBytePerRead) {
  asio::io_context ioc;
  beast::test::stream s(ioc, "POST /v1/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\r\n{}\n\r\n0\r\n\r\n");
  s.close_remote();
  s.read_size(1);
  beast::flat_buffer buf;
  Request req;
  RequestParser p(req, 100);
  beast::error_code ec;
  asio::co_spawn(ioc, read_http(s, buf, p, ReadUntil::message, ec), asio::detached);
  ioc.run();
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(req.body(), "{}\n");
}

}  // namespace
}  // namespace imageworks
