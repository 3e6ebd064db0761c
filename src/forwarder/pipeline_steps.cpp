// The ChatForwarder's pure steps: parse and validate the request, choose the backend,
// prepare the upstream payload, reshape upstream errors. No JSON tree on the hot path:
// the body is validated once and edited by splicing (json_splice.hpp).
#include <cstdlib>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "imageworks/forwarder.hpp"
#include "imageworks/json_splice.hpp"

namespace imageworks {

namespace {

ProxyError bad_request(const std::string& message, std::string param = {}) {
  return ProxyError(400, "err_bad_request", message, std::move(param));
}

char first_char(const std::optional<std::string_view>& raw) { return raw && !raw->empty() ? raw->front() : '\0'; }

// null counts as absent ("tools": null is what some clients send for "no tools").
void expect_kind(const std::optional<std::string_view>& v, std::string_view key, char opener, const char* what) {
  if (v && first_char(v) != opener && *v != "null")
    throw bad_request("field '" + std::string(key) + "' must be " + what, std::string(key));
}

// The body failed the cheap scan: say why in nlohmann's words (cold path only).
ProxyError invalid_body(std::string_view body) {
  auto start = body.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos) return bad_request("request body is empty: expected a JSON object");
  std::string why = "request body is not valid JSON";
  try {
    auto j = nlohmann::json::parse(body);
    if (!j.is_object()) return bad_request("request body must be a JSON object");
    why = "request body is not a JSON object the proxy can read (nesting too deep or a key repeated too often)";
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
    why += std::string(": ") + e.what();
  }
  return bad_request(why);
}

ProxyError rejected_body(std::string_view body, const ObjectScan& scan) {
  using R = ObjectScan::Result;
  if (scan.result == R::invalid_utf8)
    return bad_request("request body is not valid UTF-8 (RFC 8259 §8.1): ill-formed byte sequence at offset " +
                       std::to_string(scan.error_offset));
  if (scan.result == R::duplicate_key) {
    const bool long_key = scan.duplicate_key.size() > 64;  // cut before a 64 KiB key is echoed back
    const std::string shown = long_key ? scan.duplicate_key.substr(0, 64) + "..." : scan.duplicate_key;
    return bad_request("field '" + shown + "' occurs more than once; send each top-level member once",
                       long_key ? std::string() : scan.duplicate_key);
  }
  return invalid_body(body);
}

}  // namespace

ForwardRequest parse_forward_request(std::string_view route, std::string body) {
  ForwardRequest fr;
  fr.route = route;
  // One scan validates the object (UTF-8 and unique keys included) and finds every member a
  // rule needs.
  static constexpr std::string_view keys[] = {"model", "stream", "messages", "tools", "stream_options",
                                              "tool_choice", "functions", "function_call", "prompt"};
  std::optional<std::string_view> v[std::size(keys)];
  if (auto scan = scan_request_object(body, keys, v); !scan.ok()) throw rejected_body(body, scan);
  const auto& [model, stream, messages, tools, stream_options, tool_choice, functions, function_call, prompt] = v;
  if (!model) throw bad_request("missing required field 'model'", "model");
  if (first_char(model) != '"') throw bad_request("field 'model' must be a string", "model");
  auto unescaped = json_unescape(model->substr(1, model->size() - 2));
  if (!unescaped || unescaped->empty()) throw bad_request("field 'model' must be a non-empty string", "model");
  fr.requested_model = std::move(*unescaped);
  // null is "not set", as in OpenAI's API (and a JSON client that serialises every field).
  if (stream && *stream != "true" && *stream != "false" && *stream != "null")
    throw bad_request("field 'stream' must be a boolean", "stream");
  fr.stream = stream && *stream == "true";
  if (route == "chat/completions") {
    if (!messages) throw bad_request("missing required field 'messages'", "messages");
    // Unlike the tool members, null is no "absent" here: a chat needs its messages.
    if (first_char(messages) != '[') throw bad_request("field 'messages' must be an array", "messages");
    expect_kind(tools, "tools", '[', "an array");
    expect_kind(functions, "functions", '[', "an array");
  }
  expect_kind(stream_options, "stream_options", '{', "an object");
  // A tool member set to null asks for nothing (some clients send "tools": null).
  for (std::size_t k : {3u, 5u, 6u, 7u})
    if (v[k] && *v[k] != "null" && fr.tools_field.empty()) fr.tools_field = keys[k];
  // "image_url" as written, or maybe behind an escape of an ASCII letter ("image\u005furl"):
  // a false alarm only costs a tree, a miss would let an image past the vision rules.
  fr.may_have_images = messages && (messages->find("image_url") != std::string_view::npos ||
                                    messages->find("\\u00") != std::string_view::npos);
  const auto model_offset = static_cast<std::size_t>(model->data() - body.data());
  if (auto raw = messages ? messages : prompt) fr.prompt_raw = *raw;
  // Moving keeps the offset valid: the bytes do not change.
  fr.payload = RequestPayload(std::move(body), model_offset, model->size(), stream_options.has_value());
  return fr;
}

