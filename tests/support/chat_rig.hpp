#pragma once
// The end-to-end tests' usual setup: a fake OpenAI-compatible upstream, a registry with models
// on it (listed ids differ from served ids) and a "dead" one on a port nobody listens on, and
// the built proxy serving that registry.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fakes/fake_openai.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {

using Env = std::map<std::string, std::string>;

struct ChatRig {
  FakeOpenAI fake;
  TempDir dir;
  std::unique_ptr<ProxyProcess> proxy;

  ChatRig() : ChatRig(Env{}, "") {}
  explicit ChatRig(Env env) : ChatRig(std::move(env), "") {}
  // key_fields: extra members of the first entry's backend_config (e.g. an api_key).
  ChatRig(Env env, const std::string& key_fields);
  ~ChatRig();
  unsigned short port() const { return proxy->port(); }
  HttpReply chat(const nlohmann::json& body);
};

// {"model", "messages":[{"role":"user","content":"hi"}], "stream"}
nlohmann::json chat_body(bool stream, const std::string& model = "Fake Chat 7b");

// The reply is an OpenAI-shaped error with this status and code.
void expect_error(const HttpReply& r, int status, const std::string& code);

// Scripted streams in other backends' dialects (FakeOpenAI::Behavior::script_events), §7:
// a legacy `function_call` whose arguments arrive in `pieces` fragments, finish_reason
// "function_call"; and Ollama's two tool calls, both at index 0, in one chunk.
std::vector<std::string> legacy_function_call_events(const std::string& name, const std::string& arguments, int pieces);
std::vector<std::string> ollama_two_calls_at_index0_events();

// A loopback port that was bound and closed again: connecting to it is refused.
unsigned short closed_loopback_port();

}  // namespace imageworks::test
