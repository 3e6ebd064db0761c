// json_splice: top-level lookups and in-place edits without a JSON tree. The tables hold the
// inputs that break naive scanners; a mutation test checks agreement with nlohmann.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "imageworks/json_splice.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

struct FindCase {
  const char* name;
  std::string json;
  std::optional<std::string> model;  // raw value expected for key "model"
};

const std::vector<FindCase> kFindCases = {
    {"plain", R"({"model":"a"})", "a"},
    {"whitespace everywhere", " \n\t{ \r\n \"model\" \t:\n \"a b\" ,\"x\" : 1 } \n", "a b"},
    {"key inside nested array first", R"({"messages":[{"model":"inner"}],"model":"outer"})", "outer"},
    {"only nested", R"({"meta":{"model":"inner"},"x":[{"model":"y"}]})", std::nullopt},
    {"key text inside a string value", R"({"prompt":"\"model\":\"fake\"","model":"real"})", "real"},
    {"only inside a string value", R"({"prompt":"say \"model\": \"x\""})", std::nullopt},
    {"escaped quote and backslash kept raw", R"({"model":"a\"b\\c"})", R"(a\"b\\c)"},
    {"value ending in escaped backslash", R"({"model":"a\\","x":"model"})", R"(a\\)"},
    {"unicode escape kept raw", R"({"model":"\u00e9t\u00e9"})", R"(\u00e9t\u00e9)"},
    {"raw UTF-8", "{\"model\":\"日本語 ü\"}", "日本語 ü"},
    {"escaped key", R"({"mod\u0065l":"esc-key"})", "esc-key"},
    {"key with escaped quote is another key", R"({"key\"model":"x","model":"y"})", "y"},
    {"empty key and value", R"({"":"e","model":""})", ""},
    {"number value", R"({"model":123})", std::nullopt},
    {"null value", R"({"model":null})", std::nullopt},
    {"object value", R"({"model":{"name":"x"}})", std::nullopt},
    {"duplicate key: last wins", R"({"model":"a","model":"b"})", "b"},
    {"after nested containers", R"({"a":[1,2,{"b":[]}],"c":{},"d":[],"model":"m"})", "m"},
    {"after every scalar kind", R"({"a":-0.5e+10,"b":true,"c":false,"d":null,"e":0,"model":"m"})", "m"},
    {"absent", R"({"x":"model"})", std::nullopt},
    {"empty object", "{}", std::nullopt},
    {"truncated after value", R"({"model":"x")", std::nullopt},
    {"truncated in string", R"({"model":"x)", std::nullopt},
    {"truncated after colon", R"({"model":)", std::nullopt},
    {"trailing comma", R"({"model":"x",})", std::nullopt},
    {"trailing garbage", R"({"model":"x"} x)", std::nullopt},
    {"two objects", R"({"model":"x"}{})", std::nullopt},
    {"extra brace", R"({"model":"x"}})", std::nullopt},
    {"not an object", R"([{"model":"x"}])", std::nullopt},
    {"a bare string", R"("model")", std::nullopt},
    {"empty input", "", std::nullopt},
    {"whitespace only", " \n ", std::nullopt},
    {"bad literal", R"({"a":tru,"model":"x"})", std::nullopt},
    {"literal with tail", R"({"a":truex,"model":"x"})", std::nullopt},
    {"array trailing comma", R"({"a":[1,],"model":"x"})", std::nullopt},
    {"missing colon in nested", R"({"a":{"k" 1},"model":"x"})", std::nullopt},
    {"mismatched brackets", R"({"a":[1},"model":"x"})", std::nullopt},
    {"mismatched braces", R"({"a":{"b":1],"model":"x"})", std::nullopt},
    {"unquoted key", R"({model:"x"})", std::nullopt},
    {"single quotes", R"({'model':'x'})", std::nullopt},
    {"bad escape", R"({"a":"\q","model":"x"})", std::nullopt},
    {"short unicode escape", R"({"a":"\u12","model":"x"})", std::nullopt},
    {"non-hex unicode escape", R"({"a":"\u12g4","model":"x"})", std::nullopt},
    {"raw tab in string", "{\"a\":\"x\ty\",\"model\":\"x\"}", std::nullopt},
    {"raw newline in value", "{\"model\":\"x\ny\"}", std::nullopt},
    {"leading zero", R"({"a":01,"model":"x"})", std::nullopt},
    {"bare dot", R"({"a":1.,"model":"x"})", std::nullopt},
    {"bare exponent", R"({"a":1e,"model":"x"})", std::nullopt},
    {"plus sign", R"({"a":+1,"model":"x"})", std::nullopt},
    {"lone minus", R"({"a":-,"model":"x"})", std::nullopt},
    {"missing value", R"({"a":,"model":"x"})", std::nullopt},
    {"missing comma", R"({"a":1 "model":"x"})", std::nullopt},
    {"backslash at the very end", "{\"model\":\"x\\", std::nullopt},
};

