// Regression tests for what the fuzz targets (fuzz/) found: each input, reduced, against the
// function that failed. The inputs themselves are in fuzz/corpus/<target>/regress_*.
#include <gtest/gtest.h>

#include <boost/beast/_experimental/test/stream.hpp>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "imageworks/forwarder.hpp"
#include "imageworks/http_read.hpp"
#include "imageworks/registry.hpp"
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

// http_front_door: Boost 1.74's header_limit bounds what one put() sees; fields parsed by
// earlier puts no longer count. A header sent a field per read passed the 16 KiB limit at any
// size (up to 100 fields of 16 KiB, all kept in the Request). The whole header counts now.
template <class Parser>
beast::error_code read_header_in_pieces(Parser& p, const std::vector<std::string>& pieces) {
  beast::flat_buffer buf;
  beast::error_code ec;
  for (const auto& piece : pieces) {
    auto room = buf.prepare(piece.size());
    std::memcpy(room.data(), piece.data(), piece.size());
    buf.commit(piece.size());
    if (parse_buffered(buf, p, ReadUntil::header, ec)) break;
  }
  return ec;
}

std::vector<std::string> header_with_fields(int fields, std::size_t value_size) {
  std::vector<std::string> pieces{"GET /v1/models HTTP/1.1\r\nHost: h\r\n"};
  for (int i = 0; i < fields; ++i) pieces.push_back("X-F" + std::to_string(i) + ": " + std::string(value_size, 'a') + "\r\n");
  pieces.push_back("\r\n");
  return pieces;
}

TEST(FuzzRegression, HeaderOverTheLimitCutInsideAFieldIsRefused) {
  // 16 412 bytes: refused when read at once; cut inside the cookie, the Host line was parsed
  // by the first put and the rest alone fitted Beast's limit.
  const std::string cookie = "a=" + std::string(16366, 'x');
  const std::string head = "GET /v1/models HTTP/1.1\r\nHost: h\r\nCookie: " + cookie + "\r\n\r\n";
  Request req;
  RequestParser p(req, 100, 16 * 1024);
  EXPECT_EQ(read_header_in_pieces(p, {head.substr(0, 15000), head.substr(15000)}), http::error::header_limit);
  EXPECT_FALSE(p.too_many_fields());
  Request whole;
  RequestParser q(whole, 100, 16 * 1024);
  EXPECT_EQ(read_header_in_pieces(q, {head}), http::error::header_limit);
}

TEST(FuzzRegression, HeaderJustWithinTheLimitSentAFieldPerReadIsRead) {
  Request req;
  RequestParser p(req, 100, 16 * 1024);
  // Request line and fields, as counted: 25 + 9 + 2 * (4 + 8000 + 4) + (3 + 327 + 4) = 16384.
  auto pieces = header_with_fields(2, 8000);
  pieces.insert(pieces.end() - 1, "X-L: " + std::string(327, 'b') + "\r\n");
  EXPECT_FALSE(read_header_in_pieces(p, pieces));
  EXPECT_TRUE(p.is_header_done());
  EXPECT_EQ(req.field_count(), 4u);
  pieces.back() = "X: y\r\n\r\n";  // one more field: over the limit
  Request again;
  RequestParser q(again, 100, 16 * 1024);
  EXPECT_EQ(read_header_in_pieces(q, pieces), http::error::header_limit);
}

// The same for a backend's reply header (UpstreamResponseParser): a header sent a field per
// read is bounded by the whole header's size (64 KiB), not only per read.
TEST(FuzzRegression, UpstreamHeaderSentAFieldPerReadIsBoundedAsAWhole) {
  std::vector<std::string> pieces{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"};
  for (int i = 0; i < 20; ++i) pieces.push_back("X-F" + std::to_string(i) + ": " + std::string(4000, 'a') + "\r\n");
  pieces.push_back("Content-Length: 2\r\n\r\n{}");
  UpstreamResponseParser within;  // 20 fields of ~4 KiB: 80 KiB in all, each read well under 8 KiB
  std::string body;
  within.body_to(&body);
  EXPECT_EQ(read_header_in_pieces(within, pieces), http::error::header_limit);
  // 15 such fields (≈ 60 KiB) are read, and the reply with them.
  pieces.erase(pieces.begin() + 16, pieces.end() - 1);
  UpstreamResponseParser fits;
  fits.body_to(&body);
  EXPECT_FALSE(read_header_in_pieces(fits, pieces));
  EXPECT_TRUE(fits.is_header_done());
  EXPECT_EQ(fits.status(), 200);
  EXPECT_EQ(fits.content_type(), "application/json");
}

// request_normalize: nlohmann refuses a number beyond a double's range (1e999) with
// out_of_range, not parse_error. A body the scan refused and nlohmann then threw that for
// escaped the 400 path (a 500 "internal error"); so did a valid body with such a number
// once a message rule built its tree. Both are the client's 400 now.
int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ProxyError& e) {
    return e.status;
  }
  return 0;
}

