#include "fakes/tls_upstream.hpp"

#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include "imageworks/asio.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {

struct TlsUpstream::Impl {
  TempDir dir;
  asio::io_context ioc;
  asio::ssl::context ctx{asio::ssl::context::tls_server};
  tcp::acceptor acceptor{ioc};
  std::thread thread;
  mutable std::mutex mu;
  std::vector<std::string> sni;
  std::size_t requests = 0;

  asio::awaitable<void> serve(tcp::socket sock) {
    beast::ssl_stream<beast::tcp_stream> s(std::move(sock), ctx);
    beast::error_code ec;
    co_await s.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    {
      const char* name = SSL_get_servername(s.native_handle(), TLSEXT_NAMETYPE_host_name);
      std::lock_guard lk(mu);
      sni.emplace_back(name ? name : "");
    }
    beast::flat_buffer buf;
    for (;;) {
      http::request<http::string_body> req;
      co_await http::async_read(s, buf, req, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      {
        std::lock_guard lk(mu);
        ++requests;
      }
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      res.body() = R"({"id":"chatcmpl-tls","object":"chat.completion","created":1,"model":"upstream-name",)"
                   R"("choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}]})";
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_await http::async_write(s, res, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !req.keep_alive()) co_return;
    }
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      beast::error_code ec;
      auto sock = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      asio::co_spawn(ioc, serve(std::move(sock)), asio::detached);
    }
  }
};

TlsUpstream::TlsUpstream() : impl_(std::make_unique<Impl>()) {
  auto key = (impl_->dir.path() / "key.pem").string(), cert = (impl_->dir.path() / "cert.pem").string();
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                    "-addext subjectAltName=DNS:localhost -keyout '" + key + "' -out '" + cert + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl could not make a test certificate");
  impl_->ctx.use_certificate_chain_file(cert);
  impl_->ctx.use_private_key_file(key, asio::ssl::context::pem);
  tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), 0};
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  asio::co_spawn(impl_->ioc, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([this] { impl_->ioc.run(); });
}

TlsUpstream::~TlsUpstream() {
  asio::post(impl_->ioc, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
  });
  impl_->ioc.stop();
  impl_->thread.join();
}

unsigned short TlsUpstream::port() const { return impl_->acceptor.local_endpoint().port(); }
std::string TlsUpstream::cert_path() const { return (impl_->dir.path() / "cert.pem").string(); }
std::vector<std::string> TlsUpstream::sni_names() const {
  std::lock_guard lk(impl_->mu);
  return impl_->sni;
}
std::size_t TlsUpstream::requests() const {
  std::lock_guard lk(impl_->mu);
  return impl_->requests;
}

}  // namespace imageworks::test
