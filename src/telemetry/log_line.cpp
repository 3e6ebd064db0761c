// The JSONL line of a request record (§10). Runs on the event loop once per request, so it
// is written by hand: no tree, the timestamp's seconds formatted once per second per thread.
#include <array>
#include <charconv>
#include <cstring>
#include <cstdint>
#include <ctime>

#include "imageworks/telemetry.hpp"

namespace imageworks {

namespace {

using namespace std::string_view_literals;

// The line is written through a raw cursor into space reserved for its worst case: a
// few dozen std::string appends per line cost more than the formatting itself.
struct Out {
  char* p;
  template <std::size_t N>
  void lit(const char (&s)[N]) {
    std::memcpy(p, s, N - 1);
    p += N - 1;
  }
  void put(char c) { *p++ = c; }
  void bytes(const char* s, std::size_t n) {
    std::memcpy(p, s, n);
    p += n;
  }
};

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629), or 0.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F)) return 0;  // overlong, surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) > 0x8F)) return 0;  // overlong, > U+10FFFF
    return 4;
  }
  return 0;
}

// Bytes that go into a JSON string as they are: printable ASCII but '"' and '\\'.
constexpr auto kPlain = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
  return t;
}();
constexpr std::size_t kMaxEscape = 6;  // bytes one input byte may become ("\u001f", U+FFFD's "\ufffd")

// Whether 8 bytes are all plain (SWAR: no byte >= 0x80, < 0x20, '"' or '\\').
bool plain8(const char* p) {
  constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  const auto has_zero = [](std::uint64_t x) { return (x - ones) & ~x & highs; };
  const std::uint64_t special = (v & highs) | ((v - 0x20 * ones) & ~v & highs) | has_zero(v ^ ('"' * ones)) |
                                has_zero(v ^ ('\\' * ones));
  return special == 0;
}

// A JSON string literal of bytes that may come from anywhere (header values, raw paths):
// escaped, and an ill-formed UTF-8 byte becomes U+FFFD, so every line stays valid JSON.
// One pass; runs of plain bytes are copied at once.
void put_string(Out& o, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  o.put('"');
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size();) {
    if (i + 8 <= s.size() && plain8(s.data() + i)) {
      i += 8;
      continue;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (kPlain[c]) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (std::size_t n = utf8_sequence(s, i)) {
        i += n;
        continue;
      }
    }
    o.bytes(s.data() + run, i - run);
    run = ++i;
    switch (c) {
      case '"': o.lit("\\\""); break;
      case '\\': o.lit("\\\\"); break;
      case '\n': o.lit("\\n"); break;
      case '\r': o.lit("\\r"); break;
      case '\t': o.lit("\\t"); break;
      default:
        if (c >= 0x80) {
          o.lit("\\ufffd");
        } else {
          const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          o.bytes(esc, 6);
        }
    }
  }
  o.bytes(s.data() + run, s.size() - run);
  o.put('"');
}

void put_string_or_null(Out& o, std::string_view s) {
  if (s.empty()) o.lit("null");
  else put_string(o, s);
}

template <typename T>
void put_number(Out& o, T v) {
  o.p = std::to_chars(o.p, o.p + 24, v).ptr;
}

// Milliseconds with three decimals (microseconds), like nginx's $request_time in ms. Integer
// formatting: the floating-point to_chars with a precision costs ten times as much.
void put_ms(Out& o, double ms) {
  if (!(ms > 0)) ms = 0;  // (NaN too)
  if (ms >= 1e15) ms = 1e15;
  const auto us = static_cast<std::uint64_t>(ms * 1000.0 + 0.5);
  put_number(o, us / 1000);
  const auto frac = static_cast<unsigned>(us % 1000);
  const char f[4] = {'.', static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                     static_cast<char>('0' + frac % 10)};
  o.bytes(f, 4);
}

template <typename T>
void put_optional(Out& o, const std::optional<T>& v) {
  if (!v) o.lit("null");
  else if constexpr (std::is_floating_point_v<T>) put_ms(o, *v);
  else put_number(o, *v);
}

