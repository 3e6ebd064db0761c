#include "imageworks/errors.hpp"

#include <nlohmann/json.hpp>

namespace imageworks {

std::string_view error_type_for_status(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 409: return "invalid_request_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    default: break;
  }
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

std::string_view error_code_for_upstream_status(int status) {
  switch (status) {
    case 400: return "err_bad_request";
    case 401: return "err_unauthorized";
    case 403: return "err_forbidden";
    case 404: return "err_model_not_found";
    case 409: return "err_capability_mismatch";
    case 413: return "err_payload_too_large";
    case 422: return "err_bad_request";
    case 429: return "err_rate_limited";
    case 503: return "err_backend_unavailable";
    default: break;
  }
  if (status >= 500) return "err_backend_error";
  return "err_bad_request";
}

std::string error_body(int status, std::string_view code, std::string_view message,
                       std::string_view param) {
  nlohmann::json err = nlohmann::json::object();
  err["message"] = std::string(message);
  err["type"] = std::string(error_type_for_status(status));
  err["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::string(param));
  err["code"] = std::string(code);
  nlohmann::json body = nlohmann::json::object();
  body["error"] = std::move(err);
  // Replace invalid UTF-8 (an upstream's message may carry any bytes) instead of throwing.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void append_sse_error(std::string& out, const ProxyError& e) {
  out += "data: ";
  out += error_body(e);
  out += "\n\ndata: [DONE]\n\n";
}

}  // namespace imageworks
