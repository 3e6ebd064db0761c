#pragma once
// Tree-free JSON scanning and splicing for the hot path (STYLE.md "No JSON tree on the hot
// path"): find, replace or add one top-level member of a JSON object in its original bytes.
//
// Every function first checks that the whole input is one JSON object (structure, strings,
// escapes, numbers, literals; nesting up to 512 levels; UTF-8 is checked only by
// scan_request_object) and answers
// nullopt/false, never reading out of bounds, when it is not (scan_backend_object checks
// less below the top level, and says so). Keys match after unescaping
// ("mod\u0065l" is "model"). A key given twice: find/test see the last one (as nlohmann and
// most parsers do), replace changes every occurrence so no reader can see the old value.
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace imageworks {

// Raw (still escaped, without quotes) string value of top-level `key`; nullopt when the key
// is absent, its value is not a string, or the input is not a valid JSON object.
std::optional<std::string_view> find_top_level_string(std::string_view json, std::string_view key);

// Raw text of the value of top-level `key` (any type; strings keep their quotes). The view
// points into `json`, so `view.data() - json.data()` is its offset for splicing by hand.
std::optional<std::string_view> find_top_level_value(std::string_view json, std::string_view key);

bool has_top_level_key(std::string_view json, std::string_view key);

// Several keys in one pass (a stream chunk's "model", "id", "created", "usage"...): out[i] is
// the raw value of keys[i] as find_top_level_value would return it. Needs out.size() >=
// keys.size(); false, with every out[i] reset, when `json` is not a valid object.
bool find_top_level_values(std::string_view json, std::span<const std::string_view> keys,
                           std::span<std::optional<std::string_view>> out);

// find_top_level_values for a backend's reply or stream event, once per event on the hot
// path: the top level is checked as there (members, keys, scalar values), but nested objects
// and arrays only for well-formed strings and matched brackets, since the proxy relays them as
// they came and reads none of them without a check of its own (the §7 rules parse what
// they change). Same answers as find_top_level_values on any valid JSON.
bool scan_backend_object(std::string_view json, std::span<const std::string_view> keys,
                         std::span<std::optional<std::string_view>> out);

// A request body's scan (SPEC §9): find_top_level_values that also requires every string to
// be well-formed UTF-8 (RFC 8259 §8.1) with no \u escape of a lone UTF-16 surrogate (§8.2),
// and every top-level key to occur once, since the proxy routes by one "model" and a backend
// could read another. On any failure every out[i] is reset.
struct ObjectScan {
  enum class Result { ok, invalid_json, invalid_utf8, duplicate_key };
  Result result = Result::ok;
  std::size_t error_offset = std::string_view::npos;  // invalid_utf8: the first bad byte
  std::string duplicate_key;                           // duplicate_key: the key, unescaped
  bool ok() const { return result == Result::ok; }
};
ObjectScan scan_request_object(std::string_view json, std::span<const std::string_view> keys,
                               std::span<std::optional<std::string_view>> out);

// Offset of the first byte of `s` that does not start a well-formed UTF-8 sequence (stray
// continuation, overlong, surrogate, above U+10FFFF, cut short by the end), or npos.
std::size_t first_invalid_utf8(std::string_view s);

// True only when the value of top-level `key` is the literal `true` ("stream": true).
bool top_level_is_true(std::string_view json, std::string_view key);

// Replaces the string value of top-level `key` with `new_value` (escaped here), in place.
// False, leaving `json` unchanged, when the key is absent or any occurrence is not a string.
bool replace_top_level_string(std::string& json, std::string_view key, std::string_view new_value);

// Replaces the value of top-level `key`, whatever its type, with `raw_value` (JSON text the
// caller vouches for). False, unchanged, when the key is absent or `json` is invalid.
bool replace_top_level_value(std::string& json, std::string_view key, std::string_view raw_value);

// Appends `"key":raw_value` to the top-level object, e.g. ("stream_options",
// R"({"include_usage":true})"). False, unchanged, when the key already exists (use
// replace_top_level_value) or `json` is invalid.
bool insert_top_level_member(std::string& json, std::string_view key, std::string_view raw_value);

// `s` as the inside of a JSON string: escapes '"', '\\' and control characters; other
// bytes (UTF-8 included) pass through.
std::string json_escape(std::string_view s);
void append_json_escaped(std::string& out, std::string_view s);
// `s` as a JSON string literal, quotes included: the text to splice in as a value.
std::string json_quote(std::string_view s);

// The text a raw JSON string body stands for (\uXXXX and surrogate pairs → UTF-8); nullopt
// for a bad escape or a lone surrogate.
std::optional<std::string> json_unescape(std::string_view raw);

}  // namespace imageworks
