// Fuzz target request_normalize: a request body through the forwarder's pure steps in their
// order (ChatForwarder::handle): parse, template and tools checks, the message rules
// (image parts, stripping, history truncation; image decoding is left out), then the payload
// prepared for the backend. The option byte picks the model's capabilities and the policy.
//
// Oracles: a body the scan accepted always parses into the tree (a parse_error there would
// be a 500); no image part survives stripping; truncation keeps every system message and
// drops what it says; the prepared bytes are a JSON object naming the served model and, for
// a stream, asking for usage. Clean rejections: ProxyError (400 bad request, 409 capability).
#include <nlohmann/json.hpp>

#include "fuzz_input.hpp"
#include "imageworks/forwarder.hpp"
#include "imageworks/request_policy.hpp"

namespace {

using namespace imageworks;
using fuzz::FuzzInput;

ModelEntry model_for(const FuzzInput& in) {
  ModelEntry e;
  e.name = "fuzz-model";
  e.backend = in.bit(4) ? "ollama" : "vllm";
  e.served_model_id = in.bit(4) ? "" : "org/Served-\"Model\"\\\xc3\xa9";
  e.capabilities.vision = in.bit(0);
  e.capabilities.tools = in.bit(1);
  e.capabilities.reasoning = in.bit(2);
  e.chat_template_found = true;
  return e;
}

ProxyConfig config_for(const FuzzInput& in) {
  ProxyConfig cfg;
  cfg.strip_images_for_text_models = in.bit(3);
  cfg.vision_truncate_history = !in.bit(7);
  cfg.reasoning_truncate_history = in.bit(2);
  cfg.vision_keep_last_n_turns = 1 + ((in.options >> 5) & 3);
  cfg.reasoning_keep_last_n_turns = 2 - ((in.options >> 5) & 3);  // 0 and -1 count as 1
  return cfg;
}

std::size_t count_role(const PayloadTree& messages, std::string_view role) {
  std::size_t n = 0;
  for (const auto& m : messages)
    if (m.is_object() && m.contains("role") && m["role"].is_string() && m["role"].get<std::string>() == role) ++n;
  return n;
}

void truncate_checked(PayloadTree& messages, int keep_turns) {
  const std::size_t before = messages.size(), systems = count_role(messages, "system");
  const int dropped = truncate_history(messages, keep_turns);
  FUZZ_CHECK(dropped >= 0 && messages.size() + static_cast<std::size_t>(dropped) == before);
  FUZZ_CHECK(count_role(messages, "system") == systems);
  FUZZ_CHECK(dropped == 0 || count_role(messages, "user") >= static_cast<std::size_t>(std::max(keep_turns, 1)));
}

// The message step (apply_message_policy) minus image decoding and fetching.
void message_policy(const ProxyConfig& cfg, ForwardRequest& fr, const ModelEntry& e) {
  if (!message_policy_applies(cfg, fr, e)) return;
  auto& tree = fr.payload.tree();
  auto messages = tree.find("messages");
  if (messages == tree.end() || !messages->is_array()) return;
  if (fr.may_have_images) {
    auto parts = image_parts(*messages);
    if (!parts.empty() && !e.capabilities.vision) {
      if (!cfg.strip_images_for_text_models) throw ProxyError(409, "err_capability_mismatch", "no vision");
      FUZZ_CHECK(strip_image_parts(*messages) == static_cast<int>(parts.size()));
      FUZZ_CHECK(image_parts(*messages).empty());
    } else if (!parts.empty() && cfg.vision_truncate_history) {
      truncate_checked(*messages, cfg.vision_keep_last_n_turns);
      for (const auto& p : image_parts(*messages)) FUZZ_CHECK(p.url && p.url->is_string());
    }
  }
  if (e.capabilities.reasoning && cfg.reasoning_truncate_history)
    truncate_checked(*messages, cfg.reasoning_keep_last_n_turns);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzInput in(data, size);
  const ModelEntry entry = model_for(in);
  const ProxyConfig cfg = config_for(in);
  const std::string_view route = in.bit(6) && in.bit(5) ? "completions" : "chat/completions";
  try {
    ForwardRequest fr = parse_forward_request(route, std::string(in.payload));
    check_template(cfg, entry, fr.route);
    if (!fr.tools_field.empty()) check_tools(entry, fr.tools_field);
    message_policy(cfg, fr, entry);
    prepare_payload(fr, entry);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(fr.payload.bytes());  // parse_error: a finding
    } catch (const nlohmann::json::out_of_range&) {
      return 0;  // 1e999 on the splice path, relayed as sent (a tree would have been a 400)
    }
    FUZZ_CHECK(j.is_object());
    FUZZ_CHECK(j["model"] == entry.upstream_model());
    if (fr.stream) {
      FUZZ_CHECK(j["stream_options"].is_object() && j["stream_options"]["include_usage"] == true);
      // Usage is added unless the client asked for it already.
      const auto sent = nlohmann::json::parse(in.payload);
      const auto opts = sent.find("stream_options");
      const bool asked = opts != sent.end() && opts->is_object() && opts->contains("include_usage") &&
                         (*opts)["include_usage"] == true;
      FUZZ_CHECK(fr.usage_added == !asked);
    }
  } catch (const ProxyError& e) {
    FUZZ_CHECK(e.status == 400 || e.status == 409);
  }
  return 0;
}
