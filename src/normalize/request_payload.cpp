// RequestPayload: splice edits while there is no tree, tree edits after (request_policy.hpp).
#include "imageworks/errors.hpp"
#include "imageworks/json_splice.hpp"
#include "imageworks/request_policy.hpp"

namespace imageworks {

RequestPayload::RequestPayload(std::string bytes, std::size_t model_offset, std::size_t model_length,
                               bool has_stream_options)
    : bytes_(std::move(bytes)), model_offset_(model_offset), model_length_(model_length),
      has_stream_options_(has_stream_options) {}

PayloadTree& RequestPayload::tree() {
  if (tree_) return *tree_;
  // The parse step's scan validated the bytes, but JSON numbers have no range and nlohmann
  // refuses one beyond a double's (1e999): that is the client's error, not ours.
  try {
    tree_ = PayloadTree::parse(bytes_);
  } catch (const nlohmann::json::exception& e) {
    throw ProxyError(400, "err_bad_request", std::string("request body cannot be read: ") + e.what());
  }
  return *tree_;
}

void RequestPayload::set_model(std::string_view upstream_model) {
  if (tree_) {
    (*tree_)["model"] = std::string(upstream_model);
    return;
  }
  // Splice the served id over the model value found by the parse step: no second scan.
  std::string quoted = json_quote(upstream_model);
  bytes_.replace(model_offset_, model_length_, quoted);
  model_length_ = quoted.size();
}

bool RequestPayload::ask_for_usage() {
  if (tree_) {
    auto& opts = (*tree_)["stream_options"];
    if (!opts.is_object()) opts = PayloadTree::object();
    auto it = opts.find("include_usage");
    if (it != opts.end() && it->is_boolean() && it->get<bool>()) return false;
    opts["include_usage"] = true;
    return true;
  }
  if (!has_stream_options_) {
    // The body is a valid object with at least "model": add the member before its last '}'.
    bytes_.insert(bytes_.rfind('}'), R"(,"stream_options":{"include_usage":true})");
    has_stream_options_ = true;
    return true;
  }
  auto opts = find_top_level_value(bytes_, "stream_options");
  if (opts && *opts == "null") return replace_top_level_value(bytes_, "stream_options", R"({"include_usage":true})");
  if (!opts || top_level_is_true(*opts, "include_usage")) return false;
  std::string merged(*opts);
  if (has_top_level_key(merged, "include_usage"))
    replace_top_level_value(merged, "include_usage", "true");
  else
    insert_top_level_member(merged, "include_usage", "true");
  replace_top_level_value(bytes_, "stream_options", merged);
  return true;
}

void RequestPayload::finalize() {
  if (!tree_) return;
  // The input was valid UTF-8 and every edit adds ASCII, so nothing is replaced here.
  bytes_ = tree_->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  tree_.reset();
  // The bytes are new: find the model again so later splices stay right.
  auto model = find_top_level_value(bytes_, "model");
  model_offset_ = model ? static_cast<std::size_t>(model->data() - bytes_.data()) : bytes_.size();
  model_length_ = model ? model->size() : 0;
  has_stream_options_ = has_top_level_key(bytes_, "stream_options");
}

}  // namespace imageworks
