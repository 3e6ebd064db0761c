#pragma once
// A small synchronous Beast client for the FakeOpenAI tests: whole replies, or a stream read
// incrementally and parsed with SseParser.
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <imageworks/asio.hpp>
#include <nlohmann/json.hpp>

#include "imageworks/sse.hpp"

namespace imageworks::test::fake_client {

// Own namespace: another test file may well define a `Client` of its own.

struct Reply {
  unsigned status = 0;
  std::string content_type;
  std::string body;
  nlohmann::json json_body() const { return nlohmann::json::parse(body, nullptr, false); }
};

struct Event {
  std::string event, data;
};

// One keep-alive connection; whole replies with request(), streams with start_stream()
// then next_event() (incremental reads fed through SseParser).
class Client {
 public:
  explicit Client(unsigned short port) : sock_(ioc_) {
    sock_.connect({asio::ip::make_address("127.0.0.1"), port});
  }

  void send(http::verb verb, std::string target, std::string body = {}, std::string bearer = {}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set("X-Test-Header", "yes");
    if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(sock_, req);
  }

  Reply request(http::verb verb, std::string target, std::string body = {}, std::string bearer = {}) {
    send(verb, std::move(target), std::move(body), std::move(bearer));
    http::response<http::string_body> res;
    http::read(sock_, buf_, res);
    return {res.result_int(), std::string(res[http::field::content_type]), res.body()};
  }

  Reply chat(const nlohmann::json& body, std::string bearer = {}) {
    return request(http::verb::post, "/v1/chat/completions", body.dump(), std::move(bearer));
  }

  // Sends a (streaming) request and reads only the response head.
  unsigned start_stream(const nlohmann::json& body, std::string target = "/v1/chat/completions") {
    sse_.reset();  // a new stream on the same connection starts a new event stream
    send(http::verb::post, std::move(target), body.dump());
    parser_.emplace();
    http::read_header(sock_, buf_, *parser_);
    return parser_->get().result_int();
  }
  std::string content_type() const { return std::string(parser_->get()[http::field::content_type]); }

  // The next SSE event (comments skipped); nullopt at the end of the body or on an error.
  std::optional<Event> next_event() {
    while (events_.empty()) {
      if (parser_->is_done()) return std::nullopt;
      char chunk[512];
      parser_->get().body().data = chunk;
      parser_->get().body().size = sizeof chunk;
      beast::error_code ec;
      http::read_some(sock_, buf_, *parser_, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        error_ = ec;
        return std::nullopt;
      }
      auto keep = [&](const SseEvent& e) {
        if (!e.comment) events_.push_back({std::string(e.event), std::string(e.data)});
      };
      sse_.feed({chunk, sizeof chunk - parser_->get().body().size}, keep);
      if (parser_->is_done()) sse_.finish(keep);
    }
    Event e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

  std::vector<Event> rest_of_stream() {
    std::vector<Event> out;
    while (auto e = next_event()) out.push_back(std::move(*e));
    return out;
  }

  beast::error_code error() const { return error_; }
  void close() {
    beast::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_both, ignored);
    sock_.close(ignored);
  }

 private:
  asio::io_context ioc_;
  tcp::socket sock_;
  beast::flat_buffer buf_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  SseParser sse_;
  std::deque<Event> events_;
  beast::error_code error_;
};

inline nlohmann::json chat_request(bool stream, bool include_usage = false) {
  nlohmann::json req = {{"model", "client-model"},
                        {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  if (stream) req["stream"] = true;
  if (include_usage) req["stream_options"] = {{"include_usage", true}};
  return req;
}

inline std::string joined_content(const std::vector<Event>& events) {
  std::string text;
  for (const auto& e : events) {
    if (e.data == "[DONE]") continue;
    for (const auto& choice : nlohmann::json::parse(e.data).value("choices", nlohmann::json::array())) {
      text += choice["delta"].value("content", "");
    }
  }
  return text;
}

}  // namespace imageworks::test::fake_client
