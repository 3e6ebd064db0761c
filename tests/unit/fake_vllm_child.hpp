#pragma once
// Test-side helpers for the fake_vllm executable's own tests: spawn it the way VllmManager
// will (its own process group, output in a log file), follow it through its events file.
#include <csignal>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <imageworks/asio.hpp>

#include "support/fake_vllm_events.hpp"
#include "support/test_support.hpp"

extern char** environ;

namespace imageworks::test::fake_vllm_child {

using namespace std::chrono_literals;

// One fake_vllm child in a process group of its own; killed (whole group) and reaped on
// destruction if the test did not.
class FakeVllmChild {
 public:
  FakeVllmChild(const TempDir& dir, std::vector<std::string> args, std::map<std::string, std::string> env = {})
      : events(dir.path() / "events.jsonl") {
    std::vector<std::string> argv_s = {fake_vllm_binary(), "serve", "/models/fake-7b"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    if (!env.count("FAKE_VLLM_EVENTS")) argv_s.push_back("--fake-events=" + events.path().string());
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) {
      if (std::string_view(*e).rfind("FAKE_VLLM_", 0) != 0) env_s.emplace_back(*e);  // only ours count
    }
    for (const auto& [k, v] : env) env_s.push_back(k + "=" + v);
    std::vector<char*> argv, envp;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string log = (dir.path() / "fake_vllm.log").string();
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);  // its own group, led by itself: killpg(pid) reaches all
    const int rc = posix_spawn(&pid, argv[0], &files, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("posix_spawn fake_vllm failed");
  }
  ~FakeVllmChild() {
    if (exit_code) return;
    killpg(pid, SIGKILL);
    wait_exit(5s);
  }
  FakeVllmChild(const FakeVllmChild&) = delete;
  FakeVllmChild& operator=(const FakeVllmChild&) = delete;

  // Exit code (128 + signal when killed), nullopt on timeout; reaps the child.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    if (exit_code) return exit_code;
    if (!wait_process_gone(pid, timeout)) return std::nullopt;
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return std::nullopt;
    exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code;
  }

  // The port it listens on (from its "listening" event); 0 when it never did.
  unsigned short wait_listening(std::chrono::milliseconds timeout = 10s) const {
    const auto e = events.wait_for("listening", timeout);
    return e ? e->at("port").get<unsigned short>() : 0;
  }
  unsigned short wait_healthy(std::chrono::milliseconds timeout = 10s) const {
    const unsigned short port = wait_listening(timeout);
    return port != 0 && events.wait_for("healthy", timeout) ? port : 0;
  }

  pid_t pid = -1;
  FakeVllmEvents events;
  std::optional<int> exit_code;
};

// A port nobody listens on right now (bound, read back, closed).
inline unsigned short free_port() {
  asio::io_context ioc;
  tcp::acceptor acc(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  return acc.local_endpoint().port();
}

inline bool connection_refused(unsigned short port) {
  asio::io_context ioc;
  tcp::socket sock(ioc);
  beast::error_code ec;
  sock.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  return ec == asio::error::connection_refused;
}

}  // namespace imageworks::test::fake_vllm_child
