// `models list [--json]`: the names /v1/models serves, read from the registry on disk (no
// proxy needed); the ACTIVE column from a running proxy when one answers.
#include <iostream>

#include "cli/models_table.hpp"
#include "imageworks/admin_cli.hpp"
#include "imageworks/app.hpp"

namespace imageworks {

namespace {

// Long enough for a loaded proxy on this host, short enough not to stall a script when
// none runs (a closed port answers at once; this bounds a dropped SYN).
constexpr std::chrono::milliseconds kStateTimeout{2000};

cli::GpuHolder ask_running_proxy(const ProxyConfig& cfg, const std::string& given_url) {
  const auto url = admin_base_url(cfg, given_url);
  auto reply = fetch_gpu_state(url, cli_authorization(cfg), kStateTimeout);
  if (reply.state) return cli::gpu_holder_from_state(*reply.state);
  std::cerr << "note: ACTIVE is unknown (-): asked the proxy at " << url << " for the GPU holder, "
            << reply.problem << " (give its address with --url or CHAT_PROXY_HOST/CHAT_PROXY_PORT)\n";
  return {};
}

}  // namespace

int run_models_list(const ProxyConfig& cfg, const ModelsListCommand& cmd) {
  RegistryLoader loader(cfg.registry_dir, listing_options(cfg));
  const auto snap = loader.load();
  for (const auto& issue : snap->issues) std::cerr << "warning: " << issue.to_string() << "\n";
  const auto holder = ask_running_proxy(cfg, cmd.url);
  if (cmd.json) {
    std::cout << cli::models_json(*snap, holder).dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  } else {
    std::cout << cli::models_table(cli::model_rows(*snap, holder));
  }
  return 0;
}

}  // namespace imageworks
