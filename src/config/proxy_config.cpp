// ProxyConfig loading. One table binds every variable to its ProxyConfig field, parser and
// printer, so parsing, the `config` output, CLI flags and docs cannot drift apart.
#include "imageworks/autostart.hpp"
#include "imageworks/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string_view>

namespace imageworks {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// One option plus how to parse a value into its field and show the field again. `parse`
// gets the variable to blame in errors: the fallback's name when the value came from it.
struct Binding {
  ConfigOption option;
  std::function<void(ProxyConfig&, const std::string& var, const std::string& v)> parse;
  std::function<json(const ProxyConfig&)> show;
};

std::string trim(std::string_view s) {
  auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The bad value is shown as a JSON string literal, so control bytes cannot garble a log.
[[noreturn]] void fail(const std::string& var, const std::string& what, const std::string& v) {
  auto shown = json(v).dump(-1, ' ', false, json::error_handler_t::replace);
  throw ConfigError(var, what + ", got " + shown);
}

// `open`: hi is just the field type's maximum, worth naming only when it is exceeded.
std::string range_text(bool too_low, long long lo, long long hi, bool open) {
  if (!open) return "must be between " + std::to_string(lo) + " and " + std::to_string(hi);
  if (!too_low) return "must be at most " + std::to_string(hi);
  return lo == 1 ? "must be greater than 0" : "must be at least " + std::to_string(lo);
}

long long parse_integer(const std::string& var, const std::string& v, long long lo,
                        long long hi, bool open) {
  long long n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec == std::errc::result_out_of_range) fail(var, range_text(v[0] == '-', lo, hi, open), v);
  if (ec != std::errc() || end != v.data() + v.size()) fail(var, "expected an integer", v);
  if (n < lo || n > hi) fail(var, range_text(n < lo, lo, hi, open), v);
  return n;
}

bool parse_bool(const std::string& var, const std::string& v) {
  auto l = lower(v);
  if (l == "1" || l == "true" || l == "yes" || l == "on") return true;
  if (l == "0" || l == "false" || l == "no" || l == "off") return false;
  fail(var, "expected a boolean (1/0, true/false, yes/no, on/off)", v);
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream in(v);
  for (std::string item; std::getline(in, item, ',');) {
    if (auto t = trim(item); !t.empty()) out.push_back(std::move(t));
  }
  return out;
}

double parse_fraction(const std::string& var, const std::string& v) {
  double d = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc() || end != v.data() + v.size()) fail(var, "expected a number", v);
  if (!(d > 0.0 && d <= 1.0)) fail(var, "must be greater than 0 and at most 1", v);  // and NaN
  return d;
}

// Binds `member` to the variable CHAT_PROXY_<FIELD> and the flag --<field>: both derive from
// the field name, so they cannot disagree. `parse(var, value)` returns the field's value.
template <typename T, typename Parse>
Binding bind_field(const std::string& field, T ProxyConfig::*member, const char* kind,
                   const char* help, std::string default_value, Parse parse) {
  Binding b;
  b.option.env = "CHAT_PROXY_";
  b.option.flag = "--";
  for (char c : field) {
    b.option.env += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    b.option.flag += c == '_' ? '-' : c;
  }
  b.option.default_value = std::move(default_value);
  b.option.kind = kind;
  b.option.help = help;
  b.parse = [member, parse](ProxyConfig& c, const std::string& var, const std::string& v) {
    c.*member = parse(var, v);
  };
  b.show = [member](const ProxyConfig& c) { return json(c.*member); };
  return b;
}

// The largest value of T that parse_integer (long long) can represent.
template <typename T>
constexpr long long type_max() {
  return static_cast<long long>(std::min<unsigned long long>(
      std::numeric_limits<T>::max(), std::numeric_limits<long long>::max()));
}

// Integers, signed or not, in [lo, hi]; hi defaults to what the field's type can hold.
template <typename T>
Binding integer(const std::string& field, T ProxyConfig::*member, const char* help,
                long long lo, long long hi = type_max<T>()) {
  return bind_field(field, member, "int", help, std::to_string(ProxyConfig{}.*member),
                    [lo, hi](const std::string& var, const std::string& v) {
                      return static_cast<T>(parse_integer(var, v, lo, hi, hi == type_max<T>()));
                    });
}

