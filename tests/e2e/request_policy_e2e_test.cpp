// End-to-end: the request policy of §6 through the built binary, against fake upstreams that
// record what they received — template, tools and vision capability, stripped images,
// truncated history, downscaled and transcoded images, image URLs for Ollama.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stb_image.h>
#include <stb_image_write.h>

#include <random>

#include "fakes/fake_ollama.hpp"
#include "imageworks/image_codec.hpp"
#include "support/chat_rig.hpp"

using namespace imageworks;
using namespace imageworks::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// A fake vLLM (FakeOpenAI) and a fake Ollama behind a registry of models that differ in
// exactly the capabilities the rules look at.
struct PolicyRig {
  FakeOpenAI vllm;
  FakeOllama ollama;
  TempDir dir;
  std::unique_ptr<ProxyProcess> proxy;

  explicit PolicyRig(Env env = {}) {
    const std::string url = vllm.base_url();
    auto vllm_entry = [&](const char* name, bool vision, bool tools, bool reasoning, const char* tmpl) {
      json e = {{"name", name}, {"backend", "vllm"}, {"served_model_id", std::string("served-") + name},
                {"backend_config", {{"base_url", url}}},
                {"capabilities", {{"vision", vision}, {"tools", tools}, {"reasoning", reasoning}}}};
      if (tmpl) e["chat_template"] = tmpl;
      return e;
    };
    json entries = json::array({vllm_entry("vision", true, true, false, "chatml.jinja"),
                                vllm_entry("text", false, false, false, "chatml.jinja"),
                                vllm_entry("untemplated", false, false, false, nullptr),
                                vllm_entry("missing-template", false, false, false, "nope.jinja"),
                                vllm_entry("reasoner", false, false, true, "chatml.jinja")});
    entries.push_back({{"name", "ollama-vision"}, {"backend", "ollama"}, {"served_model_id", "qwen2.5:7b"},
                       {"capabilities", {{"vision", true}}}});
    dir.write("model_registry.json", entries.dump());
    dir.write("chat_templates/chatml.jinja", "{{ messages }}");
    env.emplace("CHAT_PROXY_REGISTRY_DIR", dir.path().string());
    env.emplace("CHAT_PROXY_OLLAMA_BASE_URL", ollama.base_url());
    proxy = std::make_unique<ProxyProcess>(env);
  }
  ~PolicyRig() {
    if (::testing::Test::HasFailure()) std::cerr << "--- proxy log ---\n" << proxy->stderr_text();
  }
  HttpReply chat(const json& body) { return http_call(proxy->port(), "POST", "/v1/chat/completions", body.dump()); }
  json last_vllm_body() const {
    auto r = vllm.requests();
    return r.empty() ? json() : r.back().json();
  }
  json last_ollama_chat() const {
    for (auto calls = ollama.calls(); !calls.empty(); calls.pop_back())
      if (calls.back().path == "/v1/chat/completions") return json::parse(calls.back().body);
    return json();
  }
};

json user(const std::string& text) { return {{"role", "user"}, {"content", text}}; }
json user_with_images(const std::vector<std::string>& urls) {
  json content = json::array({{{"type", "text"}, {"text", "what is this?"}}});
  for (const auto& u : urls) content.push_back({{"type", "image_url"}, {"image_url", {{"url", u}}}});
  return {{"role", "user"}, {"content", content}};
}
json request(const std::string& model, json messages) {
  return {{"model", model}, {"messages", std::move(messages)}};
}

std::string png_of(int w, int h, bool noisy) {
  std::vector<unsigned char> px(static_cast<std::size_t>(w) * h * 3);
  std::mt19937 rng(7);
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = noisy ? static_cast<unsigned char>(rng()) : static_cast<unsigned char>(i % 251);
  std::string out;
  stbi_write_png_to_func([](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); },
                         &out, w, h, 3, px.data(), w * 3);
  return out;
}
std::string data_url(const std::string& mime, const std::string& bytes) {
  return "data:" + mime + ";base64," + base64_encode(bytes);
}
// The classic 1x1 GIF89a.
const unsigned char kGif[] = {0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0xFF, 0xFF,
                              0xFF, 0x00, 0x00, 0x00, 0x21, 0xF9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00,
                              0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B};