TEST(JsonSplice, FindTopLevelStringTable) {
  for (const auto& c : kFindCases) {
    EXPECT_EQ(find_top_level_string(c.json, "model"), c.model) << c.name << ": " << c.json;
  }
}

// Each prefix in its own exact-size heap block, so ASan sees any read past the end.
TEST(JsonSplice, EveryPrefixOfAValidDocumentIsRejectedSafely) {
  const std::string doc =
      R"({"model" : "m\"x","messages":[{"role":"user","content":[{"type":"text","text":"hi \\ \u00e9"},)"
      R"({"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"n":-1.5e3,"t":true,)"
      R"("f":false,"z":null,"o":{"a":[[],{}]},"stream":true})";
  ASSERT_TRUE(json::accept(doc));
  for (std::size_t i = 0; i < doc.size(); ++i) {
    auto block = std::make_unique<char[]>(i == 0 ? 1 : i);
    std::copy(doc.begin(), doc.begin() + static_cast<std::ptrdiff_t>(i), block.get());
    const std::string_view prefix(block.get(), i);
    EXPECT_FALSE(find_top_level_value(prefix, "model")) << i;
    EXPECT_FALSE(find_top_level_value(prefix, "stream")) << i;
    EXPECT_FALSE(has_top_level_key(prefix, "absent")) << i;
  }
  EXPECT_EQ(find_top_level_string(doc, "model"), R"(m\"x)");
  EXPECT_TRUE(top_level_is_true(doc, "stream"));
}

// Strings are skipped 8 bytes at a time: put each special byte at every offset of that stride.
TEST(JsonSplice, SpecialBytesAtEveryOffsetOfLongStrings) {
  for (std::size_t len = 0; len < 40; ++len) {
    for (std::size_t pos = 0; pos <= len; ++pos) {
      const std::string pad(len, 'a');
      const std::string head = pad.substr(0, pos), tail = pad.substr(pos);
      const std::string escaped = head + R"(\"\\é\u00e9)" + tail;
      EXPECT_EQ(find_top_level_string(R"({"p":")" + escaped + R"(","model":"m"})", "p"), escaped);
      EXPECT_FALSE(find_top_level_string("{\"p\":\"" + head + "\x01" + tail + "\"}", "p")) << len << "/" << pos;
      EXPECT_FALSE(find_top_level_string("{\"p\":\"" + head + "\"x" + tail + "\"}", "p")) << len << "/" << pos;
      EXPECT_EQ(find_top_level_string("{\"p\":\"" + head + "\xc3\xa9\x7f" + tail + "\"}", "p"),
                head + "\xc3\xa9\x7f" + tail);
    }
  }
}

TEST(JsonSplice, NestingDepthIsBounded) {
  auto nested = [](int depth) {
    return R"({"a":)" + std::string(depth, '[') + std::string(depth, ']') + R"(,"model":"m"})";
  };
  EXPECT_EQ(find_top_level_string(nested(100), "model"), "m");
  EXPECT_FALSE(find_top_level_string(nested(100000), "model"));  // refused, no stack overflow
}

TEST(JsonSplice, FindTopLevelValueReturnsRawSpans) {
  const std::string doc = R"({ "n" : 1.5 , "s":"x\"y", "o":{"include_usage":true}, "a":[1, 2], "z":null })";
  EXPECT_EQ(find_top_level_value(doc, "n"), "1.5");
  EXPECT_EQ(find_top_level_value(doc, "s"), R"("x\"y")");
  EXPECT_EQ(find_top_level_value(doc, "o"), R"({"include_usage":true})");
  EXPECT_EQ(find_top_level_value(doc, "a"), "[1, 2]");
  EXPECT_EQ(find_top_level_value(doc, "z"), "null");
  EXPECT_FALSE(find_top_level_value(doc, "include_usage"));
  const auto v = find_top_level_value(doc, "o");
  EXPECT_EQ(doc.substr(static_cast<std::size_t>(v->data() - doc.data()), v->size()), *v);  // offsets
}

