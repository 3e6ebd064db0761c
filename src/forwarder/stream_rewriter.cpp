// Per-event rewriting of an upstream SSE stream for the client (§5 wire details, §7).
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

void StreamRewriter::record_usage(std::string_view chunk) {
  auto usage = find_top_level_value(chunk, "usage");
  if (!usage || *usage == "null") return;
  auto j = nlohmann::json::parse(*usage, nullptr, false);
  if (!j.is_object()) return;
  if (j.contains("prompt_tokens") && j["prompt_tokens"].is_number_integer()) prompt_tokens = j["prompt_tokens"].get<std::int64_t>();
  if (j.contains("completion_tokens") && j["completion_tokens"].is_number_integer())
    completion_tokens = j["completion_tokens"].get<std::int64_t>();
}

bool StreamRewriter::on_event(std::string_view event_name, std::string_view data, bool comment,
                              std::string& out) {
  if (done_) return false;
  if (comment) {
    out += ':';
    out += data;
    out += "\n\n";
    return true;
  }
  if (trim(data) == "[DONE]") {
    finish(out);
    return false;
  }
  if (trim(data).empty()) return true;
  if (event_name == "error" || has_top_level_key(data, "error")) {
    append_frame(out, stream_error_payload(data));
    finish(out);
    return false;
  }
  scratch_.assign(data);
  if (has_top_level_key(scratch_, "usage")) {
    record_usage(scratch_);
    auto choices = find_top_level_value(scratch_, "choices");
    if (strip_usage_ && choices && trim(choices->substr(1, choices->size() - 2)).empty()) return true;
  }
  replace_top_level_string(scratch_, "model", model_);
  // Clients key a stream on id and created: pin both to the first chunk's values.
  if (auto id = find_top_level_value(scratch_, "id")) {
    if (pinned_id_.empty()) pinned_id_.assign(*id);
    else if (*id != pinned_id_) replace_top_level_value(scratch_, "id", pinned_id_);
  }
  if (auto created = find_top_level_value(scratch_, "created")) {
    if (pinned_created_.empty()) pinned_created_.assign(*created);
    else if (*created != pinned_created_) replace_top_level_value(scratch_, "created", pinned_created_);
  }
  // One frame, one line: JSON whitespace newlines become spaces.
  for (auto& c : scratch_)
    if (c == '\n' || c == '\r') c = ' ';
  append_frame(out, scratch_);
  return true;
}

void StreamRewriter::finish(std::string& out) {
  if (done_) return;
  done_ = true;
  out += "data: [DONE]\n\n";
}

void StreamRewriter::fail(const ProxyError& e, std::string& out) {
  if (done_) return;
  append_frame(out, error_body(e));
  finish(out);
}

}  // namespace imageworks
