// Request policy (§6) as pure functions: template and tools checks, image parts, stripping,
// history truncation, the payload's two states, and the parse step's triggers.
#include <gtest/gtest.h>

#include "imageworks/forwarder.hpp"
#include "imageworks/request_policy.hpp"

using namespace imageworks;
using nlohmann::json;

namespace {

ModelEntry model(std::string backend, std::string format = {}, std::string tmpl = {}, bool found = false) {
  ModelEntry e;
  e.name = "m";
  e.backend = std::move(backend);
  e.format = std::move(format);
  e.chat_template = std::move(tmpl);
  e.chat_template_found = found;
  return e;
}

int status_of(const std::function<void()>& f, std::string* code = nullptr) {
  try {
    f();
  } catch (const ProxyError& e) {
    if (code) *code = e.code;
    return e.status;
  }
  return 0;
}

PayloadTree tree(std::string_view text) { return PayloadTree::parse(text); }

// Roles of a message array, "u a t s" style, for compact expectations.
std::string roles(const PayloadTree& messages) {
  std::string out;
  for (const auto& m : messages) {
    if (!out.empty()) out += ' ';
    out += m.is_object() && m.contains("role") && m["role"].is_string() ? m["role"].get<std::string>().substr(0, 1) : "?";
  }
  return out;
}

}  // namespace

struct TemplateCase {
  const char* name;
  bool require;
  ModelEntry entry;
  std::string route;
  int status;
};

TEST(RequestPolicy, TemplateRule) {
  const TemplateCase cases[] = {
      {"vllm without template", true, model("vllm"), "chat/completions", 400},
      {"vllm with a found template", true, model("vllm", "awq", "chatml.jinja", true), "chat/completions", 0},
      {"vllm naming a missing file", true, model("vllm", "awq", "gone.jinja", false), "chat/completions", 400},
      {"ollama embeds its own", true, model("ollama"), "chat/completions", 0},
      {"openai remote embeds its own", true, model("openai"), "chat/completions", 0},
      {"gguf on llama.cpp embeds its own", true, model("llamacpp", "gguf"), "chat/completions", 0},
      {"lmdeploy without template", true, model("lmdeploy"), "chat/completions", 400},
      {"not required", false, model("vllm"), "chat/completions", 0},
      {"not a chat request", true, model("vllm"), "embeddings", 0},
  };
  for (const auto& c : cases) {
    ProxyConfig cfg;
    cfg.require_template = c.require;
    cfg.template_dir = "/etc/templates";
    std::string code;
    EXPECT_EQ(status_of([&] { check_template(cfg, c.entry, c.route); }, &code), c.status) << c.name;
    if (c.status) {
      EXPECT_EQ(code, "err_template_required") << c.name;
    }
  }
}

TEST(RequestPolicy, ToolsNeedTheToolsCapability) {
  auto e = model("vllm");
  std::string code;
  EXPECT_EQ(status_of([&] { check_tools(e, "tools"); }, &code), 409);
  EXPECT_EQ(code, "err_capability_mismatch");
  e.capabilities.tools = true;
  EXPECT_EQ(status_of([&] { check_tools(e, "functions"); }), 0);
}

TEST(RequestPolicy, ParseStepSeesToolFieldsAndImageTriggers) {
  struct Case {
    const char* body;
    std::string_view tools_field;
    bool images;
  };
  const Case cases[] = {
      {R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", "", false},
      {R"({"model":"m","messages":[],"tools":[{"type":"function"}]})", "tools", false},
      {R"({"model":"m","messages":[],"tools":null})", "", false},
      {R"({"model":"m","messages":[],"tool_choice":"auto"})", "tool_choice", false},
      {R"({"model":"m","messages":[],"functions":[{"name":"f"}]})", "functions", false},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x"}}]}]})", "", true},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image\u005furl","image\u005furl":"x"}]}]})", "", true},
      {R"({"model":"m","messages":[],"x":"image_url"})", "", false},
  };
  for (const auto& c : cases) {
    auto fr = parse_forward_request("chat/completions", c.body);
    EXPECT_EQ(fr.tools_field, c.tools_field) << c.body;
    EXPECT_EQ(fr.may_have_images, c.images) << c.body;
  }
}

