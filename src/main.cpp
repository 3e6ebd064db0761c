// imageworks-chat-proxy: serve (default) | config | models list [--json] | activate-model NAME|--stop |
// current-model | vllm-executor
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "imageworks/admin_cli.hpp"
#include "imageworks/app.hpp"
#include "imageworks/autostart.hpp"
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
  o.on_thread_exit = [] { clear_connection_pool(); };
  return o;
}

int serve(const ProxyConfig& cfg) {
  App app(cfg);
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

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr: stdout belongs to the CLI's own output (config, models list).
  spdlog::set_default_logger(spdlog::stderr_color_mt("imageworks"));
  std::vector<std::string> args(argv + 1, argv + argc);
  // Installed as imageworks-models (symlink): run the models subcommands.
  if (std::filesystem::path(argv[0]).filename() == "imageworks-models" &&
      (args.empty() || (args.front() != "activate-model" && args.front() != "current-model")))
    args.insert(args.begin(), "models");

  CLI::App cli{"imageworks-chat-proxy: one OpenAI-compatible /v1 for every model of a GPU workstation"};
  EnvMap flags;
  std::map<std::string, std::string> flag_values;
  std::vector<CLI::Option*> flag_opts;
  for (const auto& opt : config_options()) {
    auto* o = cli.add_option(opt.flag, flag_values[opt.env], opt.help + " [env " + opt.env + "]");
    o->option_text("VALUE");
    flag_opts.push_back(o);
  }
  auto* serve_cmd = cli.add_subcommand("serve", "run the proxy (default)");
  auto* config_cmd = cli.add_subcommand("config", "print the effective configuration as JSON");
  auto* models_cmd = cli.add_subcommand("models", "inspect the model registry");
  auto* list_cmd = models_cmd->add_subcommand("list", "the names /v1/models serves: ID, BACKEND, INSTALLED, ACTIVE");
  ModelsListCommand list;
  list_cmd->add_flag("--json", list.json, "a JSON array for scripts instead of the table");
  list_cmd->add_option("--url", list.url,
                       "the running proxy asked for ACTIVE (default http://CHAT_PROXY_HOST:CHAT_PROXY_PORT)");
  models_cmd->require_subcommand(1);
  AdminCommand admin;
  auto* activate_cmd = cli.add_subcommand("activate-model", "make a model hold the GPU on a running proxy");
  activate_cmd->add_option("NAME", admin.model, "any name /v1/models accepts, or a logical name");
  bool stop = false;
  activate_cmd->add_flag("--stop", stop, "free the GPU instead (stop vLLM, unload Ollama)");
  auto* current_cmd = cli.add_subcommand("current-model", "print the model holding the GPU (or none)");
  auto* executor_cmd = cli.add_subcommand("vllm-executor", "serve /admin/* for a proxy in remote vLLM mode");
  for (auto* sub : {activate_cmd, current_cmd})
    sub->add_option("--url", admin.url, "the proxy (default http://CHAT_PROXY_HOST:CHAT_PROXY_PORT)");
  for (auto* sub : {serve_cmd, config_cmd, models_cmd, list_cmd, activate_cmd, current_cmd, executor_cmd})
    sub->fallthrough();
  cli.require_subcommand(0, 1);

  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  try {
    cli.parse(args);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  std::size_t i = 0;
  for (const auto& opt : config_options()) {
    if (flag_opts[i++]->count() > 0) flags[opt.env] = flag_values[opt.env];
  }

  ProxyConfig cfg;
  try {
    cfg = load_config(read_process_env(), flags);
  } catch (const ConfigError& e) {
    std::cerr << "imageworks-chat-proxy: invalid configuration: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // A CHAT_PROXY_* variable no option reads is most likely a typo: say so, do not fail.
  const auto unknown = unknown_variables(process_env_names());
  try {
    if (config_cmd->parsed()) {
      std::cout << config_to_json(cfg).dump(2) << "\n";
      for (const auto& v : unknown) std::cerr << "warning: " << unknown_variable_text(v) << "\n";
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
    for (const auto& v : unknown) spdlog::warn("[config] {}", unknown_variable_text(v));
    return serve(cfg);
  } catch (const std::exception& e) {
    std::cerr << "imageworks-chat-proxy: " << e.what() << "\n";
    return 1;
  }
}
