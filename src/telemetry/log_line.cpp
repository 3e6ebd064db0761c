// The JSONL line of a request record (§10). Runs on the event loop once per request, so it
// is written by hand: no tree, the timestamp's seconds formatted once per second per thread.
#include <charconv>
#include <ctime>

#include "imageworks/json_splice.hpp"
#include "imageworks/telemetry.hpp"

namespace imageworks {

namespace {

using namespace std::string_view_literals;

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

// A JSON string literal of bytes that may come from anywhere (header values, raw paths):
// escaped, and an ill-formed UTF-8 byte becomes U+FFFD, so every line stays valid JSON.
void append_string(std::string& out, std::string_view s) {
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = utf8_sequence(s, i);
    if (n) {
      i += n;
      continue;
    }
    append_json_escaped(out, s.substr(run, i - run));
    out += "\\ufffd"sv;
    run = ++i;
  }
  append_json_escaped(out, s.substr(run));
  out += '"';
}

void append_string_or_null(std::string& out, std::string_view s) {
  if (s.empty()) out += "null"sv;
  else append_string(out, s);
}

template <typename T>
void append_number(std::string& out, T v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// Milliseconds with three decimals (microseconds), like nginx's $request_time in ms.
void append_ms(std::string& out, double ms) {
  char buf[48];
  auto r = std::to_chars(buf, buf + sizeof buf, ms < 0 ? 0.0 : ms, std::chars_format::fixed, 3);
  out.append(buf, r.ptr);
}

template <typename T>
void append_optional(std::string& out, const std::optional<T>& v) {
  if (!v) out += "null"sv;
  else if constexpr (std::is_floating_point_v<T>) append_ms(out, *v);
  else append_number(out, *v);
}

// Valid JSON as the client sent it, without the whitespace between tokens: a pretty-printed
// request must not break the one-line-per-request format.
void append_minified(std::string& out, std::string_view json) {
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < json.size()) out += json[++i];
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
      out += c;
    } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
      out += c;
    }
  }
}

// "2026-12-01T20:22:06.123Z": the part up to the seconds is cached per thread.
void append_timestamp(std::string& out, std::chrono::system_clock::time_point tp) {
  thread_local std::time_t cached_second = -1;
  thread_local char cached[24];
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count();
  const std::time_t sec = static_cast<std::time_t>(ms / 1000);
  if (sec != cached_second) {
    std::tm tm{};
    gmtime_r(&sec, &tm);
    std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_second = sec;
  }
  out += '"';
  out += cached;
  const int frac = static_cast<int>(ms % 1000);
  const char f[5] = {'.', static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                     static_cast<char>('0' + frac % 10), 'Z'};
  out.append(f, 5);
  out += '"';
}

}  // namespace

void append_log_line(const RequestRecord& r, std::string& out) {
  out += "{\"ts\":"sv;
  append_timestamp(out, r.ts);
  out += ",\"request_id\":"sv;
  append_string(out, r.request_id);
  out += ",\"client\":"sv;
  append_string(out, r.client);
  out += ",\"route\":"sv;
  append_string(out, r.route);
  out += ",\"model_requested\":"sv;
  append_string_or_null(out, r.model_requested);
  out += ",\"model_resolved\":"sv;
  append_string_or_null(out, r.model_resolved);
  out += ",\"backend\":"sv;
  append_string_or_null(out, r.backend);
  out += r.stream ? ",\"stream\":true,\"status\":"sv : ",\"stream\":false,\"status\":"sv;
  append_number(out, r.status);
  out += ",\"error_code\":"sv;
  append_string_or_null(out, r.error_code);
  out += ",\"latency_ms\":"sv;
  append_ms(out, r.latency_ms);
  out += ",\"ttft_ms\":"sv;
  append_optional(out, r.ttft_ms);
  out += ",\"prompt_tokens\":"sv;
  append_optional(out, r.prompt_tokens);
  out += ",\"completion_tokens\":"sv;
  append_optional(out, r.completion_tokens);
  out += ",\"switch_ms\":"sv;
  append_optional(out, r.switch_ms);
  out += ",\"bytes_in\":"sv;
  append_number(out, r.bytes_in);
  out += ",\"bytes_out\":"sv;
  append_number(out, r.bytes_out);
  out += ",\"user\":"sv;
  append_string_or_null(out, r.user);
  out += ",\"chat_id\":"sv;
  append_string_or_null(out, r.chat_id);
  if (r.has_prompts) {
    // The client's messages were validated JSON when the request was parsed: kept as sent.
    out += ",\"messages\":"sv;
    if (r.messages.empty()) out += "null"sv;
    else append_minified(out, r.messages);
    out += ",\"reply\":"sv;
    append_string_or_null(out, r.reply);
  }
  out += "}\n"sv;
}

}  // namespace imageworks
