// Top-level JSON object scanning and splicing (see json_splice.hpp); escaping is in json_escape.cpp.
#include "imageworks/json_splice.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

namespace imageworks {

namespace {

constexpr std::size_t npos = std::string_view::npos;
// Deeper documents are refused instead of risking an unbounded stack of closers.
constexpr std::size_t kMaxDepth = 512;

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Compact JSON has no whitespace between tokens: the first test usually decides.
inline std::size_t skip_ws(std::string_view s, std::size_t i) {
  if (i < s.size() && static_cast<unsigned char>(s[i]) > ' ') [[likely]]
    return i;
  while (i < s.size() && is_ws(s[i])) ++i;
  return i;
}

bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool is_hex4(std::string_view s, std::size_t pos) {
  if (pos > s.size() || s.size() - pos < 4) return false;
  return is_hex(s[pos]) && is_hex(s[pos + 1]) && is_hex(s[pos + 2]) && is_hex(s[pos + 3]);
}

// The value of four hex digits that is_hex4 accepted.
unsigned hex4_value(std::string_view s, std::size_t pos) {
  unsigned v = 0;
  for (std::size_t k = pos; k < pos + 4; ++k) {
    const char c = s[k];
    v = v * 16 + static_cast<unsigned>(is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

// `i` at the 'u' of a \uXXXX escape that is a UTF-16 surrogate: the index of the last hex
// digit of its pair (a high surrogate followed by an escaped low one), or npos for a lone
// surrogate, which stands for no Unicode text (RFC 8259 §8.2) and no UTF-8.
std::size_t surrogate_pair_end(std::string_view s, std::size_t i, unsigned unit) {
  if (unit >= 0xDC00) return std::string_view::npos;
  if (s.size() - i < 11 || s[i + 5] != '\\' || s[i + 6] != 'u' || !is_hex4(s, i + 7)) return std::string_view::npos;
  const unsigned low = hex4_value(s, i + 7);
  return low >= 0xDC00 && low <= 0xDFFF ? i + 10 : std::string_view::npos;
}

// High bit set in each byte of `w` that is '"', '\\' or a control character (SWAR bit
// tricks), and with Utf8 also in each byte >= 0x80. Borrows can flag bytes above a real
// match, never below it, so the lowest set bit is exact.
template <bool Utf8>
std::uint64_t special_bytes(std::uint64_t w) {
  constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  const std::uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
  const std::uint64_t ascii_specials = ((w - ones * 0x20) | (quote - ones) | (backslash - ones)) & ~w & highs;
  if constexpr (Utf8) return ascii_specials | (w & highs);
  return ascii_specials;
}

// Length of the well-formed UTF-8 sequence (RFC 3629 §4) whose lead byte s[i] is >= 0x80,
// or 0: stray continuation bytes, overlong forms, surrogates, code points above U+10FFFF
// and sequences cut short by the end of `s` are all ill-formed.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    len = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    len = 3;
    if (lead == 0xE0) lo = 0xA0;       // else overlong
    else if (lead == 0xED) hi = 0x9F;  // else a UTF-16 surrogate
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    len = 4;
    if (lead == 0xF0) lo = 0x90;       // else overlong
    else if (lead == 0xF4) hi = 0x8F;  // else above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0/C1 (always overlong) or F5..FF
  }
  if (s.size() - i < len) return 0;
  const auto second = static_cast<unsigned char>(s[i + 1]);
  if (second < lo || second > hi) return 0;
  for (std::size_t k = 2; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  return len;
}

// `i` at an opening quote; returns the index past the closing quote, or npos. Plain string
// bytes are skipped 8 at a time, jumping straight to the first special byte: base64 images
// make up most of a large request body, short keys most of a stream event. With Utf8, bytes
// >= 0x80 are special too and must form well-formed UTF-8; ASCII keeps the fast path.
template <bool Utf8>
std::size_t skip_string(std::string_view s, std::size_t i) {
  static_assert(std::endian::native == std::endian::little, "the SWAR scan assumes little-endian words");
  const std::size_t n = s.size();
  ++i;
  while (i < n) {
    if (n - i >= 8) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      const std::uint64_t hits = special_bytes<Utf8>(w);
      if (hits == 0) {
        i += 8;
        continue;
      }
      i += static_cast<std::size_t>(std::countr_zero(hits)) / 8;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') return i + 1;
    if (c < 0x20) return npos;  // raw control characters are not allowed in JSON strings
    if (Utf8 && c >= 0x80) {
      const std::size_t len = utf8_sequence(s, i);
      if (len == 0) return npos;
      i += len;
      continue;
    }
    if (c != '\\') {
      ++i;  // only in the last few bytes, where no whole word is left
      continue;
    }
    if (++i >= n) return npos;
    switch (s[i]) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
      case 'u':
        if (!is_hex4(s, i + 1)) return npos;
        if constexpr (Utf8) {  // a request's strings must be Unicode text: pairs only
          if (const unsigned unit = hex4_value(s, i + 1); unit >= 0xD800 && unit <= 0xDFFF) {
            if ((i = surrogate_pair_end(s, i, unit)) == npos) return npos;
            break;
          }
        }
        i += 4;
        break;
      default: return npos;
    }
    ++i;
  }
  return npos;
}

std::size_t skip_digits(std::string_view s, std::size_t i) {
  while (i < s.size() && is_digit(s[i])) ++i;
  return i;
}

// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
std::size_t skip_number(std::string_view s, std::size_t i) {
  const std::size_t n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i >= n || !is_digit(s[i])) return npos;
  i = s[i] == '0' ? i + 1 : skip_digits(s, i);
  if (i < n && s[i] == '.') {
    const std::size_t start = ++i;
    if ((i = skip_digits(s, i)) == start) return npos;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    if (++i < n && (s[i] == '+' || s[i] == '-')) ++i;
    const std::size_t start = i;
    if ((i = skip_digits(s, i)) == start) return npos;
  }
  return i;
}

std::size_t skip_literal(std::string_view s, std::size_t i, std::string_view word) {
  return s.substr(i, word.size()) == word ? i + word.size() : npos;
}

template <bool Utf8>
std::size_t skip_scalar(std::string_view s, std::size_t i) {
  switch (s[i]) {
    case '"': return skip_string<Utf8>(s, i);
    case 't': return skip_literal(s, i, "true");
    case 'f': return skip_literal(s, i, "false");
    case 'n': return skip_literal(s, i, "null");
    default: return skip_number(s, i);
  }
}

// `i` at (whitespace before) an object key; returns the index past its ':'.
template <bool Utf8>
std::size_t skip_key(std::string_view s, std::size_t i) {
  i = skip_ws(s, i);
  if (i >= s.size() || s[i] != '"') return npos;
  if ((i = skip_string<Utf8>(s, i)) == npos) return npos;
  i = skip_ws(s, i);
  return i < s.size() && s[i] == ':' ? i + 1 : npos;
}

// Index past the JSON value starting at (whitespace before) `i`, or npos when it is not a
// well-formed value. Iterative, with a fixed stack of closers, so hostile nesting is cheap.
template <bool Utf8>
std::size_t skip_value(std::string_view s, std::size_t i) {
  char closers[kMaxDepth];
  std::size_t depth = 0;
  const std::size_t n = s.size();
  for (;;) {
    i = skip_ws(s, i);  // expecting a value
    if (i >= n) return npos;
    const char c = s[i];
    if (c == '{' || c == '[') {
      if (depth == kMaxDepth) return npos;
      closers[depth++] = c == '{' ? '}' : ']';
      i = skip_ws(s, i + 1);
      if (i < n && s[i] == closers[depth - 1]) {  // empty container: it is a whole value
        --depth;
        ++i;
      } else {
        if (c == '{' && (i = skip_key<Utf8>(s, i)) == npos) return npos;
        continue;
      }
    } else if ((i = skip_scalar<Utf8>(s, i)) == npos) {
      return npos;
    }
    for (;;) {  // after a value: close containers or step to the next element
      if (depth == 0) return i;
      i = skip_ws(s, i);
      if (i >= n) return npos;
      if (s[i] == closers[depth - 1]) {
        --depth;
        ++i;
        continue;
      }
      if (s[i] != ',') return npos;
      ++i;
      if (closers[depth - 1] == '}' && (i = skip_key<Utf8>(s, i)) == npos) return npos;
      break;
    }
  }
}

// `i` at '{' or '['; the index past the matching closer, or npos. Only strings (skip_string)
// and brackets (matched, up to kMaxDepth) are checked: what lies between them — commas,
// colons, numbers, literals — is stepped over a byte at a time. For a backend's reply, which
// the proxy relays and does not read below the top level (scan_backend_object).
std::size_t skip_container_loose(std::string_view s, std::size_t i) {
  char closers[kMaxDepth];
  std::size_t depth = 0;
  const std::size_t n = s.size();
  for (; i < n; ++i) {
    switch (const char c = s[i]) {
      case '"':
        if ((i = skip_string<false>(s, i)) == npos) return npos;
        --i;  // (the loop steps past the closing quote)
        break;
      case '{': case '[':
        if (depth == kMaxDepth) return npos;
        closers[depth++] = c == '{' ? '}' : ']';
        break;
      case '}': case ']':
        if (depth == 0 || closers[depth - 1] != c) return npos;
        if (--depth == 0) return i + 1;
        break;
      default: break;
    }
  }
  return npos;
}

struct Member {
  std::string_view key_raw;  // between the quotes, still escaped
  std::size_t value_begin, value_end;
};

// Calls on_member for each top-level member; returns the index of the object's closing
// brace, or nullopt when `s` is not exactly one JSON object (surrounding whitespace allowed).
// Members are reported before the rest is checked: use them only when this succeeds. With
// Utf8, every string must also be well-formed UTF-8.
template <bool Utf8 = false, bool LooseNesting = false, class F>
std::optional<std::size_t> walk_top_level(std::string_view s, F&& on_member) {
  const std::size_t n = s.size();
  std::size_t i = skip_ws(s, 0);
  if (i >= n || s[i] != '{') return std::nullopt;
  i = skip_ws(s, i + 1);
  if (i < n && s[i] == '}') return skip_ws(s, i + 1) == n ? std::optional(i) : std::nullopt;
  for (;;) {
    if (i >= n || s[i] != '"') return std::nullopt;
    const std::size_t key_begin = i;
    const std::size_t key_end = skip_string<Utf8>(s, i);
    if (key_end == npos) return std::nullopt;
    i = skip_ws(s, key_end);
    if (i >= n || s[i] != ':') return std::nullopt;
    const std::size_t value_begin = skip_ws(s, i + 1);
    std::size_t value_end;
    if constexpr (LooseNesting) {
      value_end = value_begin < n && (s[value_begin] == '{' || s[value_begin] == '[')
                      ? skip_container_loose(s, value_begin)
                      : value_begin < n ? skip_scalar<false>(s, value_begin) : npos;
    } else {
      value_end = skip_value<Utf8>(s, value_begin);
    }
    if (value_end == npos) return std::nullopt;
    on_member(Member{s.substr(key_begin + 1, key_end - key_begin - 2), value_begin, value_end});
    i = skip_ws(s, value_end);
    if (i >= n) return std::nullopt;
    if (s[i] == '}') return skip_ws(s, i + 1) == n ? std::optional(i) : std::nullopt;
    if (s[i] != ',') return std::nullopt;
    i = skip_ws(s, i + 1);
  }
}

bool key_matches(std::string_view raw, std::string_view key) {
  if (raw == key) return true;
  if (raw.find('\\') == npos) return false;  // common case: no escapes, no allocation
  auto decoded = json_unescape(raw);
  return decoded && *decoded == key;
}

std::optional<Member> find_last(std::string_view json, std::string_view key) {
  std::optional<Member> found;
  if (!walk_top_level(json, [&](const Member& m) {
        if (key_matches(m.key_raw, key)) found = m;
      })) {
    return std::nullopt;
  }
  return found;
}

// Every occurrence of `key`, in document order. Fixed capacity, no allocation: a key repeated
// more than kMaxDuplicates times is refused as hostile input.
constexpr std::size_t kMaxDuplicates = 8;
struct Matches {
  std::array<Member, kMaxDuplicates> items;
  std::size_t count = 0;
  const Member* begin() const { return items.data(); }
  const Member* end() const { return items.data() + count; }
};
std::optional<Matches> find_all(std::string_view json, std::string_view key) {
  Matches all;
  bool overflow = false;
  const bool valid = walk_top_level(json, [&](const Member& m) {
    if (!key_matches(m.key_raw, key)) return;
    if (all.count == kMaxDuplicates) overflow = true;
    else all.items[all.count++] = m;
  }).has_value();
  if (!valid || overflow) return std::nullopt;
  return all;
}

// The member's key unescaped: a view of the raw key, or of `storage` when it had escapes
// (rare: decoded once per member, not once per wanted key); nullopt for a bad escape.
[[gnu::always_inline]] inline std::optional<std::string_view> unescaped_key(const Member& m,
                                                                           std::optional<std::string>& storage) {
  if (m.key_raw.find('\\') == npos) [[likely]]
    return m.key_raw;
  storage = json_unescape(m.key_raw);
  if (!storage) return std::nullopt;
  return std::string_view(*storage);
}

// out[k] = the member's raw value when its key is keys[k]. Inlined: it runs once per member
// of every request and every stream event.
[[gnu::always_inline]] inline void pick_wanted(std::string_view json, const Member& m, std::string_view key, std::span<const std::string_view> keys,
                 std::span<std::optional<std::string_view>> out) {
  for (std::size_t k = 0; k < keys.size(); ++k) {
    if (key == keys[k]) out[k] = json.substr(m.value_begin, m.value_end - m.value_begin);
  }
}

bool needs_escaping(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == '"' || c == '\\') return true;
  }
  return false;
}

}  // namespace

