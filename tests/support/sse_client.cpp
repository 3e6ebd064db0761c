#include "support/sse_client.hpp"

#include <sys/socket.h>

#include "imageworks/asio.hpp"

namespace imageworks::test {

struct SseClient::Impl {
  asio::io_context ioc;
  tcp::socket sock{ioc};
  beast::flat_buffer buf;
  http::response_parser<http::buffer_body> parser;
  std::string pending;  // body bytes not yet split into frames
  std::string all;
  bool ended = false;
  char chunk[4096];

  bool read_more() {
    if (ended) return false;
    if (parser.is_done()) {
      ended = true;
      return false;
    }
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    beast::error_code ec;
    http::read_some(sock, buf, parser, ec);
    if (ec == http::error::need_buffer) ec = {};
    std::size_t n = sizeof chunk - parser.get().body().size;
    pending.append(chunk, n);
    all.append(chunk, n);
    if (ec) {
      ended = true;
      return n > 0;
    }
    return true;
  }
};

SseClient::SseClient(unsigned short port, const std::string& target, const std::string& body,
                     std::chrono::milliseconds recv_timeout,
                     const std::vector<std::pair<std::string, std::string>>& headers)
    : impl_(std::make_unique<Impl>()) {
  impl_->sock.connect({asio::ip::make_address("127.0.0.1"), port});
  timeval tv{};
  tv.tv_sec = recv_timeout.count() / 1000;
  tv.tv_usec = (recv_timeout.count() % 1000) * 1000;
  setsockopt(impl_->sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  for (auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  http::write(impl_->sock, req);
  impl_->parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // not boost::none: Beast 1.74 rejects any Content-Length against an empty optional
  http::read_header(impl_->sock, impl_->buf, impl_->parser);
}

SseClient::~SseClient() = default;

int SseClient::status() const { return static_cast<int>(impl_->parser.get().result_int()); }

std::string SseClient::header(const std::string& name) const {
  return std::string(impl_->parser.get()[name]);
}

std::optional<std::string> SseClient::next_frame() {
  for (;;) {
    auto& p = impl_->pending;
    auto end = p.find("\n\n");
    if (end != std::string::npos) {
      std::string frame = p.substr(0, end);
      p.erase(0, end + 2);
      return frame;
    }
    if (!impl_->read_more()) {
      if (!p.empty()) {
        std::string frame = p;
        p.clear();
        return frame;
      }
      return std::nullopt;
    }
  }
}

std::vector<std::string> SseClient::rest() {
  std::vector<std::string> out;
  while (auto f = next_frame()) out.push_back(*f);
  return out;
}

std::string SseClient::raw_body() const { return impl_->all; }

void SseClient::close() {
  beast::error_code ec;
  impl_->sock.shutdown(tcp::socket::shutdown_both, ec);
  impl_->sock.close(ec);
}

std::vector<std::string> data_payloads(const std::vector<std::string>& frames) {
  std::vector<std::string> out;
  for (auto& f : frames) {
    if (f.rfind("data: ", 0) == 0 && f != "data: [DONE]") out.push_back(f.substr(6));
  }
  return out;
}

bool stream_completed(const std::vector<std::string>& frames) {
  if (frames.empty() || frames.back() != "data: [DONE]") return false;
  for (const auto& p : data_payloads(frames))
    if (p.find("\"error\"") != std::string::npos) return false;
  return true;
}

}  // namespace imageworks::test