Binding boolean(const std::string& field, bool ProxyConfig::*member, const char* help) {
  return bind_field(field, member, "bool", help, ProxyConfig{}.*member ? "1" : "0", parse_bool);
}

// A fraction in (0, 1]: the only double setting is the vLLM GPU memory share.
Binding fraction(const std::string& field, double ProxyConfig::*member, const char* help) {
  std::ostringstream def;
  def << ProxyConfig{}.*member;
  return bind_field(field, member, "double", help, def.str(), parse_fraction);
}

// Checks (and may normalise) a string value; throws ConfigError for a bad one.
using Check = std::string (*)(const std::string& var, const std::string& v);

std::string any_text(const std::string&, const std::string& v) { return v; }

Binding text(const std::string& field, std::string ProxyConfig::*member, const char* help,
             Check check = any_text, const char* kind = "string") {
  return bind_field(field, member, kind, help, ProxyConfig{}.*member, check);
}

Binding list(const std::string& field, std::vector<std::string> ProxyConfig::*member,
             const char* help) {
  return bind_field(field, member, "list", help, "",
                    [](const std::string&, const std::string& v) { return split_list(v); });
}

Binding secret(Binding b) {
  b.option.secret = true;
  return b;
}

Binding empty_is_value(Binding b) {
  b.option.empty_is_value = true;
  return b;
}

// The request log's path; "" or "off" turns the log off.
std::string check_log_path(const std::string&, const std::string& v) { return lower(v) == "off" ? "" : v; }

// An option nothing reads (see ConfigOption::no_effect); `why` ends the `config` warning.
Binding no_effect(Binding b, const char* why) {
  b.option.no_effect = why;
  b.option.help = "(no effect) " + b.option.help;
  return b;
}

Binding with_fallback(Binding b, const char* fallback_env) {
  b.option.fallback_env = fallback_env;
  return b;
}

std::string check_log_level(const std::string& var, const std::string& v) {
  static const std::vector<std::string> levels{"trace", "debug", "info", "warn",
                                               "error", "critical", "off"};
  auto l = lower(v);
  if (std::find(levels.begin(), levels.end(), l) == levels.end())
    fail(var, "expected one of trace, debug, info, warn, error, critical, off", v);
  return l;
}

// An empty URL is allowed: it switches the feature off (vllm_remote_url). Trailing slashes
// go, so callers can append "/v1/..." without producing "//".
std::string check_url(const std::string& var, const std::string& v) {
  if (!v.empty() && !v.starts_with("http://") && !v.starts_with("https://"))
    fail(var, "expected an http:// or https:// URL", v);
  auto end = v.find_last_not_of('/');
  return v.substr(0, end == std::string::npos ? 0 : end + 1);
}

// Ollama's own OLLAMA_HOST convention is a bare host:port, so accept that too.
std::string check_ollama_url(const std::string& var, const std::string& v) {
  return check_url(var, v.find("://") == std::string::npos ? "http://" + v : v);
}

std::string check_dir(const std::string& var, const std::string& v) {
  std::error_code ec;
  if (!fs::exists(v, ec)) fail(var, "directory does not exist", v);
  if (!fs::is_directory(v, ec)) fail(var, "not a directory", v);
  return v;
}

// The options of one section, in the order --help and docs/configuration.md show them.
void add_section(std::vector<Binding>& all, const char* section, std::vector<Binding> rows) {
  for (auto& b : rows) {
    b.option.section = section;
    all.push_back(std::move(b));
  }
}

