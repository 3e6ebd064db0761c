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
};

// A model as /v1/models lists it.
struct ListedModel {
  std::string id;              // simplified, unique name (§4)
  const ModelEntry* entry;     // points into the owning snapshot
  bool installed = true;
};

class RegistrySnapshot {
 public:
  std::vector<ModelEntry> entries;        // valid merged entries, registry order
  std::vector<ListedModel> listed;        // visible under the listing options, unique ids
  std::vector<RegistryIssue> issues;      // everything skipped or ignored in this load
  std::vector<std::string> layers;        // files that were read
  std::chrono::system_clock::time_point loaded_at;

  // Resolve a model name as §4: listed id, logical name, display name or served id;
  // exact first, then case-insensitive. Only listed (visible) models resolve.
  const ListedModel* resolve(std::string_view requested) const;
  std::string error_summary() const;      // "" when there are no issues
};

// Naming (§4), pure functions.
std::string simplified_name(const ModelEntry& e);
std::string quant_label(std::string_view quantization);  // "q4_k_m" -> "Q4 K M"

// Merge (§3): curated wins field by field over discovered; objects deep-merged.
nlohmann::json merge_layer_entry(const nlohmann::json& discovered, const nlohmann::json& curated);

// Parse one validated entry; throws RegistryIssue-worthy errors as std::nullopt + issue.
std::optional<ModelEntry> parse_entry(const nlohmann::json& j, const std::string& file,
                                      const std::string& entry_label, std::vector<RegistryIssue>& issues);

// Loads the layers of a registry directory. Keeps the last good content of every layer so
// a layer with broken JSON keeps serving its previous version. Not thread-safe: one owner.
class RegistryLoader {
 public:
  RegistryLoader(std::filesystem::path dir, ListingOptions opts);
  // Reads every layer and builds a snapshot (never throws for bad content).
  std::shared_ptr<const RegistrySnapshot> load();
  // True when any layer's mtime/size/existence changed since the last load().
  bool changed() const;
 private:
  struct LayerState;
  std::filesystem::path dir_;
  ListingOptions opts_;
  std::map<std::string, nlohmann::json> last_good_;            // file name -> array of entries
  std::map<std::string, std::filesystem::file_time_type> mtimes_;
  std::map<std::string, std::uintmax_t> sizes_;
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
