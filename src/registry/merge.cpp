// Layer merge (§3): entries meet by logical name, higher layers win field by field, and
// only the merged result is validated — a curated entry may carry just its overrides.
#include <map>
#include <string>
#include <vector>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

using nlohmann::json;

// One logical entry being assembled: the raw piece of every layer that mentioned it.
struct Pending {
  std::string name;
  std::vector<const json*> pieces;       // raw entry objects, lowest layer first
  std::vector<std::string> files;        // the layer of each piece
};

// The entry's label in issues before it has a usable name: its position in the file.
std::string index_label(std::size_t i) { return "#" + std::to_string(i); }

// The logical name of a raw entry, or "" after reporting why it has none.
std::string name_of(const json& e, const std::string& file, std::size_t index,
                    std::vector<RegistryIssue>& issues) {
  if (!e.is_object()) {
    issues.push_back({file, index_label(index), "", std::string("expected an object, got ") + e.type_name()});
    return "";
  }
  auto it = e.find("name");
  if (it == e.end() || it->is_null()) {
    issues.push_back({file, index_label(index), "name", "required field missing"});
    return "";
  }
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    issues.push_back({file, index_label(index), "name", "expected a non-empty string, got " + it->dump()});
    return "";
  }
  return it->get<std::string>();
}

// "backend_config.port" -> does `piece` set that path (to anything, null included)?
bool sets_field(const json& piece, const std::string& field) {
  const json* cur = &piece;
  std::size_t start = 0;
  while (true) {
    auto dot = field.find('.', start);
    auto key = field.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object()) return false;
    auto it = cur->find(key);
    if (it == cur->end()) return false;
    if (dot == std::string::npos) return true;
    cur = &*it;
    start = dot + 1;
  }
}

// The file to blame for a field: the highest layer that set it (that value won the merge),
// else — for a missing field — the entry's highest layer, where the operator would add it.
std::string file_for_field(const Pending& p, const std::string& field) {
  for (std::size_t i = p.pieces.size(); i-- > 0;)
    if (!field.empty() && sets_field(*p.pieces[i], field)) return p.files[i];
  return p.files.back();
}

std::optional<ModelEntry> merge_one(const Pending& p, std::vector<RegistryIssue>& issues) {
  json merged = json::object();
  for (const json* piece : p.pieces) merged = merge_layer_entry(merged, *piece);
  std::vector<RegistryIssue> found;
  auto entry = parse_entry(merged, p.files.back(), p.name, found);
  for (auto& issue : found) {
    issue.file = file_for_field(p, issue.field);
    issues.push_back(std::move(issue));
  }
  if (entry) entry->layers = p.files;
  return entry;
}

}  // namespace

json merge_layer_entry(const json& discovered, const json& curated) {
  if (!discovered.is_object() || !curated.is_object()) return curated;
  json out = discovered;
  for (const auto& [key, value] : curated.items()) {
    auto it = out.find(key);
    // Objects merge key by key; arrays and scalars replace (a curated list is the whole
    // list), and null replaces too, so a curated layer can unset a discovered field.
    if (it != out.end() && it->is_object() && value.is_object())
      *it = merge_layer_entry(*it, value);
    else
      out[key] = value;
  }
  return out;
}

std::vector<ModelEntry> merge_layers(const std::vector<LayerContent>& layers,
                                     std::vector<RegistryIssue>& issues) {
  std::vector<Pending> pending;               // registry order: first appearance
  std::map<std::string, std::size_t> by_name;
  for (const auto& layer : layers) {
    std::map<std::string, bool> seen_here;
    for (std::size_t i = 0; i < layer.entries.size(); ++i) {
      const json& raw = layer.entries[i];
      auto name = name_of(raw, layer.file, i, issues);
      if (name.empty()) continue;
      if (seen_here[name]) {
        issues.push_back({layer.file, name, "name",
                          "duplicate entry in this file (" + index_label(i) +
                              "); the first one is used"});
        continue;
      }
      seen_here[name] = true;
      auto [it, fresh] = by_name.try_emplace(name, pending.size());
      if (fresh) pending.push_back({name, {}, {}});
      pending[it->second].pieces.push_back(&raw);
      pending[it->second].files.push_back(layer.file);
    }
  }
  std::vector<ModelEntry> out;
  for (const auto& p : pending)
    if (auto e = merge_one(p, issues)) out.push_back(std::move(*e));
  return out;
}

}  // namespace imageworks
