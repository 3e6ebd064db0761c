// The pure request rules of §6 (request_policy.hpp). Messages of odd shape are not this
// step's business: what is not recognisably an image or a turn passes through unchanged.
#include <algorithm>
#include <unordered_map>

#include "imageworks/errors.hpp"
#include "imageworks/request_policy.hpp"

namespace imageworks {

namespace {

bool embeds_template(const ModelEntry& e) {
  return e.backend == "ollama" || e.backend == "openai" || e.format == "gguf";
}

const std::string* string_member(const PayloadTree& o, const char* key) {
  if (!o.is_object()) return nullptr;
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
}

std::string role_of(const PayloadTree& message) {
  const std::string* r = string_member(message, "role");
  return r ? *r : std::string();
}

bool kept_always(const std::string& role) { return role == "system" || role == "developer"; }

bool is_image_part(const PayloadTree& part) {
  if (!part.is_object()) return false;
  const std::string* type = string_member(part, "type");
  return type ? *type == "image_url" : part.contains("image_url");
}

}  // namespace

void check_template(const ProxyConfig& cfg, const ModelEntry& e, std::string_view route) {
  if (!cfg.require_template || route != "chat/completions") return;
  if (e.chat_template_found || embeds_template(e)) return;
  std::string why = e.chat_template.empty()
                        ? "has no chat_template in the registry"
                        : "names chat_template '" + e.chat_template + "', which is not a file in " + cfg.template_dir;
  throw ProxyError(400, "err_template_required",
                   "model '" + e.name + "' (backend " + e.backend + ") " + why +
                       "; add a template file to " + cfg.template_dir +
                       " and name it in the entry, or set CHAT_PROXY_REQUIRE_TEMPLATE=0");
}

void check_tools(const ModelEntry& e, std::string_view field) {
  if (e.capabilities.tools) return;
  throw ProxyError(409, "err_capability_mismatch",
                   "model '" + e.name + "' does not support tools (capabilities.tools is false); remove '" +
                       std::string(field) + "' or choose a model with tool support",
                   std::string(field));
}

std::vector<ImagePart> image_parts(PayloadTree& messages) {
  std::vector<ImagePart> out;
  if (!messages.is_array()) return out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    auto& m = messages[i];
    if (!m.is_object()) continue;
    auto content = m.find("content");
    if (content == m.end() || !content->is_array()) continue;
    for (std::size_t j = 0; j < content->size(); ++j) {
      auto& part = (*content)[j];
      if (!is_image_part(part)) continue;
      auto where = "messages[" + std::to_string(i) + "].content[" + std::to_string(j) + "].image_url";
      auto iu = part.find("image_url");
      if (iu == part.end()) throw ProxyError(400, "err_bad_request", "missing field '" + where + "'", where);
      PayloadTree* url = nullptr;
      if (iu->is_string()) url = &*iu;
      else if (iu->is_object() && iu->contains("url") && (*iu)["url"].is_string()) url = &(*iu)["url"];
      if (!url || url->get_ref<const std::string&>().empty())
        throw ProxyError(400, "err_bad_request", "field '" + where + "' must have a non-empty 'url' string", where);
      out.push_back({i, j, url});
    }
  }
  return out;
}

int strip_image_parts(PayloadTree& messages) {
  int stripped = 0;
  if (!messages.is_array()) return 0;
  for (auto& m : messages) {
    if (!m.is_object()) continue;
    auto content = m.find("content");
    if (content == m.end() || !content->is_array()) continue;
    PayloadTree kept = PayloadTree::array();
    for (auto& part : *content) {
      if (is_image_part(part)) ++stripped;
      else kept.push_back(std::move(part));
    }
    if (kept.empty()) *content = "";
    else *content = std::move(kept);
  }
  return stripped;
}

int truncate_history(PayloadTree& messages, int keep_turns) {
  if (!messages.is_array()) return 0;
  keep_turns = std::max(keep_turns, 1);
  std::vector<std::size_t> users;
  for (std::size_t i = 0; i < messages.size(); ++i)
    if (role_of(messages[i]) == "user") users.push_back(i);
  if (users.size() <= static_cast<std::size_t>(keep_turns)) return 0;
  std::size_t cut = users[users.size() - static_cast<std::size_t>(keep_turns)];

  // Which message made each tool call (assistant tool_calls ids; legacy function_call).
  std::unordered_map<std::string, std::size_t> caller;
  constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::vector<std::size_t> last_function_call(messages.size(), none);  // before index i
  for (std::size_t i = 0, last = none; i < messages.size(); ++i) {
    const auto& m = messages[i];
    last_function_call[i] = last;
    if (!m.is_object()) continue;
    if (m.contains("function_call")) last = i;
    auto calls = m.find("tool_calls");
    if (calls == m.end() || !calls->is_array()) continue;
    for (const auto& c : *calls)
      if (const std::string* id = string_member(c, "id")) caller.emplace(*id, i);
  }
  // A kept tool result pulls its call in (and whatever lies between): each message is
  // looked at once as the cut moves back.
  std::size_t scanned_from = messages.size();
  while (scanned_from > cut) {
    std::size_t need = cut;
    for (std::size_t i = cut; i < scanned_from; ++i) {
      const auto& m = messages[i];
      const std::string role = role_of(m);
      if (role == "tool") {
        const std::string* id = string_member(m, "tool_call_id");
        auto it = id ? caller.find(*id) : caller.end();
        if (it != caller.end()) need = std::min(need, it->second);
      } else if (role == "function" && last_function_call[i] != none) {  // legacy function_call
        need = std::min(need, last_function_call[i]);
      }
    }
    scanned_from = cut;
    cut = need;
  }

  PayloadTree kept = PayloadTree::array();
  int dropped = 0;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i >= cut || kept_always(role_of(messages[i]))) kept.push_back(std::move(messages[i]));
    else ++dropped;
  }
  messages = std::move(kept);
  return dropped;
}

}  // namespace imageworks
