#pragma once
// Reading the fake_vllm executable's lifecycle events from outside the process: the events
// file (--fake-events PATH or env FAKE_VLLM_EVENTS) holds one JSON object per line, each with
// "event", "pid", "served_model_name" and "t_ms" (ms since the epoch). Events: started (argv,
// pgid, port, model_path, ignored_args…), worker_spawned (worker_pid), listening (port),
// healthy, request (method, path, model, status; not /health), sigterm (signal, ignored),
// crash (code), exit (code, reason). Several fakes may share one file.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sys/types.h>

namespace imageworks::test {

class FakeVllmEvents {
 public:
  explicit FakeVllmEvents(std::filesystem::path path);
  const std::filesystem::path& path() const { return path_; }

  // Every complete line so far, in file order (a missing file is no events yet).
  std::vector<nlohmann::json> all() const;
  // Those whose "event" is `event`.
  std::vector<nlohmann::json> all(const std::string& event) const;
  // The nth (1-based) event named `event` / matching `pred`; nullopt after `timeout`. The file
  // is written by another process, so this polls it every few milliseconds.
  std::optional<nlohmann::json> wait_for(std::string event, std::chrono::milliseconds timeout,
                                         std::size_t nth = 1) const;
  std::optional<nlohmann::json> wait_for(const std::function<bool(const nlohmann::json&)>& pred,
                                         std::chrono::milliseconds timeout, std::size_t nth = 1) const;

 private:
  std::filesystem::path path_;
};

// The fake_vllm executable: IMAGEWORKS_FAKE_VLLM_BIN (set by CTest), else the build's path.
std::string fake_vllm_binary();

// True while `pid` exists and is not a zombie (a killed child nobody reaped yet is dead).
bool process_alive(pid_t pid);

// True once `pid` has exited (a zombie counts), false after `timeout`. Event-driven through a
// pidfd where the kernel has them. Reaps nothing: a child of the caller still needs waitpid.
bool wait_process_gone(pid_t pid, std::chrono::milliseconds timeout);

}  // namespace imageworks::test
