// The reply's text for the request log, only with CHAT_PROXY_LOG_PROMPTS=1 (a tree per event
// is fine there): the content of choice 0, a chat message's or a completion's text.
#include <nlohmann/json.hpp>

#include "forwarder/relay.hpp"

namespace imageworks {

namespace {

void append_choice_text(const nlohmann::json& j, const char* part, std::string& out) {
  if (!j.is_object()) return;
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty()) return;
  const auto& c = (*choices)[0];
  if (!c.is_object()) return;
  if (auto m = c.find(part); m != c.end() && m->is_object()) {
    if (auto content = m->find("content"); content != m->end() && content->is_string())
      out += content->get_ref<const std::string&>();
  }
  if (auto text = c.find("text"); text != c.end() && text->is_string()) out += text->get_ref<const std::string&>();
}

}  // namespace

void append_stream_reply(std::string_view event_data, std::string& reply) {
  append_choice_text(nlohmann::json::parse(event_data, nullptr, false), "delta", reply);
}

void append_whole_reply(std::string_view body, std::string& reply) {
  append_choice_text(nlohmann::json::parse(body, nullptr, false), "message", reply);
}

}  // namespace imageworks
