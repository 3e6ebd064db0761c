// GET /v1/status: the status page's data (§14) — who holds the GPU, who waits for it, the
// last switches, every listed model, traffic over the metrics window, the registry. Built
// from published state only (registry snapshot, the coordinator's GpuState, a metrics
// merge): it never waits on a backend or the coordinator.
#include <chrono>
#include <cmath>

#include "imageworks/gpu.hpp"
#include "imageworks/recorder.hpp"
#include "imageworks/time_format.hpp"
#include "routes/routes.hpp"

namespace imageworks::routes {

namespace {

using nlohmann::json;

// The listed id of a logical name (what clients and the page call it), null when unlisted.
json listed_id(const RegistrySnapshot& snap, std::string_view logical_name) {
  if (logical_name.empty()) return nullptr;
  for (const auto& m : snap.listed)
    if (m.entry->name == logical_name) return m.id;
  return nullptr;
}

// The admin view of the holder, with its listed id and under the page's names.
json holder_json(const json& active, const RegistrySnapshot& snap) {
  if (active.is_null()) return active;
  json h = json::object();
  h["logical_name"] = active["logical_name"];
  h["listed_id"] =
      active["logical_name"].is_string() ? listed_id(snap, active["logical_name"].get<std::string>()) : json(nullptr);
  h["backend"] = active["backend"];
  h["served_model_id"] = active["served_model_id"];
  h["state"] = active["state"];
  h["since"] = active["started_at"];
  h["pid"] = active["pid"];
  h["port"] = active["port"];
  return h;
}

// /v1/admin/state's document, with listed ids and how long each queued request has waited.
json gpu_json(const GpuState& s, const RegistrySnapshot& snap, std::chrono::system_clock::time_point now) {
  json admin = admin_state_json(s);
  json g = json::object();
  g["holder"] = holder_json(admin["active"], snap);
  g["holder_label"] = std::move(admin["holder"]);
  g["switching"] = std::move(admin["switching"]);
  g["in_flight"] = std::move(admin["in_flight"]);
  json& queue = admin["queue"];
  for (std::size_t i = 0; i < queue.size() && i < s.queue.size(); ++i) {
    queue[i]["listed_id"] = listed_id(snap, s.queue[i].model);
    queue[i]["waited_s"] =
        std::max(0.0, std::round(std::chrono::duration<double>(now - s.queue[i].since).count() * 10) / 10);
  }
  g["queue"] = std::move(queue);
  g["last_switches"] = std::move(admin["last_switches"]);
  g["switches_total"] = std::move(admin["switches_total"]);
  return g;
}

json models_json(const App& app, const RegistrySnapshot& snap, const std::string& active) {
  json arr = json::array();
  for (const auto& m : snap.listed) {
    json j = json::object();
    j["id"] = m.id;
    j["logical_name"] = m.entry->name;
    j["backend"] = m.entry->backend;
    j["gpu_managed"] = app.gpu != nullptr && app.gpu->manages(*m.entry);
    j["installed"] = m.installed;
    j["active"] = !active.empty() && m.entry->name == active;
    arr.push_back(std::move(j));
  }
  return arr;
}

// The window's overall figures, each model's, and the live gauges; null when metrics are off.
json traffic_json(App& app) {
  if (!app.recorder || !app.recorder->metrics()) return nullptr;
  json doc = metrics_document(app);
  json t = doc["overall"];
  t["window_s"] = doc["window_s"];
  t["active_streams"] = doc["active_streams"];
  t["totals"] = doc["totals"];
  json per_model = json::object();
  for (auto& [model, w] : doc["models"].items()) {
    json m = json::object();
    m["requests"] = w["requests"];
    m["errors"] = w["errors"];
    m["latency_ms"] = w["latency_ms"];
    per_model[model] = std::move(m);
  }
  t["models"] = std::move(per_model);
  return t;
}

json registry_json(const App& app, const RegistrySnapshot& snap) {
  json r = json::object();
  r["models"] = snap.listed.size();
  r["entries"] = snap.entries.size();
  r["loaded_at"] = iso8601(snap.loaded_at);
  r["dir"] = app.cfg.registry_dir;
  r["error"] = snap.issues.empty() ? json(nullptr) : json(snap.error_summary());
  json errors = json::array();
  for (const auto& i : snap.issues) {
    json j = json::object();
    j["file"] = i.file;
    j["entry"] = i.entry;
    j["field"] = i.field;
    j["message"] = i.message;
    errors.push_back(std::move(j));
  }
  r["errors"] = std::move(errors);
  return r;
}

}  // namespace

std::string status_body(App& app) {
  auto snap = app.registry.snapshot();
  const auto now = std::chrono::system_clock::now();
  json body = json::object();
  body["version"] = IMAGEWORKS_VERSION;
  body["uptime_s"] =
      std::round(std::chrono::duration<double>(std::chrono::steady_clock::now() - app.started).count() * 10) / 10;
  body["now"] = iso8601(now);
  body["status"] = snap->issues.empty() ? "ok" : "degraded";
  if (app.gpu) {
    auto state = app.gpu->state();
    body["gpu"] = gpu_json(*state, *snap, now);
  } else {
    body["gpu"] = nullptr;
  }
  body["models"] = models_json(app, *snap, active_logical_name(app));
  body["metrics"] = traffic_json(app);
  body["registry"] = registry_json(app, *snap);
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

Task<void> status(App& app, Exchange& ex) {
  ex.add_header("Cache-Control", "no-store");
  co_await ex.send_json(http::status::ok, status_body(app));
}

}  // namespace imageworks::routes
