// The message rules of §6 as one pipeline step: vision capability, history truncation,
// image limits and formats. Pure rules live in normalize/; this step decides which apply,
// fetches image URLs and moves image work off the event loop.
#include <spdlog/spdlog.h>

#include "imageworks/forwarder.hpp"
#include "imageworks/image_codec.hpp"
#include "imageworks/image_fetch.hpp"

namespace imageworks {

namespace {

constexpr std::chrono::milliseconds kImageFetchTimeout{10000};

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && beast::iequals(s.substr(0, prefix.size()), prefix);
}

// The image work of one request, done on the CPU pool. Inputs are moved out of the tree and
// the results moved back, so a 30 MiB data URL is never copied.
struct ImageJob {
  struct Item {
    PayloadTree* url;      // where the result goes
    std::string input;     // a data: URL, or the raw bytes of a fetched image
    bool raw = false;      // input is bytes (fetched): always becomes a data: URL
    std::string original;  // a fetched image's URL, for messages
    bool ready = false;    // input is a URL to put back into the tree
  };
  std::vector<Item> items;
  ImageLimits limits;

  void run() {
    for (auto& it : items) {
      if (!it.raw) {
        if (auto changed = apply_image_limits_to_data_url(it.input, limits)) it.input = std::move(*changed);
        continue;
      }
      ImageOutcome out;
      try {
        out = apply_image_limits(it.input, limits);
      } catch (ProxyError& e) {
        throw ProxyError(e.status, e.code, std::string("image at ") + it.original + ": " + e.what(), e.param);
      }
      auto format = out.format != ImageFormat::unknown ? out.format : sniff_image_format(out.bytes);
      it.input = "data:" + std::string(mime_type(format)) + ";base64," + base64_encode(out.bytes);
      it.ready = true;
    }
  }
};

// Runs on the pool; the awaiting request resumes on its own executor (as reload() does).
Task<void> run_image_job(std::shared_ptr<ImageJob> job) {
  job->run();
  co_return;
}

ProxyError no_vision(const ModelEntry& e) {
  return ProxyError(409, "err_capability_mismatch",
                    "model '" + e.name + "' does not accept images (capabilities.vision is false); " +
                        "choose a vision model, or set CHAT_PROXY_STRIP_IMAGES_FOR_TEXT_MODELS=1 to drop them",
                    "messages");
}

// Data URLs go through the limits; http(s) URLs are left to backends that fetch them and
// fetched here for Ollama (which takes inline images only) when the operator allows it.
Task<void> process_images(App& app, std::vector<ImagePart>& parts, const ModelEntry& e) {
  const ProxyConfig& cfg = app.cfg;
  const bool inline_only = e.backend == "ollama";
  auto job = std::make_shared<ImageJob>();
  job->limits.max_bytes = cfg.max_image_bytes;
  job->limits.max_edge = cfg.image_max_edge;
  job->limits.downscale = cfg.image_downscale;
  job->limits.only_jpeg_png_webp = inline_only;
  // Every input moved out of the tree goes back where it came from, whatever happens.
  struct Restore {
    ImageJob& job;
    ~Restore() {
      for (auto& it : job.items)
        if (it.ready) *it.url = std::move(it.input);
    }
  } restore{*job};
  for (auto& p : parts) {
    std::string& url = p.url->get_ref<std::string&>();
    const std::string where = "messages[" + std::to_string(p.message) + "].content[" + std::to_string(p.part) + "]";
    if (starts_with_ci(url, "data:")) {
      job->items.push_back({p.url, std::move(url), false, {}, true});
      continue;
    }
    const bool web = starts_with_ci(url, "http://") || starts_with_ci(url, "https://");
    if (!inline_only) continue;  // the backend reads the URL itself
    if (!web)
      throw ProxyError(400, "err_bad_request", where + ": image URL is neither a data: URL nor http(s)", "messages");
    if (!cfg.fetch_image_urls)
      throw ProxyError(400, "err_bad_request",
                       where + ": model '" + e.name + "' (ollama) takes inline images only; send a data: URL, " +
                           "or set CHAT_PROXY_FETCH_IMAGE_URLS=1 to let the proxy fetch it",
                       "messages");
    ImageFetchLimits fl;
    fl.max_bytes = cfg.max_body_bytes;
    fl.timeout = kImageFetchTimeout;
    std::string bytes = co_await fetch_image_url(url, fl);
    job->items.push_back({p.url, std::move(bytes), true, url, false});
  }
  if (job->items.empty()) co_return;
  co_await asio::co_spawn(app.cpu_pool.context(), run_image_job(job), use_task);
}

}  // namespace

Task<void> apply_message_policy(App& app, Exchange& ex, ForwardRequest& fr, const ModelEntry& e) {
  const ProxyConfig& cfg = app.cfg;
  int images_stripped = 0, messages_dropped = 0;
  const bool reasoning_cut = e.capabilities.reasoning && cfg.reasoning_truncate_history;
  if (!message_policy_applies(cfg, fr, e)) co_return;
  auto& tree = fr.payload.tree();
  auto messages = tree.find("messages");
  if (messages == tree.end() || !messages->is_array()) co_return;
  if (fr.may_have_images) {
    auto parts = image_parts(*messages);
    if (!parts.empty() && !e.capabilities.vision) {
      if (!cfg.strip_images_for_text_models) throw no_vision(e);
      images_stripped = strip_image_parts(*messages);
    } else if (!parts.empty()) {
      if (cfg.vision_truncate_history) {
        messages_dropped += truncate_history(*messages, cfg.vision_keep_last_n_turns);
        parts = image_parts(*messages);  // what is left after the cut
      }
      co_await process_images(app, parts, e);
    }
  }
  if (reasoning_cut) messages_dropped += truncate_history(*messages, cfg.reasoning_keep_last_n_turns);
  if (images_stripped) ex.add_header("x-imageworks-images-stripped", std::to_string(images_stripped));
  if (messages_dropped) ex.add_header("x-imageworks-history-truncated", std::to_string(messages_dropped));
}

}  // namespace imageworks
