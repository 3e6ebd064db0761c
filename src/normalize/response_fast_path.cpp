// The common event of a legacy function_call stream, rewritten without a JSON tree: after the
// call's first fragment, every event is `{"function_call":{"arguments":"…"}}` in the delta
// of a single choice. Spliced here into `{"tool_calls":[{"index":N,"function":{"arguments":"…"}}]}`
// — a parse and dump per event would double the stream's cost. Anything else (a name, other
// delta members, several choices, a finish_reason, escaped keys) goes the general way.
#include <charconv>

#include "imageworks/json_splice.hpp"
#include "imageworks/response_rules.hpp"

namespace imageworks {

namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
  return s;
}

// `obj` (a valid object) is exactly { "key" : value } with `value` a view into it.
bool sole_member(std::string_view obj, std::string_view quoted_key, std::string_view value) {
  std::string_view head = trim(obj.substr(0, static_cast<std::size_t>(value.data() - obj.data())));
  std::string_view tail = trim(obj.substr(static_cast<std::size_t>(value.data() + value.size() - obj.data())));
  if (tail != "}" || head.size() < 2 || head.front() != '{' || head.back() != ':') return false;
  return trim(head.substr(1, head.size() - 2)) == quoted_key;
}

}  // namespace

std::optional<std::string> StreamRules::legacy_fragment_fast(std::string_view chunk) {
  static constexpr std::string_view top[] = {"choices"};
  std::optional<std::string_view> c[1];
  if (!find_top_level_values(chunk, top, c) || !c[0] || c[0]->front() != '[') return std::nullopt;
  std::string_view element = trim(c[0]->substr(1, c[0]->size() - 2));  // one object, or the scan below fails
  static constexpr std::string_view choice_keys[] = {"index", "delta", "finish_reason"};
  std::optional<std::string_view> ch[3];
  if (!find_top_level_values(element, choice_keys, ch) || !ch[0] || !ch[1]) return std::nullopt;
  if (ch[2] && *ch[2] != "null") return std::nullopt;
  std::int64_t index = 0;
  auto [end, ec] = std::from_chars(ch[0]->data(), ch[0]->data() + ch[0]->size(), index);
  if (ec != std::errc() || end != ch[0]->data() + ch[0]->size()) return std::nullopt;
  auto st = choices_.find(index);
  if (st == choices_.end() || st->second.legacy < 0) return std::nullopt;  // the first fragment goes the long way

  static constexpr std::string_view delta_keys[] = {"function_call"};
  std::optional<std::string_view> fc[1];
  const std::string_view delta = *ch[1];
  if (!find_top_level_values(delta, delta_keys, fc) || !fc[0] || !sole_member(delta, "\"function_call\"", *fc[0]))
    return std::nullopt;
  static constexpr std::string_view call_keys[] = {"arguments"};
  std::optional<std::string_view> args[1];
  if (!find_top_level_values(*fc[0], call_keys, args) || !args[0] || args[0]->front() != '"' ||
      !sole_member(*fc[0], "\"arguments\"", *args[0]))
    return std::nullopt;

  st->second.last = st->second.legacy;
  std::string out;
  out.reserve(chunk.size() + 48);
  out.append(chunk.data(), static_cast<std::size_t>(delta.data() - chunk.data()));
  out += R"({"tool_calls":[{"index":)";
  out += std::to_string(st->second.legacy);
  out += R"(,"function":{"arguments":)";
  out += *args[0];
  out += "}}]}";
  out.append(delta.data() + delta.size(), static_cast<std::size_t>(chunk.data() + chunk.size() - (delta.data() + delta.size())));
  return out;
}

}  // namespace imageworks
