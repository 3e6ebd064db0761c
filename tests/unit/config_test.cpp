// ProxyConfig: defaults, every option wired from env and flags, and errors that name the
// variable. Table-driven over config_options() so a new option cannot be left unwired.
#include "imageworks/config.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "support/test_support.hpp"

namespace imageworks {
namespace {

using nlohmann::json;
using test::TempDir;

// Every test needs an existing registry dir: the default "configs" is relative to the cwd.
struct ConfigFixture : ::testing::Test {
  TempDir tmp;
  EnvMap base_env() const { return {{"CHAT_PROXY_REGISTRY_DIR", tmp.path().string()}}; }
  ProxyConfig load(EnvMap extra, const EnvMap& flags = {}) const {
    extra.merge(base_env());  // keys already in `extra` win
    return load_config(extra, flags);
  }
};

// The ConfigError thrown for `env`, or a test failure if none is thrown.
ConfigError error_for(const EnvMap& env, const EnvMap& flags = {}) {
  try {
    load_config(env, flags);
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "no ConfigError thrown";
  return ConfigError("none", "none");
}

// ---- defaults --------------------------------------------------------------------------

using ConfigDefaults = ConfigFixture;

TEST_F(ConfigDefaults, MatchTheStructInitialisers) {
  auto cfg = load({});
  ProxyConfig expected;
  expected.registry_dir = tmp.path().string();
  expected.template_dir = (tmp.path() / "chat_templates").string();
  EXPECT_EQ(config_to_json(cfg), config_to_json(expected));
  EXPECT_EQ(cfg.host, "127.0.0.1");
  EXPECT_EQ(cfg.port, 8100);
  EXPECT_EQ(cfg.log_level, "info");
  EXPECT_EQ(cfg.max_body_bytes, 32ull << 20);
  EXPECT_EQ(cfg.ollama_base_url, "http://127.0.0.1:11434");
  EXPECT_TRUE(cfg.api_keys.empty());
  EXPECT_TRUE(cfg.admin_loopback_only);
}

TEST_F(ConfigDefaults, TemplateDirDefaultsUnderRegistryDir) {
  EXPECT_EQ(load({}).template_dir, (tmp.path() / "chat_templates").string());
  EXPECT_EQ(load({{"CHAT_PROXY_TEMPLATE_DIR", "/srv/templates"}}).template_dir, "/srv/templates");
}

TEST(ConfigOptions, NamesDeriveFromTheFieldName) {
  const std::set<std::string> kinds{"string", "int", "bool", "double", "dir", "list"};
  std::set<std::string> seen;
  for (const auto& o : config_options()) {
    ASSERT_EQ(o.env.rfind("CHAT_PROXY_", 0), 0u) << o.env;
    std::string flag = "--";
    for (char c : o.env.substr(11)) flag += c == '_' ? '-' : static_cast<char>(std::tolower(c));
    EXPECT_EQ(o.flag, flag);
    EXPECT_TRUE(kinds.count(o.kind)) << o.env << " kind " << o.kind;
    EXPECT_FALSE(o.help.empty()) << o.env;
    EXPECT_TRUE(seen.insert(o.env).second) << "duplicate " << o.env;
    EXPECT_EQ(o.secret, o.env == "CHAT_PROXY_API_KEYS") << o.env;
    EXPECT_EQ(o.fallback_env.empty(), o.env != "CHAT_PROXY_OLLAMA_BASE_URL") << o.env;
    EXPECT_FALSE(o.section.empty()) << o.env << " has no section (--help group, docs heading)";
  }
}

// Each section's options are contiguous: --help and the docs show one group per section.
TEST(ConfigOptions, SectionsAreContiguous) {
  std::vector<std::string> order;
  for (const auto& o : config_options()) {
    if (order.empty() || order.back() != o.section) {
      EXPECT_EQ(std::count(order.begin(), order.end(), o.section), 0) << o.section << " split at " << o.env;
      order.push_back(o.section);
    }
  }
  EXPECT_GE(order.size(), 5u);
}

// ---- options accepted without effect ------------------------------------------------------

TEST(ConfigNoEffect, SetMarkedOptionsAreNamedOnlyWhenSet) {
  std::vector<ConfigOption> marked;
  for (const auto& o : config_options())
    if (!o.no_effect.empty()) marked.push_back(o);
  ASSERT_FALSE(marked.empty()) << "CHAT_PROXY_LOOPBACK_ALIAS is accepted without effect";
  const auto& o = marked.front();
  EXPECT_TRUE(settings_without_effect({}, {}).empty());
  EXPECT_TRUE(settings_without_effect({{o.env, "  "}}, {}).empty()) << "an empty value is unset";
  EXPECT_TRUE(settings_without_effect({{"CHAT_PROXY_PORT", "9000"}}, {}).empty());
  for (const auto& [env, flags] : std::vector<std::pair<EnvMap, EnvMap>>{
           {{{o.env, "x"}}, {}}, {{}, {{o.env, "x"}}}, {{{o.env, "x"}}, {{o.env, "y"}}}}) {
    auto set = settings_without_effect(env, flags);
    ASSERT_EQ(set.size(), 1u);
    EXPECT_EQ(set[0].env, o.env);
  }
  EXPECT_EQ(without_effect_text(o),
            o.env + " is accepted but has no effect in imageworks-chat-proxy: " + o.no_effect);
  EXPECT_EQ(o.help.rfind("(no effect) ", 0), 0u) << "--help says so: " << o.help;
}

// ---- every option wired ----------------------------------------------------------------

// A valid value different from the option's default.
std::string non_default_value(const ConfigOption& o, const TempDir& tmp) {
  static const std::map<std::string, std::string> special{
      {"CHAT_PROXY_LOG_LEVEL", "debug"},
      {"CHAT_PROXY_OLLAMA_BASE_URL", "http://ollama.test:11434"},
      {"CHAT_PROXY_VLLM_REMOTE_URL", "http://executor.test:8600"},
      {"CHAT_PROXY_TEMPLATE_DIR", "/srv/templates"},
      {"CHAT_PROXY_AUTOSTART_MAP", "ollama=ollama serve"}};
  if (auto it = special.find(o.env); it != special.end()) return it->second;
  if (o.env == "CHAT_PROXY_API_KEYS_FILE") return tmp.write("keys.txt", "sk-file\n").string();
  if (o.kind == "dir") return tmp.write("other/.keep", "").parent_path().string();
  if (o.kind == "int") return std::to_string(std::stoll(o.default_value) + 1);
  if (o.kind == "bool") return o.default_value == "1" ? "0" : "1";
  if (o.kind == "double") return "0.5";
  if (o.kind == "list") return "k1,k2";
  return "changed-" + o.env;
}

using ConfigEnv = ConfigFixture;

// Setting one variable changes its own `config` entry and nothing else (except the
// documented knock-on effects), so an option bound to the wrong field fails here.
TEST_F(ConfigEnv, EveryOptionChangesOnlyItsOwnEntry) {
  const json defaults = config_to_json(load({}));
  const std::map<std::string, std::string> knock_on{
      {"CHAT_PROXY_REGISTRY_DIR", "CHAT_PROXY_TEMPLATE_DIR"},
      {"CHAT_PROXY_API_KEYS_FILE", "CHAT_PROXY_API_KEYS"}};
  for (const auto& o : config_options()) {
    SCOPED_TRACE(o.env);
    auto value = non_default_value(o, tmp);
    json got = config_to_json(load({{o.env, value}}));
    EXPECT_NE(got[o.env], defaults[o.env]);
    if (!o.secret && (o.kind == "string" || o.kind == "dir")) {
      EXPECT_EQ(got[o.env], value);
    }
    for (const auto& [key, v] : defaults.items()) {
      auto it = knock_on.find(o.env);
      if (key == o.env || (it != knock_on.end() && it->second == key)) continue;
      EXPECT_EQ(got[key], v) << "setting " << o.env << " changed " << key;
    }
  }
}

TEST_F(ConfigEnv, EveryFieldParsedFromEnv) {
  auto keys = tmp.write("keys", "sk-c\n");
  EnvMap env{
      {"CHAT_PROXY_HOST", "0.0.0.0"}, {"CHAT_PROXY_PORT", "9000"},
      {"CHAT_PROXY_THREADS", "3"}, {"CHAT_PROXY_LOG_LEVEL", "WARN"},
      {"CHAT_PROXY_MAX_BODY_BYTES", "1048576"}, {"CHAT_PROXY_REQUEST_TIMEOUT_MS", "111"},
      {"CHAT_PROXY_KEEPALIVE_TIMEOUT_MS", "222"}, {"CHAT_PROXY_SHUTDOWN_GRACE_MS", "0"},
      {"CHAT_PROXY_REGISTRY_DIR", tmp.path().string()}, {"CHAT_PROXY_TEMPLATE_DIR", "/t"},
      {"CHAT_PROXY_REGISTRY_POLL_MS", "500"}, {"CHAT_PROXY_SUPPRESS_DECORATIONS", "0"},
      {"CHAT_PROXY_INCLUDE_NON_INSTALLED", "yes"}, {"CHAT_PROXY_INCLUDE_TEST_MODELS", "on"},
      {"CHAT_PROXY_PROFILE", "staging"}, {"CHAT_PROXY_ENABLE_DEBUG_ROUTES", "false"},
      {"CHAT_PROXY_ENABLE_METRICS", "TRUE"}, {"CHAT_PROXY_METRICS_WINDOW_S", "60"},
      {"CHAT_PROXY_BACKEND_TIMEOUT_MS", "180000"}, {"CHAT_PROXY_STREAM_IDLE_TIMEOUT_MS", "90000"},
      {"CHAT_PROXY_SWITCH_WAIT_TIMEOUT_MS", "1000"}, {"CHAT_PROXY_CLIENT_WRITE_TIMEOUT_MS", "5000"},
      {"CHAT_PROXY_MAX_SSE_EVENT_BYTES", "65536"},
      {"CHAT_PROXY_UPSTREAM_MAX_IDLE", "8"}, {"CHAT_PROXY_UPSTREAM_IDLE_TIMEOUT_MS", "2500"},
      {"CHAT_PROXY_BACKEND_MAX_CONCURRENT", "16"}, {"CHAT_PROXY_BACKEND_MAX_QUEUE", "32"},
      {"CHAT_PROXY_MAX_CONNECTIONS", "5000"},
      {"CHAT_PROXY_DISABLE_TOOL_NORMALIZATION", "1"}, {"CHAT_PROXY_REQUIRE_TEMPLATE", "off"},
      {"CHAT_PROXY_MAX_IMAGE_BYTES", "8000000"}, {"CHAT_PROXY_IMAGE_DOWNSCALE", "no"},
      {"CHAT_PROXY_IMAGE_MAX_EDGE", "0"}, {"CHAT_PROXY_FETCH_IMAGE_URLS", "1"},
      {"CHAT_PROXY_STRIP_IMAGES_FOR_TEXT_MODELS", "1"},
      {"CHAT_PROXY_VISION_TRUNCATE_HISTORY", "0"}, {"CHAT_PROXY_VISION_KEEP_LAST_N_TURNS", "3"},
      {"CHAT_PROXY_REASONING_TRUNCATE_HISTORY", "1"},
      {"CHAT_PROXY_REASONING_KEEP_LAST_N_TURNS", "4"}, {"CHAT_PROXY_LOG_PATH", "/var/log/x.jsonl"},
      {"CHAT_PROXY_MAX_LOG_BYTES", "1000"}, {"CHAT_PROXY_LOG_KEEP_FILES", "0"},
      {"CHAT_PROXY_LOG_PROMPTS", "1"},
      {"CHAT_PROXY_OLLAMA_BASE_URL", "http://ollama.internal:11434"},
      {"CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS", "5000"}, {"CHAT_PROXY_VLLM_SINGLE_PORT", "0"},
      {"CHAT_PROXY_VLLM_PORT", "24002"}, {"CHAT_PROXY_VLLM_STATE_PATH", "/srv/state.json"},
      {"CHAT_PROXY_VLLM_GPU_MEMORY_UTILIZATION", "0.9"}, {"CHAT_PROXY_VLLM_MAX_MODEL_LEN", "8000"},
      {"CHAT_PROXY_VLLM_COMMAND", "/opt/vllm/bin/vllm"}, {"CHAT_PROXY_VLLM_START_TIMEOUT_S", "30"},
      {"CHAT_PROXY_VLLM_STOP_GRACE_S", "0"},
      {"CHAT_PROXY_VLLM_REMOTE_URL", "http://127.0.0.1:8600"},
      {"CHAT_PROXY_AUTOSTART_ENABLED", "1"}, {"CHAT_PROXY_AUTOSTART_MAP", "ollama=ollama serve"},
      {"CHAT_PROXY_AUTOSTART_GRACE_S", "10"}, {"CHAT_PROXY_LOOPBACK_ALIAS", "imageworks-chat"},
      {"CHAT_PROXY_RELEASE_ON_EXIT", "0"}, {"CHAT_PROXY_API_KEYS", "sk-a, sk-b"},
      {"CHAT_PROXY_API_KEYS_FILE", keys.string()}, {"CHAT_PROXY_ADMIN_LOOPBACK_ONLY", "0"}};
  std::set<std::string> listed, set_here;
  for (const auto& o : config_options()) listed.insert(o.env);
  for (const auto& [k, v] : env) set_here.insert(k);
  EXPECT_EQ(listed, set_here) << "config_options() and this test list different variables";

  auto c = load_config(env);
  EXPECT_EQ(c.host, "0.0.0.0"); EXPECT_EQ(c.port, 9000); EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.log_level, "warn"); EXPECT_EQ(c.max_body_bytes, 1048576u);
  EXPECT_EQ(c.request_timeout_ms, 111); EXPECT_EQ(c.keepalive_timeout_ms, 222);
  EXPECT_EQ(c.shutdown_grace_ms, 0); EXPECT_EQ(c.registry_dir, tmp.path().string());
  EXPECT_EQ(c.template_dir, "/t"); EXPECT_EQ(c.registry_poll_ms, 500);
  EXPECT_FALSE(c.suppress_decorations); EXPECT_TRUE(c.include_non_installed);
  EXPECT_TRUE(c.include_test_models); EXPECT_EQ(c.profile, "staging");
  EXPECT_FALSE(c.enable_debug_routes); EXPECT_TRUE(c.enable_metrics);
  EXPECT_EQ(c.metrics_window_s, 60); EXPECT_EQ(c.backend_timeout_ms, 180000);
  EXPECT_EQ(c.stream_idle_timeout_ms, 90000); EXPECT_EQ(c.switch_wait_timeout_ms, 1000);
  EXPECT_EQ(c.client_write_timeout_ms, 5000); EXPECT_EQ(c.max_sse_event_bytes, 65536u);
  EXPECT_EQ(c.upstream_max_idle, 8); EXPECT_EQ(c.upstream_idle_timeout_ms, 2500);
  EXPECT_EQ(c.backend_max_concurrent, 16); EXPECT_EQ(c.backend_max_queue, 32);
  EXPECT_EQ(c.max_connections, 5000);
  EXPECT_TRUE(c.disable_tool_normalization); EXPECT_FALSE(c.require_template);
  EXPECT_EQ(c.max_image_bytes, 8000000u); EXPECT_FALSE(c.image_downscale);
  EXPECT_EQ(c.image_max_edge, 0); EXPECT_TRUE(c.fetch_image_urls);
  EXPECT_TRUE(c.strip_images_for_text_models); EXPECT_FALSE(c.vision_truncate_history);
  EXPECT_EQ(c.vision_keep_last_n_turns, 3); EXPECT_TRUE(c.reasoning_truncate_history);
  EXPECT_EQ(c.reasoning_keep_last_n_turns, 4); EXPECT_EQ(c.log_path, "/var/log/x.jsonl");
  EXPECT_EQ(c.max_log_bytes, 1000u); EXPECT_EQ(c.log_keep_files, 0); EXPECT_TRUE(c.log_prompts);
  EXPECT_EQ(c.ollama_base_url, "http://ollama.internal:11434");
  EXPECT_EQ(c.ollama_unload_timeout_ms, 5000); EXPECT_FALSE(c.vllm_single_port);
  EXPECT_EQ(c.vllm_port, 24002); EXPECT_EQ(c.vllm_state_path, "/srv/state.json");
  EXPECT_DOUBLE_EQ(c.vllm_gpu_memory_utilization, 0.9); EXPECT_EQ(c.vllm_max_model_len, 8000);
  EXPECT_EQ(c.vllm_command, "/opt/vllm/bin/vllm"); EXPECT_EQ(c.vllm_start_timeout_s, 30);
  EXPECT_EQ(c.vllm_stop_grace_s, 0); EXPECT_EQ(c.vllm_remote_url, "http://127.0.0.1:8600");
  EXPECT_TRUE(c.autostart_enabled); EXPECT_EQ(c.autostart_map, "ollama=ollama serve");
  EXPECT_EQ(c.autostart_grace_s, 10); EXPECT_EQ(c.loopback_alias, "imageworks-chat");
  EXPECT_FALSE(c.release_on_exit);
  EXPECT_EQ(c.api_keys, (std::vector<std::string>{"sk-a", "sk-b", "sk-c"}));
  EXPECT_EQ(c.api_keys_file, keys.string()); EXPECT_FALSE(c.admin_loopback_only);
}

TEST_F(ConfigEnv, BoolSpellings) {
  for (std::string t : {"1", "true", "TRUE", "Yes", "on", " on "})
    EXPECT_TRUE(load({{"CHAT_PROXY_LOG_PROMPTS", t}}).log_prompts) << t;
  for (std::string f : {"0", "false", "False", "NO", "off"})
    EXPECT_FALSE(load({{"CHAT_PROXY_REQUIRE_TEMPLATE", f}}).require_template) << f;
}

TEST_F(ConfigEnv, EmptyValueMeansUnset) {
  auto c = load({{"CHAT_PROXY_PORT", ""}, {"CHAT_PROXY_HOST", "  "}}, {{"CHAT_PROXY_THREADS", ""}});
  EXPECT_EQ(c.port, 8100);
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(c.threads, 0);
}

// The request log is the one option whose empty value means something: off.
TEST_F(ConfigEnv, EmptyOrOffLogPathTurnsTheLogOff) {
  EXPECT_EQ(load({}).log_path, "logs/chat_proxy.jsonl");
  EXPECT_EQ(load({{"CHAT_PROXY_LOG_PATH", ""}}).log_path, "");
  EXPECT_EQ(load({{"CHAT_PROXY_LOG_PATH", " OFF "}}).log_path, "");
  EXPECT_EQ(load({}, {{"CHAT_PROXY_LOG_PATH", ""}}).log_path, "");
  // The flag, empty, still wins over the variable; a variable alone is a path.
  EXPECT_EQ(load({{"CHAT_PROXY_LOG_PATH", "/var/log/a.jsonl"}}, {{"CHAT_PROXY_LOG_PATH", ""}}).log_path, "");
  EXPECT_EQ(load({{"CHAT_PROXY_LOG_PATH", "/var/log/a.jsonl"}}).log_path, "/var/log/a.jsonl");
  EXPECT_EQ(config_to_json(load({{"CHAT_PROXY_LOG_PATH", "off"}}))["CHAT_PROXY_LOG_PATH"], "");
}

TEST_F(ConfigEnv, PortZeroMeansEphemeral) {
  EXPECT_EQ(load({{"CHAT_PROXY_PORT", "0"}}).port, 0);
  EXPECT_EQ(load({{"CHAT_PROXY_PORT", "65535"}}).port, 65535);
}

TEST_F(ConfigEnv, ListsAreTrimmedAndEmptiesDropped) {
  auto c = load({{"CHAT_PROXY_API_KEYS", " a, ,b ,,c,"}});
  EXPECT_EQ(c.api_keys, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(load({{"CHAT_PROXY_API_KEYS", " , ,"}}).api_keys.empty());
}

TEST_F(ConfigEnv, KeysFileSkipsBlankAndCommentLines) {
  auto file = tmp.write("keys", "# team keys\nsk-1\n\n   \n  sk-2  \n#sk-old\n");
  auto c = load({{"CHAT_PROXY_API_KEYS", "sk-0"}, {"CHAT_PROXY_API_KEYS_FILE", file.string()}});
  EXPECT_EQ(c.api_keys, (std::vector<std::string>{"sk-0", "sk-1", "sk-2"}));
}

// ---- flags and the Ollama fallback -------------------------------------------------------

using ConfigFlags = ConfigFixture;

TEST_F(ConfigFlags, FlagOverridesEnv) {
  auto c = load({{"CHAT_PROXY_PORT", "9001"}, {"CHAT_PROXY_LOG_PROMPTS", "1"}},
                {{"CHAT_PROXY_PORT", "9000"}, {"CHAT_PROXY_LOG_PROMPTS", "0"}});
  EXPECT_EQ(c.port, 9000);
  EXPECT_FALSE(c.log_prompts);
  EXPECT_EQ(load({}, {{"CHAT_PROXY_HOST", "0.0.0.0"}}).host, "0.0.0.0");
}

TEST_F(ConfigFlags, BadFlagValueNamesTheVariable) {
  auto e = error_for(base_env(), {{"CHAT_PROXY_MAX_BODY_BYTES", "lots"}});
  EXPECT_EQ(e.variable, "CHAT_PROXY_MAX_BODY_BYTES");
}

TEST_F(ConfigFlags, ImageworksOllamaHostIsTheFallback) {
  EXPECT_EQ(load({{"IMAGEWORKS_OLLAMA_HOST", "http://imageworks-ollama:11434"}}).ollama_base_url,
            "http://imageworks-ollama:11434");
  // Ollama's own host:port shorthand gets a scheme.
  EXPECT_EQ(load({{"IMAGEWORKS_OLLAMA_HOST", "gpu-box:11434"}}).ollama_base_url,
            "http://gpu-box:11434");
  EXPECT_EQ(load({{"IMAGEWORKS_OLLAMA_HOST", "http://fallback:1"},
                  {"CHAT_PROXY_OLLAMA_BASE_URL", "http://primary:2"}}).ollama_base_url,
            "http://primary:2");
  EXPECT_EQ(load({{"IMAGEWORKS_OLLAMA_HOST", "http://fallback:1"},
                  {"CHAT_PROXY_OLLAMA_BASE_URL", ""}}).ollama_base_url,
            "http://fallback:1");
  EXPECT_EQ(load({{"IMAGEWORKS_OLLAMA_HOST", "http://fallback:1"}},
                 {{"CHAT_PROXY_OLLAMA_BASE_URL", "http://flag:3"}}).ollama_base_url,
            "http://flag:3");
}

TEST_F(ConfigFlags, BadFallbackValueNamesTheFallbackVariable) {
  EnvMap env = base_env();
  env["IMAGEWORKS_OLLAMA_HOST"] = "ftp://ollama";
  EXPECT_EQ(error_for(env).variable, "IMAGEWORKS_OLLAMA_HOST");
}

TEST_F(ConfigFlags, UrlTrailingSlashesAreDropped) {
  auto c = load({{"CHAT_PROXY_OLLAMA_BASE_URL", "http://o:11434/"},
                 {"CHAT_PROXY_VLLM_REMOTE_URL", "https://exec:8600//"}});
  EXPECT_EQ(c.ollama_base_url, "http://o:11434");
  EXPECT_EQ(c.vllm_remote_url, "https://exec:8600");
}

TEST(ConfigProcessEnv, ReadsOnlyKnownVariables) {
  ::setenv("CHAT_PROXY_PORT", "9123", 1);
  ::setenv("IMAGEWORKS_OLLAMA_HOST", "http://o:1", 1);
  ::setenv("CHAT_PROXY_NOT_A_SETTING", "x", 1);
  auto env = read_process_env();
  ::unsetenv("CHAT_PROXY_PORT");
  ::unsetenv("IMAGEWORKS_OLLAMA_HOST");
  ::unsetenv("CHAT_PROXY_NOT_A_SETTING");
  EXPECT_EQ(env["CHAT_PROXY_PORT"], "9123");
  EXPECT_EQ(env["IMAGEWORKS_OLLAMA_HOST"], "http://o:1");
  EXPECT_EQ(env.count("CHAT_PROXY_NOT_A_SETTING"), 0u);
}

// A CHAT_PROXY_* variable no option reads is reported, with the nearest option's name.
TEST(ConfigUnknownVariables, TyposAreNamedWithTheNearestSetting) {
  auto found = unknown_variables({"PATH", "CHAT_PROXY_PORT", "CHAT_PROXY_PORTT", "CHAT_PROXY_LOGPATH",
                                  "CHAT_PROXY_ENABLE_METRIC", "CHAT_PROXY_SOMETHING_ELSE_ENTIRELY",
                                  "IMAGEWORKS_OLLAMA_HOST"});
  ASSERT_EQ(found.size(), 4u);
  EXPECT_EQ(found[0].name, "CHAT_PROXY_PORTT");
  EXPECT_EQ(found[0].suggestion, "CHAT_PROXY_PORT");
  EXPECT_EQ(found[1].suggestion, "CHAT_PROXY_LOG_PATH");
  EXPECT_EQ(found[2].suggestion, "CHAT_PROXY_ENABLE_METRICS");
  EXPECT_EQ(found[3].name, "CHAT_PROXY_SOMETHING_ELSE_ENTIRELY");
  EXPECT_EQ(found[3].suggestion, "");
  EXPECT_EQ(unknown_variable_text(found[0]),
            "CHAT_PROXY_PORTT is not a setting of imageworks-chat-proxy (did you mean CHAT_PROXY_PORT?); "
            "docs/configuration.md lists them");
  std::vector<std::string> every_option;
  for (const auto& o : config_options()) every_option.push_back(o.env);
  EXPECT_TRUE(unknown_variables(every_option).empty());
}

// ---- errors ------------------------------------------------------------------------------

struct BadValue {
  std::string var, value, message;  // message: expected text after "<var>: "
};

using ConfigErrors = ConfigFixture;

TEST_F(ConfigErrors, EveryKindOfBadValueNamesTheVariable) {
  const std::vector<BadValue> cases{
      {"CHAT_PROXY_PORT", "abc", "expected an integer, got \"abc\""},
      {"CHAT_PROXY_PORT", "80x", "expected an integer, got \"80x\""},
      {"CHAT_PROXY_PORT", "8.5", "expected an integer, got \"8.5\""},
      {"CHAT_PROXY_PORT", "70000", "must be between 0 and 65535, got \"70000\""},
      {"CHAT_PROXY_PORT", "-1", "must be between 0 and 65535, got \"-1\""},
      {"CHAT_PROXY_PORT", "99999999999999999999", "must be between 0 and 65535"},
      {"CHAT_PROXY_VLLM_PORT", "0", "must be between 1 and 65535, got \"0\""},
      {"CHAT_PROXY_THREADS", "-2", "must be between 0 and 1024, got \"-2\""},
      {"CHAT_PROXY_BACKEND_TIMEOUT_MS", "0", "must be greater than 0, got \"0\""},
      {"CHAT_PROXY_BACKEND_TIMEOUT_MS", "3000000000", "must be at most 2147483647"},
      {"CHAT_PROXY_MAX_BODY_BYTES", "-5", "must be greater than 0, got \"-5\""},
      {"CHAT_PROXY_VISION_KEEP_LAST_N_TURNS", "-1", "must be at least 0, got \"-1\""},
      {"CHAT_PROXY_LOG_KEEP_FILES", "-1", "must be at least 0"},
      {"CHAT_PROXY_REQUIRE_TEMPLATE", "maybe",
       "expected a boolean (1/0, true/false, yes/no, on/off), got \"maybe\""},
      {"CHAT_PROXY_ENABLE_METRICS", "2", "expected a boolean"},
      {"CHAT_PROXY_VLLM_GPU_MEMORY_UTILIZATION", "abc", "expected a number, got \"abc\""},
      {"CHAT_PROXY_VLLM_GPU_MEMORY_UTILIZATION", "0", "must be greater than 0 and at most 1"},
      {"CHAT_PROXY_VLLM_GPU_MEMORY_UTILIZATION", "1.5", "must be greater than 0 and at most 1"},
      {"CHAT_PROXY_VLLM_GPU_MEMORY_UTILIZATION", "nan", "must be greater than 0 and at most 1"},
      {"CHAT_PROXY_LOG_LEVEL", "loud", "expected one of trace, debug, info, warn, error, "
                                       "critical, off, got \"loud\""},
      {"CHAT_PROXY_OLLAMA_BASE_URL", "ftp://x", "expected an http:// or https:// URL"},
      {"CHAT_PROXY_VLLM_REMOTE_URL", "localhost:8600", "expected an http:// or https:// URL"},
      {"CHAT_PROXY_REGISTRY_DIR", "/nonexistent/iw-registry",
       "directory does not exist, got \"/nonexistent/iw-registry\""},
      {"CHAT_PROXY_REGISTRY_DIR", tmp.write("file", "x").string(), "not a directory"},
      {"CHAT_PROXY_API_KEYS_FILE", "/nonexistent/keys",
       "cannot read file, got \"/nonexistent/keys\""},
      {"CHAT_PROXY_API_KEYS_FILE", tmp.path().string(), "cannot read file"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.var + "=" + c.value);
    EnvMap env = base_env();
    env[c.var] = c.value;
    auto e = error_for(env);
    EXPECT_EQ(e.variable, c.var);
    EXPECT_EQ(std::string(e.what()).rfind(c.var + ": " + c.message, 0), 0u) << e.what();
  }
}

TEST(ConfigErrorMessage, IsVariableColonProblemAndQuotedValue) {
  auto e = error_for({{"CHAT_PROXY_REGISTRY_DIR", "/nonexistent/iw-configs"}});
  EXPECT_EQ(std::string(e.what()),
            "CHAT_PROXY_REGISTRY_DIR: directory does not exist, got \"/nonexistent/iw-configs\"");
}

// ---- JSON output -------------------------------------------------------------------------

using ConfigJson = ConfigFixture;

TEST_F(ConfigJson, TypedValuesKeyedByVariable) {
  auto j = config_to_json(load({{"CHAT_PROXY_AUTOSTART_MAP", "ollama=ollama serve"}}));
  std::set<std::string> keys, options;
  for (const auto& [k, v] : j.items()) keys.insert(k);
  for (const auto& o : config_options()) options.insert(o.env);
  EXPECT_EQ(keys, options);
  EXPECT_EQ(j["CHAT_PROXY_PORT"], 8100);
  EXPECT_EQ(j["CHAT_PROXY_MAX_BODY_BYTES"], 33554432);
  EXPECT_EQ(j["CHAT_PROXY_REQUIRE_TEMPLATE"], true);
  EXPECT_DOUBLE_EQ(j["CHAT_PROXY_VLLM_GPU_MEMORY_UTILIZATION"].get<double>(), 0.85);
  EXPECT_TRUE(j["CHAT_PROXY_API_KEYS"].is_array());
  EXPECT_EQ(j["CHAT_PROXY_AUTOSTART_MAP"], "ollama=ollama serve");
}

TEST_F(ConfigJson, SecretsAreMasked) {
  auto file = tmp.write("keys", "sk-from-file-secret\n");
  auto j = config_to_json(load({{"CHAT_PROXY_API_KEYS", "sk-env-secret-1,sk-env-secret-2"},
                                {"CHAT_PROXY_API_KEYS_FILE", file.string()}}));
  EXPECT_EQ(j["CHAT_PROXY_API_KEYS"], json::parse(R"(["***","***","***"])"));
  auto text = j.dump();
  EXPECT_EQ(text.find("secret"), std::string::npos) << text;
}

// ---- docs stay in step with the table ----------------------------------------------------

// Each row under its section's heading ("### Server"), in a table of that section, with its
// flag and default; options without effect say so in their row, and only they.
TEST(ConfigDocs, EveryOptionIsDocumented) {
  auto path = test::source_dir() / "docs" / "configuration.md";
  std::ifstream in(path);
  if (!in) GTEST_SKIP() << "no " << path << " (set IMAGEWORKS_SOURCE_DIR)";
  std::map<std::string, std::string> section_of_row;  // variable -> heading above its row
  std::map<std::string, std::string> row_of;
  std::string heading;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("### ", 0) == 0) heading = line.substr(4);
    if (line.rfind("| `CHAT_PROXY_", 0) != 0) continue;
    auto name = line.substr(3, line.find('`', 3) - 3);
    section_of_row[name] = heading;
    row_of[name] = line;
  }
  for (const auto& o : config_options()) {
    std::string start = "| `" + o.env + "` | `" + o.flag + "` | ";
    start += o.default_value.empty() ? "" : "`" + o.default_value + "`";
    const auto& row = row_of[o.env];
    EXPECT_EQ(row.rfind(start, 0), 0u) << "missing or stale row: " << start;
    EXPECT_EQ(section_of_row[o.env], o.section) << o.env << " is documented under another section";
    const bool marked = row.find("| **No effect.**") != std::string::npos;
    EXPECT_EQ(marked, !o.no_effect.empty()) << o.env << ": the docs' **No effect.** mark and the table disagree";
  }
}

}  // namespace
}  // namespace imageworks
