// Per-event rewriting of an upstream SSE stream for the client (§5 wire details, §7).
#include <algorithm>
#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

#include "forwarder/relay.hpp"
#include "imageworks/json_splice.hpp"

namespace imageworks {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// Any backend's in-stream error (OpenAI/vLLM `{"error":{...}}`, llama.cpp's bare
// `{"code":500,"message":...}` from an `error:` line) as our error event payload.
std::string stream_error_payload(std::string_view data) {
  auto j = nlohmann::json::parse(data, nullptr, false);
  const nlohmann::json* src = &j;
  if (j.is_object() && j.contains("error") && j["error"].is_object()) src = &j["error"];
  std::string message = "backend reported an error";
  int status = 500;
  if (src->is_object()) {
    if (src->contains("message") && (*src)["message"].is_string()) message = (*src)["message"];
    auto code = src->find("code");
    if (code != src->end() && code->is_number_integer()) status = code->get<int>();
    if (code != src->end() && code->is_string() && code->get<std::string>().starts_with("err_"))
      return error_body(status, code->get<std::string>(), message);
  } else if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    message = j["error"];
  } else if (!j.is_object()) {
    message = std::string(trim(data).substr(0, 2000));
  }
  if (status < 400 || status > 599) status = 500;
  return error_body(status, error_code_for_upstream_status(status), message);
}

void append_frame(std::string& out, std::string_view payload) {
  out += "data: ";
  out += payload;
  out += "\n\n";
}

}  // namespace

StreamRewriter::StreamRewriter(const std::string& requested_model, bool strip_usage_chunk,
                               std::optional<StreamRules> rules)
    : rules_(std::move(rules)), model_json_(json_quote(requested_model)), strip_usage_(strip_usage_chunk) {}

namespace {

// `"key": <integer>` inside a usage object that the caller's scan already validated, so a
// plain search suffices (a match right after a backslash is inside an escaped string).
std::optional<std::int64_t> usage_count(std::string_view usage, std::string_view quoted_key) {
  std::size_t pos = usage.find(quoted_key);
  while (pos != std::string_view::npos && pos > 0 && usage[pos - 1] == '\\') pos = usage.find(quoted_key, pos + 1);
  if (pos == std::string_view::npos) return std::nullopt;
  std::size_t i = pos + quoted_key.size();
  auto skip_ws = [&] {
    while (i < usage.size() && (usage[i] == ' ' || usage[i] == '\t' || usage[i] == '\n' || usage[i] == '\r')) ++i;
  };
  skip_ws();
  if (i >= usage.size() || usage[i] != ':') return std::nullopt;
  ++i;
  skip_ws();
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(usage.data() + i, usage.data() + usage.size(), n);
  if (ec != std::errc() || end == usage.data() + i) return std::nullopt;
  return n;
}

}  // namespace

void read_usage(std::string_view usage_json, std::optional<std::int64_t>& prompt,
                std::optional<std::int64_t>& completion) {
  if (auto n = usage_count(usage_json, "\"prompt_tokens\"")) prompt = n;
  if (auto n = usage_count(usage_json, "\"completion_tokens\"")) completion = n;
}

void StreamRewriter::record_usage(std::string_view usage) { read_usage(usage, prompt_tokens, completion_tokens); }

bool StreamRewriter::on_event(std::string_view event_name, std::string_view data, bool comment,
                              std::string& out) {
  if (done_) return false;
  if (comment) {
    out += ':';
    out += data;
    out += "\n\n";
    return true;
  }
  std::string_view body = trim(data);
  if (body == "[DONE]") {
    finish(out);
    return false;
  }
  if (body.empty()) return true;
  // One scan finds every member a rule needs (STYLE: no JSON tree per event).
  static constexpr std::string_view keys[] = {"error", "usage", "choices", "model", "id", "created"};
  std::optional<std::string_view> v[6];
  bool is_object = scan_backend_object(data, keys, v);
  if (event_name == "error" || v[0]) {
    append_frame(out, stream_error_payload(data));
    finish(out);
    return false;
  }
  if (!is_object) {  // not JSON: relay it as is, one `data:` line per line so framing survives
    std::size_t pos = 0;
    for (;;) {
      auto nl = data.find('\n', pos);
      out += "data: ";
      out += data.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
      out += '\n';
      if (nl == std::string_view::npos) break;
      pos = nl + 1;
    }
    out += '\n';
    return true;
  }
  if (v[1] && *v[1] != "null") {
    record_usage(*v[1]);
    if (strip_usage_ && v[2] && trim(v[2]->substr(1, v[2]->size() - 2)).empty()) return true;
  }
  // §7 rules only for the events they want (one pass over `choices`, the only member they
  // touch); the rest as today.
  if (rules_ && v[2] && rules_->wants(*v[2])) {
    if (auto rewritten = rules_->apply(data)) {
      if (scan_backend_object(*rewritten, keys, v)) {
        append_event(*rewritten, v, out);
        return true;
      }
      scan_backend_object(data, keys, v);  // (the failed scan reset v)
    }
  }
  append_event(data, v, out);
  return true;
}

void StreamRewriter::append_event(std::string_view data, std::span<std::optional<std::string_view>> v,
                                  std::string& out) {
  // Splice: model restored; id and created pinned to the first chunk's values.
  struct Edit {
    std::string_view span;
    std::string_view text;
  };
  Edit edits[3];
  int n = 0;
  if (v[3] && v[3]->front() == '"') edits[n++] = {*v[3], model_json_};
  if (v[4]) {
    if (pinned_id_.empty()) pinned_id_.assign(*v[4]);
    else if (*v[4] != pinned_id_) edits[n++] = {*v[4], pinned_id_};
  }
  if (v[5]) {
    if (pinned_created_.empty()) pinned_created_.assign(*v[5]);
    else if (*v[5] != pinned_created_) edits[n++] = {*v[5], pinned_created_};
  }
  // In text order; at most three (an insertion sort: std::sort here trips GCC 12's -Warray-bounds).
  for (int i = 1; i < n; ++i)
    for (int j = i; j > 0 && edits[j].span.data() < edits[j - 1].span.data(); --j) std::swap(edits[j], edits[j - 1]);
  out += "data: ";
  std::size_t frame_start = out.size();
  const char* cursor = data.data();
  for (int i = 0; i < n; ++i) {
    out.append(cursor, static_cast<std::size_t>(edits[i].span.data() - cursor));
    out += edits[i].text;
    cursor = edits[i].span.data() + edits[i].span.size();
  }
  out.append(cursor, static_cast<std::size_t>(data.data() + data.size() - cursor));
  // One frame, one line: newlines in JSON are whitespace (inside strings they are escaped).
  if (std::memchr(data.data(), '\n', data.size()) || std::memchr(data.data(), '\r', data.size())) {
    for (auto i = frame_start; i < out.size(); ++i)
      if (out[i] == '\n' || out[i] == '\r') out[i] = ' ';
  }
  out += "\n\n";
}

void StreamRewriter::finish(std::string& out) {
  if (done_) return;
  done_ = true;
  out += "data: [DONE]\n\n";
}

void StreamRewriter::fail(const ProxyError& e, std::string& out) {
  if (done_) return;
  done_ = true;
  append_sse_error(out, e);
}

}  // namespace imageworks
