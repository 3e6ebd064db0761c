// Fuzz target sse_parser: SseParser on an upstream byte stream, whole and split at points the
// option byte seeds. Oracle: the header's contract, "correct for any split" — both runs
// report the same events — and reset() starts a stream afresh. SseTooLarge is the documented
// rejection of an oversized line or event (a small limit exercises it).
#include <string>

#include "fuzz_input.hpp"
#include "imageworks/sse.hpp"

namespace {

using imageworks::SseEvent;
using imageworks::SseParser;
using imageworks::SseTooLarge;

struct Ev {
  std::string event, data, id;
  bool comment = false;
  bool operator==(const Ev&) const = default;
};

std::vector<Ev> parse(SseParser& p, const std::vector<std::string_view>& pieces) {
  std::vector<Ev> out;
  auto sink = [&](const SseEvent& e) {
    FUZZ_CHECK(!e.comment || (e.event.empty() && e.id.empty()));
    out.push_back({std::string(e.event), std::string(e.data), std::string(e.id), e.comment});
  };
  for (auto piece : pieces) p.feed(piece, sink);
  p.finish(sink);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace imageworks::fuzz;
  FuzzInput in(data, size);
  static constexpr std::size_t kMaxPiece[] = {1, 2, 3, 7, 16, 64, 512, 4096};
  const auto cuts = split_points(in.payload.size(), in.options, kMaxPiece[in.options & 7u]);

  SseParser whole_parser;
  const auto whole = parse(whole_parser, {in.payload});
  SseParser split_parser;
  const auto pieces = split(in.payload, cuts);
  FUZZ_CHECK(parse(split_parser, pieces) == whole);
  split_parser.reset();
  FUZZ_CHECK(parse(split_parser, pieces) == whole);

  // A small limit: a line or event past it throws SseTooLarge, whatever the split.
  SseParser small(64);
  try {
    parse(small, pieces);
  } catch (const SseTooLarge&) {
  }
  return 0;
}
