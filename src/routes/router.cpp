#include <algorithm>

#include "imageworks/recorder.hpp"
#include "routes/routes.hpp"

namespace imageworks::routes {

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string canonical_path(std::string_view target) {
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == "/debug") return "/v1/debug/registry";
  if (path.starts_with("/v1/") || path == "/v1") return std::string(path);
  static constexpr std::string_view aliases[] = {"/models", "/chat/completions", "/completions",
                                                 "/embeddings", "/health", "/healthz", "/reload",
                                                 "/metrics"};
  for (auto a : aliases) {
    if (path == a && a != "/metrics") return "/v1" + std::string(path);
  }
  if (path.starts_with("/models/")) return "/v1" + std::string(path);
  return std::string(path);
}

namespace {

// Compares in time that depends only on the configured key's length, never on where the
// given one first differs (no byte-by-byte guessing from response times).
bool same_key(std::string_view given, std::string_view key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (std::size_t i = 0; i < key.size(); ++i)
    diff |= static_cast<unsigned char>(key[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  return diff == 0;
}

bool authorized(const App& app, const Exchange& ex) {
  if (app.cfg.api_keys.empty()) return true;
  auto auth = ex.request()[http::field::authorization];
  constexpr std::string_view bearer = "Bearer ";  // the scheme is case-insensitive (RFC 9110 §11.1)
  if (auth.size() <= bearer.size() || !beast::iequals(auth.substr(0, bearer.size()), bearer)) return false;
  auto key = auth.substr(bearer.size());
  bool ok = false;
  for (const auto& k : app.cfg.api_keys) ok |= same_key(key, k);  // every key: no early exit
  return ok;
}

void require_admin_client(const App& app, const Exchange& ex) {
  if (app.cfg.admin_loopback_only && !ex.remote_is_loopback())
    throw ProxyError(403, "err_forbidden",
                     "this route answers only loopback clients (CHAT_PROXY_ADMIN_LOOPBACK_ONLY=1)");
}

void require_method(const Exchange& ex, http::verb verb) {
  if (ex.request().method() != verb)
    throw ProxyError(405, "err_method_not_allowed",
                     std::string("method ") + std::string(ex.request().method_string()) +
                         " is not allowed on " + std::string(ex.request().target()));
}

[[noreturn]] void not_found(const Exchange& ex) {
  throw ProxyError(404, "err_not_found",
                   "no route for " + std::string(ex.request().method_string()) + " " +
                       std::string(ex.request().target()));
}

}  // namespace

// Not a coroutine: it picks the handler and returns its awaitable, so a request costs one
// coroutine frame less. Rejections throw before anything is awaited.
Task<void> dispatch(App& app, Exchange& ex) {
  std::string path = canonical_path(ex.request().target());
  if (path.size() <= 256) ex.record().route.assign(path);  // (the session recorded the raw path)
  if (path == "/v1/health" || path == "/v1/healthz") {
    require_method(ex, http::verb::get);
    return health(app, ex);
  }
  if (path == "/") {  // the page holds no data: it asks for a key when /v1/status needs one
    require_method(ex, http::verb::get);
    return status_page(app, ex);
  }
  if (!authorized(app, ex))
    throw ProxyError(401, "err_unauthorized", "missing or invalid API key (Authorization: Bearer <key>)");
  if (path == "/v1/models") {
    require_method(ex, http::verb::get);
    return list_models(app, ex);
  }
  if (path == "/v1/status") {
    require_method(ex, http::verb::get);
    return status(app, ex);
  }
  if (path.starts_with("/v1/models/")) {
    require_method(ex, http::verb::get);
    return get_model(app, ex, percent_decode(std::string_view(path).substr(11)));
  }
  if (path == "/v1/debug/registry") {
    if (!app.cfg.enable_debug_routes) not_found(ex);
    require_method(ex, http::verb::get);
    require_admin_client(app, ex);
    return debug_registry(app, ex);
  }
  if (path == "/v1/reload") {
    require_method(ex, http::verb::post);
    require_admin_client(app, ex);
    return reload_registry(app, ex);
  }
  if (path == "/v1/admin/activate" || path == "/v1/admin/deactivate" || path == "/v1/admin/state") {
    require_method(ex, path == "/v1/admin/state" ? http::verb::get : http::verb::post);
    require_admin_client(app, ex);
    if (path == "/v1/admin/state") return admin_state(app, ex);
    return path == "/v1/admin/activate" ? admin_activate(app, ex) : admin_deactivate(app, ex);
  }
  if (path == "/v1/metrics" || path == "/metrics") {
    if (!app.cfg.enable_metrics || !app.recorder || !app.recorder->metrics()) not_found(ex);
    require_method(ex, http::verb::get);
    return path == "/metrics" ? metrics_prometheus(app, ex) : metrics_json(app, ex);
  }
  if (path == "/v1/autostart/status") {  // pids, log paths, errors: operator information
    require_method(ex, http::verb::get);
    require_admin_client(app, ex);
    return autostart_status(app, ex);
  }
  if (app.forward && path.starts_with("/v1/") && ex.request().method() == http::verb::post) {
    return app.forward(ex, std::move(path));
  }
  not_found(ex);
}

}  // namespace imageworks::routes
