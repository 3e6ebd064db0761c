// scan_request_object: the request body's scan also requires well-formed UTF-8 (RFC 3629,
// RFC 8259 §8.1) in every string and unique top-level keys (SPEC §9). UTF-8 cases are checked
// at every byte of each sequence and at every alignment of the 8-byte fast path, and against
// nlohmann's parser as an oracle.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/json_splice.hpp"

namespace imageworks {
namespace {

using Result = ObjectScan::Result;
constexpr std::size_t npos = std::string_view::npos;

ObjectScan scan(std::string_view body) {
  static constexpr std::string_view keys[] = {"model", "messages"};
  std::optional<std::string_view> out[2];
  return scan_request_object(body, keys, out);
}

// {"model":"m","messages":[{"content":"<pad><text> tail"}]} and where <text> starts.
struct Doc {
  std::string body;
  std::size_t text_at;
};
Doc doc_with(std::string_view text, std::size_t pad) {
  std::string body = R"({"model":"m","messages":[{"content":")" + std::string(pad, 'a');
  const std::size_t at = body.size();
  body += text;
  body += R"( tail"}]})";
  return {body, at};
}

const std::vector<std::string> kValid = {
    "\xC2\x80", "\xDF\xBF",                  // U+0080, U+07FF
    "\xE0\xA0\x80", "\xED\x9F\xBF",          // U+0800, U+D7FF (just below the surrogates)
    "\xEE\x80\x80", "\xEF\xBF\xBF",          // U+E000, U+FFFF
    "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",  // U+10000, U+10FFFF
    "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80",
};

struct BadCase {
  const char* name;
  std::string bytes;
};
const std::vector<BadCase> kInvalid = {
    {"stray continuation 80", "\x80"},        {"stray continuation BF", "\xBF"},
    {"C0 overlong", "\xC0\x80"},              {"C1 overlong", "\xC1\xBF"},
    {"E0 overlong", "\xE0\x80\x80"},          {"E0 overlong top", "\xE0\x9F\xBF"},
    {"F0 overlong", "\xF0\x80\x80\x80"},      {"F0 overlong top", "\xF0\x8F\xBF\xBF"},
    {"surrogate D800", "\xED\xA0\x80"},       {"surrogate DFFF", "\xED\xBF\xBF"},
    {"above U+10FFFF", "\xF4\x90\x80\x80"},   {"F5 lead", "\xF5\x80\x80\x80"},
    {"FE", "\xFE"},                           {"FF", "\xFF"},
    {"lead then ASCII", "\xC3(" },            {"two leads", "\xE2\xE2\x82\xAC"},
};

TEST(JsonRequestScan, ValidSequencesPassAtEveryAlignment) {
  for (const auto& seq : kValid) {
    for (std::size_t pad = 0; pad < 17; ++pad) {
      auto d = doc_with(seq + seq, pad);
      auto s = scan(d.body);
      EXPECT_TRUE(s.ok()) << "pad " << pad << " seq " << ::testing::PrintToString(seq);
      EXPECT_EQ(first_invalid_utf8(d.body), npos);
    }
  }
}

TEST(JsonRequestScan, IllFormedSequencesFailAtTheirFirstByte) {
  for (const auto& c : kInvalid) {
    for (std::size_t pad = 0; pad < 17; ++pad) {
      auto d = doc_with(c.bytes, pad);
      auto s = scan(d.body);
      EXPECT_EQ(s.result, Result::invalid_utf8) << c.name << " pad " << pad;
      EXPECT_EQ(first_invalid_utf8(d.body), d.text_at) << c.name << " pad " << pad;
    }
  }
}