std::optional<std::string_view> find_top_level_value(std::string_view json, std::string_view key) {
  auto m = find_last(json, key);
  if (!m) return std::nullopt;
  return json.substr(m->value_begin, m->value_end - m->value_begin);
}

std::optional<std::string_view> find_top_level_string(std::string_view json, std::string_view key) {
  auto v = find_top_level_value(json, key);
  if (!v || v->front() != '"') return std::nullopt;
  return v->substr(1, v->size() - 2);
}

bool has_top_level_key(std::string_view json, std::string_view key) {
  return find_last(json, key).has_value();
}

namespace {

template <bool LooseNesting>
bool find_values(std::string_view json, std::span<const std::string_view> keys,
                 std::span<std::optional<std::string_view>> out) {
  const std::size_t n = std::min(keys.size(), out.size());
  for (std::size_t k = 0; k < out.size(); ++k) out[k].reset();
  const bool valid = walk_top_level<false, LooseNesting>(json, [&](const Member& m) {
    std::optional<std::string> decoded;
    if (auto key = unescaped_key(m, decoded)) pick_wanted(json, m, *key, keys.first(n), out);
  }).has_value();
  if (!valid) {
    for (std::size_t k = 0; k < out.size(); ++k) out[k].reset();
  }
  return valid;
}

}  // namespace

