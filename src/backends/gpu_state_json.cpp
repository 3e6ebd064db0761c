// The coordinator's published state as the admin and autostart routes show it (§2, §8).
#include "imageworks/gpu.hpp"
#include "imageworks/time_format.hpp"

namespace imageworks {

using nlohmann::json;

namespace {

json active_json(const GpuState& s) {
  if (s.vllm.state != BackendState::stopped) {
    json a = json::object();
    a["logical_name"] = s.vllm.logical_name;
    a["served_model_id"] = s.vllm.served_model_id;
    a["backend"] = "vllm";
    a["pid"] = s.vllm.pid > 0 ? json(s.vllm.pid) : json(nullptr);
    a["port"] = s.vllm.port;
    a["started_at"] = iso8601(s.vllm.started_at);
    a["state"] = to_string(s.vllm.state);
    a["base_url"] = s.vllm.base_url;
    return a;
  }
  if (s.holder.kind == GpuTarget::Kind::ollama) {
    json a = json::object();
    a["logical_name"] = s.ollama_model.empty() ? json(nullptr) : json(s.ollama_model);
    a["served_model_id"] = nullptr;
    a["backend"] = "ollama";
    a["pid"] = nullptr;
    a["port"] = nullptr;
    a["started_at"] = iso8601(s.since);
    a["state"] = "ready";
    return a;
  }
  return nullptr;
}

json switches_json(const GpuState& s) {
  json arr = json::array();
  for (const auto& r : s.last_switches) {
    json j = json::object();
    j["from"] = r.from;
    j["to"] = r.to;
    j["duration_ms"] = static_cast<std::int64_t>(r.duration_ms);
    j["at"] = iso8601(r.at);
    j["result"] = r.result;
    arr.push_back(std::move(j));
  }
  return arr;
}

json queue_json(const GpuState& s) {
  json arr = json::array();
  for (const auto& q : s.queue) {
    json j = json::object();
    j["model"] = q.model;
    j["target"] = q.target;
    j["since"] = iso8601(q.since);
    arr.push_back(std::move(j));
  }
  return arr;
}

}  // namespace

json admin_state_json(const GpuState& s) {
  json j = json::object();
  j["active"] = active_json(s);
  j["holder"] = s.holder.label();
  j["switching"] = s.switching ? json(s.switching_to) : json(nullptr);
  j["in_flight"] = s.in_flight;
  j["queue"] = queue_json(s);
  j["switches_total"] = s.switches_total;
  j["last_switches"] = switches_json(s);
  return j;
}

json autostart_status_json(const GpuState& s) {
  json j = json::object();
  json v = to_json(s.vllm);
  v["active_model"] = v["logical_name"];
  j["vllm"] = std::move(v);
  json o = to_json(s.ollama);
  o["active"] = s.holder.kind == GpuTarget::Kind::ollama;
  o["active_model"] = s.ollama_model.empty() ? json(nullptr) : json(s.ollama_model);
  j["ollama"] = std::move(o);
  return j;
}

}  // namespace imageworks
