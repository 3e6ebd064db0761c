// imageworks-chat-proxy: serve (default) | config | models list [--json] | activate-model NAME|--stop |
// current-model | vllm-executor
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/help_text.hpp"
#include "imageworks/admin_cli.hpp"
#include "imageworks/app.hpp"
#include "imageworks/autostart.hpp"
#include "imageworks/backend_gate.hpp"
#include "imageworks/forwarder.hpp"
#include "imageworks/gpu.hpp"
#include "imageworks/recorder.hpp"
#include "imageworks/server.hpp"
#include "routes/routes.hpp"

using namespace imageworks;

namespace {

ServerOptions server_options(const ProxyConfig& cfg) {
  ServerOptions o;
  o.host = cfg.host;
  o.port = static_cast<unsigned short>(cfg.port);
  o.threads = cfg.threads > 0 ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
  o.max_body_bytes = cfg.max_body_bytes;
  o.request_timeout = std::chrono::milliseconds(cfg.request_timeout_ms);
  o.keepalive_timeout = std::chrono::milliseconds(cfg.keepalive_timeout_ms);
  o.write_timeout = std::chrono::milliseconds(cfg.client_write_timeout_ms);
  o.shutdown_grace = std::chrono::milliseconds(cfg.shutdown_grace_ms);
  o.max_connections = cfg.max_connections > 0 ? static_cast<std::size_t>(cfg.max_connections)
                                              : default_max_connections();
  o.on_thread_exit = [] { clear_connection_pool(); };
  return o;
}

int serve(const ProxyConfig& cfg) {
  App app(cfg);
  set_upstream_pool_limits(static_cast<std::size_t>(cfg.upstream_max_idle),
                           std::chrono::milliseconds(cfg.upstream_idle_timeout_ms));
  set_backend_limits({static_cast<std::size_t>(cfg.backend_max_concurrent),
                      static_cast<std::size_t>(cfg.backend_max_queue)});
  // Before the server: it records every exchange, until the last one is torn down.
  RequestRecorder recorder(cfg);
  app.recorder = &recorder;
  if (recorder.log()) spdlog::info("[request-log] writing {}", recorder.log()->path().string());
  app.registry.start_watching();
  GpuCoordinator gpu(cfg, [&cfg](Executor ex) { return make_vllm_control(ex, cfg); });
  if (auto* m = recorder.metrics()) {
    gpu.on_switch = [m](const GpuTarget& from, const GpuTarget& to, double ms, bool ok) {
      m->observe_switch(from.metric_name(), to.metric_name(), ms / 1000.0, ok);
    };
  }
  gpu.start();  // adopts a vLLM server a previous run left (state file)
  app.gpu = &gpu;
  // A request waiting on the autostart thread is owned by a handler there: that thread and
  // its handlers must go before the server's io_contexts do (reset below).
  auto autostart = std::make_unique<AutostartManager>(cfg);
  app.autostart = autostart.get();
  ChatForwarder forwarder(app);
  app.forward = [&forwarder](Exchange& ex, std::string path) { return forwarder.handle(ex, std::move(path)); };
  ServerOptions options = server_options(cfg);
  options.on_exchange_end = [&recorder](RequestRecord& r, const Request& req) { recorder.record(r, req); };
  Server server(std::move(options), [&app](Exchange& ex) { return routes::dispatch(app, ex); });
  unsigned short port = server.listen();
  spdlog::info("[server] listening on {}:{} with {} thread(s)", cfg.host, port,
               server_options(cfg).threads);
  std::printf("imageworks-chat-proxy listening on http://%s:%u\n", cfg.host.c_str(), port);
  std::fflush(stdout);
  server.run();
  // Streams are drained: now stop the child vLLM and unload Ollama (§8 shutdown).
  gpu.stop(cfg.release_on_exit);
  app.gpu = nullptr;
  app.autostart = nullptr;
  autostart.reset();
  app.registry.stop();
  spdlog::info("[server] stopped");
  spdlog::shutdown();
  return 0;
}

// CHAT_PROXY_* variables no option reads (likely typos) and options accepted without effect:
// said, never fatal.
std::vector<std::string> setting_warnings(const EnvMap& env, const EnvMap& flags) {
  std::vector<std::string> out;
  for (const auto& v : unknown_variables(process_env_names())) out.push_back(unknown_variable_text(v));
  for (const auto& o : settings_without_effect(env, flags)) out.push_back(without_effect_text(o));
  return out;
}

// Every option: one flag, shown under its section in --help.
struct ConfigFlags {
  std::map<std::string, std::string> values;  // by variable
  std::vector<std::pair<std::string, CLI::Option*>> options;

