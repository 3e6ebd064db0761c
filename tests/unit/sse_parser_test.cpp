// SseParser: a realistic upstream stream must parse to the same events for every way the
// bytes can be split, with any line-end style.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "imageworks/sse.hpp"

namespace imageworks {
namespace {

struct Ev {
  std::string event, data, id;
  bool comment = false;
  bool operator==(const Ev&) const = default;
};

void PrintTo(const Ev& e, std::ostream* os) {
  *os << (e.comment ? "comment" : "event") << "{event='" << e.event << "' data='" << e.data << "' id='"
      << e.id << "'}";
}

Ev copy(const SseEvent& e) { return Ev{std::string(e.event), std::string(e.data), std::string(e.id), e.comment}; }

// Feeds `pieces` in order, then finishes; returns everything reported.
std::vector<Ev> parse_pieces(const std::vector<std::string_view>& pieces, bool finish = true) {
  SseParser p;
  std::vector<Ev> out;
  auto sink = [&](const SseEvent& e) { out.push_back(copy(e)); };
  for (auto piece : pieces) p.feed(piece, sink);
  if (finish) p.finish(sink);
  return out;
}

std::vector<Ev> parse_all(std::string_view s) { return parse_pieces({s}); }

// A stream written with '\n'; each test rewrites the line ends.
const std::string kStreamLf =
    ": loading fake-model\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
    "event: message\n"
    "id: 7\n"
    "data: {\"a\":1}\n\n"
    "data: line1\n"
    "data: line2\n"
    "data:\n"
    "data: line4\n\n"
    "data:nospace\n\n"
    "data:  two spaces\n\n"
    "retry: 1000\n"
    "foo: bar\n"
    "data: after unknown\n\n"
    "event: only-event-no-data\n\n"
    ":no-space comment\n"
    "error: {\"code\":500,\"message\":\"boom\"}\n\n"
    "data: [DONE]\n\n";

const std::vector<Ev> kExpected = {
    {"", "loading fake-model", "", true},
    {"", R"({"id":"c1","choices":[{"delta":{"role":"assistant","content":""}}]})", "", false},
    {"", R"({"id":"c1","choices":[{"delta":{"content":"Hel"}}]})", "", false},
    {"message", R"({"a":1})", "7", false},
    {"", "line1\nline2\n\nline4", "", false},
    {"", "nospace", "", false},
    {"", " two spaces", "", false},
    {"", "after unknown", "", false},
    {"", "no-space comment", "", true},
    {"error", R"({"code":500,"message":"boom"})", "", false},
    {"", "[DONE]", "", false},
};

std::string with_line_ends(const std::string& lf, std::string_view eol) {
  std::string out;
  for (char c : lf) {
    if (c == '\n') out += eol;
    else out += c;
  }
  return out;
}

class SseLineEnds : public ::testing::TestWithParam<std::string_view> {
 protected:
  std::string stream() const { return with_line_ends(kStreamLf, GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Sse, SseLineEnds, ::testing::Values("\n", "\r\n", "\r"),
                         [](const auto& info) {
                           return info.param == "\n" ? std::string("LF")
                                  : info.param == "\r" ? std::string("CR") : std::string("CRLF");
                         });

TEST_P(SseLineEnds, WholeStreamInOneFeed) { EXPECT_EQ(parse_all(stream()), kExpected); }

TEST_P(SseLineEnds, EverySplitPoint) {
  const std::string s = stream();
  for (std::size_t i = 0; i <= s.size(); ++i) {
    const std::string_view v = s;
    ASSERT_EQ(parse_pieces({v.substr(0, i), v.substr(i)}), kExpected) << "split at " << i;
  }
}

TEST_P(SseLineEnds, EveryPairOfSplitPoints) {
  const std::string s = stream();
  const std::string_view v = s;
  for (std::size_t i = 0; i <= s.size(); i += 4) {
    for (std::size_t j = i; j <= s.size(); ++j) {
      ASSERT_EQ(parse_pieces({v.substr(0, i), v.substr(i, j - i), v.substr(j)}), kExpected)
          << "splits at " << i << ", " << j;
    }
  }
}

TEST_P(SseLineEnds, ByteByByte) {
  const std::string s = stream();
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < s.size(); ++i) bytes.push_back(std::string_view(s).substr(i, 1));
  EXPECT_EQ(parse_pieces(bytes), kExpected);
}

TEST_P(SseLineEnds, EmptyFeedsChangeNothing) {
  const std::string s = stream();
  const std::string_view v = s;
  EXPECT_EQ(parse_pieces({"", v.substr(0, 10), "", "", v.substr(10), ""}), kExpected);
}

TEST(SseParser, CrAtEndOfFeedThenLfIsOneLineEnd) {
  // Were the '\n' a second line end, "a" and "b" would be two events.
  EXPECT_EQ(parse_pieces({"data: a\r", "\ndata: b\r\n\r\n"}), (std::vector<Ev>{{"", "a\nb", "", false}}));
  EXPECT_EQ(parse_pieces({"data: a\r", "", "\n", "data: b\r", "\n\r", "\n"}),
            (std::vector<Ev>{{"", "a\nb", "", false}}));
}

TEST(SseParser, MixedLineEndsInOneStream) {
  EXPECT_EQ(parse_all("data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"),
            (std::vector<Ev>{{"", "a\nb\nc", "", false}, {"", "d", "", false}}));
}

TEST(SseParser, TrailingEventIsFlushedOnlyByFinish) {
  EXPECT_TRUE(parse_pieces({"data: tail"}, /*finish=*/false).empty());
  EXPECT_TRUE(parse_pieces({"data: tail\n"}, /*finish=*/false).empty());
  EXPECT_EQ(parse_pieces({"data: tail"}), (std::vector<Ev>{{"", "tail", "", false}}));
  EXPECT_EQ(parse_pieces({"data: ta", "il\n"}), (std::vector<Ev>{{"", "tail", "", false}}));
  EXPECT_EQ(parse_pieces({"data: a\r"}), (std::vector<Ev>{{"", "a", "", false}}));
  EXPECT_EQ(parse_pieces({": bye"}), (std::vector<Ev>{{"", "bye", "", true}}));
  EXPECT_TRUE(parse_pieces({"event: x\n"}).empty());  // no data: nothing to dispatch
  EXPECT_TRUE(parse_pieces({""}).empty());
}

TEST(SseParser, CommentsDoNotDisturbThePendingEvent) {
  EXPECT_EQ(parse_all("data: a\n: ping\ndata: b\n\n"),
            (std::vector<Ev>{{"", "ping", "", true}, {"", "a\nb", "", false}}));
  EXPECT_EQ(parse_all(":\n\n"), (std::vector<Ev>{{"", "", "", true}}));
}

TEST(SseParser, FieldEdgeCases) {
  EXPECT_EQ(parse_all("data\n\n"), (std::vector<Ev>{{"", "", "", false}}));  // no colon: empty value
  EXPECT_EQ(parse_all("data:\ndata:\n\n"), (std::vector<Ev>{{"", "\n", "", false}}));
  EXPECT_EQ(parse_all("data: a:b: c\n\n"), (std::vector<Ev>{{"", "a:b: c", "", false}}));
  EXPECT_EQ(parse_all("Data: case matters\ndata: x\n\n"), (std::vector<Ev>{{"", "x", "", false}}));
  EXPECT_EQ(parse_all("event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n"), (std::vector<Ev>{{"b", "x", "2", false}}));
  EXPECT_EQ(parse_all(std::string_view("id: a\0b\ndata: x\n\n", 17)), (std::vector<Ev>{{"", "x", "", false}}));
  EXPECT_EQ(parse_all("\xEF\xBB\xBF" "data: bom\n\n"), (std::vector<Ev>{{"", "bom", "", false}}));
  // The event/id of an event without data do not leak into the next one.
  EXPECT_EQ(parse_all("event: x\nid: 9\n\ndata: y\n\n"), (std::vector<Ev>{{"", "y", "", false}}));
}

TEST(SseParser, LegacyLlamaCppErrorLineIsAnErrorEvent) {
  const auto evs = parse_all("data: {\"x\":1}\n\nerror: {\"code\":500}\n\n");
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[1], (Ev{"error", "{\"code\":500}", "", false}));
}

TEST(SseParser, WholeEventsAreViewsIntoTheFedBytes) {
  const std::string buf = "data: {\"a\":1}\n\ndata: x\ndata: y\n\ndata: spl";
  SseParser p;
  p.feed(buf);
  auto first = p.next();
  ASSERT_TRUE(first);
  EXPECT_GE(first->data.data(), buf.data());  // no copy for a single-line event
  EXPECT_LT(first->data.data(), buf.data() + buf.size());
  auto second = p.next();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->data, "x\ny");  // joined: necessarily a copy
  EXPECT_FALSE(p.next());
  const std::string rest = "it\n\n";
  p.feed(rest);
  auto third = p.next();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->data, "split");
  EXPECT_FALSE(p.next());
}