// Valid JSON as the client sent it, without the whitespace between tokens: a pretty-printed
// request must not break the one-line-per-request format.
void put_minified(Out& o, std::string_view json) {
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      o.put(c);
      if (c == '\\' && i + 1 < json.size()) o.put(json[++i]);
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
      o.put(c);
    } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
      o.put(c);
    }
  }
}

// "2026-12-01T20:22:06.123Z": the part up to the seconds is cached per thread.
void put_timestamp(Out& o, std::chrono::system_clock::time_point tp) {
  thread_local std::time_t cached_second = -1;
  thread_local char cached[20];  // "2026-12-01T20:22:06"
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count();
  const auto sec = static_cast<std::time_t>(ms / 1000 - (ms % 1000 < 0));
  if (sec != cached_second) {
    std::tm tm{};
    gmtime_r(&sec, &tm);
    if (std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm) != 19) std::memcpy(cached, "0000-00-00T00:00:00", 19);
    cached_second = sec;
  }
  o.put('"');
  o.bytes(cached, 19);
  const int frac = static_cast<int>(((ms % 1000) + 1000) % 1000);
  const char f[6] = {'.', static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                     static_cast<char>('0' + frac % 10), 'Z', '"'};
  o.bytes(f, 6);
}

}  // namespace

void append_log_line(const RequestRecord& r, std::string& out) {
  // The worst case: keys and numbers, every string byte escaped, the messages as they are.
  std::size_t strings = r.request_id.size() + r.client.size() + r.route.size() + r.model_requested.size() +
                        r.model_resolved.size() + r.backend.size() + r.error_code.size() + r.user.size() +
                        r.chat_id.size();
  if (r.has_prompts) strings += r.reply.size();
  const std::size_t bound = 640 + kMaxEscape * strings + (r.has_prompts ? r.messages.size() : 0);
  const std::size_t start = out.size();
  out.resize(start + bound);
  Out o{out.data() + start};
  o.lit("{\"ts\":");
  put_timestamp(o, r.ts);
  o.lit(",\"request_id\":");
  put_string(o, r.request_id);
  o.lit(",\"client\":");
  put_string(o, r.client);
  o.lit(",\"route\":");
  put_string(o, r.route);
  o.lit(",\"model_requested\":");
  put_string_or_null(o, r.model_requested);
  o.lit(",\"model_resolved\":");
  put_string_or_null(o, r.model_resolved);
  o.lit(",\"backend\":");
  put_string_or_null(o, r.backend);
  if (r.stream) o.lit(",\"stream\":true,\"status\":");
  else o.lit(",\"stream\":false,\"status\":");
  put_number(o, r.status);
  o.lit(",\"error_code\":");
  put_string_or_null(o, r.error_code);
  o.lit(",\"latency_ms\":");
  put_ms(o, r.latency_ms);
  o.lit(",\"ttft_ms\":");
  put_optional(o, r.ttft_ms);
  o.lit(",\"prompt_tokens\":");
  put_optional(o, r.prompt_tokens);
  o.lit(",\"completion_tokens\":");
  put_optional(o, r.completion_tokens);
  o.lit(",\"switch_ms\":");
  put_optional(o, r.switch_ms);
  o.lit(",\"bytes_in\":");
  put_number(o, r.bytes_in);
  o.lit(",\"bytes_out\":");
  put_number(o, r.bytes_out);
  o.lit(",\"user\":");
  put_string_or_null(o, r.user);
  o.lit(",\"chat_id\":");
  put_string_or_null(o, r.chat_id);
  if (r.has_prompts) {
    // The client's messages were validated JSON when the request was parsed: kept as sent.
    o.lit(",\"messages\":");
    if (r.messages.empty()) o.lit("null");
    else put_minified(o, r.messages);
    o.lit(",\"reply\":");
    put_string_or_null(o, r.reply);
  }
  o.lit("}\n");
  out.resize(static_cast<std::size_t>(o.p - out.data()));
}

}  // namespace imageworks