TEST(FuzzRegression, InvalidBodyWithAnOverflowingNumberIs400) {
  EXPECT_EQ(status_of([] { parse_forward_request("chat/completions", R"({"model":"m","messages":[{"role":999e99999;}]})"); }),
            400);
}

TEST(FuzzRegression, TreeOfABodyWithAnOverflowingNumberIs400) {
  ForwardRequest fr = parse_forward_request(
      "chat/completions",
      R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"http://h/a.png"}]}],"top_p":1e999})");
  EXPECT_TRUE(fr.may_have_images);
  EXPECT_EQ(status_of([&] { fr.payload.tree(); }), 400);
}

// registry: the same number in a layer file escaped parse_layer, so RegistryLoader::load threw
// (startup failed; hot reload's loop ended). It is an issue of the file now.
TEST(FuzzRegression, RegistryLayerWithAnOverflowingNumberIsAnIssue) {
  std::vector<RegistryIssue> issues;
  EXPECT_FALSE(parse_layer(R"([{"name":"a","backend":"vllm","context_length":1e999}])", "f.json", issues));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].to_string(), "f.json: invalid JSON: number overflow parsing '1e999'");
}

std::string nested(std::string_view head, int depth, std::string_view tail) {
  return std::string(head) + std::string(static_cast<std::size_t>(depth), '[') +
         std::string(static_cast<std::size_t>(depth), ']') + std::string(tail);
}

// registry: a layer file nested 100 000 levels deep overflowed the stack when its entries were
// merged (nlohmann copies recursively). Such a file is now an issue, like invalid JSON.
std::vector<ModelEntry> load_layer(const std::string& text, std::vector<RegistryIssue>& issues) {
  std::vector<LayerContent> layers;
  if (auto entries = parse_layer(text, "model_registry.json", issues))
    layers.push_back({"model_registry.json", std::move(*entries)});
  return merge_layers(layers, issues);
}

TEST(FuzzRegression, RegistryLayerNestedTooDeepIsAnIssue) {
  std::vector<RegistryIssue> issues;
  EXPECT_TRUE(load_layer(nested(R"([{"name":"a","backend":"vllm","family":)", 100000, "}]"), issues).empty());
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].to_string(), "model_registry.json: JSON nested deeper than 512 levels");
}

TEST(FuzzRegression, RegistryLayerNestedWithinTheLimitLoads) {
  std::vector<RegistryIssue> issues;
  auto entries = load_layer(nested(R"([{"name":"a","backend":"vllm","notes":)", 500, "}]"), issues);
  EXPECT_TRUE(issues.empty()) << issues.front().to_string();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].name, "a");
}

// stream_rules: a backend's error reply {"detail": <nested 100 000 levels>} overflowed the
// stack when upstream_error dumped the detail; it is now relayed as text, as non-JSON is.
TEST(FuzzRegression, UpstreamErrorWithDeeplyNestedDetail) {
  const std::string body = nested(R"({"detail":)", 100000, "}");
  const ProxyError e = upstream_error(500, body);
  EXPECT_EQ(e.status, 500);
  EXPECT_EQ(e.code, "err_backend_error");
  EXPECT_EQ(std::string(e.what()), body.substr(0, 2000));
  // A detail of ordinary depth is still read (FastAPI's validation errors).
  EXPECT_EQ(std::string(upstream_error(422, R"({"detail":[{"loc":["body"],"msg":"bad"}]})").what()),
            R"([{"loc":["body"],"msg":"bad"}])");
}

}  // namespace
}  // namespace imageworks
