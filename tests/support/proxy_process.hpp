#pragma once
// End-to-end helpers: start the built imageworks-chat-proxy binary on an ephemeral loopback
// port (it prints "listening on http://HOST:PORT" once bound) and talk HTTP to it.
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace imageworks::test {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// One blocking HTTP/1.1 exchange on a fresh connection to 127.0.0.1:port.
HttpReply http_call(unsigned short port, const std::string& method, const std::string& target,
                    const std::string& body = {},
                    const std::vector<std::pair<std::string, std::string>>& headers = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(30));

class ProxyProcess {
 public:
  // env: extra/overriding variables; args: after the binary name (default "serve --port 0").
  explicit ProxyProcess(std::map<std::string, std::string> env,
                        std::vector<std::string> args = {"serve", "--port", "0"});
  ~ProxyProcess();
  ProxyProcess(const ProxyProcess&) = delete;
  ProxyProcess& operator=(const ProxyProcess&) = delete;

  unsigned short port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Send a signal; wait_exit() returns the exit code (or 128+signal), nullopt on timeout.
  void signal(int sig);
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  std::string stderr_text() const;  // what the daemon logged so far
  // True once the log holds `text`; false after `timeout`.
  bool wait_for_log(const std::string& text, std::chrono::milliseconds timeout) const;

 private:
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  std::string stderr_path_;
  std::string owned_log_dir_;  // the request log's directory when the test gave no CHAT_PROXY_LOG_PATH
  std::optional<int> exit_code_;
};

// Run the binary to completion (for CLI subcommands); returns exit code and stdout/stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};
CommandResult run_proxy_command(const std::vector<std::string>& args,
                                const std::map<std::string, std::string>& env);

std::string proxy_binary();

}  // namespace imageworks::test
