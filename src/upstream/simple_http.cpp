#include "imageworks/simple_http.hpp"

namespace imageworks {

namespace {

struct Parsed {
  std::string host, port, prefix;
};

Parsed parse(std::string_view url) {
  if (!url.starts_with("http://")) throw SimpleHttpError("only http:// URLs are supported: " + std::string(url), false, false);
  url.remove_prefix(7);
  const auto slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  Parsed p;
  p.prefix = slash == std::string_view::npos ? "" : std::string(url.substr(slash));
  while (!p.prefix.empty() && p.prefix.back() == '/') p.prefix.pop_back();
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    p.host = std::string(authority.substr(1, close - 1));
    p.port = close + 2 <= authority.size() ? std::string(authority.substr(close + 2)) : "80";
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    p.host = std::string(authority.substr(0, colon));
    p.port = std::string(authority.substr(colon + 1));
  } else {
    p.host = std::string(authority);
    p.port = "80";
  }
  if (p.host.empty() || p.port.empty()) throw SimpleHttpError("bad URL: http://" + std::string(authority), false, false);
  return p;
}

}  // namespace

Task<SimpleReply> simple_http(std::string_view base_url, http::verb method, std::string_view target,
                              std::string body, std::chrono::milliseconds timeout, std::string authorization) {
  const Parsed p = parse(base_url);
  const std::string where = std::string(base_url) + std::string(target);
  const Executor ex = co_await asio::this_coro::executor;
  beast::basic_stream<tcp, Executor> stream(ex);
  stream.expires_after(timeout);
  beast::error_code ec;
  tcp::resolver resolver(ex);
  auto endpoints = co_await resolver.async_resolve(p.host, p.port, asio::redirect_error(use_task, ec));
  if (!ec) co_await stream.async_connect(endpoints, asio::redirect_error(use_task, ec));
  if (ec) {
    throw SimpleHttpError(where + ": " + ec.message(), ec == asio::error::connection_refused,
                          ec == beast::error::timeout);
  }
  http::request<http::string_body> req{method, p.prefix + std::string(target), 11};
  req.set(http::field::host, p.host + ":" + p.port);
  req.set(http::field::user_agent, "imageworks-chat-proxy");
  req.keep_alive(false);
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  if (method == http::verb::post || !body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
  }
  co_await http::async_write(stream, req, asio::redirect_error(use_task, ec));
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16u << 20);
  if (!ec) co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_task, ec));
  if (ec) throw SimpleHttpError(where + ": " + ec.message(), false, ec == beast::error::timeout);
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return SimpleReply{static_cast<int>(parser.get().result_int()), std::move(parser.get().body())};
}

}  // namespace imageworks
