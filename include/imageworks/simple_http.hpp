#pragma once
// A small HTTP/1.1 client for control calls (Ollama's /api/ps, vLLM's /health, a remote
// executor's /admin/*): one request on a fresh connection under one deadline. Not for the
// relay's hot path, which has its own pooled client (upstream.hpp). Plain http:// only.
#include <chrono>
#include <string>
#include <string_view>

#include "imageworks/asio.hpp"

namespace imageworks {

struct SimpleReply {
  int status = 0;
  std::string body;
};

// Throws SimpleHttpError (connection refused, timeout, bad URL...) when no reply came.
struct SimpleHttpError : std::runtime_error {
  SimpleHttpError(const std::string& what, bool refused, bool timed_out)
      : std::runtime_error(what), refused(refused), timed_out(timed_out) {}
  bool refused;
  bool timed_out;
};

// `base_url` is "http://host:port" (a path prefix is kept); `target` starts with '/';
// `authorization` (e.g. "Bearer KEY") is sent when not empty.
Task<SimpleReply> simple_http(std::string_view base_url, http::verb method, std::string_view target,
                              std::string body, std::chrono::milliseconds timeout,
                              std::string authorization = {});

}  // namespace imageworks
