// fake_vllm's command line: `fake_vllm serve <model_path> [--flag value | --flag=value]…`.
// vLLM's flags the manager passes are kept; other vLLM flags are recorded and ignored, so a
// registry's extra_args never break the fake. --fake-* flags override FAKE_VLLM_* env.
#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>

#include "fake_vllm/fake_vllm.hpp"

namespace imageworks::fake_vllm {

namespace {

bool parse_int(const std::string& s, long long& out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end;
}

bool truthy(const std::string& s) { return s == "1" || s == "true" || s == "yes" || s == "on"; }

// The behaviour knobs, one row each: flag name, value-less or not, how to apply a value.
struct Knob {
  const char* name;  // "bind-delay-ms" → --fake-bind-delay-ms, FAKE_VLLM_BIND_DELAY_MS
  bool boolean;
  std::function<bool(Options&, const std::string&)> apply;  // false: malformed value
};

auto millis(Millis Options::*field) {
  return [field](Options& o, const std::string& v) {
    long long n = 0;
    if (!parse_int(v, n) || n < 0) return false;
    o.*field = Millis(n);
    return true;
  };
}

auto flag(bool Options::*field) {
  return [field](Options& o, const std::string& v) {
    o.*field = v.empty() || truthy(v);
    return true;
  };
}

const std::vector<Knob>& knobs() {
  static const std::vector<Knob> table = {
      {"bind-delay-ms", false, millis(&Options::bind_delay)},
      {"load-ms", false, millis(&Options::load)},
      {"never-healthy", true, flag(&Options::never_healthy)},
      {"crash-after-ms", false,
       [](Options& o, const std::string& v) {
         long long n = 0;
         if (!parse_int(v, n) || n < 0) return false;
         o.crash_after = Millis(n);
         return true;
       }},
      {"crash-linger-ms", false, millis(&Options::crash_linger)},
      {"stop-delay-ms", false, millis(&Options::stop_delay)},
      {"ignore-sigterm", true, flag(&Options::ignore_sigterm)},
      {"spawn-worker", true, flag(&Options::spawn_worker)},
      {"chunks", false,
       [](Options& o, const std::string& v) {
         long long n = 0;
         if (!parse_int(v, n) || n < 0 || n > 100000) return false;
         o.chunks = static_cast<int>(n);
         return true;
       }},
      {"chunk-delay-ms", false, millis(&Options::chunk_delay)},
      {"text", false, [](Options& o, const std::string& v) { o.text = v; return true; }},
      {"events", false, [](Options& o, const std::string& v) { o.events_path = v; return true; }},
      {"max-lifetime-s", false,
       [](Options& o, const std::string& v) {
         long long n = 0;
         if (!parse_int(v, n) || n <= 0) return false;
         o.max_lifetime = std::chrono::seconds(n);
         return true;
       }},
  };
  return table;
}

std::string env_name(const char* knob) {
  std::string out = "FAKE_VLLM_";
  for (const char* p = knob; *p; ++p) out += *p == '-' ? '_' : static_cast<char>(std::toupper(*p));
  return out;
}

// vLLM flags whose values the fake keeps.
std::string* vllm_field(Options& o, const std::string& name) {
  static const std::map<std::string, std::string Options::*> fields = {
      {"model", &Options::model_path},
      {"served-model-name", &Options::served_model_name},
      {"gpu-memory-utilization", &Options::gpu_memory_utilization},
      {"max-model-len", &Options::max_model_len},
      {"chat-template", &Options::chat_template},
  };
  auto it = fields.find(name);
  return it == fields.end() ? nullptr : &(o.*(it->second));
}

}  // namespace

std::optional<Options> parse_options(int argc, char** argv, std::string& error) {
  Options o;
  o.argv.assign(argv, argv + argc);
  if (argc < 2 || o.argv[1] != "serve") {
    error = "usage: fake_vllm serve <model_path> --port P --served-model-name S [--fake-* …]";
    return std::nullopt;
  }
  for (const auto& k : knobs()) {
    if (const char* v = std::getenv(env_name(k.name).c_str()); v && !k.apply(o, v)) {
      error = "bad value for " + env_name(k.name) + ": " + v;
      return std::nullopt;
    }
  }
  const auto& a = o.argv;
  for (std::size_t i = 2; i < a.size(); ++i) {
    const std::string& tok = a[i];
    if (tok.rfind("--", 0) != 0) {  // a positional: the model, then nothing we know
      if (o.model_path.empty()) o.model_path = tok;
      else o.ignored.push_back(tok);
      continue;
    }
    const auto eq = tok.find('=');
    const std::string name = tok.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    std::optional<std::string> inline_value;
    if (eq != std::string::npos) inline_value = tok.substr(eq + 1);
    // The value of a flag that takes one: inline, else the next argument.
    auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 < a.size()) return a[++i];
      error = "missing value for --" + name;
      return std::nullopt;
    };
    if (name.rfind("fake-", 0) == 0) {
      const Knob* knob = nullptr;
      for (const auto& k : knobs()) knob = name.substr(5) == k.name ? &k : knob;
      if (!knob) {
        error = "unknown behaviour flag --" + name;
        return std::nullopt;
      }
      const auto v = knob->boolean ? std::optional<std::string>(inline_value.value_or("")) : value();
      if (!v) return std::nullopt;
      if (!knob->apply(o, *v)) {
        error = "bad value for --" + name + ": " + *v;
        return std::nullopt;
      }
    } else if (name == "port") {
      const auto v = value();
      long long n = 0;
      if (!v || !parse_int(*v, n) || n < 0 || n > 65535) {
        if (error.empty()) error = "bad --port";
        return std::nullopt;
      }
      o.port = static_cast<unsigned short>(n);
    } else if (std::string* field = vllm_field(o, name)) {
      const auto v = value();
      if (!v) return std::nullopt;
      *field = *v;
    } else {
      // Another vLLM flag: keep it with the argument after it when that is no flag
      // (--dtype half), since the fake cannot know which of vLLM's flags take values.
      o.ignored.push_back(tok);
      if (!inline_value && i + 1 < a.size() && a[i + 1].rfind("--", 0) != 0) o.ignored.push_back(a[++i]);
    }
  }
  if (o.model_path.empty()) {
    error = "no model path";
    return std::nullopt;
  }
  if (o.served_model_name.empty()) o.served_model_name = o.model_path;
  return o;
}

}  // namespace imageworks::fake_vllm