TEST(SseParser, SpanningEventSurvivesTheCallerReusingItsBuffer) {
  SseParser p;
  std::vector<Ev> out;
  std::string buf = "event: e\nid: 1\ndata: first\n";
  p.feed(buf, [&](const SseEvent& e) { out.push_back(copy(e)); });
  buf.assign("XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");  // the relay reuses its read buffer
  buf.assign("data: second\n\n");
  p.feed(buf, [&](const SseEvent& e) { out.push_back(copy(e)); });
  EXPECT_EQ(out, (std::vector<Ev>{{"e", "first\nsecond", "1", false}}));
}

TEST(SseParser, PullApiMatchesCallbackApi) {
  SseParser p;
  std::vector<Ev> out;
  p.feed(kStreamLf);
  while (auto e = p.next()) out.push_back(copy(*e));
  p.finish();
  while (auto e = p.next()) out.push_back(copy(*e));
  EXPECT_EQ(out, kExpected);
}

TEST(SseParser, ResetStartsANewStream) {
  SseParser p;
  std::vector<Ev> out;
  auto sink = [&](const SseEvent& e) { out.push_back(copy(e)); };
  p.feed("data: half", sink);
  p.reset();
  p.feed("data: new\n\n", sink);
  p.finish(sink);
  EXPECT_EQ(out, (std::vector<Ev>{{"", "new", "", false}}));
}

