// /v1/health and /v1/healthz: readiness and liveness of the proxy itself, with the
// registry's state; "degraded" (still 200) when the last load reported issues.
#include <ctime>

#include "imageworks/time_format.hpp"
#include "routes/routes.hpp"

namespace imageworks::routes {

namespace {

nlohmann::json issues_json(const RegistrySnapshot& snap) {
  auto arr = nlohmann::json::array();
  for (const auto& i : snap.issues) {
    nlohmann::json j = nlohmann::json::object();
    j["file"] = i.file;
    j["entry"] = i.entry;
    j["field"] = i.field;
    j["message"] = i.message;
    arr.push_back(std::move(j));
  }
  return arr;
}

}  // namespace

std::string health_body(const App& app) {
  auto snap = app.registry.snapshot();
  auto up = std::chrono::duration<double>(std::chrono::steady_clock::now() - app.started).count();
  nlohmann::json reg = nlohmann::json::object();
  reg["models"] = snap->listed.size();
  reg["entries"] = snap->entries.size();
  reg["loaded_at"] = iso8601(snap->loaded_at);
  reg["error"] = snap->issues.empty() ? nlohmann::json(nullptr) : nlohmann::json(snap->error_summary());
  reg["errors"] = issues_json(*snap);
  nlohmann::json body = nlohmann::json::object();
  body["status"] = snap->issues.empty() ? "ok" : "degraded";
  body["uptime_s"] = std::round(up * 1000.0) / 1000.0;
  body["version"] = IMAGEWORKS_VERSION;
  body["registry"] = std::move(reg);
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Task<void> health(App& app, Exchange& ex) {
  co_await ex.send_json(http::status::ok, health_body(app));
}

}  // namespace imageworks::routes
