// fetch_image_url against a tiny HTTP server on 127.0.0.1:0 that runs on the same io_context
// as the fetch (one thread, no sleeps), and the address table of the SSRF guard.
#include <cstdlib>
#include <memory>
#include <optional>

#include <gtest/gtest.h>

#include "fakes/tls_upstream.hpp"
#include "imageworks/errors.hpp"
#include "imageworks/image_fetch.hpp"
#include "imageworks/simple_http.hpp"
#include "normalize/image_fetch_policy.hpp"

namespace imageworks {
namespace {

using Socket = asio::basic_stream_socket<tcp, Executor>;
using Acceptor = asio::basic_socket_acceptor<tcp, Executor>;

const std::string kImage = std::string("\x89PNG\r\n\x1a\n", 8) + "fake-image-bytes";

struct ImageServer {
  explicit ImageServer(asio::io_context& ioc)
      : acceptor(ioc.get_executor(), {asio::ip::make_address("127.0.0.1"), 0}),
        port(acceptor.local_endpoint().port()) {}
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port) + path; }
  Acceptor acceptor;
  unsigned short port;
  int connections = 0;
  std::vector<std::string> targets;
};

std::string reply(int status, const std::string& extra_headers, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

std::string redirect(int status, const std::string& location) {
  return reply(status, "Location: " + location + "\r\n", "");
}

// The scripted reply for a path; "" means the path is special-cased in answer().
std::string scripted(const ImageServer& s, const std::string& target) {
  if (target == "/img" || target == "/dir/img2") return reply(200, "Content-Type: image/png\r\n", kImage);
  if (target == "/octet") return reply(200, "Content-Type: application/octet-stream\r\n", kImage);
  if (target == "/upper") return reply(200, "Content-Type: IMAGE/PNG; q=1\r\n", kImage);
  if (target == "/untyped") return reply(200, "", kImage);
  if (target == "/exact") return reply(200, "Content-Type: image/png\r\n", std::string(1000, 'x'));
  if (target == "/big") return reply(200, "Content-Type: image/png\r\n", std::string(5000, 'x'));
  if (target == "/until-close")
    return "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n" + std::string(5000, 'x');
  if (target == "/missing") return reply(404, "Content-Type: text/plain\r\n", "no");
  if (target == "/html") return reply(200, "Content-Type: text/html; charset=utf-8\r\n", "<html></html>");
  if (target == "/json") return reply(200, "Content-Type: application/json\r\n", "{}");
  if (target == "/redirect") return redirect(302, "/img");
  if (target == "/redirect-abs") return redirect(301, s.url("/img#frag"));
  if (target == "/dir/relative") return redirect(307, "img2");
  if (target == "/loop") return redirect(302, "/loop");
  if (target == "/redirect-ftp") return redirect(302, "ftp://127.0.0.1/img");
  if (target == "/redirect-zero") return redirect(302, "http://0.0.0.0:" + std::to_string(s.port) + "/img");
  if (target.starts_with("/chain/")) {  // /chain/N redirects N times, then the image
    const int n = std::stoi(target.substr(7));
    return n == 0 ? redirect(302, "/img") : redirect(302, "/chain/" + std::to_string(n - 1));
  }
  return "";
}

Task<void> answer(std::shared_ptr<ImageServer> s, Socket sock) {
  beast::flat_buffer buf;
  http::request<http::empty_body> req;
  beast::error_code ec;
  co_await http::async_read(sock, buf, req, asio::redirect_error(use_task, ec));
  if (ec) co_return;
  const std::string target(req.target());
  s->targets.push_back(target);
  if (target == "/silent") {  // never answers: wait until the client gives up and closes
    co_await http::async_read(sock, buf, req, asio::redirect_error(use_task, ec));
    co_return;
  }
  if (target == "/forever") {  // a chunked image without end
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n";
    co_await asio::async_write(sock, asio::buffer(head), asio::redirect_error(use_task, ec));
    const std::string chunk = "400\r\n" + std::string(1024, 'x') + "\r\n";
    while (!ec) co_await asio::async_write(sock, asio::buffer(chunk), asio::redirect_error(use_task, ec));
    co_return;
  }
  if (target == "/chunked-split") {
    // Boost 1.74's parser asserts (aborting this ASan build) when it is handed a chunked
    // body's last-chunk line "0\r\n" and then one byte alone (fuzz/README.md): a slow server
    // sends exactly that. Beast's composed reads keep the unparsed bytes together, so the
    // fetch reads it; this holds them to it. The pauses make each piece a read of its own.
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string pieces[] = {head + "18\r\n" + kImage + "\r\n0\r\n", "\r", "\n"};
    asio::steady_timer pause(sock.get_executor());
    for (const auto& piece : pieces) {
      co_await asio::async_write(sock, asio::buffer(piece), asio::redirect_error(use_task, ec));
      pause.expires_after(std::chrono::milliseconds(30));
      co_await pause.async_wait(asio::redirect_error(use_task, ec));
    }
    sock.shutdown(tcp::socket::shutdown_send, ec);
    co_return;
  }
  const std::string bytes = scripted(*s, target);
  co_await asio::async_write(sock, asio::buffer(bytes), asio::redirect_error(use_task, ec));
  sock.shutdown(tcp::socket::shutdown_send, ec);
}

Task<void> accept_loop(std::shared_ptr<ImageServer> s) {
  for (;;) {
    beast::error_code ec;
    Socket sock = co_await s->acceptor.async_accept(asio::redirect_error(use_task, ec));
    if (ec) co_return;
    ++s->connections;
    asio::co_spawn(s->acceptor.get_executor(), answer(s, std::move(sock)), asio::detached);
  }
}

struct Outcome {
  bool finished = false;
  std::optional<std::string> body;
  int status = 0;
  std::string message;
};

Task<void> fetch_into(std::string url, ImageFetchLimits limits, std::shared_ptr<Outcome> out) {
  try {
    out->body = co_await fetch_image_url(std::move(url), limits);
  } catch (const ProxyError& e) {
    out->status = e.status;
    out->message = e.what();
  }
  out->finished = true;
}

class ImageFetch : public ::testing::Test {
 protected:
  void SetUp() override { asio::co_spawn(ioc, accept_loop(server), asio::detached); }

  Outcome fetch(const std::string& url, bool allow_private = true, std::uint64_t max_bytes = 1000,
                std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    ImageFetchLimits limits;
    limits.max_bytes = max_bytes;
    limits.timeout = timeout;
    limits.allow_private = allow_private;
    auto out = std::make_shared<Outcome>();
    asio::co_spawn(ioc, fetch_into(url, limits, out), [this](std::exception_ptr e) {
      ioc.stop();
      if (e) std::rethrow_exception(e);
    });
    ioc.restart();
    ioc.run_for(std::chrono::seconds(20));
    ioc.restart();
    ioc.poll();  // let the server see any connection the fetch made
    EXPECT_TRUE(out->finished) << url;
    return *out;
  }

  asio::io_context ioc;
  std::shared_ptr<ImageServer> server = std::make_shared<ImageServer>(ioc);
};

void expect_error(const Outcome& o, int status, const std::string& part) {
  EXPECT_FALSE(o.body.has_value());
  EXPECT_EQ(o.status, status) << o.message;
  EXPECT_NE(o.message.find(part), std::string::npos) << o.message;
}

TEST(ImageFetchAddress, RefusesEveryNonPublicAddress) {
  const std::vector<std::pair<std::string, bool>> table = {
      {"8.8.8.8", false}, {"1.1.1.1", false}, {"93.184.216.34", false}, {"172.32.0.1", false},
      {"100.128.0.1", false}, {"2606:4700::1", false}, {"2a00:1450:4001::200e", false},
      {"::ffff:8.8.8.8", false}, {"64:ff9b::808:808", false},
      {"127.0.0.1", true}, {"127.255.255.254", true}, {"::1", true}, {"0.0.0.0", true}, {"::", true},
      {"10.1.2.3", true}, {"172.16.0.1", true}, {"172.31.255.255", true}, {"192.168.1.1", true},
      {"100.64.0.1", true}, {"100.127.255.255", true}, {"169.254.169.254", true}, {"fe80::1", true},
      {"fc00::1", true}, {"fd12:3456::1", true}, {"224.0.0.1", true}, {"239.255.255.250", true},
      {"255.255.255.255", true}, {"240.0.0.1", true}, {"ff02::1", true}, {"::ffff:127.0.0.1", true},
      {"::ffff:10.0.0.1", true}, {"::ffff:169.254.169.254", true}, {"::127.0.0.1", true},
      {"64:ff9b::7f00:1", true}, {"2002:7f00:1::1", true}, {"2001::1", true}, {"2001:db8::1", true},
      {"192.0.2.1", true}, {"198.18.0.1", true}, {"fec0::1", true}, {"100::1", true},
  };
  for (const auto& [text, forbidden] : table)
    EXPECT_EQ(is_forbidden_fetch_address(asio::ip::make_address(text)), forbidden) << text;
}

TEST(ImageFetchPolicy, RedirectTargetsAndContentTypes) {
  const auto from = image_fetch::parse_fetch_url("https://Example.com:8443/a/b/c.png?x=1#f");
  EXPECT_EQ(from.host, "example.com");
  EXPECT_EQ(from.port, "8443");
  EXPECT_EQ(from.target, "/a/b/c.png?x=1");
  const std::vector<std::pair<std::string, std::string>> table = {
      {"http://other.org/p.png", "http://other.org/p.png"}, {"//cdn.net/x", "https://cdn.net/x"},
      {"/root.png", "https://Example.com:8443/root.png"}, {"d.png", "https://Example.com:8443/a/b/d.png"},
      {"?y=2", "https://Example.com:8443/a/b/c.png?y=2"}, {"my pic.png", "https://Example.com:8443/a/b/my%20pic.png"},
  };
  for (const auto& [location, expected] : table) {
    const auto to = image_fetch::redirect_target(from, location);
    EXPECT_EQ(to.origin + to.target, expected) << location;
  }
  EXPECT_EQ(image_fetch::parse_fetch_url("http://[2606:4700::1]/").host, "2606:4700::1");
  for (const char* ok : {"image/png", "IMAGE/WEBP; x=1", "", "application/octet-stream", "binary/octet-stream"})
    EXPECT_TRUE(image_fetch::acceptable_content_type(ok)) << ok;
  for (const char* no : {"text/html", "text/plain", "application/json", "video/mp4"})
    EXPECT_FALSE(image_fetch::acceptable_content_type(no)) << no;
}

TEST_F(ImageFetch, ReturnsTheImageBody) {
  EXPECT_EQ(fetch(server->url("/img")).body, kImage);
  EXPECT_EQ(server->connections, 1);
  EXPECT_EQ(fetch(server->url("/octet")).body, kImage);
  EXPECT_EQ(fetch(server->url("/upper")).body, kImage);
  EXPECT_EQ(fetch(server->url("/untyped")).body, kImage);
  EXPECT_EQ(fetch(server->url("/exact")).body, std::string(1000, 'x'));  // exactly at the limit
  EXPECT_EQ(fetch("http://localhost:" + std::to_string(server->port) + "/img").body, kImage);
}

TEST_F(ImageFetch, BodiesOverTheLimitAre413) {
  expect_error(fetch(server->url("/big")), 413, "larger than 1000 bytes");
  expect_error(fetch(server->url("/until-close")), 413, "larger than 1000 bytes");
  // Never ends: only stopping at the limit can finish this fetch (else it would time out).
  expect_error(fetch(server->url("/forever")), 413, "larger than 1000 bytes");
}

TEST_F(ImageFetch, ErrorStatusAndNonImagesAre400) {
  expect_error(fetch(server->url("/missing")), 400, "answered HTTP 404");
  expect_error(fetch(server->url("/html")), 400, "not an image (Content-Type: text/html");
  expect_error(fetch(server->url("/json")), 400, "not an image");
}

TEST_F(ImageFetch, ChunkedReplyWhoseLastChunkLineEndsAReadIsRead) {
  EXPECT_EQ(fetch(server->url("/chunked-split")).body, kImage);
}

Task<void> simple_get_into(std::string base, std::shared_ptr<Outcome> out) {
  auto r = co_await simple_http(base, http::verb::get, "/chunked-split", {}, std::chrono::seconds(5));
  out->status = r.status;
  out->body = std::move(r.body);
  out->finished = true;
}

// simple_http (Ollama's and vLLM's control calls) reads the same way.
TEST_F(ImageFetch, SimpleHttpReadsAChunkedReplyWhoseLastChunkLineEndsARead) {
  auto out = std::make_shared<Outcome>();
  asio::co_spawn(ioc, simple_get_into(server->url(""), out), [this](std::exception_ptr e) {
    ioc.stop();
    if (e) std::rethrow_exception(e);
  });
  ioc.run_for(std::chrono::seconds(20));
  ASSERT_TRUE(out->finished);
  EXPECT_EQ(out->status, 200);
  EXPECT_EQ(out->body, kImage);
}

TEST_F(ImageFetch, SilentServerTimesOut) {
  const auto start = std::chrono::steady_clock::now();
  expect_error(fetch(server->url("/silent"), true, 1000, std::chrono::milliseconds(300)), 400,
               "did not answer within 300 ms");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(ImageFetch, FollowsUpToThreeRedirects) {
  EXPECT_EQ(fetch(server->url("/redirect")).body, kImage);
  EXPECT_EQ(fetch(server->url("/redirect-abs")).body, kImage);
  EXPECT_EQ(fetch(server->url("/dir/relative")).body, kImage);
  EXPECT_EQ(server->targets.back(), "/dir/img2");
  EXPECT_EQ(fetch(server->url("/chain/2")).body, kImage);  // 3 redirects
  expect_error(fetch(server->url("/chain/3")), 400, "redirected more than 3 times");
  expect_error(fetch(server->url("/loop")), 400, "redirected more than 3 times");
  expect_error(fetch(server->url("/redirect-ftp")), 400, "not an http:// or https:// URL");
}

TEST_F(ImageFetch, RedirectTargetsAreCheckedToo) {
  // 0.0.0.0 reaches this machine on Linux and is refused even with allow_private.
  expect_error(fetch(server->url("/redirect-zero")), 400, "refused: 0.0.0.0 resolves to a private/loopback address");
  EXPECT_EQ(server->connections, 1);
}

TEST_F(ImageFetch, PrivateAddressesAreRefusedBeforeConnecting) {
  const std::string port = std::to_string(server->port);
  for (const std::string host : {"127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "127.1", "LOCALHOST"}) {
    expect_error(fetch("http://" + host + ":" + port + "/img", false), 400, "refused:");
  }
  EXPECT_EQ(server->connections, 0);
}

TEST_F(ImageFetch, BadUrlsAre400) {
  const std::string port = std::to_string(server->port);
  expect_error(fetch("ftp://127.0.0.1:" + port + "/img"), 400, "not an http:// or https:// URL");
  expect_error(fetch("data:image/png;base64,AAAA"), 400, "not an http:// or https:// URL");
  expect_error(fetch("http:///img"), 400, "has no host");
  expect_error(fetch("http://:" + port + "/img"), 400, "has no host");
  expect_error(fetch("http://user:pass@127.0.0.1:" + port + "/img"), 400, "credentials");
  expect_error(fetch("http://127.0.0.1:99999/img"), 400, "invalid port");
  expect_error(fetch("http://127.0.0.1:/img"), 400, "invalid port");
  expect_error(fetch("http://[::1]:/img"), 400, "invalid port");
  expect_error(fetch("http://[::1/img"), 400, "unterminated");
  expect_error(fetch("http://exa mple.com/img"), 400, "invalid host");
  expect_error(fetch("http://127.0.0.1:" + port + "/a\r\nX: y"), 400, "control characters");
  EXPECT_EQ(server->connections, 0);
}

TEST_F(ImageFetch, HttpsVerifiesTheCertificateAndSendsSni) {
  // Self-signed for "localhost", answers JSON to every request. One per process: the fetch's
  // TLS context reads SSL_CERT_FILE once, when it is made (so --gtest_repeat keeps working).
  static test::TlsUpstream* const tls = new test::TlsUpstream;
  const char* before = std::getenv("SSL_CERT_FILE");
  const std::string saved = before ? before : "";
  ::setenv("SSL_CERT_FILE", tls->cert_path().c_str(), 1);
  const std::string port = std::to_string(tls->port());
  const auto sni_before = tls->sni_names().size();
  const auto requests_before = tls->requests();
  expect_error(fetch("https://localhost:" + port + "/img"), 400, "not an image (Content-Type: application/json)");
  ASSERT_EQ(tls->sni_names().size(), sni_before + 1);
  EXPECT_EQ(tls->sni_names().back(), "localhost");
  // The certificate names localhost only: 127.0.0.1 fails host name verification.
  expect_error(fetch("https://127.0.0.1:" + port + "/img"), 400, "TLS handshake");
  EXPECT_EQ(tls->requests(), requests_before + 1);
  if (before) ::setenv("SSL_CERT_FILE", saved.c_str(), 1); else ::unsetenv("SSL_CERT_FILE");
}

}  // namespace
}  // namespace imageworks
