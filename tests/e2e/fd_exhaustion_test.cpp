// The proxy out of file descriptors (issue 12): started with a small open-file limit, then
// given more connections than it can hold. Clients past the limit get a clear 503 (not a
// hang, not a reset), a request whose backend connection cannot be opened gets a 503 too,
// the condition is counted and logged a bounded number of times, and the daemon serves
// normally once connections close.
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/chat_rig.hpp"
#include "support/telemetry_support.hpp"

using namespace imageworks::test;
using nlohmann::json;

namespace {

// A raw client connection: connect, send, read one response (with a receive timeout).
struct RawClient {
  int fd = -1;
  explicit RawClient(unsigned short port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~RawClient() {
    if (fd >= 0) ::close(fd);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  // Sends `request` and reads until the head and Content-Length bytes of body are in (or
  // the peer closes, or the timeout): the raw response, "" when nothing came.
  std::string exchange(const std::string& request) {
    if (fd < 0) return {};
    (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    std::string in;
    char buf[4096];
    for (int i = 0; i < 64; ++i) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<std::size_t>(n));
      auto head_end = in.find("\r\n\r\n");
      if (head_end == std::string::npos) continue;
      auto cl = in.find("Content-Length: ");
      if (cl != std::string::npos && cl < head_end &&
          in.size() >= head_end + 4 + std::stoul(in.substr(cl + 16)))
        break;
    }
    return in;
  }
};

int status_of(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::stoi(response.substr(9, 3)) : 0;
}

json body_of(const std::string& response) {
  auto p = response.find("\r\n\r\n");
  return p == std::string::npos ? json() : json::parse(response.substr(p + 4), nullptr, false);
}

const std::string kHealth = "GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n";

// Lowers this process's open-file limit while the proxy is spawned (the child inherits it).
struct LowFileLimit {
  rlimit saved{};
  explicit LowFileLimit(rlim_t n) {
    ::getrlimit(RLIMIT_NOFILE, &saved);
    rlimit low = saved;
    low.rlim_cur = n;
    ::setrlimit(RLIMIT_NOFILE, &low);
  }
  ~LowFileLimit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
};

}  // namespace

TEST(E2eFdExhaustion, ClientsPastTheLimitGet503AndTheDaemonRecovers) {
  std::unique_ptr<ChatRig> rig;
  {
    LowFileLimit limit(64);
    // A connection limit above the descriptors: this test is about running out of them.
    rig = std::make_unique<ChatRig>(Env{{"CHAT_PROXY_ENABLE_METRICS", "1"}, {"CHAT_PROXY_MAX_CONNECTIONS", "1000"}});
  }
  const auto port = rig->port();
  // UBSan's vptr check opens a pipe to probe memory the first time it meets a type; out of
  // descriptors it would misreport. A refused backend connection first meets the error
  // types the exhausted connect meets later (and leaves no pooled connection behind).
  expect_error(rig->chat(chat_body(false, "dead")), 502, "err_backend_unavailable");
  // Hold connections open (each served once, kept alive) until the proxy has no descriptor
  // left: from then on new clients get the 503 from the reserve descriptor.
  std::vector<std::unique_ptr<RawClient>> held;
  std::optional<std::string> refused;
  for (int i = 0; i < 200 && !refused; ++i) {
    auto c = std::make_unique<RawClient>(port);
    ASSERT_GE(c->fd, 0);
    auto r = c->exchange(kHealth);
    ASSERT_FALSE(r.empty()) << "connection " << i << " got no answer at all";
    if (status_of(r) == 200) {
      held.push_back(std::move(c));
    } else {
      refused = r;
    }
  }
  ASSERT_TRUE(refused) << "64 descriptors never ran out after " << held.size() << " connections";
  EXPECT_GT(held.size(), 10u);
  EXPECT_EQ(status_of(*refused), 503) << *refused;
  EXPECT_NE(refused->find("Retry-After: 1"), std::string::npos) << *refused;
  auto err = body_of(*refused);
  ASSERT_TRUE(err.is_object()) << *refused;
  EXPECT_EQ(err["error"]["code"], "err_backend_busy");
  EXPECT_NE(err["error"]["message"].get<std::string>().find("file descriptors"), std::string::npos);
  // A few more in a row: each is answered, none hangs.
  for (int i = 0; i < 5; ++i) {
    RawClient c(port);
    EXPECT_EQ(status_of(c.exchange(kHealth)), 503);
  }

  // Free one descriptor: the next client is served, but its backend connection cannot be
  // opened — that request gets the same 503, not a 502 blaming the backend.
  held.pop_back();
  std::string chat_reply;
  for (int attempt = 0; attempt < 50; ++attempt) {  // until the proxy has noticed the close
    RawClient c(port);
    const std::string body = chat_body(false).dump();
    chat_reply = c.exchange("POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    if (body_of(chat_reply).is_object() && status_of(chat_reply) == 503 &&
        chat_reply.find("Connection: close") == std::string::npos)
      break;  // answered by the proxy's session, not by the reserve descriptor
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(status_of(chat_reply), 503) << chat_reply;
  EXPECT_EQ(body_of(chat_reply)["error"]["code"], "err_backend_busy") << chat_reply;
  EXPECT_EQ(chat_reply.find("Connection: close"), std::string::npos) << "expected the session's own reply";

  // Everything closed: the daemon serves again, and says what happened.
  held.clear();
  HttpReply ok;
  for (int attempt = 0; attempt < 100; ++attempt) {  // until the proxy has seen the closes
    ok = rig->chat(chat_body(false));
    if (ok.status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto metrics = parse_prometheus(http_call(port, "GET", "/metrics").body);
  EXPECT_GE(sum_samples(metrics, "imageworks_fd_exhaustion_total"), 7.0);
  const auto log = rig->proxy->stderr_text();
  std::size_t reports = 0;
  for (auto p = log.find("out of descriptors"); p != std::string::npos; p = log.find("out of descriptors", p + 1))
    ++reports;
  EXPECT_GE(reports, 1u);
  EXPECT_LE(reports, 3u) << "logged at most every 10 s:\n" << log;
}

// CHAT_PROXY_MAX_CONNECTIONS: one connection over the limit is answered 503 at once and
// closed; the held ones keep being served; a freed slot is taken again.
TEST(E2eFdExhaustion, ConnectionsOverMaxConnectionsGet503AndAFreedSlotIsServed) {
  ChatRig rig(Env{{"CHAT_PROXY_ENABLE_METRICS", "1"}, {"CHAT_PROXY_MAX_CONNECTIONS", "3"}});
  const auto port = rig.port();
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawClient>(port));
    ASSERT_EQ(status_of(held.back()->exchange(kHealth)), 200) << "connection " << i;
  }
  RawClient over(port);
  const auto refused = over.exchange(kHealth);
  EXPECT_EQ(status_of(refused), 503) << refused;
  EXPECT_NE(refused.find("Retry-After: 1"), std::string::npos) << refused;
  EXPECT_NE(refused.find("Connection: close"), std::string::npos) << refused;
  auto err = body_of(refused);
  ASSERT_TRUE(err.is_object()) << refused;
  EXPECT_EQ(err["error"]["code"], "err_backend_busy");
  EXPECT_EQ(err["error"]["type"], "server_error");
  EXPECT_NE(err["error"]["message"].get<std::string>().find("CHAT_PROXY_MAX_CONNECTIONS (3)"), std::string::npos);
  char byte;
  EXPECT_EQ(::recv(over.fd, &byte, 1, 0), 0) << "the refused connection is closed";
  // The held connections are still served, on the same sockets.
  for (auto& c : held) EXPECT_EQ(status_of(c->exchange(kHealth)), 200);

  held.pop_back();  // a slot frees when the proxy sees the close
  std::string reply;
  for (int attempt = 0; attempt < 100; ++attempt) {
    RawClient c(port);
    reply = c.exchange(kHealth);
    if (status_of(reply) == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(status_of(reply), 200) << reply;
  // (on a held connection: a new one could find the slot just freed still taken)
  const auto m = held.front()->exchange("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_EQ(status_of(m), 200) << m;
  auto metrics = parse_prometheus(m.substr(m.find("\r\n\r\n") + 4));
  EXPECT_GE(sum_samples(metrics, "imageworks_fd_exhaustion_total"), 1.0);
  EXPECT_NE(rig.proxy->stderr_text().find("CHAT_PROXY_MAX_CONNECTIONS"), std::string::npos);
}
