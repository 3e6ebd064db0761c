// End-to-end: HTTPS upstreams (peer verification against the CA store, SNI), the Ollama
// backend's OpenAI-compatible /v1 API through CHAT_PROXY_OLLAMA_BASE_URL, and a graceful
// stop that lets an in-flight stream finish.
#include <csignal>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fakes/fake_openai.hpp"
#include "fakes/tls_upstream.hpp"
#include "imageworks/asio.hpp"
#include "support/proxy_process.hpp"
#include "support/sse_client.hpp"
#include "support/test_support.hpp"

using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string chat(const std::string& model, bool stream = false) {
  json b = json::object();
  b["model"] = model;
  b["messages"] = json::array({json{{"role", "user"}, {"content", "hi"}}});
  b["stream"] = stream;
  return b.dump();
}

}  // namespace

TEST(E2eTls, HttpsUpstreamIsVerifiedAndGetsSni) {
  TlsUpstream up;
  TempDir dir;
  dir.write("model_registry.json", R"([{"name": "secure", "backend": "openai",
      "backend_config": {"base_url": "https://localhost:)" + std::to_string(up.port()) + R"("}}])");
  std::map<std::string, std::string> env{{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()},
                                         {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"}};
  {
    // The system CA store does not know the test certificate: refused.
    ProxyProcess proxy(env);
    auto r = http_call(proxy.port(), "POST", "/v1/chat/completions", chat("secure"));
    EXPECT_EQ(r.status, 502) << r.body;
    EXPECT_EQ(json::parse(r.body)["error"]["code"], "err_backend_unavailable");
    EXPECT_EQ(up.requests(), 0u);
  }
  env["SSL_CERT_FILE"] = up.cert_path();  // OpenSSL's default verify paths honour it
  ProxyProcess proxy(env);
  for (int i = 0; i < 3; ++i) {
    auto r = http_call(proxy.port(), "POST", "/v1/chat/completions", chat("secure"));
    ASSERT_EQ(r.status, 200) << r.body << proxy.stderr_text();
    auto j = json::parse(r.body);
    EXPECT_EQ(j["model"], "secure");
    EXPECT_EQ(j["choices"][0]["message"]["content"], "over tls");
  }
  EXPECT_EQ(up.requests(), 3u);
  auto sni = up.sni_names();
  ASSERT_FALSE(sni.empty());
  EXPECT_EQ(sni.back(), "localhost");
}

TEST(E2eBackends, OllamaEntryUsesTheConfiguredOllamaBaseUrl) {
  FakeOpenAI ollama;
  TempDir dir;
  dir.write("model_registry.json", R"([{"name": "llama3-local", "backend": "ollama",
      "served_model_id": "llama3.2:3b-instruct-q4_K_M", "quantization": "q4_k_m", "parameter_size": "3.2b"}])");
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()},
                      {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"},
                      {"CHAT_PROXY_OLLAMA_BASE_URL", ollama.base_url()}});
  auto r = http_call(proxy.port(), "POST", "/v1/chat/completions", chat("llama3-local"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["model"], "llama3-local");
  auto reqs = ollama.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].target, "/v1/chat/completions");
  EXPECT_EQ(reqs[0].json()["model"], "llama3.2:3b-instruct-q4_K_M");
}

TEST(E2eLifecycle, SigtermLetsAnInFlightStreamFinish) {
  FakeOpenAI fake;
  FakeOpenAI::Behavior b;
  b.chunks = 3;
  b.gate_chunks = true;
  fake.set_behavior(b);
  TempDir dir;
  dir.write("model_registry.json", R"([{"name": "m", "backend": "openai", "backend_config": {"base_url": ")" +
                                       fake.base_url() + R"("}}])");
  ProxyProcess proxy({{"CHAT_PROXY_REGISTRY_DIR", dir.path().string()}, {"CHAT_PROXY_REQUIRE_TEMPLATE", "0"}});
  SseClient c(proxy.port(), "/v1/chat/completions", chat("m", true));
  ASSERT_TRUE(c.next_frame().has_value());
  proxy.signal(SIGTERM);
  // Wait until the daemon stopped accepting (it is another process: poll, bounded).
  bool refused = false;
  for (auto deadline = std::chrono::steady_clock::now() + 10s; !refused && std::chrono::steady_clock::now() < deadline;) {
    imageworks::asio::io_context ioc;
    imageworks::tcp::socket probe(ioc);
    boost::system::error_code ec;
    probe.connect({imageworks::asio::ip::make_address("127.0.0.1"), proxy.port()}, ec);
    refused = static_cast<bool>(ec);
    if (!refused) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(refused) << "the daemon kept accepting after SIGTERM";
  fake.release_all();
  auto frames = c.rest();
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back(), "data: [DONE]") << "the stream in flight at SIGTERM completes";
  auto code = proxy.wait_exit(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}