TEST(JsonSplice, HasTopLevelKey) {
  EXPECT_TRUE(has_top_level_key(R"({"tools":[]})", "tools"));
  EXPECT_TRUE(has_top_level_key(R"({"tools":null})", "tools"));
  EXPECT_FALSE(has_top_level_key(R"({"x":{"tools":[]}})", "tools"));
  EXPECT_FALSE(has_top_level_key(R"({"x":"tools"})", "tools"));
  EXPECT_FALSE(has_top_level_key(R"({"tools":[})", "tools"));
}

TEST(JsonSplice, FindSeveralValuesInOnePass) {
  const std::string doc = R"({"id":"c1","created":17,"o":{"model":"in"},"model":"m","id":"c2"})";
  const std::string_view keys[] = {"model", "id", "created", "usage"};
  std::optional<std::string_view> out[4];
  ASSERT_TRUE(find_top_level_values(doc, keys, out));
  EXPECT_EQ(out[0], R"("m")");
  EXPECT_EQ(out[1], R"("c2")");  // last duplicate, like find_top_level_value
  EXPECT_EQ(out[2], "17");
  EXPECT_FALSE(out[3]);
  EXPECT_FALSE(find_top_level_values(R"({"model":"m",)", keys, out));
  for (const auto& o : out) EXPECT_FALSE(o);
}

// The relay's scan of a backend's reply: the same answers on valid JSON; below the top level
// only strings and brackets are checked; the top level as strictly as ever.
TEST(JsonSplice, BackendScanAgreesOnValidJsonAndChecksNestingLoosely) {
  const std::string_view keys[] = {"model", "choices", "usage", "id"};
  std::optional<std::string_view> strict[4], loose[4];
  for (std::string_view doc : {
           R"({"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"a \"]}\" b"},"finish_reason":null}]})",
           R"( { "model" : "m" , "usage" : { "prompt_tokens" : 3 , "x" : [ 1 , 2.5e3 , true , null , { } , [ ] ] } } )",
           R"({"choices":[],"model":"a","model":"b","id":7})",
           R"({})",
       }) {
    ASSERT_TRUE(find_top_level_values(doc, keys, strict)) << doc;
    ASSERT_TRUE(scan_backend_object(doc, keys, loose)) << doc;
    for (int k = 0; k < 4; ++k) EXPECT_EQ(strict[k], loose[k]) << doc << " key " << keys[k];
  }
  // Nested grammar is not checked (the proxy relays it as it came)...
  EXPECT_TRUE(scan_backend_object(R"({"model":"m","choices":[{"a" 1 "b",}]})", keys, loose));
  EXPECT_EQ(loose[0], R"("m")");
  EXPECT_FALSE(find_top_level_values(R"({"model":"m","choices":[{"a" 1 "b",}]})", keys, strict));
  // ...but strings and brackets are, and the top level is.
  for (std::string_view bad : {
           std::string_view(R"({"model":"m","choices":[{"a":1]})"),  // mismatched closer
           std::string_view(R"({"model":"m","choices":[{"a":1})"),   // unclosed
           std::string_view(R"({"model":"m","choices":["a]"})"),     // unclosed (the ] is in a string)
           std::string_view("{\"model\":\"m\",\"choices\":[\"a\nb\"]}"),  // raw control character in a string
           std::string_view(R"({"model":"m","choices":["\x"]})"),    // bad escape
           std::string_view(R"({"model":"m" "choices":[]})"),        // top level: missing comma
           std::string_view(R"({"model":m,"choices":[]})"),          // top level: bad scalar
           std::string_view(R"({"model":"m","choices":[]}x)"),       // trailing bytes
           std::string_view(R"({"model":"m","choices":]})"),         // a closer as a value
       }) {
    EXPECT_FALSE(scan_backend_object(bad, keys, loose)) << bad;
    for (const auto& o : loose) EXPECT_FALSE(o) << bad;
  }
  // Nesting is bounded as in the full scan.
  const std::string deep = R"({"choices":)" + std::string(600, '[') + std::string(600, ']') + "}";
  EXPECT_FALSE(scan_backend_object(deep, keys, loose));
}

TEST(JsonSplice, TopLevelIsTrue) {
  EXPECT_TRUE(top_level_is_true(R"({"stream":true})", "stream"));
  EXPECT_TRUE(top_level_is_true(R"({ "stream" :  true  })", "stream"));
  EXPECT_TRUE(top_level_is_true(R"({"stream":false,"stream":true})", "stream"));
  EXPECT_FALSE(top_level_is_true(R"({"stream":"true"})", "stream"));
  EXPECT_FALSE(top_level_is_true(R"({"stream":false})", "stream"));
  EXPECT_FALSE(top_level_is_true(R"({"stream":1})", "stream"));
  EXPECT_FALSE(top_level_is_true(R"({"o":{"stream":true}})", "stream"));
  EXPECT_FALSE(top_level_is_true(R"({"stream":truex})", "stream"));
  EXPECT_FALSE(top_level_is_true(R"({"stream":true)", "stream"));
  EXPECT_FALSE(top_level_is_true("", "stream"));
}

