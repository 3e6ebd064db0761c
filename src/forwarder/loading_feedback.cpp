#include "forwarder/loading_feedback.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace imageworks {

std::string openwebui_status_frame(std::string_view description, bool done) {
  nlohmann::json data = nlohmann::json::object();
  data["description"] = std::string(description);
  data["done"] = done;
  nlohmann::json event = nlohmann::json::object();
  event["type"] = "status";
  event["data"] = std::move(data);
  nlohmann::json body = nlohmann::json::object();
  body["event"] = std::move(event);
  return "data: " + body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

bool from_openwebui(const Request& req) {
  for (const auto& f : req) {
    const auto name = f.name_string();
    if (name.size() > 12 && beast::iequals(name.substr(0, 12), "x-openwebui-")) return true;
  }
  return false;
}

LoadingFeedback::LoadingFeedback(Exchange& ex, bool stream, std::string model)
    : ex_(ex), stream_(stream), openwebui_(from_openwebui(ex.request())), model_(std::move(model)) {}

LoadingFeedback::~LoadingFeedback() { watch_client(nullptr, nullptr); }

void LoadingFeedback::on_peer_gone(void* self) {
  auto* f = static_cast<LoadingFeedback*>(self);
  f->gone_ = true;
  if (f->wake_) f->wake_(f->wake_ctx_);
}

void LoadingFeedback::on_abort(void* self) {
  auto* f = static_cast<LoadingFeedback*>(self);
  if (f->wake_) f->wake_(f->wake_ctx_);
}

void LoadingFeedback::watch_client(void (*wake)(void*), void* ctx) {
  wake_ = wake;
  wake_ctx_ = ctx;
  if (wake) {
    ex_.stream().watch_peer(&on_peer_gone, this);
    ex_.on_abort(&on_abort, this);
  } else {
    ex_.stream().unwatch_peer();
    ex_.on_abort(nullptr, nullptr);
  }
}

Task<void> LoadingFeedback::on_wait(std::vector<std::string> steps, bool first) {
  if (!stream_) co_return;  // a whole reply has no way to say it is coming
  std::string frames;
  const auto waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
  char comment[64];
  std::snprintf(comment, sizeof comment, " (%.0f s)", waited);
  frames += ": loading " + model_ + (first ? "" : comment) + "\n\n";
  for (auto& step : steps) {
    if (step.starts_with("Loaded in ")) {  // "Loaded in 41.2 s" -> "Loaded qwen2 7b in 41.2 s"
      loaded_step_ = "Loaded " + model_ + step.substr(6);
      continue;
    }
    if (openwebui_) frames += openwebui_status_frame(step, false);
  }
  if (!opened_) {
    opened_ = true;
    co_await ex_.start_stream(http::status::ok, "text/event-stream", frames);
  } else {
    co_await ex_.write_chunk(frames);
  }
}

Task<void> LoadingFeedback::finish() {
  if (!opened_ || !openwebui_) co_return;
  if (loaded_step_.empty()) {
    char text[128];
    std::snprintf(text, sizeof text, "%s ready after %.1f s", model_.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count());
    loaded_step_ = text;
  }
  co_await ex_.write_chunk(openwebui_status_frame(loaded_step_, true));
}

}  // namespace imageworks
