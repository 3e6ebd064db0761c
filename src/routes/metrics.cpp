// GET /v1/metrics (JSON over the rolling window) and GET /metrics (Prometheus text); the
// router answers 404 for both unless CHAT_PROXY_ENABLE_METRICS=1.
#include "imageworks/fd_exhaustion.hpp"
#include "imageworks/gpu.hpp"
#include "imageworks/recorder.hpp"
#include "routes/routes.hpp"

namespace imageworks::routes {

namespace {

Metrics::Gauges gauges(const App& app) {
  Metrics::Gauges g;
  if (app.gpu) g.switch_queue_depth = static_cast<std::int64_t>(app.gpu->state()->queue.size());
  g.log_dropped = app.recorder->log_dropped();
  g.fd_exhaustion = resource_exhaustion_count();
  return g;
}

}  // namespace

nlohmann::json metrics_document(App& app) { return app.recorder->metrics()->json(gauges(app)); }

std::string metrics_json_body(App& app) { return metrics_document(app).dump(); }

Task<void> metrics_json(App& app, Exchange& ex) {
  co_await ex.send_json(http::status::ok, metrics_json_body(app));
}

Task<void> metrics_prometheus(App& app, Exchange& ex) {
  co_await ex.send(http::status::ok, app.recorder->metrics()->prometheus(gauges(app)),
                   "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace imageworks::routes