TEST(RequestPolicy, PayloadTreeKeepsUnknownFieldsAndOrder) {
  auto fr = parse_forward_request("chat/completions",
                                  R"({"zeta":1,"model":"asked","messages":[],"stream":true,"x_owui":{"a":[1,2]}})");
  fr.payload.tree()["messages"].push_back({{"role", "user"}, {"content", "hi"}});
  fr.payload.set_model("served");
  EXPECT_TRUE(fr.payload.ask_for_usage());
  fr.payload.finalize();
  auto j = json::parse(fr.payload.bytes());
  EXPECT_EQ(j["model"], "served");
  EXPECT_EQ(j["x_owui"], json::parse(R"({"a":[1,2]})"));
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_EQ(fr.payload.bytes().find("\"zeta\""), 1u) << "members keep the client's order: " << fr.payload.bytes();
  fr.payload.set_model("again");  // after finalize the bytes are spliced again
  EXPECT_EQ(json::parse(fr.payload.bytes())["model"], "again");
}

TEST(RequestPolicy, NullToolsAndStreamOptionsCountAsAbsent) {
  auto fr = parse_forward_request("chat/completions",
                                  R"({"model":"m","messages":[],"tools":null,"functions":null,"stream":true,"stream_options":null})");
  EXPECT_TRUE(fr.tools_field.empty());
  EXPECT_TRUE(fr.payload.ask_for_usage());
  fr.payload.finalize();
  EXPECT_EQ(json::parse(fr.payload.bytes())["stream_options"], json::parse(R"({"include_usage":true})"));
}

TEST(RequestPolicy, ImagePartsFindsEveryShape) {
  auto m = tree(R"([
    {"role":"system","content":"s"},
    {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},
    {"role":"user","content":[{"image_url":"https://example.com/a.png"}]},
    {"role":"user","content":"image_url as text is no image"},
    "not an object", 7, null, {"content":[1,"x",null]}
  ])");
  auto parts = image_parts(m);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].message, 1u);
  EXPECT_EQ(parts[0].part, 1u);
  EXPECT_EQ(*parts[0].url, "data:image/png;base64,AA");
  EXPECT_EQ(*parts[1].url, "https://example.com/a.png");
}

TEST(RequestPolicy, ImagePartWithoutUrlIsABadRequestNamingIt) {
  const char* bad[] = {
      R"([{"role":"user","content":[{"type":"image_url"}]}])",
      R"([{"role":"user","content":[{"type":"image_url","image_url":{}}]}])",
      R"([{"role":"user","content":[{"type":"image_url","image_url":{"url":5}}]}])",
      R"([{"role":"user","content":[{"type":"image_url","image_url":""}]}])",
  };
  for (const char* b : bad) {
    auto m = tree(b);
    std::string code;
    EXPECT_EQ(status_of([&] { image_parts(m); }, &code), 400) << b;
    EXPECT_EQ(code, "err_bad_request");
  }
}

TEST(RequestPolicy, StripImagesKeepsTextAndCounts) {
  auto m = tree(R"([
    {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"image_url","image_url":{"url":"y"}}]},
    {"role":"user","content":[{"type":"image_url","image_url":{"url":"z"}}]},
    {"role":"assistant","content":"ok"}
  ])");
  EXPECT_EQ(strip_image_parts(m), 3);
  EXPECT_EQ(m[0]["content"], tree(R"([{"type":"text","text":"a"}])"));
  EXPECT_EQ(m[1]["content"], "") << "a content array left empty becomes an empty string";
  EXPECT_EQ(m[2]["content"], "ok");
  EXPECT_EQ(strip_image_parts(m), 0);
}

struct TruncCase {
  const char* name;
  const char* messages;
  int keep;
  int dropped;
  const char* roles_after;
};

