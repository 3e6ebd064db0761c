// GET /v1/models and /v1/models/{id}: answered from the registry snapshot at once (§5:
// OpenWebUI calls this before nearly every chat and must never wait on a backend).
#include "imageworks/gpu.hpp"
#include "routes/routes.hpp"

namespace imageworks::routes {

namespace {

std::string model_body(const RegistrySnapshot& snap, const ListedModel& m, bool suppress, bool active) {
  auto created = std::chrono::duration_cast<std::chrono::seconds>(snap.loaded_at.time_since_epoch()).count();
  return model_object(m, suppress, created, active).dump();
}

}  // namespace

// The model holding the GPU, from the coordinator's published state (never a wait).
std::string active_logical_name(const App& app) {
  if (!app.gpu) return {};
  auto s = app.gpu->state();
  if (s->vllm.state == BackendState::ready) return s->vllm.logical_name;
  if (s->holder.kind == GpuTarget::Kind::ollama) return s->ollama_model;
  return {};
}

Task<void> list_models(App& app, Exchange& ex) {
  auto snap = app.registry.snapshot();
  co_await ex.send_json(http::status::ok, models_list(*snap, app.cfg.suppress_decorations, active_logical_name(app)).dump());
}

Task<void> get_model(App& app, Exchange& ex, std::string id) {
  auto snap = app.registry.snapshot();
  const ListedModel* m = snap->resolve(id);
  if (!m) throw ProxyError(404, "err_model_not_found", "model '" + std::string(id) + "' not found", "model");
  const std::string active = active_logical_name(app);
  co_await ex.send_json(http::status::ok,
                        model_body(*snap, *m, app.cfg.suppress_decorations, !active.empty() && active == m->entry->name));
}

}  // namespace imageworks::routes
