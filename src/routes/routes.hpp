#pragma once
// Route families. dispatch() maps method + path (with the bare-URL aliases of §2) to them.
#include "imageworks/app.hpp"
#include "imageworks/http.hpp"

namespace imageworks::routes {

Task<void> dispatch(App& app, Exchange& ex);

Task<void> health(App& app, Exchange& ex);
Task<void> list_models(App& app, Exchange& ex);
Task<void> get_model(App& app, Exchange& ex, std::string id);
Task<void> debug_registry(App& app, Exchange& ex);
Task<void> reload_registry(App& app, Exchange& ex);
Task<void> admin_activate(App& app, Exchange& ex);
Task<void> admin_deactivate(App& app, Exchange& ex);
Task<void> admin_state(App& app, Exchange& ex);
Task<void> autostart_status(App& app, Exchange& ex);
Task<void> metrics_json(App& app, Exchange& ex);        // GET /v1/metrics
Task<void> metrics_prometheus(App& app, Exchange& ex);  // GET /metrics
Task<void> status(App& app, Exchange& ex);              // GET /v1/status (§14)
Task<void> status_page(App& app, Exchange& ex);         // GET / (§14)

// Plain helpers (testable, and JSON built outside coroutine bodies: GCC 12 quirk).
std::string health_body(const App& app);
std::string metrics_json_body(App& app);
nlohmann::json metrics_document(App& app);  // the /v1/metrics document (metrics must be on)
std::string status_body(App& app);
// The status page: one self-contained HTML document (inline CSS/JS, nothing from another host).
std::string_view status_page_html();
// The logical name of the model holding the GPU ("" when none), from published state.
std::string active_logical_name(const App& app);
std::string percent_decode(std::string_view s);
// "/models" -> "/v1/models", "/debug" -> "/v1/debug/registry"; query string removed.
std::string canonical_path(std::string_view target);

}  // namespace imageworks::routes