struct Decoded {
  std::string mime;
  std::size_t bytes = 0;
  int w = 0, h = 0;
};
Decoded decode_data_url(const std::string& url) {
  Decoded d;
  auto comma = url.find(',');
  auto semi = url.find(';');
  if (url.rfind("data:", 0) != 0 || comma == std::string::npos || semi == std::string::npos) return d;
  d.mime = url.substr(5, semi - 5);
  auto raw = base64_decode(std::string_view(url).substr(comma + 1));
  if (!raw) return d;
  d.bytes = raw->size();
  int n = 0;
  if (!stbi_info_from_memory(reinterpret_cast<const unsigned char*>(raw->data()), static_cast<int>(raw->size()), &d.w, &d.h, &n))
    d.w = d.h = -1;
  return d;
}
std::string image_url_in(const json& body, std::size_t message, std::size_t part) {
  return body["messages"][message]["content"][part]["image_url"]["url"];
}

}  // namespace

TEST(RequestPolicyE2E, TemplateRequiredUnlessTheEntryHasOneThatExists) {
  PolicyRig rig;
  expect_error(rig.chat(request("untemplated", {user("hi")})), 400, "err_template_required");
  expect_error(rig.chat(request("missing-template", {user("hi")})), 400, "err_template_required");
  EXPECT_EQ(rig.chat(request("text", {user("hi")})).status, 200);
  EXPECT_EQ(rig.vllm.requests().size(), 1u) << "refused requests never reach the backend";
  auto health = json::parse(http_call(rig.proxy->port(), "GET", "/v1/health").body);
  EXPECT_NE(health.dump().find("nope.jinja"), std::string::npos) << "the missing template is a registry issue: " << health.dump();
}

