#pragma once
// Response normalisation of chat completions (SPEC §7) as pure functions: legacy
// `function_call` → `tool_calls`, tool calls re-indexed 0,1,… by id, `arguments` always a
// JSON string, `reasoning`/`thinking` also exposed as `reasoning_content`.
//
// Contract: `wants` is a few substring searches on the raw text (no parse) with no false
// negatives; `apply`/`normalise_reply` parse only what `wants` let through, never throw, and
// answer nullopt when no rule changed anything (relay the original bytes) or the input is
// not a JSON object of the expected shape (odd members pass through untouched). A rewritten
// text is compact JSON whose object keys may come out in another order.
//
// Decisions: `arguments` null or missing stays so in a stream fragment ("nothing in this
// fragment") and becomes "{}" in a whole reply; `reasoning_content` that is null counts as
// absent; a `function_call` beside a non-empty `tool_calls` is left alone (an empty or null
// `tool_calls` is replaced); a tool call fragment without id starts a new call (with a
// synthesised id) when its upstream index was not seen before, or, having no index either,
// when it carries a name and the last call already has one.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace imageworks {

// Per-stream state for the chat-completion chunk rules; one per relayed stream.
class StreamRules {
 public:
  // false = CHAT_PROXY_DISABLE_TOOL_NORMALIZATION=1: tool fields pass raw (reasoning still applies).
  explicit StreamRules(bool normalize_tools);
  // Could any rule change this `data:` payload? Substring searches only; false positives are
  // fine (apply then returns nullopt), false negatives are bugs.
  bool wants(std::string_view chunk_json) const;
  // Rewrites one chunk; nullopt when nothing changed. Never throws.
  std::optional<std::string> apply(std::string_view chunk_json);

  // Tool-call bookkeeping of one choice (by `choices[i].index`); public only for the .cpp.
  struct ChoiceState {
    std::map<std::string, int> by_id;            // upstream tool-call id → our index
    std::map<std::int64_t, int> by_upstream;     // upstream index → our index (the latest call there)
    std::vector<bool> named;                     // our index → the call has received a name
    int last = -1;                               // our index of the call the last fragment went to
    int legacy = -1;                             // our index of the legacy function_call, -1 before it
    std::string legacy_name;                     // its name, to drop verbatim repeats in later fragments
  };

 private:
  // A legacy call's argument-only fragment, spliced without a tree (response_fast_path.cpp).
  std::optional<std::string> legacy_fragment_fast(std::string_view chunk);
  bool normalize_tools_;
  std::map<std::int64_t, ChoiceState> choices_;
};

// Whole (non-stream) chat completion replies: the same cheap test and the same rules on
// `choices[i].message` (tool_calls get an id and type where missing, no index is added).
bool reply_wants(std::string_view reply_json);
std::optional<std::string> normalise_reply(std::string_view reply_json, bool normalize_tools);

// The test behind wants()/reply_wants(): does `text` contain "reasoning", "thinking" or, with
// `tools`, "tool_calls" / "function_call", or an escape \u005x-\u007x (which could spell one
// of those keys)? One pass over the text (response_triggers.cpp).
bool mentions_response_trigger(std::string_view text, bool tools);

// "call_" + 24 random [A-Za-z0-9]: the id given to calls that arrive without one.
std::string synthesize_call_id();

}  // namespace imageworks
