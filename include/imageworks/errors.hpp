#pragma once
// The OpenAI error shape (§9), built in exactly one place. Inside the pipeline errors are
// thrown as ProxyError; the session turns them into a response (or an SSE error event when
// the response head already went out).
#include <stdexcept>
#include <string>
#include <string_view>

namespace imageworks {

struct ProxyError : std::runtime_error {
  ProxyError(int status, std::string code, const std::string& message, std::string param = {},
             int retry_after_s = 0)
      : std::runtime_error(message), status(status), code(std::move(code)),
        param(std::move(param)), retry_after_s(retry_after_s) {}
  int status;
  std::string code;        // "err_model_not_found"
  std::string param;       // offending field, "" → null
  int retry_after_s;       // > 0 adds Retry-After
};

// OpenAI `type` for a status: invalid_request_error, authentication_error, ... .
std::string_view error_type_for_status(int status);
// Our string code for an upstream's own status (§9 mapping).
std::string_view error_code_for_upstream_status(int status);
// {"error":{"message","type","param","code"}} serialised.
std::string error_body(int status, std::string_view code, std::string_view message,
                       std::string_view param = {});
inline std::string error_body(const ProxyError& e) {
  return error_body(e.status, e.code, e.what(), e.param);
}
// How a stream that already started ends on an error (§5): the error as a last SSE event,
// then [DONE]. Appends both frames to `out`.
void append_sse_error(std::string& out, const ProxyError& e);

}  // namespace imageworks
