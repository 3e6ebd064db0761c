#pragma once
// Layered model registry: curated + discovered layers (or one model_registry.json, or the
// endpoints format) merged field-wise by logical name, validated after the merge, named for
// /v1/models, and published as an immutable snapshot that hot reload swaps atomically.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace imageworks {

struct BackendConfig {
  std::string base_url;
  int port = 0;
  std::string model_path;
  std::vector<std::string> extra_args;
  std::string api_key;
  std::string api_key_env;
  std::vector<std::string> start_command;
};

struct Capabilities {
  bool vision = false, tools = false, reasoning = false, embedding = false;
};

struct ModelEntry {
  std::string name;            // logical name (merge key)
  std::string display_name;
  std::string backend;         // vllm | ollama | openai | llamacpp | lmdeploy
  BackendConfig backend_config;
  std::string served_model_id;
  std::string download_path;
  std::string format, quantization, family, parameter_size, chat_template, version_lock;
  Capabilities capabilities;
  std::vector<std::string> roles, profiles;
  bool testing = false, deprecated = false;
  std::optional<std::int64_t> context_length;
  std::vector<std::string> layers;  // files that contributed, in merge order
  nlohmann::json raw;               // merged JSON object as loaded
  // chat_template names a regular file in the template directory; decided when the
  // snapshot is built (RegistryLoader::load), never per request (§6).
  bool chat_template_found = false;

  // The model name the backend knows: served_model_id, else name.
  const std::string& upstream_model() const { return served_model_id.empty() ? name : served_model_id; }
};

// A problem found while loading: which file, which entry (logical name or "#index"), which field.
struct RegistryIssue {
  std::string file, entry, field, message;
  std::string to_string() const;  // "file: entry 'x': field 'backend': message"
};

struct ListingOptions {
  bool include_non_installed = false;
  bool include_test_models = false;
  std::string profile = "production";
  // Where chat_template files live; empty = templates are not looked up (none found).
  std::filesystem::path template_dir;
};

// A model as /v1/models lists it.
struct ListedModel {
  std::string id;              // simplified, unique name (§4)
  const ModelEntry* entry;     // points into the owning snapshot
  bool installed = true;
};

class RegistrySnapshot {
 public:
  RegistrySnapshot() = default;
  // `listed` points into `entries`: a copy re-points them into its own entries.
  RegistrySnapshot(const RegistrySnapshot& other);
  RegistrySnapshot& operator=(const RegistrySnapshot& other);
  RegistrySnapshot(RegistrySnapshot&&) noexcept = default;
  RegistrySnapshot& operator=(RegistrySnapshot&&) noexcept = default;

  std::vector<ModelEntry> entries;        // valid merged entries, registry order
  std::vector<ListedModel> listed;        // visible under the listing options, unique ids
  std::vector<RegistryIssue> issues;      // everything skipped or ignored in this load
  std::vector<std::string> layers;        // files that were read
  std::chrono::system_clock::time_point loaded_at;

  // Resolve a model name as §4: listed id, logical name, display name or served id;
  // exact first, then case-insensitive. Only listed (visible) models resolve.
  const ListedModel* resolve(std::string_view requested) const;
  // A valid entry by exact logical name, listed or not (admin/executor lookups).
  const ModelEntry* find_entry(std::string_view logical_name) const;
  std::string error_summary() const;      // "" when there are no issues
};

// Naming (§4), pure functions.
std::string simplified_name(const ModelEntry& e);
std::string quant_label(std::string_view quantization);  // "q4_k_m" -> "Q4 K M"
// True when `needle` occurs in `haystack` case-insensitively as a whole token (not glued to
// a letter/digit, nor preceded by '.'), so size "2b" is not found in "12b" or "3.2b".
bool contains_token(std::string_view haystack, std::string_view needle);
// Unique ids from simplified names in registry order: the first holder of a name keeps it;
// later ones get " [2]", " [3]"… skipping any id that is already taken.
std::vector<std::string> unique_ids(const std::vector<std::string>& names);

// Merge (§3): curated wins field by field over discovered; objects deep-merged.
nlohmann::json merge_layer_entry(const nlohmann::json& discovered, const nlohmann::json& curated);

// Validate one merged entry and convert it: std::nullopt plus one issue per bad field
// (file = `file`, entry = `entry_label`). A null value counts as absent.
std::optional<ModelEntry> parse_entry(const nlohmann::json& j, const std::string& file,
                                      const std::string& entry_label, std::vector<RegistryIssue>& issues);

