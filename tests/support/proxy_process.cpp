#include "support/proxy_process.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imageworks/asio.hpp"

extern char** environ;

namespace imageworks::test {

std::string proxy_binary() {
  if (const char* p = std::getenv("IMAGEWORKS_PROXY_BIN")) return p;
  // Run by hand: the binary sits in the build directory, one level above tests/.
  auto guess = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "imageworks-chat-proxy";
  if (std::filesystem::exists(guess)) return guess.string();
  throw std::runtime_error("IMAGEWORKS_PROXY_BIN is not set and no binary at " + guess.string());
}

namespace {

std::vector<std::string> merged_env(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string k = kv.substr(0, eq);
    // A test starts from a clean proxy configuration: only what it sets applies.
    if (k.rfind("CHAT_PROXY_", 0) == 0 || k == "IMAGEWORKS_OLLAMA_HOST") continue;
    env[k] = kv.substr(eq + 1);
  }
  // IMAGEWORKS_TEST_PROXY_THREADS (tests/tsan/run.sh): event-loop threads for every proxy a
  // test starts without choosing, so ThreadSanitizer sees its exchanges on several threads.
  if (const char* n = std::getenv("IMAGEWORKS_TEST_PROXY_THREADS"); n && *n) env["CHAT_PROXY_THREADS"] = n;
  for (auto& [k, v] : extra) env[k] = v;
  std::vector<std::string> out;
  for (auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

pid_t spawn(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
            int out_fd, int err_fd) {
  auto envs = merged_env(env);
  std::vector<std::string> argv_s{proxy_binary()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string temp_file(const char* stem) {
  std::string tmpl = "/tmp/iwcp-" + std::string(stem) + "-XXXXXX";
  int fd = mkstemp(tmpl.data());
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  close(fd);
  return tmpl;
}

}  // namespace

ProxyProcess::ProxyProcess(std::map<std::string, std::string> env, std::vector<std::string> args) {
  int pipefd[2];
  if (pipe(pipefd) != 0) throw std::runtime_error("pipe failed");
  stderr_path_ = temp_file("stderr");
  int err_fd = open(stderr_path_.c_str(), O_WRONLY | O_TRUNC);
  if (!env.contains("CHAT_PROXY_LOG_PATH")) {  // a request log of its own, removed afterwards
    char tmpl[] = "/tmp/iwcp-log-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    owned_log_dir_ = tmpl;
    env.emplace("CHAT_PROXY_LOG_PATH", owned_log_dir_ + "/chat_proxy.jsonl");
  }
  pid_ = spawn(args, env, pipefd[1], err_fd);
  close(pipefd[1]);
  close(err_fd);
  // Wait for the "listening on http://host:port" line (event-driven: poll on the pipe).
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (out.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd pfd{pipefd[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[256];
    auto n = read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  close(pipefd[0]);
  auto colon = out.rfind(':');
  if (out.find("listening on") == std::string::npos || colon == std::string::npos) {
    signal(SIGKILL);
    wait_exit(std::chrono::seconds(5));
    throw std::runtime_error("proxy did not start; stdout: " + out + "\nstderr: " + stderr_text());
  }
  port_ = static_cast<unsigned short>(std::stoi(out.substr(colon + 1)));
}

ProxyProcess::~ProxyProcess() {
  if (!exit_code_ && pid_ > 0) {
    signal(SIGTERM);
    if (!wait_exit(std::chrono::seconds(15))) {
      signal(SIGKILL);
      wait_exit(std::chrono::seconds(5));
    }
  }
  if (std::getenv("IMAGEWORKS_TEST_KEEP_LOGS")) {
    std::fprintf(stderr, "proxy log kept: %s\n", stderr_path_.c_str());
  } else {
    std::remove(stderr_path_.c_str());
    std::error_code ec;
    if (!owned_log_dir_.empty()) std::filesystem::remove_all(owned_log_dir_, ec);
  }
}

void ProxyProcess::signal(int sig) {
  if (pid_ > 0 && !exit_code_) kill(pid_, sig);
}

std::optional<int> ProxyProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  // waitpid has no timeout: poll it with a short back-off, bounded by the timeout.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int delay_ms = 1;; delay_ms = std::min(delay_ms * 2, 50)) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  }
}

std::string ProxyProcess::stderr_text() const { return read_file(stderr_path_); }

bool ProxyProcess::wait_for_log(const std::string& text, std::chrono::milliseconds timeout) const {
  // The daemon writes its log to a file: polled, every few milliseconds, bounded by timeout.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (stderr_text().find(text) != std::string::npos) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

CommandResult run_proxy_command(const std::vector<std::string>& args,
                                const std::map<std::string, std::string>& env) {
  auto out_path = temp_file("out"), err_path = temp_file("err");
  int out_fd = open(out_path.c_str(), O_WRONLY | O_TRUNC), err_fd = open(err_path.c_str(), O_WRONLY | O_TRUNC);
  pid_t pid = spawn(args, env, out_fd, err_fd);
  close(out_fd);
  close(err_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  return r;
}

namespace {

asio::awaitable<void> exchange(beast::tcp_stream& stream, unsigned short port,
                               http::request<http::string_body>& req,
                               http::response_parser<http::string_body>& parser,
                               std::chrono::milliseconds timeout) {
  stream.expires_after(timeout);  // one deadline for the whole exchange
  co_await stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                asio::use_awaitable);
  co_await http::async_write(stream, req, asio::use_awaitable);
  beast::flat_buffer buf;
  co_await http::async_read(stream, buf, parser, asio::use_awaitable);
}

}  // namespace

HttpReply http_call(unsigned short port, const std::string& method, const std::string& target,
                    const std::string& body,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    std::chrono::milliseconds timeout) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, "127.0.0.1");
  bool has_ct = false;
  for (auto& [k, v] : headers) {
    req.set(k, v);
    if (beast::iequals(k, "content-type")) has_ct = true;
  }
  if (!body.empty() && !has_ct) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(64ull << 20);
  std::exception_ptr failure;
  asio::co_spawn(ioc, exchange(stream, port, req, parser, timeout),
                 [&](std::exception_ptr e) { failure = e; });
  ioc.run();
  if (failure) std::rethrow_exception(failure);
  auto res = parser.release();
  HttpReply r;
  r.status = static_cast<int>(res.result_int());
  for (auto& f : res) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = std::string(f.value());
  }
  r.body = std::move(res.body());
  return r;
}

}  // namespace imageworks::test
