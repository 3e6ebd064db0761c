// Fuzz target registry: layer files' text through the loader's pure steps — parse_layer
// (array, {"models":[…]}, endpoints format), merge_layers (merge + parse_entry), the listing
// with unique ids, /v1/models, the debug dump, and name resolution. The payload holds up to
// three layers (discovered, single file, curated) separated by a line "%%"; a payload
// without one is one layer, which the option byte names.
//
// Oracles: listed ids are unique and each resolves to its own model; a snapshot copy points
// into its own entries. Bad content is never an exception: it becomes issues.
#include <set>

#include "fuzz_input.hpp"
#include "imageworks/registry.hpp"

namespace {

using namespace imageworks;
using fuzz::FuzzInput;

constexpr const char* kFiles[] = {RegistryLoader::kDiscoveredFile, RegistryLoader::kSingleFile,
                                  RegistryLoader::kCuratedFile};

std::vector<std::string_view> layer_texts(std::string_view payload) {
  std::vector<std::string_view> texts;
  constexpr std::string_view kSeparator = "\n%%\n";
  while (texts.size() < 2) {
    auto at = payload.find(kSeparator);
    if (at == std::string_view::npos) break;
    texts.push_back(payload.substr(0, at));
    payload.remove_prefix(at + kSeparator.size());
  }
  texts.push_back(payload);
  return texts;
}

void check_listing(const RegistrySnapshot& snap) {
  std::set<std::string> ids;
  for (const auto& m : snap.listed) {
    FUZZ_CHECK(!m.id.empty());
    FUZZ_CHECK(ids.insert(m.id).second);
    FUZZ_CHECK(m.entry >= snap.entries.data() && m.entry < snap.entries.data() + snap.entries.size());
    const ListedModel* found = snap.resolve(m.id);
    FUZZ_CHECK(found && found->id == m.id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzInput in(data, size);
  const auto texts = layer_texts(in.payload);
  std::vector<RegistryIssue> issues;
  std::vector<LayerContent> layers;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const std::string file = texts.size() == 1 ? kFiles[in.options % 3] : kFiles[i];
    if (auto entries = parse_layer(texts[i], file, issues)) {
      FUZZ_CHECK(entries->is_array());
      layers.push_back({file, std::move(*entries)});
    }
  }
  RegistrySnapshot snap;
  snap.entries = merge_layers(layers, issues);
  snap.issues = std::move(issues);
  ListingOptions opts;
  opts.include_non_installed = !in.bit(2);
  opts.include_test_models = in.bit(3);
  opts.profile = in.bit(4) ? "development" : "production";
  build_listing(snap, opts);
  check_listing(snap);

  const RegistrySnapshot copy = snap;
  check_listing(copy);
  (void)snap.error_summary();
  // As the routes send them: /v1/models with the strict dump (invalid UTF-8 would throw).
  (void)models_list(snap, in.bit(5), snap.entries.empty() ? "" : snap.entries.front().name).dump();
  for (const auto& m : snap.listed) (void)model_object(m, in.bit(5), 0).dump();
  (void)debug_dump(snap).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  for (const auto& e : snap.entries) {
    (void)simplified_name(e);
    (void)snap.resolve(e.name);
    (void)snap.resolve(e.display_name);
    (void)mask_url_credentials(e.backend_config.base_url);
    (void)mask_api_key(e.backend_config.api_key);
  }
  return 0;
}