bool find_top_level_values(std::string_view json, std::span<const std::string_view> keys,
                           std::span<std::optional<std::string_view>> out) {
  return find_values<false>(json, keys, out);
}

bool scan_backend_object(std::string_view json, std::span<const std::string_view> keys,
                         std::span<std::optional<std::string_view>> out) {
  return find_values<true>(json, keys, out);
}

std::size_t first_invalid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t len = utf8_sequence(s, i);
    if (len == 0) return i;
    i += len;
  }
  return npos;
}

namespace {

// The decoded top-level keys of one object, to find one given twice. A request has a handful
// of keys: they sit in a fixed array and are compared pairwise (no allocation); more than
// that spill into a vector that is sorted, so hostile input stays O(n log n).
class KeySet {
 public:
  void clear() {
    count_ = 0;
    spill_.clear();
    if (!decoded_.empty()) decoded_.clear();
  }
  // `transient`: the key lives in a temporary (it was unescaped), so keep a copy.
  void add(std::string_view key, bool transient) {
    if (transient) [[unlikely]] {
      decoded_.emplace_back(key);
      key = decoded_.back();
    }
    if (count_ < small_.size()) small_[count_++] = key;
    else spill_.push_back(key);
  }
  std::optional<std::string_view> duplicate() {
    if (spill_.empty()) {
      for (std::size_t a = 1; a < count_; ++a)
        for (std::size_t b = 0; b < a; ++b)
          if (small_[a] == small_[b]) return small_[a];
      return std::nullopt;
    }
    spill_.insert(spill_.end(), small_.begin(), small_.end());
    std::sort(spill_.begin(), spill_.end());
    auto it = std::adjacent_find(spill_.begin(), spill_.end());
    if (it == spill_.end()) return std::nullopt;
    return *it;
  }

