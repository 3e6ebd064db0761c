#include "cli/models_table.hpp"

#include <algorithm>
#include <array>

namespace imageworks::cli {

using nlohmann::json;

namespace {

bool holds(const GpuHolder& h, const ModelEntry& e) {
  return h.known && !h.logical_name.empty() && h.logical_name == e.name;
}

std::string active_cell(const GpuHolder& h, const ModelEntry& e) {
  if (!h.known) return "-";
  if (!holds(h, e)) return "no";
  return h.state == "ready" || h.state.empty() ? "yes" : h.state;
}

}  // namespace

GpuHolder gpu_holder_from_state(const json& state) {
  GpuHolder h;
  h.known = true;
  if (!state.is_object() || !state.contains("active") || !state["active"].is_object()) return h;
  const auto& a = state["active"];
  if (a.contains("logical_name") && a["logical_name"].is_string()) h.logical_name = a["logical_name"];
  if (a.contains("state") && a["state"].is_string()) h.state = a["state"];
  return h;
}

std::vector<ModelRow> model_rows(const RegistrySnapshot& snap, const GpuHolder& holder) {
  std::vector<ModelRow> rows;
  for (const auto& m : snap.listed) {
    rows.push_back({m.id, m.entry->backend, m.installed, active_cell(holder, *m.entry)});
  }
  return rows;
}

std::size_t display_width(std::string_view text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

std::string models_table(const std::vector<ModelRow>& rows) {
  using Cells = std::array<std::string, 4>;
  std::vector<Cells> lines{{"ID", "BACKEND", "INSTALLED", "ACTIVE"}};
  for (const auto& r : rows) lines.push_back({r.id, r.backend, r.installed ? "yes" : "no", r.active});
  std::array<std::size_t, 4> width{};
  for (const auto& l : lines)
    for (std::size_t c = 0; c < l.size(); ++c) width[c] = std::max(width[c], display_width(l[c]));
  std::string out;
  for (const auto& l : lines) {
    std::string line;
    for (std::size_t c = 0; c < l.size(); ++c) {
      line += l[c];
      if (c + 1 < l.size()) line.append(width[c] - display_width(l[c]) + 2, ' ');
    }
    line.erase(line.find_last_not_of(' ') + 1);  // an empty last cell leaves no blanks
    out += line + "\n";
  }
  return out;
}

json models_json(const RegistrySnapshot& snap, const GpuHolder& holder) {
  json out = json::array();
  for (const auto& m : snap.listed) {
    // The decorated /v1/models object minus the OpenAI envelope fields.
    json o = model_object(m, /*suppress_decorations=*/false, 0, false);
    for (const char* envelope : {"object", "created", "owned_by"}) o.erase(envelope);
    const bool held = holds(holder, *m.entry);
    o["active"] = holder.known ? json(held && active_cell(holder, *m.entry) == "yes") : json(nullptr);
    o["active_state"] = held ? json(holder.state) : json(nullptr);
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace imageworks::cli