// One layer file's text -> a JSON array of entry objects. Accepts an array, {"models":[…]}
// and the endpoints format. std::nullopt (plus an issue for `file`) on bad JSON or shape.
std::optional<nlohmann::json> parse_layer(std::string_view text, const std::string& file,
                                          std::vector<RegistryIssue>& issues);
// {"endpoints":{id:{displayName,url,apiKey,actualModelName}}} body -> entries (backend openai).
// Entries follow `order` (the ids as written in the file), then any other id.
nlohmann::json endpoints_to_entries(const nlohmann::json& endpoints, const std::string& file,
                                    std::vector<RegistryIssue>& issues);
nlohmann::json endpoints_to_entries(const nlohmann::json& endpoints, const std::string& file,
                                    std::vector<RegistryIssue>& issues,
                                    const std::vector<std::string>& order);

// A layer as read: its file (as shown in issues) and its array of entries.
struct LayerContent {
  std::string file;
  nlohmann::json entries = nlohmann::json::array();
};
// Merge layers (lowest precedence first) by logical name, then validate each merged entry.
// Registry order = order of first appearance across the layers in that order. Field issues
// name the highest layer that set the field (or, for a missing field, the entry's top layer).
std::vector<ModelEntry> merge_layers(const std::vector<LayerContent>& layers,
                                     std::vector<RegistryIssue>& issues);

// Fill snap.listed from snap.entries under `opts` (profile, testing, installed; unique ids).
void build_listing(RegistrySnapshot& snap, const ListingOptions& opts);

// /v1/models objects (§4). `created` is seconds since the epoch.
nlohmann::json model_object(const ListedModel& m, bool suppress_decorations, std::int64_t created,
                            bool active = false);
nlohmann::json models_list(const RegistrySnapshot& snap, bool suppress_decorations,
                           std::string_view active_logical_name = {});

// "sk-abcdef123456" -> "sk-a***"; keys of 8 chars or fewer -> "***"; "" stays "".
std::string mask_api_key(std::string_view key);
// Replaces the userinfo of a URL ("https://u:p@host") with "***"; other URLs unchanged.
std::string mask_url_credentials(std::string_view url);
// /v1/debug/registry body: layers, issues, entries with listed id and masked credentials.
nlohmann::json debug_dump(const RegistrySnapshot& snap);

// Loads the layers of a registry directory. Keeps the last good content of every layer so
// a layer with broken JSON keeps serving its previous version. Not thread-safe: one owner.
// Layer files, lowest precedence first: discovered < single model_registry.json < curated.
class RegistryLoader {
 public:
  static constexpr const char* kDiscoveredFile = "model_registry.discovered.json";
  static constexpr const char* kSingleFile = "model_registry.json";
  static constexpr const char* kCuratedFile = "model_registry.curated.json";

  RegistryLoader(std::filesystem::path dir, ListingOptions opts);
  // Reads every layer and builds a snapshot (never throws for bad content).
  std::shared_ptr<const RegistrySnapshot> load();
  // True when any layer's mtime/size/existence changed since the last load().
  bool changed() const;
  const std::filesystem::path& dir() const { return dir_; }
  const ListingOptions& options() const { return opts_; }
 private:
  // What a layer file looked like on disk (existence, mtime, size).
  struct LayerState {
    bool exists = false;
    std::filesystem::file_time_type mtime{};
    std::uintmax_t size = 0;
    bool operator==(const LayerState&) const = default;
  };
  static LayerState stat_layer(const std::filesystem::path& p);
  std::optional<LayerContent> read_layer(const std::string& name, std::vector<RegistryIssue>& issues);
  void resolve_chat_templates(RegistrySnapshot& snap) const;

  std::filesystem::path dir_;
  ListingOptions opts_;
  bool loaded_ = false;
  std::map<std::string, nlohmann::json> last_good_;  // file name -> array of entries
  std::map<std::string, LayerState> states_;         // file name -> state at the last load
};

// The shared, swappable current snapshot. Readers copy the shared_ptr; reload swaps it.
class RegistryHolder {
 public:
  std::shared_ptr<const RegistrySnapshot> get() const {
    std::lock_guard lk(mu_);
    return snap_;
  }
  void set(std::shared_ptr<const RegistrySnapshot> s) {
    std::lock_guard lk(mu_);
    snap_ = std::move(s);
  }
 private:
  mutable std::mutex mu_;
  std::shared_ptr<const RegistrySnapshot> snap_;
};

}  // namespace imageworks