 private:
  std::array<std::string_view, 16> small_;
  std::size_t count_ = 0;
  std::vector<std::string_view> spill_;
  std::deque<std::string> decoded_;  // stable addresses for the views above
};

}  // namespace

ObjectScan scan_request_object(std::string_view json, std::span<const std::string_view> keys,
                               std::span<std::optional<std::string_view>> out) {
  ObjectScan scan;
  const std::size_t n = std::min(keys.size(), out.size());
  for (auto& o : out) o.reset();
  thread_local KeySet seen;  // reused: a request allocates nothing here once warm
  seen.clear();
  const bool valid = walk_top_level<true>(json, [&](const Member& m) {
    std::optional<std::string> decoded;
    auto key = unescaped_key(m, decoded);
    if (!key) return;  // a bad escape: the walk fails anyway
    seen.add(*key, decoded.has_value());
    pick_wanted(json, m, *key, keys.first(n), out);
  }).has_value();
  if (!valid) {
    for (auto& o : out) o.reset();
    scan.error_offset = first_invalid_utf8(json);
    scan.result = scan.error_offset == npos ? ObjectScan::Result::invalid_json : ObjectScan::Result::invalid_utf8;
    return scan;
  }
  if (auto dup = seen.duplicate()) {
    for (auto& o : out) o.reset();
    scan.result = ObjectScan::Result::duplicate_key;
    scan.duplicate_key.assign(*dup);
  }
  return scan;
}

