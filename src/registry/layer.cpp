// One layer file -> its array of entries. Three shapes are accepted (§3): a bare array,
// {"models":[…]}, and the endpoints format of the multi-endpoint proxy.
#include <algorithm>
#include <string>
#include <vector>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

const char* const kShapeMessage =
    "expected a JSON array of entries, {\"models\": [...]} or {\"endpoints\": {...}}";

// Copy `src[from]` to `dst[to]` when present; a wrong type is left for parse_entry to report.
void copy_field(const json& src, const char* from, json& dst, const char* to) {
  auto it = src.find(from);
  if (it != src.end() && !it->is_null()) dst[to] = *it;
}

// nlohmann::json sorts object keys; the endpoints' file order is the listing order the
// operator wrote, so it is recovered with an order-preserving parse.
std::vector<std::string> file_order(std::string_view text) {
  std::vector<std::string> ids;
  auto doc = nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_object() && doc.contains("endpoints") && doc["endpoints"].is_object())
    for (const auto& [id, _] : doc["endpoints"].items()) ids.push_back(id);
  return ids;
}

// Keeps "parse error at line L, column C: <reason>" — the position is what the operator
// needs — but drops nlohmann's "; last read: '…'" echo of the text, which may be a key.
std::string parse_error_text(std::string_view what) {
  if (what.rfind("[json.exception.", 0) == 0) {
    auto close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  std::string text(what);
  auto echo = text.find("; last read: '");
  if (echo == std::string::npos) return text;
  auto rest = text.find("'; expected ", echo);
  return rest == std::string::npos ? text.substr(0, echo) : text.erase(echo, rest + 1 - echo);
}

}  // namespace

json endpoints_to_entries(const json& endpoints, const std::string& file,
                          std::vector<RegistryIssue>& issues) {
  return endpoints_to_entries(endpoints, file, issues, {});
}

json endpoints_to_entries(const json& endpoints, const std::string& file,
                          std::vector<RegistryIssue>& issues, const std::vector<std::string>& order) {
  std::vector<std::string> ids = order;
  for (const auto& [id, ep] : endpoints.items())
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  json entries = json::array();
  for (const auto& id : ids) {
    auto it = endpoints.find(id);
    if (it == endpoints.end()) continue;
    const json& ep = *it;
    if (!ep.is_object()) {
      // Not the value itself: a misplaced endpoint is often just its API key.
      issues.push_back({file, id, "", std::string("expected an endpoint object, got ") + ep.type_name()});
      continue;
    }
    json e = {{"name", id}, {"backend", "openai"}};
    copy_field(ep, "displayName", e, "display_name");
    copy_field(ep, "actualModelName", e, "served_model_id");
    json bc = json::object();
    copy_field(ep, "url", bc, "base_url");
    copy_field(ep, "apiKey", bc, "api_key");
    if (!bc.empty()) e["backend_config"] = std::move(bc);
    entries.push_back(std::move(e));
  }
  return entries;
}

std::optional<json> parse_layer(std::string_view text, const std::string& file,
                                std::vector<RegistryIssue>& issues) {
  // nlohmann parses and frees iteratively but copies, compares and dumps recursively: a
  // file nested many thousand levels deep would exhaust the stack when its entries are
  // merged. Entries nest a few levels; the request scan allows 512 (json_splice.hpp).
  constexpr int kMaxDepth = 512;
  int depth = 0;
  json doc;
  try {
    doc = json::parse(text.begin(), text.end(), [&depth](int d, json::parse_event_t, json&) {
      depth = std::max(depth, d);
      return true;
    });
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    issues.push_back({file, "", "", "invalid JSON: " + parse_error_text(e.what())});
    return std::nullopt;
  }
  if (depth > kMaxDepth) {
    issues.push_back({file, "", "", "JSON nested deeper than " + std::to_string(kMaxDepth) + " levels"});
    return std::nullopt;
  }
  if (doc.is_array()) return doc;
  if (doc.is_object()) {
    auto models = doc.find("models");
    if (models != doc.end() && models->is_array()) return *models;
    auto endpoints = doc.find("endpoints");
    if (endpoints != doc.end() && endpoints->is_object())
      return endpoints_to_entries(*endpoints, file, issues, file_order(text));
  }
  issues.push_back({file, "", "", kShapeMessage});
  return std::nullopt;
}

}  // namespace imageworks