std::vector<Binding> build_bindings() {
  using C = ProxyConfig;
  std::vector<Binding> all;
  add_section(all, "Server", {
      text("host", &C::host, "Bind address of the HTTP listener"),
      integer("port", &C::port, "Listen port (0 = an ephemeral port, for tests)", 0, 65535),
      integer("threads", &C::threads, "Event-loop threads (0 = one per CPU core)", 0, 1024),
      text("log_level", &C::log_level, "trace, debug, info, warn, error, critical or off",
           check_log_level),
      integer("max_body_bytes", &C::max_body_bytes, "Largest request body (413 above)", 1),
      integer("request_timeout_ms", &C::request_timeout_ms, "Time for a request to arrive", 1),
      integer("keepalive_timeout_ms", &C::keepalive_timeout_ms, "Idle keep-alive timeout", 1),
      integer("shutdown_grace_ms", &C::shutdown_grace_ms, "Drain time on SIGTERM/SIGINT", 0),
      integer("max_connections", &C::max_connections,
              "Open client connections; more are answered 503 (0 = half the open-file limit, "
              "two descriptors per relayed request)", 0),
  });
  add_section(all, "Registry and model list", {
      text("registry_dir", &C::registry_dir, "Model registry directory (must exist)", check_dir,
           "dir"),
      text("template_dir", &C::template_dir,
           "Chat template directory (empty = <registry_dir>/chat_templates)"),
      integer("registry_poll_ms", &C::registry_poll_ms, "Registry change check interval", 1),
      boolean("suppress_decorations", &C::suppress_decorations,
              "Simplified model ids without backend/format fields in /v1/models"),
      boolean("include_non_installed", &C::include_non_installed,
              "List entries whose download_path is not on disk"),
      boolean("include_test_models", &C::include_test_models, "List entries flagged testing"),
      text("profile", &C::profile, "Only list entries in this profile"),
      boolean("enable_debug_routes", &C::enable_debug_routes, "Serve /v1/debug/*"),
  });
  add_section(all, "Forwarding", {
      integer("backend_timeout_ms", &C::backend_timeout_ms,
              "Upstream connect + first byte (or whole non-stream reply) timeout", 1),
      integer("stream_idle_timeout_ms", &C::stream_idle_timeout_ms, "Longest gap in a stream", 1),
      integer("client_write_timeout_ms", &C::client_write_timeout_ms,
              "A client that accepts no bytes this long is disconnected", 1),
      integer("max_sse_event_bytes", &C::max_sse_event_bytes, "Largest upstream SSE event", 1024),
      integer("upstream_max_idle", &C::upstream_max_idle,
              "Idle keep-alive connections kept per backend and event loop (0 = none)", 0, 100000),
      integer("upstream_idle_timeout_ms", &C::upstream_idle_timeout_ms,
              "An idle upstream connection is closed after this", 100),
      integer("backend_max_concurrent", &C::backend_max_concurrent,
              "Upstream requests in flight per backend; more wait in its queue (0 = no limit)", 0),
      integer("backend_max_queue", &C::backend_max_queue,
              "Requests waiting per backend for a free slot; more get 429 err_rate_limited", 0),
      integer("switch_wait_timeout_ms", &C::switch_wait_timeout_ms,
              "Wait for a model switch before 503", 1),
      boolean("disable_tool_normalization", &C::disable_tool_normalization,
              "Pass legacy function_call replies through unchanged"),
  });
  add_section(all, "Request policy and normalisation", {
      boolean("require_template", &C::require_template, "Chat requests need a chat template"),
      integer("max_image_bytes", &C::max_image_bytes, "Largest decoded image", 1),
      boolean("image_downscale", &C::image_downscale, "Downscale images that are too large"),
      integer("image_max_edge", &C::image_max_edge, "Longest image edge (0 = no limit)", 0),
      boolean("fetch_image_urls", &C::fetch_image_urls, "Fetch http(s) image URLs for backends"),
      boolean("strip_images_for_text_models", &C::strip_images_for_text_models,
              "Drop images sent to text-only models instead of 409"),
      boolean("vision_truncate_history", &C::vision_truncate_history,
              "Truncate history of vision requests"),
      integer("vision_keep_last_n_turns", &C::vision_keep_last_n_turns,
              "User turns kept in vision requests", 0),
      boolean("reasoning_truncate_history", &C::reasoning_truncate_history,
              "Truncate history for reasoning models"),
      integer("reasoning_keep_last_n_turns", &C::reasoning_keep_last_n_turns,
              "User turns kept for reasoning models", 0),
  });
  add_section(all, "Telemetry", {
      boolean("enable_metrics", &C::enable_metrics, "Serve /v1/metrics and /metrics"),
      integer("metrics_window_s", &C::metrics_window_s, "Rolling window of the metrics", 1),
      empty_is_value(text("log_path", &C::log_path,
                          "JSONL request log; \"\" or off: no log", check_log_path)),
      integer("max_log_bytes", &C::max_log_bytes, "Request log rotates at this size", 1),
      integer("log_keep_files", &C::log_keep_files, "Rotated request logs kept", 0),
      boolean("log_prompts", &C::log_prompts, "Log messages and replies too"),
  });
  add_section(all, "Backends and GPU", {
      with_fallback(text("ollama_base_url", &C::ollama_base_url,
                         "Ollama server (fallback: IMAGEWORKS_OLLAMA_HOST)", check_ollama_url),
                    "IMAGEWORKS_OLLAMA_HOST"),
      integer("ollama_unload_timeout_ms", &C::ollama_unload_timeout_ms, "Ollama unload wait", 1),
      boolean("vllm_single_port", &C::vllm_single_port, "One managed vLLM server at a time"),
      integer("vllm_port", &C::vllm_port, "Port of the managed vLLM server", 1, 65535),
      text("vllm_state_path", &C::vllm_state_path, "State file of the managed vLLM server"),
      fraction("vllm_gpu_memory_utilization", &C::vllm_gpu_memory_utilization,
               "vLLM --gpu-memory-utilization, in (0, 1]"),
      integer("vllm_max_model_len", &C::vllm_max_model_len,
              "vLLM --max-model-len when the entry has no context_length", 1),
      text("vllm_command", &C::vllm_command, "vLLM executable"),
      integer("vllm_start_timeout_s", &C::vllm_start_timeout_s, "vLLM health wait", 1),
      integer("vllm_stop_grace_s", &C::vllm_stop_grace_s, "vLLM SIGTERM to SIGKILL grace", 0),
      text("vllm_remote_url", &C::vllm_remote_url,
           "Remote vLLM executor URL (empty = manage vLLM locally)", check_url),
      boolean("autostart_enabled", &C::autostart_enabled, "Start unhealthy backends on demand"),
      text("autostart_map", &C::autostart_map, "backend=command,... (backend:command too)",
           [](const std::string&, const std::string& v) {
             parse_autostart_map(v);  // throws ConfigError naming the variable
             return v;
           }),
      integer("autostart_grace_s", &C::autostart_grace_s, "Autostarted backend health wait", 1),
      no_effect(text("loopback_alias", &C::loopback_alias, "The seeds' loopback alias for backend URLs"),
                "accepted for compatibility with the seeds' deployments; backend URLs are used "
                "exactly as the registry gives them (point an entry's base_url, or "
                "IMAGEWORKS_OLLAMA_HOST, at a host name the proxy can reach)"),
      boolean("release_on_exit", &C::release_on_exit, "Unload models and stop vLLM on exit"),
  });
  add_section(all, "Security", {
      secret(list("api_keys", &C::api_keys, "Accepted bearer keys, comma separated")),
      text("api_keys_file", &C::api_keys_file, "File of keys, one a line (added to api_keys)"),
      boolean("admin_loopback_only", &C::admin_loopback_only,
              "Admin, reload and debug routes answer loopback clients only"),
  });
  return all;
}