// Every valid sequence cut short after each of its bytes, followed by more text, by the
// closing quote, or by the end of the body.
TEST(JsonRequestScan, TruncatedSequencesFailWhateverFollows) {
  for (const auto& seq : kValid) {
    for (std::size_t keep = 1; keep < seq.size(); ++keep) {
      const std::string cut = seq.substr(0, keep);
      for (std::size_t pad = 0; pad < 9; ++pad) {
        auto d = doc_with(cut + "x", pad);
        EXPECT_EQ(scan(d.body).result, Result::invalid_utf8) << "keep " << keep << " pad " << pad;
        auto q = doc_with(cut, pad);  // the quote right after the cut
        EXPECT_EQ(scan(q.body).result, Result::invalid_utf8) << "keep " << keep << " pad " << pad;
        const std::string at_end = R"({"model":")" + std::string(pad, 'b') + cut;
        const auto s = scan(at_end);
        EXPECT_EQ(s.result, Result::invalid_utf8) << "keep " << keep << " pad " << pad;
        EXPECT_EQ(s.error_offset, at_end.size() - keep);
      }
    }
  }
}

// Each continuation byte of each valid sequence replaced by ASCII, by a lead byte and by the
// closing quote: every position of every length is checked.
TEST(JsonRequestScan, EachContinuationPositionIsChecked) {
  for (const auto& seq : kValid) {
    for (std::size_t k = 1; k < seq.size(); ++k) {
      for (char repl : {'A', '\xC3', '\xF0', '\x7F'}) {
        std::string broken = seq;
        broken[k] = repl;
        for (std::size_t pad = 0; pad < 9; ++pad) {
          auto d = doc_with(broken, pad);
          EXPECT_EQ(scan(d.body).result, Result::invalid_utf8) << "position " << k << " pad " << pad;
          EXPECT_EQ(first_invalid_utf8(d.body), d.text_at);
        }
      }
    }
  }
}

TEST(JsonRequestScan, KeysAndNestedStringsAreCheckedToo) {
  EXPECT_EQ(scan("{\"mod\xC3\x28\":\"m\"}").result, Result::invalid_utf8);
  EXPECT_EQ(scan("{\"model\":\"m\",\"x\":{\"\xE9t\xE9\":1}}").result, Result::invalid_utf8);
  EXPECT_EQ(scan("{\"model\":\"m\",\"x\":[1,\"\xED\xA0\x80\"]}").result, Result::invalid_utf8);
  EXPECT_TRUE(scan("{\"mod\xC3\xA9l\":\"m\",\"x\":{\"\xC3\xA9t\xC3\xA9\":[\"\xF0\x9F\x98\x80\"]}}").ok());
  // Outside strings a high byte is a syntax error and still reported as UTF-8 when ill-formed.
  EXPECT_EQ(scan("{\"model\":\"m\"}\xFF").result, Result::invalid_utf8);
  EXPECT_EQ(scan("{\"model\":\"m\"}\xC3\xA9").result, Result::invalid_json);
  EXPECT_EQ(scan("{\"model\":\"m\"").result, Result::invalid_json);
}

// The finds of the scan agree with find_top_level_values on valid input.
TEST(JsonRequestScan, FindsTheSameMembersAsTheUncheckedScan) {
  const std::string body = R"({"model":"a\u00e9","messages":[{"x":1}],"other":"\u00e9t\u00e9 )"
                           "\xC3\xA9\"}";
  static constexpr std::string_view keys[] = {"model", "messages"};
  std::optional<std::string_view> a[2], b[2];
  ASSERT_TRUE(scan_request_object(body, keys, a).ok());
  ASSERT_TRUE(find_top_level_values(body, keys, b));
  EXPECT_EQ(a[0], b[0]);
  EXPECT_EQ(a[1], b[1]);
  EXPECT_EQ(*a[0], "\"a\\u00e9\"");
}

