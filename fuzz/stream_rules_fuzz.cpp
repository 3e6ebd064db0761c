// Fuzz target stream_rules: an upstream SSE stream relayed as relay_stream does it — SseParser
// at points the option byte seeds, each event through StreamRewriter with the chat-chunk
// rules (StreamRules: legacy function_call, tool-call indices, arguments, reasoning) — and
// the same payload as a whole reply through normalise_reply and the reply capture, and as a
// backend's error reply through upstream_error.
//
// Oracles: each event becomes whole frames ("data: …\n\n" or a comment); a JSON object in
// becomes one JSON object out with the requested model; nothing follows the end of the
// stream; wants()/reply_wants() have no false negatives (a text they pass over is one the
// rules leave unchanged); a rewritten whole reply and our error body are JSON. SseTooLarge
// is the one rejection.
#include "forwarder/relay.hpp"
#include "fuzz_input.hpp"
#include "imageworks/json_splice.hpp"
#include "imageworks/response_rules.hpp"
#include "imageworks/sse.hpp"

namespace {

using namespace imageworks;
using fuzz::FuzzInput;

const std::string kRequestedModel = "Fuzz \"Model\" \xc3\xa9";

bool is_object(std::string_view text) {
  std::optional<std::string_view> none[1];
  return find_top_level_values(text, {}, none);
}

// The raw `choices` of a chunk or reply: what the relay gives the rules' cheap test.
std::optional<std::string_view> choices_of(std::string_view text) {
  static constexpr std::string_view keys[] = {"choices"};
  std::optional<std::string_view> v[1];
  find_top_level_values(text, keys, v);
  return v[0];
}

// The relay's lenient scan (scan_backend_object) answers as the full one on every valid
// object, and accepts no text whose brackets do not match.
void check_backend_scan(std::string_view text) {
  static constexpr std::string_view keys[] = {"error", "usage", "choices", "model", "id", "created"};
  std::optional<std::string_view> strict[6], loose[6];
  const bool valid = find_top_level_values(text, keys, strict);
  const bool accepted = scan_backend_object(text, keys, loose);
  if (valid) {
    FUZZ_CHECK(accepted);
    for (int k = 0; k < 6; ++k) FUZZ_CHECK(strict[k] == loose[k]);
  }
  if (accepted) {  // one object: '{' … '}' with only whitespace around
    const auto first = text.find_first_not_of(" \t\r\n"), last = text.find_last_not_of(" \t\r\n");
    FUZZ_CHECK(first != std::string_view::npos && text[first] == '{' && text[last] == '}');
  }
}

// One event through the rewriter, checking what it appended to `out`.
void relay_event(StreamRewriter& rw, std::optional<StreamRules>& probe_rules, const SseEvent& ev, std::string& out,
                 std::string& reply, bool capture) {
  if (capture && !ev.comment) append_stream_reply(ev.data, reply);
  check_backend_scan(ev.data);
  // The rules' cheap test must not miss an event they would change (a copy keeps the state).
  if (auto choices = choices_of(ev.data); probe_rules && !ev.comment && choices && !probe_rules->wants(*choices)) {
    StreamRules probe = *probe_rules;
    FUZZ_CHECK(!probe.apply(ev.data));
  }
  const bool was_done = rw.done();
  const std::size_t before = out.size();
  rw.on_event(ev.event, ev.data, ev.comment, out);
  std::string_view added = std::string_view(out).substr(before);
  if (was_done) {
    FUZZ_CHECK(added.empty());
    return;
  }
  if (added.empty()) return;  // our usage chunk, dropped
  FUZZ_CHECK(added.size() >= 2 && added.substr(added.size() - 2) == "\n\n");
  if (ev.comment) {
    FUZZ_CHECK(added.front() == ':');
    return;
  }
  FUZZ_CHECK(added.substr(0, 6) == "data: ");
  if (!rw.done() && is_object(ev.data)) {  // a chunk: one line of JSON, the model restored
    const std::string_view frame = added.substr(6, added.size() - 8);
    FUZZ_CHECK(frame.find_first_of("\r\n") == std::string_view::npos);
    FUZZ_CHECK(is_object(frame));
    if (auto model = find_top_level_string(ev.data, "model"))
      FUZZ_CHECK(find_top_level_value(frame, "model") == json_quote(kRequestedModel));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzInput in(data, size);
  const bool normalize_tools = !in.bit(0), strip_usage = in.bit(1), chat = !in.bit(2), capture = in.bit(3);
  static constexpr std::size_t kMaxPiece[] = {1, 5, 64, 4096};
  const auto cuts = fuzz::split_points(in.payload.size(), in.options, kMaxPiece[(in.options >> 4) & 3u]);

  std::optional<StreamRules> rules;
  if (chat) rules.emplace(normalize_tools);
  std::optional<StreamRules> probe_rules = rules;  // follows the rewriter's rules' state
  StreamRewriter rw(kRequestedModel, strip_usage, std::move(rules));
  SseParser sse(in.bit(6) ? 256 : 16u << 20);
  std::string out, reply;
  auto on_event = [&](const SseEvent& ev) {
    if (auto choices = choices_of(ev.data); probe_rules && !ev.comment && choices && probe_rules->wants(*choices))
      (void)probe_rules->apply(ev.data);
    relay_event(rw, probe_rules, ev, out, reply, capture);
  };
  try {
    for (auto piece : fuzz::split(in.payload, cuts)) sse.feed(piece, on_event);
    sse.finish(on_event);
    rw.finish(out);
  } catch (const SseTooLarge&) {
    rw.fail(ProxyError(502, "err_backend_error", "event too large"), out);
  }
  FUZZ_CHECK(out.size() >= 14 && out.substr(out.size() - 14) == "data: [DONE]\n\n");

  // The payload as a whole (non-stream) reply; finish_reply tests its choices first.
  auto rewritten = normalise_reply(in.payload, normalize_tools);
  if (auto choices = choices_of(in.payload); !choices || !mentions_response_trigger(*choices, true))
    FUZZ_CHECK(!rewritten);
  (void)reply_wants(in.payload);
  if (rewritten) FUZZ_CHECK(is_object(*rewritten) && first_invalid_utf8(*rewritten) == std::string_view::npos);
  if (capture) append_whole_reply(in.payload, reply);

  // The payload as a backend's error reply (relay_whole, status >= 400): our error shape.
  const ProxyError err = upstream_error(400 + in.options % 200, in.payload);
  FUZZ_CHECK(err.status >= 400 && err.status <= 599);
  FUZZ_CHECK(is_object(error_body(err)));
  return 0;
}
