#include "cli/help_text.hpp"

namespace imageworks::cli {

namespace {

constexpr const char* kProgram = R"~(
Examples:
  imageworks-chat-proxy                           # serve, settings from CHAT_PROXY_* variables
  imageworks-chat-proxy serve --host 0.0.0.0 --port 8100 --registry-dir /srv/imageworks/configs
  imageworks-chat-proxy config                    # effective settings as JSON; exit 2 if invalid
  imageworks-chat-proxy models list               # ID, BACKEND, INSTALLED, ACTIVE table
  imageworks-chat-proxy models list --json        # the same as a JSON array, for scripts
  imageworks-chat-proxy activate-model "llama 12.2b (Q4 K M)"   # make it hold the GPU
  imageworks-chat-proxy activate-model --stop     # free the GPU
  imageworks-chat-proxy current-model             # the model holding the GPU, or "none"
  imageworks-chat-proxy vllm-executor --port 8600 # the executor for CHAT_PROXY_VLLM_REMOTE_URL
  docker exec imageworks-chat-proxy imageworks-chat-proxy activate-model NAME
  imageworks-models list --json                   # the models commands, through the symlink

Every option is also an environment variable: --max-body-bytes is CHAT_PROXY_MAX_BODY_BYTES
(the flag wins). docs/configuration.md describes them; SUBCOMMAND --help describes a command.)~";

constexpr const char* kServe = R"~(
Examples:
  imageworks-chat-proxy serve
  imageworks-chat-proxy serve --host 0.0.0.0 --port 8100 --registry-dir /srv/imageworks/configs
  CHAT_PROXY_ENABLE_METRICS=1 imageworks-chat-proxy serve --log-level debug

Settings: the options of imageworks-chat-proxy --help (grouped by section), or their
CHAT_PROXY_* variables; they go before or after the subcommand.)~";

constexpr const char* kConfig = R"~(
Examples:
  imageworks-chat-proxy config
  imageworks-chat-proxy config --port 9000 --registry-dir /srv/imageworks/configs
  CHAT_PROXY_PORT=9000 imageworks-chat-proxy config | jq .CHAT_PROXY_PORT

Exit status 2 names the invalid variable. Warnings on stderr: CHAT_PROXY_* variables that
are no setting (likely typos) and settings accepted without effect.)~";

constexpr const char* kModels = R"~(
Examples:
  imageworks-chat-proxy models list
  imageworks-chat-proxy models list --json
  imageworks-chat-proxy models list --url http://127.0.0.1:8100
  imageworks-models list --json                   # through the imageworks-models symlink

IDs are the names /v1/models serves, read from CHAT_PROXY_REGISTRY_DIR. ACTIVE (the model
holding the GPU) comes from the running proxy (--url, else CHAT_PROXY_HOST/CHAT_PROXY_PORT);
when none answers it is "-" (JSON: null) and one line on stderr says why.)~";

constexpr const char* kActivate = R"~(
Examples:
  imageworks-chat-proxy activate-model "llama 12.2b (Q4 K M)"
  imageworks-chat-proxy activate-model qwen2-7b-instruct --url http://127.0.0.1:8100
  imageworks-chat-proxy activate-model --stop
  docker exec imageworks-chat-proxy imageworks-chat-proxy activate-model NAME

NAME: any name /v1/models accepts, or a logical name. Returns when the model is ready.
Exit status: 0 done, 1 the proxy refused (its reason on stderr), 3 no proxy answered.)~";

constexpr const char* kCurrent = R"~(
Examples:
  imageworks-chat-proxy current-model
  imageworks-chat-proxy current-model --url http://127.0.0.1:8100
  docker exec imageworks-chat-proxy imageworks-chat-proxy current-model

Prints the logical name of the model holding the GPU, or "none".
Exit status: 0 done, 1 the proxy refused, 3 no proxy answered.)~";

constexpr const char* kExecutor = R"~(
Examples:
  imageworks-chat-proxy vllm-executor --host 0.0.0.0 --port 8600
  CHAT_PROXY_VLLM_REMOTE_URL=http://gpu-host:8600 imageworks-chat-proxy serve   # the proxy side

Serves /admin/* on the GPU host so that a proxy elsewhere starts and stops vLLM there
(docs/gpu.md); the vLLM settings (--vllm-command, --vllm-port…) apply here.)~";

class HelpFormatter : public CLI::Formatter {
 public:
  std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode mode) const override {
    if (mode == CLI::AppFormatMode::Sub) return make_expanded(app);
    std::string out = make_description(app) + "\n" + make_usage(app, name) + make_positionals(app);
    out += make_subcommands(app, mode);
    for (const auto& group : app->get_groups()) {
      auto opts = app->get_options([&group](const CLI::Option* o) {
        return o->get_group() == group && o->nonpositional();
      });
      if (!group.empty() && !opts.empty()) out += make_group(group, false, opts);
    }
    return out + make_footer(app);  // the footers open with a blank line
  }
};

}  // namespace

std::shared_ptr<CLI::Formatter> help_formatter(std::size_t column_width) {
  auto f = std::make_shared<HelpFormatter>();
  f->column_width(column_width);
  return f;
}

std::string help_footer(std::string_view command) {
  if (command.empty()) return kProgram;
  if (command == "serve") return kServe;
  if (command == "config") return kConfig;
  if (command == "models" || command == "models list") return kModels;
  if (command == "activate-model") return kActivate;
  if (command == "current-model") return kCurrent;
  if (command == "vllm-executor") return kExecutor;
  return {};
}

}  // namespace imageworks::cli
