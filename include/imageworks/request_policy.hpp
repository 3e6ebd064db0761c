#pragma once
// Request policy (§6): the upstream body as one payload type, and the pure rules a request
// passes before it goes upstream — template, tools and vision capability, image parts,
// history truncation. Plain requests never build a JSON tree: the parse step's cheap scan
// says which rules could apply, and only those build one.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "imageworks/config.hpp"
#include "imageworks/registry.hpp"

namespace imageworks {

// The tree keeps the client's member order (unknown fields pass through as sent).
using PayloadTree = nlohmann::ordered_json;

// The upstream request body. Until tree() is first called the bytes are the truth and the
// model value's span is known, so set_model() splices; after it the tree is the truth and
// finalize() serialises it back. Nobody else holds offsets into the bytes.
class RequestPayload {
 public:
  RequestPayload() = default;
  RequestPayload(std::string bytes, std::size_t model_offset, std::size_t model_length, bool has_stream_options);

  bool has_tree() const { return tree_.has_value(); }
  PayloadTree& tree();  // parses the bytes on first use (validated by the scan); 400 for 1e999
  void set_model(std::string_view upstream_model);
  // Makes stream_options.include_usage true; false when the client had asked for it already.
  bool ask_for_usage();
  // Serialises a tree (if any) into the bytes; call before bytes() is sent.
  void finalize();
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
  std::optional<PayloadTree> tree_;
  std::size_t model_offset_ = 0, model_length_ = 0;
  bool has_stream_options_ = false;
};

// 400 err_template_required (§6): with CHAT_PROXY_REQUIRE_TEMPLATE=1 a chat request needs
// the entry's chat_template file (found when the snapshot was built) or a backend that
// embeds one: ollama, an `openai` remote, a gguf model (llama.cpp reads the GGUF's own).
void check_template(const ProxyConfig& cfg, const ModelEntry& entry, std::string_view route);
// 409 err_capability_mismatch: tools / tool_choice / functions to a model without tools.
void check_tools(const ModelEntry& entry, std::string_view field);

// One image part of a message: where its URL string sits in the tree.
struct ImagePart {
  std::size_t message = 0, part = 0;
  PayloadTree* url = nullptr;  // the url string value, edited in place
};
// Every image part of `messages` (content arrays with {"type":"image_url","image_url":{"url"}}
// or "image_url" as a bare string). A part without a usable URL is a 400 naming its place;
// any other odd shape (a non-object message, a string content) is not an image and passes.
std::vector<ImagePart> image_parts(PayloadTree& messages);
// Removes every image part; a content array left empty becomes "". Returns how many.
int strip_image_parts(PayloadTree& messages);
// Keeps every system/developer message and the last `keep_turns` turns (a turn: a user
// message and the replies and tool messages after it), never splitting a tool call from its
// results. Returns how many messages were dropped. keep_turns < 1 counts as 1.
int truncate_history(PayloadTree& messages, int keep_turns);

}  // namespace imageworks
