// ChatForwarder::handle reads top to bottom as the pipeline of §5:
// parse → resolve → GPU lease (may switch models) → backend → payload → send upstream →
// relay (whole or stream). The exchange's record collects what telemetry needs on the way;
// the session emits it when the exchange ends.
#include <spdlog/spdlog.h>

#include "forwarder/loading_feedback.hpp"
#include "imageworks/autostart.hpp"
#include "imageworks/recorder.hpp"
#include "forwarder/relay.hpp"
#include "imageworks/forwarder.hpp"

namespace imageworks {

namespace {

const ListedModel& resolve_model(const RegistrySnapshot& snap, const ForwardRequest& fr) {
  const ListedModel* m = snap.resolve(fr.requested_model);
  if (!m)
    throw ProxyError(404, "err_model_not_found",
                     "model '" + fr.requested_model + "' not found; GET /v1/models lists the available models",
                     "model");
  return *m;
}

// imageworks_active_streams: a streaming request counts from its parse to its end, waiting
// for the GPU included (both ends on the same thread: the metrics' shard is per thread).
struct ActiveStream {
  Metrics* m;
  explicit ActiveStream(Metrics* metrics) : m(metrics) {
    if (m) m->stream_started();
  }
  ~ActiveStream() {
    if (m) m->stream_ended();
  }
  ActiveStream(const ActiveStream&) = delete;
  ActiveStream& operator=(const ActiveStream&) = delete;
};

}  // namespace

Task<void> ChatForwarder::handle(Exchange& ex, std::string path) {
  RequestRecord& rec = ex.record();  // what the request log and the metrics will say (§10)
  ForwardRequest fr = parse_forward_request(std::string_view(path).substr(4), std::move(ex.request().body()));
  rec.model_requested = fr.requested_model;
  rec.stream = fr.stream;
  const bool log_prompts = app_.recorder && app_.recorder->log_prompts();
  if (log_prompts) {
    rec.has_prompts = true;
    rec.messages.assign(fr.prompt_raw);  // before any rule edits the payload
  }
  ActiveStream active_stream(fr.stream && app_.recorder ? app_.recorder->metrics() : nullptr);
  auto snap = app_.registry.snapshot();  // held for the whole request: reloads do not disturb it
  const ListedModel& model = resolve_model(*snap, fr);
  rec.model_resolved = model.id;
  rec.backend = model.entry->backend;
  // Request policy (§6) before any GPU work: a request it refuses switches no model.
  check_template(app_.cfg, *model.entry, fr.route);
  if (!fr.tools_field.empty()) check_tools(*model.entry, fr.tools_field);
  if (message_policy_applies(app_.cfg, fr, *model.entry)) co_await apply_message_policy(app_, ex, fr, *model.entry);
  // A model on the GPU (Ollama, managed vLLM) waits for its lease: maybe a switch (§5, §8).
  // The lease is held until the reply is relayed, so no switch unloads a model under it.
  const ModelEntry& entry = *model.entry;
  // A backend that is down and has an autostart command is started first (§8).
  if (app_.autostart && app_.autostart->covers(entry.backend) &&
      !(entry.backend == "vllm" && entry.backend_config.base_url.empty())) {  // (managed vLLM: VllmManager)
    const std::string& base = entry.backend_config.base_url.empty() ? app_.cfg.ollama_base_url : entry.backend_config.base_url;
    co_await app_.autostart->ensure(entry.backend, base);
  }
  const bool on_gpu = app_.gpu && app_.gpu->manages(entry);
  prepare_payload(fr, entry);
  RelaySettings settings{std::chrono::milliseconds(app_.cfg.backend_timeout_ms),
                         std::chrono::milliseconds(app_.cfg.stream_idle_timeout_ms),
                         static_cast<std::size_t>(app_.cfg.max_sse_event_bytes),
                         !app_.cfg.disable_tool_normalization, log_prompts};
  for (int attempt = 0;; ++attempt) {
    GpuLease lease;
    if (on_gpu) {
      LoadingFeedback feedback(ex, fr.stream, model.id);
      bool left = false;
      try {
        lease = co_await app_.gpu->acquire(entry, &feedback);
      } catch (const ClientGone&) {
        left = true;
      }
      if (left) {
        ex.throw_if_aborted();  // shutdown: the stream gets its error event
        ex.client_left();
        co_return;
      }
      if (lease.waited) rec.switch_ms = lease.waited_ms;
      co_await feedback.finish();
    }
    BackendRoute route = backend_route(app_.cfg, entry, lease.base_url());
    std::optional<BackendUnreachable> unreachable;
    try {
      co_await relay(ex, fr, route, settings);
      co_return;
    } catch (const BackendUnreachable& e) {
      if (!on_gpu || attempt > 0 || ex.head_sent()) throw;
      unreachable.emplace(e);
    }
    // The managed server refused or dropped the request before answering: if it has just
    // died, the request waits for it to be started afresh (once) instead of failing.
    lease.release();
    if (!co_await app_.gpu->server_died(entry)) throw *unreachable;
    spdlog::warn("[gpu] '{}': its server died before answering a request; the request waits for a fresh start",
                 entry.name);
  }
}

}  // namespace imageworks
