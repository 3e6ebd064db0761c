// End-to-end: a corpus of bad requests (tests/e2e/bad_requests/corpus.jsonl) sent over real
// HTTP to the built proxy, one connection each. Every case must get its status and an
// OpenAI-shaped error (§9, docs/reference.md "Errors"); afterwards both proxies are alive,
// serve a normal chat, and no bad request reached a backend. The corpus format is described
// in tests/e2e/bad_requests/README.md.
#include <poll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fakes/fake_ollama.hpp"
#include "imageworks/asio.hpp"
#include "imageworks/image_codec.hpp"
#include "support/chat_rig.hpp"

using namespace imageworks;
using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr const char* kKey = "sk-bad-requests-1";
constexpr std::size_t kMaxBodyBytes = 65536;

std::vector<json> load_corpus() {
  std::ifstream in(source_dir() / "tests/e2e/bad_requests/corpus.jsonl");
  std::vector<json> cases;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos || line.front() == '#') continue;
    auto c = json::parse(line, nullptr, false);
    if (!c.is_object()) ADD_FAILURE() << "corpus line " << n << " is not a JSON object";
    else cases.push_back(std::move(c));
  }
  return cases;
}

// "{{repeat N}}TEXT{{/repeat}}" becomes TEXT N times (huge headers, deep nesting); repeats
// may nest (the innermost is expanded first).
std::string expand(std::string s) {
  constexpr std::string_view open = "{{repeat ", close = "{{/repeat}}";
  for (std::size_t end; (end = s.find(close)) != std::string::npos;) {
    const std::size_t at = s.rfind(open, end);
    const std::size_t num_end = at == std::string::npos ? at : s.find("}}", at);
    if (num_end == std::string::npos || num_end > end) throw std::runtime_error("bad {{repeat}} in corpus");
    const std::size_t n = std::stoul(s.substr(at + open.size(), num_end - at - open.size()));
    const std::string text = s.substr(num_end + 2, end - num_end - 2);
    std::string rep;
    rep.reserve(text.size() * n);
    for (std::size_t i = 0; i < n; ++i) rep += text;
    s.replace(at, end + close.size() - at, rep);
  }
  if (s.find(open) != std::string::npos) throw std::runtime_error("unclosed {{repeat}} in corpus");
  return s;
}

std::string decode_b64(const json& v) {
  auto bytes = base64_decode(v.get<std::string>());
  if (!bytes) throw std::runtime_error("bad base64 in corpus");
  return *bytes;
}

bool has_header(const json& headers, std::string_view name) {
  for (const auto& h : headers)
    if (beast::iequals(h[0].get<std::string>(), name)) return true;
  return false;
}

// The bytes a case sends: verbatim ("raw", "raw_b64"), or built from method, path, headers
// and body with Host, Content-Type and Content-Length added unless the case gives its own.
std::string request_bytes(const json& c) {
  if (c.contains("raw")) return expand(c["raw"].get<std::string>());
  if (c.contains("raw_b64")) return decode_b64(c["raw_b64"]);
  std::string body;
  if (c.contains("body")) body = expand(c["body"].get<std::string>());
  else if (c.contains("body_json")) body = c["body_json"].dump();
  else if (c.contains("body_b64")) body = decode_b64(c["body_b64"]);
  const json headers = c.value("headers", json::array());
  const std::string method = c.value("method", "POST");
  std::string out = method + " " + c.value("path", "/v1/chat/completions") + " HTTP/1.1\r\n";
  if (!has_header(headers, "host")) out += "Host: 127.0.0.1\r\n";
  if (c.value("key", false)) out += std::string("Authorization: Bearer ") + kKey + "\r\n";
  if (!body.empty() && !has_header(headers, "content-type")) out += "Content-Type: application/json\r\n";
  for (const auto& h : headers) out += h[0].get<std::string>() + ": " + expand(h[1].get<std::string>()) + "\r\n";
  if (!has_header(headers, "content-length") && !has_header(headers, "transfer-encoding") &&
      (!body.empty() || method == "POST"))
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return out + "\r\n" + body;
}

struct RawReply {
  std::string bytes;
  bool closed = false;  // the proxy closed the connection
  bool timed_out = false;
};

