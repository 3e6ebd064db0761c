// Reads the layer files of a registry directory into a snapshot. Runs off the event loop
// (blocking file I/O); the caller swaps the result into a RegistryHolder.
#include <fstream>
#include <sstream>
#include <system_error>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

namespace fs = std::filesystem;

const char* const kLayerFiles[] = {RegistryLoader::kDiscoveredFile, RegistryLoader::kSingleFile,
                                   RegistryLoader::kCuratedFile};

std::optional<std::string> read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return buf.str();
}

}  // namespace

RegistryLoader::RegistryLoader(fs::path dir, ListingOptions opts)
    : dir_(std::move(dir)), opts_(std::move(opts)) {}

// Anything at the path counts as present: a layer replaced by a directory (or a FIFO) is a
// broken layer that keeps its last good version, not a layer that was removed.
RegistryLoader::LayerState RegistryLoader::stat_layer(const fs::path& p) {
  LayerState s;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec))) return s;
  s.exists = true;
  s.mtime = fs::last_write_time(p, ec);
  s.size = fs::file_size(p, ec);
  return s;
}

// The entries of one present layer: freshly parsed, or — when the file is unreadable or
// broken — the last good version from an earlier load (a half-written file must not empty
// the model list), or nothing.
std::optional<LayerContent> RegistryLoader::read_layer(const std::string& name,
                                                       std::vector<RegistryIssue>& issues) {
  auto path = dir_ / name;
  LayerContent layer{path.string(), nlohmann::json::array()};
  std::optional<nlohmann::json> parsed;
  std::error_code ec;
  std::optional<std::string> text;
  const bool regular = fs::is_regular_file(path, ec);
  if (regular) text = read_text(path);
  if (text)
    parsed = parse_layer(*text, layer.file, issues);
  else
    issues.push_back({layer.file, "", "", regular || ec ? "cannot read the file" : "not a regular file"});
  if (parsed) {
    last_good_[name] = *parsed;
    layer.entries = std::move(*parsed);
    return layer;
  }
  auto good = last_good_.find(name);
  if (good == last_good_.end()) {
    issues.back().message += " (layer ignored)";
    return std::nullopt;
  }
  issues.back().message += " (the last good version of this file is used)";
  layer.entries = good->second;
  return layer;
}

// Each entry's chat_template is looked up once per load: a request only reads the flag. A
// named template that is missing is an issue the operator sees in /v1/debug/registry.
void RegistryLoader::resolve_chat_templates(RegistrySnapshot& snap) const {
  if (opts_.template_dir.empty()) return;  // a loader without one (a tool) looks nothing up
  for (auto& e : snap.entries) {
    if (e.chat_template.empty()) continue;
    std::error_code ec;
    e.chat_template_found = fs::is_regular_file(opts_.template_dir / e.chat_template, ec);
    if (!e.chat_template_found)
      snap.issues.push_back({e.layers.empty() ? dir_.string() : e.layers.back(), e.name, "chat_template",
                             "template file '" + e.chat_template + "' not found in " + opts_.template_dir.string()});
  }
}

std::shared_ptr<const RegistrySnapshot> RegistryLoader::load() {
  auto snap = std::make_shared<RegistrySnapshot>();
  std::error_code ec;
  // A directory that vanished while serving (moved, unmounted, replaced) is a fault, not an
  // operator emptying the registry: every layer keeps its last good version.
  const bool dir_missing = !fs::is_directory(dir_, ec);
  if (dir_missing)
    snap->issues.push_back({dir_.string(), "", "", last_good_.empty() ? "registry directory not found"
                                                                       : "registry directory not found (the last good version of its layers is used)"});

  std::vector<LayerContent> layers;
  std::map<std::string, LayerState> states;
  for (const char* name : kLayerFiles) {
    // Stat before reading: a write racing with the read then shows up as a change next poll.
    auto state = stat_layer(dir_ / name);
    states[name] = state;
    if (!state.exists && dir_missing) {
      if (auto good = last_good_.find(name); good != last_good_.end()) {
        snap->layers.push_back((dir_ / name).string());
        layers.push_back({(dir_ / name).string(), good->second});
      }
      continue;
    }
    if (!state.exists) {
      last_good_.erase(name);  // a removed layer is gone, not broken
      continue;
    }
    if (auto layer = read_layer(name, snap->issues)) {
      snap->layers.push_back(layer->file);
      layers.push_back(std::move(*layer));
    }
  }
  snap->entries = merge_layers(layers, snap->issues);
  resolve_chat_templates(*snap);
  snap->loaded_at = std::chrono::system_clock::now();
  build_listing(*snap, opts_);
  states_ = std::move(states);
  loaded_ = true;
  return snap;
}

bool RegistryLoader::changed() const {
  if (!loaded_) return true;
  for (const char* name : kLayerFiles) {
    auto it = states_.find(name);
    if (it == states_.end() || !(it->second == stat_layer(dir_ / name))) return true;
  }
  return false;
}

}  // namespace imageworks