const std::vector<Binding>& bindings() {
  static const std::vector<Binding> table = build_bindings();
  return table;
}

struct Picked {
  std::string var, value;  // where the value came from, and the value
};

// The first non-empty of: flag, variable, fallback variable; else the default. For an option
// whose empty value means something ("off"), the first one given, empty or not.
Picked pick_value(const ConfigOption& opt, const EnvMap& env, const EnvMap& flags) {
  auto lookup = [](const EnvMap& m, const std::string& key) -> std::string {
    auto it = m.find(key);
    return it == m.end() ? std::string() : trim(it->second);
  };
  if (opt.empty_is_value) {
    for (const EnvMap* m : {&flags, &env})
      if (m->contains(opt.env)) return {opt.env, lookup(*m, opt.env)};
  }
  if (auto v = lookup(flags, opt.env); !v.empty()) return {opt.env, v};
  if (auto v = lookup(env, opt.env); !v.empty()) return {opt.env, v};
  if (auto v = lookup(env, opt.fallback_env); !v.empty()) return {opt.fallback_env, v};
  return {opt.env, opt.default_value};
}

void add_keys_from_file(ProxyConfig& cfg) {
  if (cfg.api_keys_file.empty()) return;
  const std::string var = "CHAT_PROXY_API_KEYS_FILE";
  std::error_code ec;
  std::ifstream in(cfg.api_keys_file);
  if (!fs::is_regular_file(cfg.api_keys_file, ec) || !in)
    fail(var, "cannot read file", cfg.api_keys_file);
  for (std::string line; std::getline(in, line);) {
    auto key = trim(line);
    if (!key.empty() && key.front() != '#') cfg.api_keys.push_back(std::move(key));
  }
  if (in.bad()) fail(var, "cannot read file", cfg.api_keys_file);
}