struct ReplaceCase {
  const char* name;
  std::string json;
  std::string new_value;
  std::optional<std::string> expected;  // nullopt: must fail and leave the input unchanged
};

const std::vector<ReplaceCase> kReplaceCases = {
    {"plain", R"({"model":"a","x":1})", "served/b", R"({"model":"served/b","x":1})"},
    {"whitespace kept", R"({ "model" : "a" , "m":{"model":"in"}})", "b", R"({ "model" : "b" , "m":{"model":"in"}})"},
    {"nested untouched", R"({"m":{"model":"in"},"model":"out"})", "new", R"({"m":{"model":"in"},"model":"new"})"},
    {"string value untouched", R"({"p":"\"model\":\"a\"","model":"a"})", "b", R"({"p":"\"model\":\"a\"","model":"b"})"},
    {"escaping", R"({"model":"a"})", "q\"b\\s\n\x01/", R"({"model":"q\"b\\s\n\u0001/"})"},
    {"shorter and longer", R"({"model":"a-very-long-name","z":0})", "", R"({"model":"","z":0})"},
    {"escaped value replaced whole", R"({"model":"a\"b"})", "c", R"({"model":"c"})"},
    {"duplicates all replaced", R"({"model":"a","x":1,"model":"b"})", "c", R"({"model":"c","x":1,"model":"c"})"},
    {"escaped key", R"({"mod\u0065l":"a"})", "b", R"({"mod\u0065l":"b"})"},
    {"absent", R"({"x":"a"})", "b", std::nullopt},
    {"non-string", R"({"model":5})", "b", std::nullopt},
    {"one duplicate non-string", R"({"model":"a","model":null})", "b", std::nullopt},
    {"malformed", R"({"model":"a",)", "b", std::nullopt},
};

TEST(JsonSplice, ReplaceTopLevelStringTable) {
  for (const auto& c : kReplaceCases) {
    std::string doc = c.json;
    const bool ok = replace_top_level_string(doc, "model", c.new_value);
    EXPECT_EQ(ok, c.expected.has_value()) << c.name;
    EXPECT_EQ(doc, c.expected.value_or(c.json)) << c.name;
    if (ok) {
      EXPECT_EQ(json::parse(doc)["model"], c.new_value) << c.name;
    }
  }
}

TEST(JsonSplice, ReplaceTopLevelValue) {
  std::string doc = R"({"stream_options":{"include_usage":false},"a":1})";
  EXPECT_TRUE(replace_top_level_value(doc, "stream_options", R"({"include_usage":true})"));
  EXPECT_EQ(doc, R"({"stream_options":{"include_usage":true},"a":1})");
  EXPECT_TRUE(replace_top_level_value(doc, "a", R"("now a string")"));
  EXPECT_EQ(doc, R"({"stream_options":{"include_usage":true},"a":"now a string"})");
  EXPECT_FALSE(replace_top_level_value(doc, "absent", "1"));
  std::string bad = R"({"a":1)";
  EXPECT_FALSE(replace_top_level_value(bad, "a", "2"));
  EXPECT_EQ(bad, R"({"a":1)");
}