TEST(SseParser, DoneDetection) {
  auto evs = parse_all("data: [DONE]\n\n: [DONE]\n");
  SseEvent done{"", "[DONE]", "", false}, comment{"", "[DONE]", "", true};
  EXPECT_TRUE(done.is_done());
  EXPECT_FALSE(comment.is_done());
  EXPECT_EQ(evs.size(), 2u);
}

TEST(SseParser, OversizeLineOrEventThrows) {
  SseParser p(64);
  auto ignore = [](const SseEvent&) {};
  EXPECT_THROW(p.feed("data: " + std::string(100, 'x'), ignore), SseTooLarge);
  SseParser q(64);
  std::string many;
  for (int i = 0; i < 20; ++i) many += "data: 0123456789\n";
  EXPECT_THROW(q.feed(many, ignore), SseTooLarge);
  SseParser r(64);
  EXPECT_NO_THROW(r.feed("data: short\n\ndata: short again\n\n", ignore));
}

TEST(SseParser, FeedingBeforeDrainingIsAnError) {
  SseParser p;
  p.feed("data: a\n\ndata: b\n\n");
  ASSERT_TRUE(p.next());
  EXPECT_THROW(p.feed("data: c\n\n"), std::logic_error);
}

}  // namespace
}  // namespace imageworks