bool top_level_is_true(std::string_view json, std::string_view key) {
  auto v = find_top_level_value(json, key);
  return v && *v == "true";
}

bool replace_top_level_string(std::string& json, std::string_view key, std::string_view new_value) {
  auto all = find_all(json, key);
  if (!all || all->count == 0) return false;
  for (const Member& m : *all) {
    if (json[m.value_begin] != '"') return false;
  }
  std::string escaped;  // allocated only when the value has something to escape
  std::string_view text = new_value;
  if (needs_escaping(new_value)) text = escaped = json_escape(new_value);
  for (std::size_t k = all->count; k-- > 0;) {  // back to front: earlier offsets stay valid
    const Member& m = all->items[k];
    json.replace(m.value_begin + 1, m.value_end - m.value_begin - 2, text);
  }
  return true;
}

bool replace_top_level_value(std::string& json, std::string_view key, std::string_view raw_value) {
  auto all = find_all(json, key);
  if (!all || all->count == 0) return false;
  for (std::size_t k = all->count; k-- > 0;) {
    const Member& m = all->items[k];
    json.replace(m.value_begin, m.value_end - m.value_begin, raw_value);
  }
  return true;
}

bool insert_top_level_member(std::string& json, std::string_view key, std::string_view raw_value) {
  bool exists = false;
  std::size_t members = 0;
  auto close = walk_top_level(json, [&](const Member& m) {
    ++members;
    exists = exists || key_matches(m.key_raw, key);
  });
  if (!close || exists) return false;
  std::string member;
  member.reserve(key.size() + raw_value.size() + 4);
  if (members > 0) member += ',';
  member += '"';
  append_json_escaped(member, key);
  member += "\":";
  member += raw_value;
  json.insert(*close, member);
  return true;
}

}  // namespace imageworks
