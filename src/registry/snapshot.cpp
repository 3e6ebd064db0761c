// The snapshot's listing (§4): which entries /v1/models shows, under which unique ids, and
// how a requested model name resolves to one of them.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string>
#include <string_view>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool in_profile(const ModelEntry& e, const std::string& profile) {
  return e.profiles.empty() ||
         std::find(e.profiles.begin(), e.profiles.end(), profile) != e.profiles.end();
}

// The proxy's own filesystem view decides (weights may be mounted elsewhere in a container);
// an unreadable path counts as not installed rather than failing the load.
bool is_installed(const ModelEntry& e) {
  if (e.download_path.empty()) return true;
  std::error_code ec;
  return std::filesystem::exists(e.download_path, ec);
}

// The names a request may use for a listed model, in resolution order (§4).
std::string_view key_of(const ListedModel& m, int which) {
  switch (which) {
    case 0: return m.id;
    case 1: return m.entry->name;
    case 2: return m.entry->display_name;
    default: return m.entry->served_model_id;
  }
}

}  // namespace

std::string RegistryIssue::to_string() const {
  std::string s = file;
  if (!entry.empty()) s += ": entry '" + entry + "'";
  if (!field.empty()) s += ": field '" + field + "'";
  return s + ": " + message;
}

RegistrySnapshot::RegistrySnapshot(const RegistrySnapshot& other)
    : entries(other.entries), listed(other.listed), issues(other.issues), layers(other.layers),
      loaded_at(other.loaded_at) {
  for (auto& m : listed) m.entry = entries.data() + (m.entry - other.entries.data());
}

RegistrySnapshot& RegistrySnapshot::operator=(const RegistrySnapshot& other) {
  if (this != &other) {
    RegistrySnapshot copy(other);
    *this = std::move(copy);
  }
  return *this;
}

const ListedModel* RegistrySnapshot::resolve(std::string_view requested) const {
  if (requested.empty()) return nullptr;
  for (bool exact : {true, false})
    for (int which = 0; which < 4; ++which)
      for (const auto& m : listed) {
        auto key = key_of(m, which);
        if (!key.empty() && (exact ? key == requested : iequals(key, requested))) return &m;
      }
  return nullptr;
}

const ModelEntry* RegistrySnapshot::find_entry(std::string_view logical_name) const {
  for (const auto& e : entries)
    if (e.name == logical_name) return &e;
  return nullptr;
}

std::string RegistrySnapshot::error_summary() const {
  std::string out;
  for (const auto& issue : issues) {
    if (!out.empty()) out += "; ";
    out += issue.to_string();
  }
  return out;
}

void build_listing(RegistrySnapshot& snap, const ListingOptions& opts) {
  snap.listed.clear();
  std::vector<std::string> names;
  for (const auto& e : snap.entries) {
    if (!in_profile(e, opts.profile)) continue;
    if (e.testing && !opts.include_test_models) continue;
    bool installed = is_installed(e);
    if (!installed && !opts.include_non_installed) continue;
    snap.listed.push_back({"", &e, installed});
    names.push_back(simplified_name(e));
  }
  // Ids are made unique among the visible models only: hidden ones never claim a name.
  auto ids = unique_ids(names);
  for (std::size_t i = 0; i < ids.size(); ++i) snap.listed[i].id = std::move(ids[i]);
}

}  // namespace imageworks