TEST(RequestPolicy, HistoryTruncation) {
  const TruncCase cases[] = {
      {"fewer turns than kept", R"([{"role":"system"},{"role":"user"},{"role":"assistant"}])", 2, 0, "s u a"},
      {"keep last turn, system kept",
       R"([{"role":"system"},{"role":"user"},{"role":"assistant"},{"role":"user"},{"role":"assistant"},{"role":"user"}])", 1, 4,
       "s u"},
      {"keep two turns",
       R"([{"role":"system"},{"role":"user"},{"role":"assistant"},{"role":"user"},{"role":"assistant"},{"role":"user"}])", 2, 2,
       "s u a u"},
      {"system messages in the middle survive",
       R"([{"role":"user"},{"role":"system"},{"role":"assistant"},{"role":"developer"},{"role":"user"}])", 1, 2, "s d u"},
      {"keep 0 counts as 1", R"([{"role":"user"},{"role":"assistant"},{"role":"user"}])", 0, 2, "u"},
      {"a turn carries its tool calls and results",
       R"([{"role":"user"},{"role":"assistant","tool_calls":[{"id":"c1"}]},{"role":"tool","tool_call_id":"c1"},
           {"role":"assistant"},{"role":"user"},{"role":"assistant","tool_calls":[{"id":"c2"}]},{"role":"tool","tool_call_id":"c2"}])",
       1, 4, "u a t"},
      {"tool result after the cut pulls its call back in",
       R"([{"role":"user"},{"role":"assistant","tool_calls":[{"id":"c1"},{"id":"c2"}]},{"role":"tool","tool_call_id":"c1"},
           {"role":"user"},{"role":"tool","tool_call_id":"c2"},{"role":"assistant"}])",
       1, 1, "a t u t a"},
      {"pulled-in call brings its own earlier results' calls (chain)",
       R"([{"role":"user"},{"role":"assistant","tool_calls":[{"id":"a"}]},{"role":"user"},{"role":"assistant","tool_calls":[{"id":"b"}]},
           {"role":"tool","tool_call_id":"a"},{"role":"user"},{"role":"tool","tool_call_id":"b"}])",
       1, 1, "a u a t u t"},
      {"legacy function result keeps its function_call",
       R"([{"role":"user"},{"role":"assistant","function_call":{"name":"f"}},{"role":"user"},{"role":"function","name":"f"}])", 1, 1,
       "a u f"},
      {"tool result whose call is unknown does not move the cut",
       R"([{"role":"user"},{"role":"assistant"},{"role":"user"},{"role":"tool","tool_call_id":"zz"}])", 1, 2, "u t"},
      {"odd entries before the cut are dropped, after it kept",
       R"([1,"x",{"role":"user"},null,{"content":"no role"},{"role":"user"},7])", 1, 5, "u ?"},
  };
  for (const auto& c : cases) {
    auto m = tree(c.messages);
    EXPECT_EQ(truncate_history(m, c.keep), c.dropped) << c.name;
    EXPECT_EQ(roles(m), c.roles_after) << c.name;
  }
}

TEST(RequestPolicy, MalformedMessageArraysNeverCrash) {
  const char* odd[] = {"null", "5", R"("str")", "{}", "[]", R"([[[]]])", R"([{"role":5,"content":{"a":1}}])",
                       R"([{"role":"user","content":[{"type":5},{"image_url":null}]}])",
                       R"([{"role":"assistant","tool_calls":"x"},{"role":"tool","tool_call_id":5}])",
                       R"([{"role":"assistant","tool_calls":[1,null,{"id":3}]},{"role":"user"},{"role":"user"}])"};
  for (const char* o : odd) {
    auto m = tree(o);
    try {
      image_parts(m);
    } catch (const ProxyError& e) {
      EXPECT_EQ(e.status, 400) << o;
    }
    strip_image_parts(m);
    truncate_history(m, 1);
  }
}

TEST(RequestPolicy, TenThousandMessagesAreCutInOnePass) {
  PayloadTree m = PayloadTree::array();
  for (int i = 0; i < 10000; ++i) {
    m.push_back({{"role", i % 3 == 0 ? "user" : i % 3 == 1 ? "assistant" : "tool"}, {"content", "x"}});
    if (i % 3 == 1) m.back()["tool_calls"] = PayloadTree::array({{{"id", "c" + std::to_string(i)}}});
    if (i % 3 == 2) m.back()["tool_call_id"] = "c" + std::to_string(i - 1);
  }
  m.push_back({{"role", "function"}, {"content", "r"}});  // no function_call anywhere
  EXPECT_EQ(truncate_history(m, 2), 9996);
  EXPECT_EQ(roles(m), "u a t u f");
}
