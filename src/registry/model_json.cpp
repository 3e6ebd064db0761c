// JSON views of the registry: the /v1/models objects (§4) and the /v1/debug/registry dump,
// which must never show a credential in clear.
#include <chrono>
#include <string>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

std::int64_t epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

json capabilities_json(const Capabilities& c) {
  return {{"vision", c.vision}, {"tools", c.tools}, {"reasoning", c.reasoning}, {"embedding", c.embedding}};
}

json issue_json(const RegistryIssue& i) {
  return {{"file", i.file}, {"entry", i.entry}, {"field", i.field}, {"message", i.message},
          {"text", i.to_string()}};
}

const ListedModel* listed_for(const RegistrySnapshot& snap, const ModelEntry& e) {
  for (const auto& m : snap.listed)
    if (m.entry == &e) return &m;
  return nullptr;
}

json debug_entry(const RegistrySnapshot& snap, const ModelEntry& e) {
  const ListedModel* m = listed_for(snap, e);
  const auto& bc = e.backend_config;
  return {{"name", e.name},
          {"display_name", e.display_name},
          {"id", m ? json(m->id) : json(nullptr)},
          {"backend", e.backend},
          {"base_url", mask_url_credentials(bc.base_url)},
          {"served_model_id", e.served_model_id},
          {"download_path", e.download_path},
          {"installed", m ? json(m->installed) : json(nullptr)},
          {"layers", e.layers},
          {"api_key", mask_api_key(bc.api_key)},
          // The variable's name is not a secret; its value is never read here.
          {"api_key_env", bc.api_key_env}};
}

}  // namespace

json model_object(const ListedModel& m, bool suppress_decorations, std::int64_t created, bool active) {
  json o = {{"id", m.id}, {"object", "model"}, {"created", created}, {"owned_by", "imageworks"}};
  if (suppress_decorations) return o;
  const ModelEntry& e = *m.entry;
  o["backend"] = e.backend;
  o["format"] = e.format;
  o["quantization"] = e.quantization;
  o["capabilities"] = capabilities_json(e.capabilities);
  o["installed"] = m.installed;
  o["active"] = active;
  o["served_model_id"] = e.upstream_model();
  o["logical_name"] = e.name;
  o["display_name"] = e.display_name;
  return o;
}

json models_list(const RegistrySnapshot& snap, bool suppress_decorations,
                 std::string_view active_logical_name) {
  auto created = epoch_seconds(snap.loaded_at);
  json data = json::array();
  for (const auto& m : snap.listed) {
    bool active = !active_logical_name.empty() && m.entry->name == active_logical_name;
    data.push_back(model_object(m, suppress_decorations, created, active));
  }
  return {{"object", "list"}, {"data", std::move(data)}};
}

std::string mask_api_key(std::string_view key) {
  if (key.empty()) return "";
  // Showing 4 characters of a short key would give away half of it.
  if (key.size() <= 8) return "***";
  return std::string(key.substr(0, 4)) + "***";
}

std::string mask_url_credentials(std::string_view url) {
  auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  auto host_start = scheme + 3;
  auto host_end = url.find_first_of("/?#", host_start);
  auto at = url.rfind('@', host_end == std::string_view::npos ? url.size() : host_end);
  if (at == std::string_view::npos || at < host_start) return std::string(url);
  return std::string(url.substr(0, host_start)) + "***@" + std::string(url.substr(at + 1));
}

json debug_dump(const RegistrySnapshot& snap) {
  json issues = json::array();
  for (const auto& i : snap.issues) issues.push_back(issue_json(i));
  json entries = json::array();
  for (const auto& e : snap.entries) entries.push_back(debug_entry(snap, e));
  return {{"loaded_at", epoch_seconds(snap.loaded_at)},
          {"layers", snap.layers},
          {"issues", std::move(issues)},
          {"models", snap.listed.size()},
          {"entries", std::move(entries)}};
}

}  // namespace imageworks
