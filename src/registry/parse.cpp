// Validation of one merged registry entry (§3): every bad field becomes an issue that names
// the file, the entry and the field; an entry with any issue is skipped.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

const char* const kBackends[] = {"vllm", "ollama", "openai", "llamacpp", "lmdeploy"};

// The offending value as it appears in the file, cut short so one bad blob stays readable.
std::string shown(const json& v) {
  auto s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// Issues reach logs and /v1/health: values of fields that may hold credentials (api_key,
// command lines, the whole backend_config) are described by type only.
std::string shown_type(const json& v) {
  switch (v.type()) {
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return v.is_number() ? "an integer" : "null";
  }
}

bool secret_field(const std::string& field) {
  return field.rfind("backend_config", 0) == 0 && field != "backend_config.port" &&
         field != "backend_config.base_url" && field != "backend_config.model_path" &&
         field != "backend_config.api_key_env";
}

std::string got(const std::string& field, const json& v) {
  return secret_field(field) ? shown_type(v) : shown(v);
}

// Collects issues for one entry; each check reads one field and stores it if valid.
class EntryChecker {
 public:
  EntryChecker(const std::string& file, const std::string& label, std::vector<RegistryIssue>& out)
      : file_(file), label_(label), out_(out) {}

  bool ok() const { return ok_; }

  void fail(const std::string& field, const std::string& message) {
    ok_ = false;
    out_.push_back({file_, label_, field, message});
  }

  // The value at `key` of `obj`, or nullptr when absent or null (null = "not set").
  static const json* get(const json& obj, const char* key) {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  void string_field(const json& obj, const char* key, const std::string& field, std::string& dst) {
    if (const json* v = get(obj, key)) {
      if (v->is_string()) dst = v->get<std::string>();
      else fail(field, "expected a string, got " + got(field, *v));
    }
  }

  void bool_field(const json& obj, const char* key, const std::string& field, bool& dst) {
    if (const json* v = get(obj, key)) {
      if (v->is_boolean()) dst = v->get<bool>();
      else fail(field, "expected true or false, got " + got(field, *v));
    }
  }

  void strings_field(const json& obj, const char* key, const std::string& field,
                     std::vector<std::string>& dst) {
    const json* v = get(obj, key);
    if (!v) return;
    bool good = v->is_array();
    if (good)
      for (const auto& item : *v) good = good && item.is_string();
    if (!good) return fail(field, "expected an array of strings, got " + got(field, *v));
    dst = v->get<std::vector<std::string>>();
  }

  // An object field; nullptr (and an issue when present but not an object) otherwise.
  const json* object_field(const json& obj, const char* key, const std::string& field) {
    const json* v = get(obj, key);
    if (v && !v->is_object()) {
      fail(field, "expected an object, got " + got(field, *v));
      return nullptr;
    }
    return v;
  }

  template <class Int>
  void int_field(const json& obj, const char* key, const std::string& field, std::int64_t lo,
                 std::int64_t hi, Int& dst) {
    const json* v = get(obj, key);
    if (!v) return;
    auto range = "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
    if (!v->is_number_integer()) return fail(field, "expected " + range + ", got " + shown(*v));
    // Unsigned values above INT64_MAX are out of range whatever the bounds.
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
      return fail(field, "expected " + range + ", got " + shown(*v));
    auto n = v->get<std::int64_t>();
    if (n < lo || n > hi) return fail(field, "expected " + range + ", got " + shown(*v));
    dst = static_cast<Int>(n);
  }

 private:
  const std::string& file_;
  const std::string& label_;
  std::vector<RegistryIssue>& out_;
  bool ok_ = true;
};

void check_name(const json& j, EntryChecker& c, ModelEntry& e) {
  const json* v = EntryChecker::get(j, "name");
  if (!v) return c.fail("name", "required field missing");
  if (!v->is_string() || v->get_ref<const std::string&>().empty())
    return c.fail("name", "expected a non-empty string, got " + shown(*v));
  e.name = v->get<std::string>();
}

void check_backend(const json& j, EntryChecker& c, ModelEntry& e) {
  const json* v = EntryChecker::get(j, "backend");
  if (!v) return c.fail("backend", "required field missing");
  if (v->is_string())
    for (const char* b : kBackends)
      if (v->get_ref<const std::string&>() == b) {
        e.backend = b;
        return;
      }
  c.fail("backend", "expected one of vllm, ollama, openai, llamacpp, lmdeploy, got " + shown(*v));
}

bool is_http_url(const std::string& u) {
  return u.rfind("http://", 0) == 0 || u.rfind("https://", 0) == 0;
}

void check_backend_config(const json& j, EntryChecker& c, BackendConfig& bc) {
  const json* o = c.object_field(j, "backend_config", "backend_config");
  if (!o) return;
  c.string_field(*o, "base_url", "backend_config.base_url", bc.base_url);
  if (!bc.base_url.empty() && !is_http_url(bc.base_url))
    c.fail("backend_config.base_url",
           "expected an http:// or https:// URL, got \"" + mask_url_credentials(bc.base_url) + "\"");
  c.int_field(*o, "port", "backend_config.port", 0, 65535, bc.port);
  c.string_field(*o, "model_path", "backend_config.model_path", bc.model_path);
  c.strings_field(*o, "extra_args", "backend_config.extra_args", bc.extra_args);
  c.string_field(*o, "api_key", "backend_config.api_key", bc.api_key);
  c.string_field(*o, "api_key_env", "backend_config.api_key_env", bc.api_key_env);
  c.strings_field(*o, "start_command", "backend_config.start_command", bc.start_command);
}

void check_capabilities(const json& j, EntryChecker& c, Capabilities& caps) {
  const json* o = c.object_field(j, "capabilities", "capabilities");
  if (!o) return;
  c.bool_field(*o, "vision", "capabilities.vision", caps.vision);
  c.bool_field(*o, "tools", "capabilities.tools", caps.tools);
  c.bool_field(*o, "reasoning", "capabilities.reasoning", caps.reasoning);
  c.bool_field(*o, "embedding", "capabilities.embedding", caps.embedding);
}

// The template is looked up inside the template directory: a path that could leave it is
// refused here, where the operator sees which entry is wrong.
void check_chat_template(EntryChecker& c, const std::string& t) {
  if (t.empty()) return;
  std::filesystem::path p(t);
  bool escapes = p.has_root_path();
  for (const auto& part : p) escapes = escapes || part == "..";
  if (escapes)
    c.fail("chat_template", "expected a file name inside the template directory, got \"" + t + "\"");
}

void check_strings(const json& j, EntryChecker& c, ModelEntry& e) {
  c.string_field(j, "display_name", "display_name", e.display_name);
  c.string_field(j, "served_model_id", "served_model_id", e.served_model_id);
  c.string_field(j, "download_path", "download_path", e.download_path);
  c.string_field(j, "format", "format", e.format);
  c.string_field(j, "quantization", "quantization", e.quantization);
  c.string_field(j, "family", "family", e.family);
  c.string_field(j, "parameter_size", "parameter_size", e.parameter_size);
  c.string_field(j, "chat_template", "chat_template", e.chat_template);
  check_chat_template(c, e.chat_template);
  c.string_field(j, "version_lock", "version_lock", e.version_lock);
}

}  // namespace

std::optional<ModelEntry> parse_entry(const json& j, const std::string& file,
                                      const std::string& entry_label, std::vector<RegistryIssue>& issues) {
  EntryChecker c(file, entry_label, issues);
  if (!j.is_object()) {
    c.fail("", "expected an object, got " + shown(j));
    return std::nullopt;
  }
  ModelEntry e;
  check_name(j, c, e);
  check_backend(j, c, e);
  check_backend_config(j, c, e.backend_config);
  check_strings(j, c, e);
  check_capabilities(j, c, e.capabilities);
  c.strings_field(j, "roles", "roles", e.roles);
  c.strings_field(j, "profiles", "profiles", e.profiles);
  c.bool_field(j, "testing", "testing", e.testing);
  c.bool_field(j, "deprecated", "deprecated", e.deprecated);
  std::int64_t context_length = 0;
  c.int_field(j, "context_length", "context_length", 1, INT64_MAX, context_length);
  if (context_length > 0) e.context_length = context_length;
  if (!c.ok()) return std::nullopt;
  e.raw = j;
  return e;
}

}  // namespace imageworks