  explicit ConfigFlags(CLI::App& cli) {
    for (const auto& opt : config_options()) {
      // The variable is the flag's name (the footer says so): only the default is added.
      std::string help = opt.help;
      if (!opt.default_value.empty()) help += " [default " + opt.default_value + "]";
      auto* o = cli.add_option(opt.flag, values[opt.env], help);
      o->option_text("VALUE");
      o->group(opt.section);
      options.emplace_back(opt.env, o);
    }
  }
  EnvMap given() const {
    EnvMap flags;
    for (const auto& [env, o] : options)
      if (o->count() > 0) flags[env] = values.at(env);
    return flags;
  }
};

CLI::App* add_command(CLI::App& parent, const std::string& name, const std::string& description,
                      const std::string& path) {
  auto* sub = parent.add_subcommand(name, description);
  sub->footer(cli::help_footer(path));
  sub->fallthrough();  // the settings' flags may follow the subcommand
  return sub;
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr: stdout belongs to the CLI's own output (config, models list).
  spdlog::set_default_logger(spdlog::stderr_color_mt("imageworks"));
  std::vector<std::string> args(argv + 1, argv + argc);
  // Installed as imageworks-models (symlink): run the models subcommands.
  if (std::filesystem::path(argv[0]).filename() == "imageworks-models" &&
      (args.empty() || (args.front() != "activate-model" && args.front() != "current-model")))
    args.insert(args.begin(), "models");

  CLI::App cli{"One OpenAI-compatible /v1 for every model of a GPU workstation: resolves the model\n"
               "from the registry, normalises the request, relays it to the model's backend and\n"
               "coordinates the GPU between vLLM and Ollama. Without a subcommand it serves.",
               "imageworks-chat-proxy"};
  cli.formatter(cli::help_formatter(40));  // before the subcommands: they share it
  cli.footer(cli::help_footer(""));
  ConfigFlags settings(cli);
  add_command(cli, "serve", "Run the proxy (the default)", "serve");
  auto* config_cmd = add_command(cli, "config", "Print the effective configuration as JSON and exit", "config");
  auto* models_cmd =
      add_command(cli, "models", "Inspect the model registry (also: imageworks-models)", "models");
  auto* list_cmd = add_command(*models_cmd, "list", "The models /v1/models serves, with backend, installed, active",
                               "models list");
  ModelsListCommand list;
  list_cmd->add_flag("--json", list.json, "A JSON array for scripts instead of the table");
  list_cmd->add_option("--url", list.url,
                       "The running proxy asked for ACTIVE (default http://CHAT_PROXY_HOST:CHAT_PROXY_PORT)");
  models_cmd->require_subcommand(1);
  AdminCommand admin;
  auto* activate_cmd =
      add_command(cli, "activate-model", "Make a model hold the GPU on a running proxy", "activate-model");
  activate_cmd->add_option("NAME", admin.model, "Any name /v1/models accepts, or a logical name");
  bool stop = false;
  activate_cmd->add_flag("--stop", stop, "Free the GPU instead (stop vLLM, unload Ollama)");
  auto* current_cmd = add_command(cli, "current-model", "Print the model holding the GPU on a running proxy, or none",
                                  "current-model");
  auto* executor_cmd =
      add_command(cli, "vllm-executor", "Serve /admin/* for a proxy in remote vLLM mode", "vllm-executor");
  for (auto* sub : {activate_cmd, current_cmd})
    sub->add_option("--url", admin.url, "The proxy (default http://CHAT_PROXY_HOST:CHAT_PROXY_PORT)");
  cli.require_subcommand(0, 1);

  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  try {
    cli.parse(args);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  EnvMap flags = settings.given();
  const EnvMap env = read_process_env();
  // activate-model and current-model talk to a running proxy: they need its address and key,
  // not the registry, which need not exist where the operator runs them (e.g. next to a
  // systemd service whose registry path is set in its own environment file).
  if ((activate_cmd->parsed() || current_cmd->parsed()) && !flags.contains("CHAT_PROXY_REGISTRY_DIR"))
    flags["CHAT_PROXY_REGISTRY_DIR"] = std::filesystem::temp_directory_path().string();

  ProxyConfig cfg;
  try {
    cfg = load_config(env, flags);
  } catch (const ConfigError& e) {
    std::cerr << "imageworks-chat-proxy: invalid configuration: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  try {
    if (config_cmd->parsed()) {
      std::cout << config_to_json(cfg).dump(2) << "\n";
      for (const auto& w : setting_warnings(env, flags)) std::cerr << "warning: " << w << "\n";
      return 0;
    }
    if (list_cmd->parsed()) return run_models_list(cfg, list);
    if (activate_cmd->parsed()) {
      if (!stop && admin.model.empty()) {
        std::cerr << "imageworks-chat-proxy: activate-model needs a NAME (or --stop)\n";
        return 2;
      }
      admin.kind = stop ? AdminCommand::Kind::stop : AdminCommand::Kind::activate;
      return run_admin_command(cfg, admin);
    }
    if (current_cmd->parsed()) return run_admin_command(cfg, admin);
    if (executor_cmd->parsed()) return run_vllm_executor(cfg);
    for (const auto& w : setting_warnings(env, flags)) spdlog::warn("[config] {}", w);
    return serve(cfg);
  } catch (const std::exception& e) {
    std::cerr << "imageworks-chat-proxy: " << e.what() << "\n";
    return 1;
  }
}
