// Operator routes: registry dump (keys masked), an explicit reload, and GPU control (§8):
// activate a model (returns when it is ready), free the GPU, report the state.
#include "imageworks/autostart.hpp"
#include "imageworks/gpu.hpp"
#include "routes/routes.hpp"

namespace imageworks::routes {

namespace {

std::string reload_body(const RegistrySnapshot& snap) {
  nlohmann::json body = nlohmann::json::object();
  body["status"] = snap.issues.empty() ? "ok" : "degraded";
  body["entries"] = snap.entries.size();
  body["models"] = snap.listed.size();
  body["issues"] = snap.issues.size();
  body["error"] = snap.issues.empty() ? nlohmann::json(nullptr) : nlohmann::json(snap.error_summary());
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json request_object(const Exchange& ex) {
  const auto& body = ex.request().body();
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return nlohmann::json::object();
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) throw ProxyError(400, "err_bad_request", "request body must be a JSON object");
  return j;
}

std::string string_field(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_string()) throw ProxyError(400, "err_bad_request", std::string("field '") + key + "' must be a string", key);
  return j[key].get<std::string>();
}

GpuCoordinator& gpu_of(App& app) {
  if (!app.gpu) throw ProxyError(503, "err_backend_unavailable", "GPU coordination is not running in this process");
  return *app.gpu;
}

// The entry an activate request names: any name /v1/models accepts, or a logical name.
const ModelEntry& entry_to_activate(const RegistrySnapshot& snap, const GpuCoordinator& gpu, const nlohmann::json& req) {
  std::string name = string_field(req, "model");
  if (name.empty()) name = string_field(req, "logical_name");
  if (name.empty()) throw ProxyError(400, "err_bad_request", "give the model to activate as {\"model\": NAME}", "model");
  const ModelEntry* e = snap.find_entry(name);
  if (!e) {
    const ListedModel* m = snap.resolve(name);
    if (m) e = m->entry;
  }
  if (!e) throw ProxyError(404, "err_model_not_found", "model '" + name + "' not found", "model");
  if (!gpu.manages(*e))
    throw ProxyError(400, "err_bad_request",
                     "model '" + e->name + "' (backend " + e->backend +
                         (e->backend_config.base_url.empty() ? "" : ", base_url " + e->backend_config.base_url) +
                         ") does not run on this proxy's GPU: nothing to activate",
                     "model");
  return *e;
}

std::string backend_to_free(const nlohmann::json& req) {
  std::string b = string_field(req, "backend");
  if (!b.empty() && b != "vllm" && b != "ollama")
    throw ProxyError(400, "err_bad_request", "field 'backend' must be \"vllm\" or \"ollama\"", "backend");
  return b;
}

std::string state_body(const GpuCoordinator& gpu) { return admin_state_json(*gpu.state()).dump(); }

}  // namespace

Task<void> admin_activate(App& app, Exchange& ex) {
  auto& gpu = gpu_of(app);
  auto snap = app.registry.snapshot();
  const ModelEntry& entry = entry_to_activate(*snap, gpu, request_object(ex));
  co_await gpu.activate(entry);
  co_await ex.send_json(http::status::ok, state_body(gpu));
}

Task<void> admin_deactivate(App& app, Exchange& ex) {
  auto& gpu = gpu_of(app);
  co_await gpu.deactivate(backend_to_free(request_object(ex)));
  co_await ex.send_json(http::status::ok, state_body(gpu));
}

Task<void> admin_state(App& app, Exchange& ex) {
  co_await ex.send_json(http::status::ok, state_body(gpu_of(app)));
}

static std::string autostart_body(App& app) {
  auto j = autostart_status_json(*gpu_of(app).state());
  j["autostart"] = app.autostart ? app.autostart->status() : nlohmann::json(nullptr);
  return j.dump();
}

Task<void> autostart_status(App& app, Exchange& ex) {
  co_await ex.send_json(http::status::ok, autostart_body(app));
}

Task<void> debug_registry(App& app, Exchange& ex) {
  auto snap = app.registry.snapshot();
  co_await ex.send_json(http::status::ok,
                        debug_dump(*snap).dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
}

Task<void> reload_registry(App& app, Exchange& ex) {
  auto snap = co_await app.registry.reload();
  co_await ex.send_json(http::status::ok, reload_body(*snap));
}

}  // namespace imageworks::routes