TEST(RequestPolicyE2E, ToolsAndImagesToModelsWithoutTheCapabilityAre409) {
  PolicyRig rig;
  json tools = request("text", {user("hi")});
  tools["tools"] = json::array({{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", json::object()}}}}});
  expect_error(rig.chat(tools), 409, "err_capability_mismatch");
  json choice = request("text", {user("hi")});
  choice["tool_choice"] = "auto";
  expect_error(rig.chat(choice), 409, "err_capability_mismatch");
  expect_error(rig.chat(request("text", {user_with_images({data_url("image/png", png_of(4, 4, false))})})), 409,
               "err_capability_mismatch");
  tools["model"] = "vision";
  EXPECT_EQ(rig.chat(tools).status, 200);
  EXPECT_TRUE(rig.last_vllm_body().contains("tools")) << "a capable model gets the tools untouched";
}

TEST(RequestPolicyE2E, ImagesStrippedForTextModelsWhenConfigured) {
  PolicyRig rig(Env{{"CHAT_PROXY_STRIP_IMAGES_FOR_TEXT_MODELS", "1"}});
  const std::string img = data_url("image/png", png_of(4, 4, false));
  json body = request("text", {user_with_images({img, img})});
  body["x_openwebui_param"] = {{"keep", true}};
  auto r = rig.chat(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-imageworks-images-stripped"), "2");
  auto got = rig.last_vllm_body();
  EXPECT_EQ(got["messages"][0]["content"], json::parse(R"([{"type":"text","text":"what is this?"}])"));
  EXPECT_EQ(got["x_openwebui_param"]["keep"], true) << "unknown fields pass through";
  EXPECT_EQ(got["model"], "served-text");
}

TEST(RequestPolicyE2E, VisionRequestKeepsSystemAndTheLastTurn) {
  PolicyRig rig;
  json messages = json::array({{{"role", "system"}, {"content", "be brief"}}, user("first"),
                               {{"role", "assistant"}, {"content", "one"}}, user("second"),
                               {{"role", "assistant"}, {"content", "two"}},
                               user_with_images({data_url("image/png", png_of(8, 8, false))})});
  auto r = rig.chat(request("vision", messages));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-imageworks-history-truncated"), "4");
  auto got = rig.last_vllm_body()["messages"];
  ASSERT_EQ(got.size(), 2u) << got.dump();
  EXPECT_EQ(got[0]["role"], "system");
  EXPECT_EQ(got[1]["content"][0]["text"], "what is this?");
  EXPECT_EQ(got[1]["content"][1], messages[5]["content"][1]) << "an image within the limits is sent as it came";
}

TEST(RequestPolicyE2E, ReasoningHistoryTruncatedWhenEnabled) {
  PolicyRig rig({{"CHAT_PROXY_REASONING_TRUNCATE_HISTORY", "1"}, {"CHAT_PROXY_REASONING_KEEP_LAST_N_TURNS", "1"}});
  json messages = json::array({user("a"), {{"role", "assistant"}, {"content", "b"}}, user("c")});
  auto r = rig.chat(request("reasoner", messages));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-imageworks-history-truncated"), "2");
  EXPECT_EQ(rig.last_vllm_body()["messages"], json::array({user("c")}));
  EXPECT_EQ(rig.chat(request("text", messages)).header("x-imageworks-history-truncated"), "")
      << "a model without reasoning keeps its history";
}

TEST(RequestPolicyE2E, OversizeImageIsDownscaledUnderBothLimits) {
  PolicyRig rig({{"CHAT_PROXY_MAX_IMAGE_BYTES", "150000"}, {"CHAT_PROXY_IMAGE_MAX_EDGE", "1024"}});
  const std::string big = png_of(1600, 800, true);  // ≈ 3.8 MB of noise
  ASSERT_GT(big.size(), 150000u);
  auto r = rig.chat(request("vision", {user_with_images({data_url("image/png", big)})}));
  ASSERT_EQ(r.status, 200) << r.body;
  auto img = decode_data_url(image_url_in(rig.last_vllm_body(), 0, 1));
  EXPECT_GT(img.w, 0);
  EXPECT_LE(img.w, 1024);
  EXPECT_LE(img.h, 1024);
  EXPECT_NEAR(static_cast<double>(img.w) / img.h, 2.0, 0.05) << "aspect ratio kept";
  EXPECT_LE(img.bytes, 150000u);
}

TEST(RequestPolicyE2E, ImageLimitsWithDownscalingOffAre413) {
  PolicyRig rig({{"CHAT_PROXY_MAX_IMAGE_BYTES", "150000"}, {"CHAT_PROXY_IMAGE_DOWNSCALE", "0"}});
  expect_error(rig.chat(request("vision", {user_with_images({data_url("image/png", png_of(600, 600, true))})})), 413,
               "err_payload_too_large");
  EXPECT_EQ(rig.chat(request("vision", {user_with_images({data_url("image/png", png_of(16, 16, false))})})).status, 200);
}

TEST(RequestPolicyE2E, CorruptImagesAreBadRequests) {
  PolicyRig rig;
  expect_error(rig.chat(request("vision", {user_with_images({"data:image/png;base64,%%%not-base64%%%"})})), 400,
               "err_bad_request");
  expect_error(rig.chat(request("vision", {user_with_images({data_url("image/png", "definitely not a png")})})), 400,
               "err_bad_request");
  std::string cut = png_of(64, 64, true);
  cut.resize(cut.size() / 2);
  expect_error(rig.chat(request("vision", {user_with_images({data_url("image/png", cut)})})), 400, "err_bad_request");
  EXPECT_EQ(rig.chat(request("vision", {user("still serving")})).status, 200);
}

TEST(RequestPolicyE2E, GifBecomesPngForOllama) {
  PolicyRig rig;
  const std::string gif(reinterpret_cast<const char*>(kGif), sizeof kGif);
  auto r = rig.chat(request("ollama-vision", {user_with_images({data_url("image/gif", gif)})}));
  ASSERT_EQ(r.status, 200) << r.body;
  auto img = decode_data_url(image_url_in(rig.last_ollama_chat(), 0, 1));
  EXPECT_EQ(img.mime, "image/png");
  EXPECT_EQ(img.w, 1);
  EXPECT_EQ(img.h, 1);
}

TEST(RequestPolicyE2E, ImageUrlsForOllamaNeedFetchingAndNeverReachPrivateAddresses) {
  {
    PolicyRig rig;
    expect_error(rig.chat(request("ollama-vision", {user_with_images({"https://example.com/cat.png"})})), 400,
                 "err_bad_request");
    EXPECT_EQ(rig.chat(request("vision", {user_with_images({"https://example.com/cat.png"})})).status, 200)
        << "a backend that fetches URLs itself gets the URL";
    EXPECT_EQ(image_url_in(rig.last_vllm_body(), 0, 1), "https://example.com/cat.png");
  }
  PolicyRig rig(Env{{"CHAT_PROXY_FETCH_IMAGE_URLS", "1"}});
  const auto before = rig.vllm.connections_accepted();
  auto r = rig.chat(request("ollama-vision", {user_with_images({rig.vllm.base_url() + "/image.png"})}));
  expect_error(r, 400, "err_bad_request");
  EXPECT_NE(r.body.find("refused"), std::string::npos) << r.body;
  EXPECT_EQ(rig.vllm.connections_accepted(), before) << "the loopback URL was never connected to";
}
