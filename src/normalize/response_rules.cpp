// Response normalisation (SPEC §7): the stream-chunk and whole-reply rules declared in
// response_rules.hpp. Everything here runs only on texts the substring test let through.
#include "imageworks/response_rules.hpp"

#include <cstring>
#include <exception>
#include <random>

#include <nlohmann/json.hpp>

#include "imageworks/json_splice.hpp"

namespace imageworks {

namespace {

using nlohmann::json;
using ChoiceState = StreamRules::ChoiceState;

// The tree of a chunk or reply whose `choices` is an array; nullopt for anything else. The
// splice validator runs first: it bounds nesting (512 levels), so nlohmann's recursive dump
// cannot exhaust the stack on a hostile payload.
std::optional<json> parse_with_choices(std::string_view text) {
  static constexpr std::string_view keys[] = {"choices"};
  std::optional<std::string_view> raw[1];
  if (!find_top_level_values(text, keys, raw) || !raw[0] || raw[0]->front() != '[') return std::nullopt;
  json root = json::parse(text, nullptr, false);  // discarded (not an object) on bad UTF-8
  if (!root.is_object()) return std::nullopt;
  auto it = root.find("choices");
  if (it == root.end() || !it->is_array()) return std::nullopt;
  return root;
}

std::string serialize(const json& root) { return root.dump(-1, ' ', false, json::error_handler_t::replace); }

bool is_nonempty_string(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() && !it->get_ref<const std::string&>().empty();
}

bool missing_or_null(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null();
}

// Ollama's native object/array/number arguments as the JSON string OpenAI clients expect.
bool stringify_arguments(json& function) {
  auto it = function.find("arguments");
  if (it == function.end() || it->is_string() || it->is_null()) return false;
  *it = it->dump(-1, ' ', false, json::error_handler_t::replace);
  return true;
}

// Rule 5: `reasoning` / `thinking` also as `reasoning_content` (null counts as absent).
bool alias_reasoning(json& obj) {
  if (!missing_or_null(obj, "reasoning_content")) return false;
  for (const char* key : {"reasoning", "thinking"}) {
    auto it = obj.find(key);
    if (it != obj.end() && it->is_string()) {
      std::string text = it->get<std::string>();
      obj["reasoning_content"] = std::move(text);
      return true;
    }
  }
  return false;
}

bool map_finish_reason(json& choice) {
  auto it = choice.find("finish_reason");
  if (it == choice.end() || !it->is_string() || *it != "function_call") return false;
  *it = "tool_calls";
  return true;
}

std::int64_t choice_key(const json& choice, std::size_t position) {
  auto it = choice.find("index");
  if (it != choice.end() && it->is_number_integer()) return it->get<std::int64_t>();
  return static_cast<std::int64_t>(position);
}

int new_call(ChoiceState& st) {
  st.named.push_back(false);
  return static_cast<int>(st.named.size()) - 1;
}

// A legacy function_call is converted unless real tool_calls sit beside it (vLLM-style
// deltas carry an empty `tool_calls: []`, SDK dumps a null one).
bool no_tool_calls(const json& obj) {
  auto it = obj.find("tool_calls");
  return it == obj.end() || it->is_null() || (it->is_array() && it->empty());
}

// obj[key] = value; answers true for the callers' `changed = put(...)`.
bool put(json& obj, const char* key, json value) {
  obj[key] = std::move(value);
  return true;
}

json one_element_array(json element) {
  json array = json::array();
  array.push_back(std::move(element));
  return array;
}

// Rule 1 in a stream: a legacy `function_call` fragment becomes one `tool_calls` entry. The
// first fragment gets the id and type; later ones only the index and their function members.
bool convert_stream_legacy(json& delta, ChoiceState& st) {
  auto fc = delta.find("function_call");
  if (fc == delta.end() || !fc->is_object() || !no_tool_calls(delta)) return false;
  json function = std::move(*fc);
  delta.erase("function_call");
  stringify_arguments(function);
  json call = json::object();
  if (st.legacy < 0) {
    st.legacy = new_call(st);
    call["id"] = synthesize_call_id();
    call["type"] = "function";
    if (is_nonempty_string(function, "name")) {
      st.legacy_name = function["name"].get<std::string>();
      st.named[static_cast<std::size_t>(st.legacy)] = true;
    }
  } else if (auto name = function.find("name"); name != function.end() && name->is_string() && *name == st.legacy_name) {
    function.erase(name);  // a verbatim repeat: clients concatenate name fragments
  }
  call["index"] = st.legacy;
  call["function"] = std::move(function);
  st.last = st.legacy;
  delta["tool_calls"] = one_element_array(std::move(call));
  return true;
}

// Which of our calls a stream fragment belongs to (rule 2); `fresh` when it starts one.
int route_fragment(ChoiceState& st, const std::optional<std::string>& id, std::optional<std::int64_t> upstream,
                   bool has_name, bool& fresh) {
  fresh = false;
  if (id) {
    if (auto known = st.by_id.find(*id); known != st.by_id.end()) return known->second;
    fresh = true;
    int ours = new_call(st);
    st.by_id.emplace(*id, ours);
    return ours;
  }
  if (upstream) {  // an index seen before continues its call; a new one is a new call
    auto u = st.by_upstream.find(*upstream);
    if (u != st.by_upstream.end()) return u->second;
    fresh = true;
    return new_call(st);
  }
  // Neither id nor index: the last call, unless this fragment names a call again.
  int candidate = st.last;
  if (candidate < 0 || (has_name && st.named[static_cast<std::size_t>(candidate)])) {
    fresh = true;
    return new_call(st);
  }
  return candidate;
}

// Rule 2 + 3 in a stream: every `tool_calls` entry gets our index; a new call without id or
// type gets them; arguments become a string.
bool fix_stream_tool_calls(json& delta, ChoiceState& st) {
  auto tc = delta.find("tool_calls");
  if (tc == delta.end() || !tc->is_array()) return false;
  bool changed = false;
  for (auto& entry : *tc) {
    if (!entry.is_object()) continue;
    std::optional<std::string> id;
    if (is_nonempty_string(entry, "id")) id = entry["id"].get<std::string>();
    std::optional<std::int64_t> upstream;
    if (auto ix = entry.find("index"); ix != entry.end() && ix->is_number_integer()) upstream = ix->get<std::int64_t>();
    json* function = nullptr;
    if (auto f = entry.find("function"); f != entry.end() && f->is_object()) function = &*f;
    bool has_name = function && is_nonempty_string(*function, "name");
    bool fresh = false;
    int ours = route_fragment(st, id, upstream, has_name, fresh);
    if (upstream) st.by_upstream[*upstream] = ours;
    st.last = ours;
    if (has_name) st.named[static_cast<std::size_t>(ours)] = true;
    if (!upstream || *upstream != ours) changed = put(entry, "index", ours);
    if (fresh && !id) changed = put(entry, "id", synthesize_call_id());
    if (fresh && missing_or_null(entry, "type")) changed = put(entry, "type", "function");
    if (function && stringify_arguments(*function)) changed = true;
  }
  return changed;
}

// Rules 1, 3, 4 on a whole reply's message.
bool fix_reply_tools(json& message) {
  bool changed = false;
  auto fc = message.find("function_call");
  if (fc != message.end() && fc->is_object() && no_tool_calls(message)) {
    json call = json::object();
    call["function"] = std::move(*fc);
    message.erase("function_call");
    message["tool_calls"] = one_element_array(std::move(call));  // id and type added below
    changed = true;
  }
  auto tc = message.find("tool_calls");
  if (tc == message.end() || !tc->is_array()) return changed;
  for (auto& entry : *tc) {
    if (!entry.is_object()) continue;
    if (!is_nonempty_string(entry, "id")) changed = put(entry, "id", synthesize_call_id());
    if (missing_or_null(entry, "type")) changed = put(entry, "type", "function");
    auto f = entry.find("function");
    if (f == entry.end() || !f->is_object()) continue;
    if (missing_or_null(*f, "arguments")) changed = put(*f, "arguments", "{}");
    else if (stringify_arguments(*f)) changed = true;
  }
  return changed;
}

}  // namespace

StreamRules::StreamRules(bool normalize_tools) : normalize_tools_(normalize_tools) {}

bool StreamRules::wants(std::string_view chunk_json) const { return mentions_response_trigger(chunk_json, normalize_tools_); }

std::optional<std::string> StreamRules::apply(std::string_view chunk_json) {
  try {
    if (normalize_tools_) {
      if (auto fast = legacy_fragment_fast(chunk_json)) return fast;
    }
    auto root = parse_with_choices(chunk_json);
    if (!root) return std::nullopt;
    bool changed = false;
    std::size_t position = 0;
    for (auto& choice : (*root)["choices"]) {
      const std::size_t here = position++;
      if (!choice.is_object()) continue;
      auto delta = choice.find("delta");
      if (delta != choice.end() && delta->is_object()) {
        if (normalize_tools_ && (delta->contains("function_call") || delta->contains("tool_calls"))) {
          auto& st = choices_[choice_key(choice, here)];
          if (convert_stream_legacy(*delta, st)) changed = true;
          else if (fix_stream_tool_calls(*delta, st)) changed = true;
        }
        if (alias_reasoning(*delta)) changed = true;
      }
      if (normalize_tools_ && map_finish_reason(choice)) changed = true;
    }
    if (!changed) return std::nullopt;
    return serialize(*root);
  } catch (const std::exception&) {
    return std::nullopt;  // relaying the original bytes beats losing the chunk
  }
}

bool reply_wants(std::string_view reply_json) { return mentions_response_trigger(reply_json, true); }

std::optional<std::string> normalise_reply(std::string_view reply_json, bool normalize_tools) {
  try {
    auto root = parse_with_choices(reply_json);
    if (!root) return std::nullopt;
    bool changed = false;
    for (auto& choice : (*root)["choices"]) {
      if (!choice.is_object()) continue;
      auto message = choice.find("message");
      if (message != choice.end() && message->is_object()) {
        if (normalize_tools && fix_reply_tools(*message)) changed = true;
        if (alias_reasoning(*message)) changed = true;
      }
      if (normalize_tools && map_finish_reason(choice)) changed = true;
    }
    if (!changed) return std::nullopt;
    return serialize(*root);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string synthesize_call_id() {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seed{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seed);
  }();
  std::uniform_int_distribution<int> pick(0, static_cast<int>(sizeof(alphabet)) - 2);
  std::string id = "call_";
  id.reserve(29);
  for (int i = 0; i < 24; ++i) id += alphabet[pick(rng)];
  return id;
}

}  // namespace imageworks