TEST(JsonSplice, InsertTopLevelMember) {
  std::string doc = R"({"model":"m","stream":true})";
  EXPECT_TRUE(insert_top_level_member(doc, "stream_options", R"({"include_usage":true})"));
  EXPECT_EQ(doc, R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_TRUE(json::parse(doc)["stream_options"]["include_usage"].get<bool>());

  std::string empty = "{}", spaced = " { \n } ";
  EXPECT_TRUE(insert_top_level_member(empty, "k", "1"));
  EXPECT_EQ(empty, R"({"k":1})");
  EXPECT_TRUE(insert_top_level_member(spaced, "k", "1"));
  EXPECT_EQ(json::parse(spaced), json::parse(R"({"k":1})"));

  std::string quoted = R"({"a":1})";
  EXPECT_TRUE(insert_top_level_member(quoted, "we\"ird", "2"));
  EXPECT_EQ(json::parse(quoted)["we\"ird"], 2);

  std::string existing = R"({"stream_options":{}})";
  EXPECT_FALSE(insert_top_level_member(existing, "stream_options", "{}"));
  EXPECT_EQ(existing, R"({"stream_options":{}})");
  std::string nested_only = R"({"o":{"k":1}})";
  EXPECT_TRUE(insert_top_level_member(nested_only, "k", "2"));
  EXPECT_EQ(nested_only, R"({"o":{"k":1},"k":2})");
  std::string bad = R"({"a":1,)";
  EXPECT_FALSE(insert_top_level_member(bad, "k", "1"));
  EXPECT_EQ(bad, R"({"a":1,)");
}

TEST(JsonSplice, JsonEscape) {
  EXPECT_EQ(json_escape("plain"), "plain");
  EXPECT_EQ(json_escape("a\"b"), R"(a\"b)");
  EXPECT_EQ(json_escape("a\\b"), R"(a\\b)");
  EXPECT_EQ(json_escape("\b\f\n\r\t"), R"(\b\f\n\r\t)");
  EXPECT_EQ(json_escape(std::string("\x00\x1f", 2)), R"(\u0000\u001f)");
  EXPECT_EQ(json_escape("/ é \x7f"), "/ é \x7f");
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  const std::string valid_utf8 = all.substr(0, 128) + "é😀";
  EXPECT_EQ(json::parse("\"" + json_escape(valid_utf8) + "\"").get<std::string>(), valid_utf8);
  EXPECT_EQ(json_unescape(json_escape(all)), all);  // bytes round-trip even when not UTF-8
  std::string appended = "x";
  append_json_escaped(appended, "\"");
  EXPECT_EQ(appended, R"(x\")");
}

TEST(JsonSplice, JsonUnescape) {
  EXPECT_EQ(json_unescape(R"(a\"b\\c\/d\n)"), "a\"b\\c/d\n");
  EXPECT_EQ(json_unescape(R"(\u00e9\u65E5)"), "é日");
  EXPECT_EQ(json_unescape(R"(\ud83d\ude00)"), "😀");
  EXPECT_EQ(json_unescape(R"(\u0000)"), std::string(1, '\0'));
  EXPECT_FALSE(json_unescape(R"(\ud83d)"));         // lone high surrogate
  EXPECT_FALSE(json_unescape(R"(\ud83dx)"));
  EXPECT_FALSE(json_unescape(R"(\ud83d\u0041)"));   // high + non-low
  EXPECT_FALSE(json_unescape(R"(\ude00)"));         // lone low surrogate
  EXPECT_FALSE(json_unescape(R"(\x)"));
  EXPECT_FALSE(json_unescape("\\"));
  EXPECT_FALSE(json_unescape(R"(\u12)"));
  EXPECT_FALSE(json_unescape("a\"b"));              // unescaped quote
  EXPECT_FALSE(json_unescape("a\nb"));              // raw control character
}

// Random single-byte mutations of a realistic request must never disagree with nlohmann
// (ASCII mutations only: UTF-8 and surrogate validity are outside the scanner's contract).
TEST(JsonSplice, AgreesWithNlohmannOnMutatedInput) {
  const std::string base =
      R"J({"model":"llama 8b (Q4 K M)","messages":[{"role":"system","content":"be \"brief\""},)J"
      R"({"role":"user","content":[{"type":"text","text":"a\\b model"}]}],"stream":true,)"
      R"("stream_options":{"include_usage":false},"temperature":0.7,"n":1,"stop":null,"tools":[]})";
  const std::string alphabet = "{}[]\":,\\ -.0123456789eEtrufalsnmodel\n";
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int iter = 0; iter < 10000; ++iter) {
    std::string doc = base;
    const int mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < mutations; ++m) {
      const std::size_t pos = rng() % doc.size();
      switch (rng() % 3) {
        case 0: doc[pos] = alphabet[rng() % alphabet.size()]; break;
        case 1: doc.erase(pos, 1); break;
        default: doc.insert(pos, 1, alphabet[rng() % alphabet.size()]);
      }
    }
    const json parsed = json::parse(doc, nullptr, false);
    const bool object = !parsed.is_discarded() && parsed.is_object();
    accepted += object;
    for (const char* key : {"model", "stream", "tools"}) {
      const auto raw = find_top_level_value(doc, key);
      if (!object || !parsed.contains(key)) {
        ASSERT_FALSE(raw) << doc;
        continue;
      }
      ASSERT_TRUE(raw) << doc;
      ASSERT_EQ(json::parse(*raw), parsed[key]) << doc;
      ASSERT_EQ(top_level_is_true(doc, key), parsed[key] == true) << doc;
    }
  }
  EXPECT_GT(accepted, 100);  // the mutations also produce valid documents, not only garbage
}

}  // namespace
}  // namespace imageworks