json mask(const json& value) {
  if (value.is_array()) return json::array_t(value.size(), "***");
  if (value.is_string() && value.get_ref<const std::string&>().empty()) return value;
  return "***";
}

}  // namespace

const std::vector<ConfigOption>& config_options() {
  static const std::vector<ConfigOption> options = [] {
    std::vector<ConfigOption> out;
    for (const auto& b : bindings()) out.push_back(b.option);
    return out;
  }();
  return options;
}

EnvMap read_process_env() {
  EnvMap env;
  for (const auto& opt : config_options()) {
    for (const auto& name : {opt.env, opt.fallback_env}) {
      if (name.empty()) continue;
      if (const char* v = std::getenv(name.c_str())) env[name] = v;
    }
  }
  return env;
}

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::vector<UnknownVariable> unknown_variables(const std::vector<std::string>& names) {
  std::vector<UnknownVariable> out;
  for (const auto& name : names) {
    if (!name.starts_with("CHAT_PROXY_")) continue;
    const auto& opts = config_options();
    if (std::any_of(opts.begin(), opts.end(), [&](const ConfigOption& o) { return o.env == name; })) continue;
    UnknownVariable v{name, ""};
    std::size_t best = 4;  // further than 3 edits away is no suggestion
    for (const auto& o : opts) {
      if (auto d = edit_distance(name, o.env); d < best) {
        best = d;
        v.suggestion = o.env;
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<std::string> process_env_names() {
  std::vector<std::string> names;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    names.emplace_back(kv.substr(0, kv.find('=')));
  }
  return names;
}

std::string unknown_variable_text(const UnknownVariable& v) {
  std::string text = v.name + " is not a setting of imageworks-chat-proxy";
  if (!v.suggestion.empty()) text += " (did you mean " + v.suggestion + "?)";
  return text + "; docs/configuration.md lists them";
}

std::vector<ConfigOption> settings_without_effect(const EnvMap& env, const EnvMap& flags) {
  auto is_set = [](const EnvMap& m, const std::string& key) {
    auto it = m.find(key);
    return it != m.end() && !trim(it->second).empty();
  };
  std::vector<ConfigOption> out;
  for (const auto& o : config_options()) {
    if (!o.no_effect.empty() && (is_set(env, o.env) || is_set(flags, o.env))) out.push_back(o);
  }
  return out;
}

std::string without_effect_text(const ConfigOption& o) {
  return o.env + " is accepted but has no effect in imageworks-chat-proxy: " + o.no_effect;
}

ProxyConfig load_config(const EnvMap& env, const EnvMap& flags) {
  ProxyConfig cfg;
  for (const auto& b : bindings()) {
    auto [var, value] = pick_value(b.option, env, flags);
    b.parse(cfg, var, value);
  }
  if (cfg.template_dir.empty())
    cfg.template_dir = (fs::path(cfg.registry_dir) / "chat_templates").string();
  add_keys_from_file(cfg);
  return cfg;
}

json config_to_json(const ProxyConfig& cfg) {
  json out = json::object();
  for (const auto& b : bindings()) {
    auto value = b.show(cfg);
    out[b.option.env] = b.option.secret ? mask(value) : value;
  }
  return out;
}

}  // namespace imageworks