TEST(JsonRequestScan, DuplicateTopLevelKeysAreNamed) {
  struct Case {
    std::string body;
    std::optional<std::string> dup;
  };
  std::vector<Case> cases = {
      {R"({"model":"a","model":"b"})", "model"},
      {R"({"model":"a","mod\u0065l":"b"})", "model"},
      {R"({"m\u006fdel":"a","messages":[],"model":"b"})", "model"},
      {R"({"model":"a","messages":[],"x":1,"messages":[]})", "messages"},
      {R"({"model":"a","":1,"":2})", ""},
      {R"({"model":"a","meta":{"model":"b","model":"c"}})", std::nullopt},  // nested: not ours to judge
      {R"({"model":"a","Model":"b"})", std::nullopt},                       // keys are case-sensitive
      {R"({"model":"a","models":"b"})", std::nullopt},
  };
  // Many keys: the sorted path, with the duplicate first and last.
  std::string many = "{";
  for (int i = 0; i < 200; ++i) many += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  cases.push_back({many + R"("model":"x"})", std::nullopt});
  cases.push_back({many + R"("k0":"again"})", "k0"});
  cases.push_back({many + R"("k199":"again"})", "k199"});
  for (const auto& c : cases) {
    auto s = scan(c.body);
    if (c.dup) {
      EXPECT_EQ(s.result, Result::duplicate_key) << c.body.substr(0, 80);
      EXPECT_EQ(s.duplicate_key, *c.dup) << c.body.substr(0, 80);
    } else {
      EXPECT_TRUE(s.ok()) << c.body.substr(0, 80);
    }
  }
}

// Random bytes (mostly high ones) inside a string: the scan accepts exactly what nlohmann,
// a strict RFC 8259 parser, accepts.
TEST(JsonRequestScan, AgreesWithNlohmannOnRandomBytesInStrings) {
  std::mt19937 rng(20261201);
  std::uniform_int_distribution<int> len(0, 12), byte(0, 255), kind(0, 3);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string text;
    const int n = len(rng);
    for (int i = 0; i < n; ++i) {
      int b = byte(rng);
      if (kind(rng) == 0) b = 0x80 | (b & 0x3F);            // continuation bytes are common
      if (b < 0x20 || b == '"' || b == '\\') b = 'z';       // keep the JSON structure intact
      text += static_cast<char>(b);
    }
    const std::string body = R"({"model":"m","t":")" + text + R"("})";
    const bool ours = scan(body).ok();
    const bool theirs = !nlohmann::json::parse(body, nullptr, false).is_discarded();
    ASSERT_EQ(ours, theirs) << ::testing::PrintToString(text);
  }
}

// A \u escape of a UTF-16 surrogate stands for Unicode text only as a high-low pair; alone it
// is no UTF-8 a backend could encode, and nlohmann (the tree path) refuses it as well.
TEST(JsonRequestScan, LoneSurrogateEscapesAreRefusedPairsPass) {
  const std::vector<std::string> pairs = {R"(\ud83d\ude00)", R"(\uD83D\uDE00x)", R"(\udbff\udfff)", R"(\ud800\udc00)"};
  const std::vector<std::string> lone = {R"(\ud800)",        R"(\udc00)",        R"(\udfff x)",
                                         R"(\ud800x)",       R"(\ud800\u0041)", R"(\udc00\ud800)",
                                         R"(\ud800\ud800)", R"(\ud83d\n)",     R"(\ud83d\ude0)"};
  for (std::size_t pad = 0; pad < 9; ++pad) {
    for (const auto& t : pairs) {
      const std::string body = R"({"model":"m","t":")" + std::string(pad, 'a') + t + R"("})";
      EXPECT_TRUE(scan(body).ok()) << t << " pad " << pad;
      EXPECT_FALSE(nlohmann::json::parse(body, nullptr, false).is_discarded()) << t;
    }
    for (const auto& t : lone) {
      const std::string body = R"({"model":"m","t":")" + std::string(pad, 'a') + t + R"("})";
      EXPECT_FALSE(scan(body).ok()) << t << " pad " << pad;
      EXPECT_TRUE(nlohmann::json::parse(body, nullptr, false).is_discarded()) << t;
    }
  }
  EXPECT_FALSE(scan(R"({"\udc00":1,"model":"m"})").ok());  // in a key too
  EXPECT_FALSE(scan(R"({"model":"m","x":[{"y":"\ud800"}]})").ok());  // and nested
}

}  // namespace
}  // namespace imageworks