BackendRoute backend_route(const ProxyConfig& cfg, const ModelEntry& e, std::string_view managed_base_url) {
  BackendRoute r;
  r.backend = e.backend;
  // A reference, not a copy: this runs per request and a URL is longer than the small-string buffer.
  std::string managed;
  const std::string& base = !e.backend_config.base_url.empty() ? e.backend_config.base_url
                            : e.backend == "ollama"            ? cfg.ollama_base_url
                                                               : (managed = std::string(managed_base_url));
  if (base.empty()) {
    throw ProxyError(503, "err_backend_unavailable",
                     "model '" + e.name + "' is a managed " + e.backend +
                         " entry (no backend_config.base_url) and no server is running for it");
  }
  // Parsed once per URL and thread: the registry's URLs are few and this runs per request.
  thread_local std::unordered_map<std::string, std::shared_ptr<const UpstreamTarget>> parsed;
  auto it = parsed.find(base);
  if (it == parsed.end()) {
    if (parsed.size() >= 1024) parsed.clear();  // requests in flight keep their target alive
    it = parsed.emplace(base, std::make_shared<const UpstreamTarget>(parse_base_url(base))).first;
  }
  r.target = it->second;
  r.api_key = e.backend_config.api_key;
  if (r.api_key.empty() && !e.backend_config.api_key_env.empty()) {
    // The variable is named by the registry, not by ProxyConfig, so it is read per request:
    // a rotated key in the environment of a restarted proxy needs no registry change.
    if (const char* v = std::getenv(e.backend_config.api_key_env.c_str())) r.api_key = v;
  }
  return r;
}

void prepare_payload(ForwardRequest& fr, const ModelEntry& entry) {
  fr.payload.set_model(entry.upstream_model());
  // §10: ask the stream for usage so it can be recorded; the extra chunk is stripped later.
  if (fr.stream) fr.usage_added = fr.payload.ask_for_usage();
  fr.payload.finalize();
}

ProxyError upstream_error(int status, std::string_view body) {
  std::string message;
  // The splice validator first: it bounds nesting (512 levels), so dumping a hostile
  // "detail" below cannot exhaust the stack (nlohmann's dump recurses).
  std::optional<std::string_view> unused[1];
  const bool object = find_top_level_values(body, {}, unused);
  auto j = object ? nlohmann::json::parse(body, nullptr, false) : nlohmann::json();
  if (j.is_object()) {
    const nlohmann::json* src = &j;
    if (j.contains("error") && j["error"].is_object()) src = &j["error"];
    if (src->contains("message") && (*src)["message"].is_string()) message = (*src)["message"];
    else if (j.contains("error") && j["error"].is_string()) message = j["error"];
    else if (j.contains("detail")) message = j["detail"].is_string() ? j["detail"].get<std::string>() : j["detail"].dump();
  }
  if (message.empty()) {
    message = std::string(body.substr(0, 2000));
    if (message.empty()) message = "backend answered HTTP " + std::to_string(status);
  }
  if (status < 400 || status > 599) status = 502;
  return ProxyError(status, std::string(error_code_for_upstream_status(status)), message);
}

}  // namespace imageworks
