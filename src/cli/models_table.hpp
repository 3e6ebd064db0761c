#pragma once
// `models list`: the registry's listed models with the GPU holder a running proxy reported,
// as an aligned table for people or a JSON array for scripts. Pure functions.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/registry.hpp"

namespace imageworks::cli {

// What a running proxy's /v1/admin/state said holds the GPU. known = false: no proxy answered.
struct GpuHolder {
  bool known = false;
  std::string logical_name;  // "" = the GPU is free (or held by an unnamed Ollama model)
  std::string state;         // "ready", "starting", "stopping"…
};
// From the /v1/admin/state body ({"active": null | {"logical_name", "state", …}}).
GpuHolder gpu_holder_from_state(const nlohmann::json& state);

struct ModelRow {
  std::string id, backend;
  bool installed = true;
  std::string active;  // "yes", "no", the holder's state while not ready ("starting"), "-" unknown
};
std::vector<ModelRow> model_rows(const RegistrySnapshot& snap, const GpuHolder& holder);

// Width of `text` on a terminal, counted in code points (UTF-8 continuation bytes are free).
std::size_t display_width(std::string_view text);

// ID BACKEND INSTALLED ACTIVE, one row a model, columns as wide as their widest cell plus two
// spaces; no trailing blanks. The header alone when there are no rows.
std::string models_table(const std::vector<ModelRow>& rows);

// [{id, logical_name, display_name, backend, served_model_id, format, quantization,
//   capabilities, installed, active, active_state}] — the decorated /v1/models fields, with
// active null (and active_state null) when no proxy answered.
nlohmann::json models_json(const RegistrySnapshot& snap, const GpuHolder& holder);

}  // namespace imageworks::cli
