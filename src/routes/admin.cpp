// Operator routes: registry dump (keys masked) and an explicit reload.
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

}  // namespace

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