// One connection: send everything the proxy takes (it may close early: a 413 is decided from
// Content-Length), optionally half-close, then read until one response is whole or EOF. A
// reply to HEAD has no body: read it to EOF (the case sends Connection: close), so bytes
// after its head show.
RawReply raw_exchange(unsigned short port, const std::string& request, bool shutdown_write, bool head) {
  RawReply r;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    r.closed = true;
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  auto wait_for = [&](short events) -> short {  // the events that came, 0 at the deadline
    pollfd p{fd, events, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return left.count() > 0 && ::poll(&p, 1, static_cast<int>(left.count())) > 0 ? p.revents : 0;
  };
  std::size_t sent = 0;
  while (sent < request.size()) {
    const short ready = wait_for(POLLOUT | POLLIN);
    if (!(ready & POLLOUT) || (ready & (POLLIN | POLLHUP | POLLERR))) break;  // the proxy answered or left
    auto n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  if (shutdown_write) ::shutdown(fd, SHUT_WR);
  char buf[16384];
  for (;;) {
    if (!wait_for(POLLIN)) {
      r.timed_out = true;
      break;
    }
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    r.bytes.append(buf, static_cast<std::size_t>(n));
    http::response_parser<http::string_body> p;
    p.eager(true);
    p.skip(head);
    beast::error_code ec;
    p.put(asio::buffer(r.bytes), ec);
    if (p.is_done() && !head) break;
  }
  ::close(fd);
  return r;
}

std::string error_type_for(int status) {
  if (status == 401) return "authentication_error";
  if (status == 403) return "permission_error";
  if (status == 404) return "not_found_error";
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

std::string printable(std::string_view s, std::size_t max = 300) {
  std::string out;
  for (unsigned char ch : s.substr(0, max)) {
    if (ch >= 0x20 && ch < 0x7f) out += static_cast<char>(ch);
    else out += ch == '\r' ? "\\r" : ch == '\n' ? "\\n" : "\\x" + std::string(1, "0123456789abcdef"[ch >> 4]) + "0123456789abcdef"[ch & 15];
  }
  return s.size() > max ? out + "..." : out;
}

// The reply to one case: its status, and an error in the OpenAI shape of docs/reference.md.
void check_reply(const json& c, const std::string& request, const RawReply& r) {
  const json& expect = c["expect"];
  const int status = expect["status"].get<int>();
  const std::string shown = "request: " + printable(request) + "\nreply: " + printable(r.bytes, 2000);
  ASSERT_FALSE(r.timed_out) << "no (whole) reply within 15 s\n" << shown;
  if (status == 0) {  // nothing to answer (the client ended mid-message): the proxy just closes
    EXPECT_TRUE(r.bytes.empty()) << shown;
    EXPECT_TRUE(r.closed) << shown;
    return;
  }
  const bool head = c.value("method", "") == "HEAD";
  http::response_parser<http::string_body> p;
  p.eager(true);
  p.skip(head);
  beast::error_code ec;
  const std::size_t used = p.put(asio::buffer(r.bytes), ec);
  ASSERT_TRUE(p.is_done()) << "not one whole HTTP response (" << ec.message() << ")\n" << shown;
  const auto& res = p.get();
  EXPECT_EQ(res.result_int(), static_cast<unsigned>(status)) << shown;
  EXPECT_EQ(res.version(), 11u) << shown;
  EXPECT_TRUE(std::string(res[http::field::content_type]).starts_with("application/json")) << shown;
  EXPECT_FALSE(res["x-request-id"].empty()) << "every response carries x-request-id\n" << shown;
  if (head) {  // the head only: nothing may follow it
    EXPECT_TRUE(r.closed) << shown;
    EXPECT_EQ(used, r.bytes.size()) << "bytes after the head of a reply to HEAD\n" << shown;
    return;
  }
  auto body = json::parse(res.body(), nullptr, false);
  ASSERT_TRUE(body.is_object() && body.size() == 1 && body.contains("error") && body["error"].is_object())
      << "not {\"error\":{...}}\n" << shown;
  const json& e = body["error"];
  EXPECT_TRUE(e.contains("message") && e["message"].is_string() && !e["message"].get<std::string>().empty()) << shown;
  EXPECT_EQ(e.value("type", json()), error_type_for(status)) << shown;
  EXPECT_TRUE(e.contains("param") && (e["param"].is_null() || e["param"].is_string())) << shown;
  EXPECT_EQ(e.value("code", json()), expect["code"]) << shown;
  if (expect.contains("param")) {
    EXPECT_EQ(e["param"], expect["param"]) << shown;
  }
}

// A fake vLLM with a text model and a vision+tools model, a fake Ollama with a vision model,
// and two proxies on that registry: one open, one with API keys.
struct BadRequestRig {
  FakeOpenAI vllm;
  FakeOllama ollama;
  TempDir dir;
  std::unique_ptr<ProxyProcess> open, keyed;

  BadRequestRig() {
    const std::string url = vllm.base_url();
    json entries = json::array();
    entries.push_back({{"name", "text"}, {"backend", "vllm"}, {"served_model_id", "served-text"},
                       {"backend_config", {{"base_url", url}}}});
    entries.push_back({{"name", "vision"}, {"backend", "vllm"}, {"served_model_id", "served-vision"},
                       {"backend_config", {{"base_url", url}}},
                       {"capabilities", {{"vision", true}, {"tools", true}}}});
    entries.push_back({{"name", "ollama-vision"}, {"backend", "ollama"}, {"served_model_id", "qwen2.5:7b"},
                       {"capabilities", {{"vision", true}}}});
    dir.write("model_registry.json", entries.dump());
    Env env{{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()},
            {"CHAT_PROXY_OLLAMA_BASE_URL", ollama.base_url()},
            {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"},
            {"CHAT_PROXY_FETCH_IMAGE_URLS", "0"},
            {"CHAT_PROXY_MAX_BODY_BYTES", std::to_string(kMaxBodyBytes)}};
    open = std::make_unique<ProxyProcess>(env);
    env["CHAT_PROXY_API_KEYS"] = std::string(kKey) + ",sk-bad-requests-2";
    keyed = std::make_unique<ProxyProcess>(env);
  }
  ~BadRequestRig() {
    if (::testing::Test::HasFailure()) {
      std::cerr << "--- open proxy log ---\n" << open->stderr_text();
      std::cerr << "--- keyed proxy log ---\n" << keyed->stderr_text();
    }
  }
  ProxyProcess& proxy_for(const json& c) { return c.value("config", "open") == "keys" ? *keyed : *open; }
  std::size_t ollama_inference_calls() const {
    std::size_t n = 0;
    for (const auto& call : ollama.calls()) n += call.path.starts_with("/v1/") || call.path == "/api/chat";
    return n;
  }
};

}  // namespace

TEST(BadRequestCorpus, CorpusIsWellFormed) {
  auto cases = load_corpus();
  EXPECT_GE(cases.size(), 100u);
  std::set<std::string> names;
  for (const auto& c : cases) {
    ASSERT_TRUE(c.contains("name") && c["name"].is_string()) << c.dump();
    EXPECT_TRUE(names.insert(c["name"].get<std::string>()).second) << "duplicate name " << c["name"];
    ASSERT_TRUE(c.contains("expect") && c["expect"].contains("status")) << c["name"];
    const int status = c["expect"]["status"].get<int>();
    EXPECT_TRUE(status == 0 || (status >= 400 && status < 600)) << c["name"];
    EXPECT_TRUE(status == 0 || c["expect"].contains("code")) << c["name"];
    EXPECT_NO_THROW(request_bytes(c)) << c["name"];
  }
}

TEST(BadRequestCorpus, EveryCaseGetsItsErrorAndTheProxyStaysWell) {
  auto cases = load_corpus();
  ASSERT_GE(cases.size(), 100u);
  BadRequestRig rig;
  for (const auto& c : cases) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE("corpus case '" + name + "'");
    ProxyProcess& proxy = rig.proxy_for(c);
    const std::string request = request_bytes(c);
    check_reply(c, request,
                raw_exchange(proxy.port(), request, c.value("shutdown_write", false), c.value("method", "") == "HEAD"));
    ASSERT_FALSE(proxy.wait_exit(0ms).has_value()) << "the proxy died on case '" << name << "'";
  }
  // Nothing the proxy refused went to a backend.
  std::string leaked;
  for (const auto& req : rig.vllm.requests()) leaked += req.target + " " + req.body.substr(0, 300) + "\n";
  EXPECT_TRUE(leaked.empty()) << "bad requests that reached the backend:\n" << leaked;
  EXPECT_EQ(rig.ollama_inference_calls(), 0u);

  // Both proxies still serve: health, and a whole chat relayed with the served model id.
  json chat = {{"model", "text"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  for (auto* proxy : {rig.open.get(), rig.keyed.get()}) {
    EXPECT_EQ(http_call(proxy->port(), "GET", "/v1/health").status, 200);
    auto r = http_call(proxy->port(), "POST", "/v1/chat/completions", chat.dump(),
                       {{"Authorization", std::string("Bearer ") + kKey}});
    ASSERT_EQ(r.status, 200) << r.body;
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["model"], "text");
    EXPECT_EQ(j["choices"][0]["message"]["content"], "toktoktok") << r.body;
  }
  auto got = rig.vllm.requests();
  ASSERT_EQ(got.size(), 2u);
  for (const auto& req : got) {
    EXPECT_EQ(req.target, "/v1/chat/completions");
    EXPECT_EQ(req.json()["model"], "served-text") << req.body;
  }
}
