#pragma once
// Child processes for the backends the proxy runs (vLLM servers, autostarted services):
// spawned without a shell in a process group of their own, output appended to a log file,
// watched through a pidfd so an exit is an event on an event loop, stopped as a group.
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "imageworks/asio.hpp"

namespace imageworks {

// Starts argv (argv[0] looked up in PATH when it has no '/') as the leader of a new process
// group: stdin /dev/null, stdout and stderr appended to `log_path` (directories created),
// no descriptor of the proxy inherited, default signal dispositions. Throws std::runtime_error
// naming the command and the reason.
pid_t spawn_in_own_group(const std::vector<std::string>& argv, const std::filesystem::path& log_path);

// The process exists and is not a zombie.
bool process_alive(pid_t pid);
// When the process started (clock ticks since boot, /proc/<pid>/stat field 22): with the
// pid it identifies one process, so a recorded pid reused by another program is told apart.
std::optional<unsigned long long> process_start_ticks(pid_t pid);
// Sends sig to the process group (ESRCH, an empty group, is not an error).
void signal_group(pid_t pgid, int sig);
// Some process of the group still exists (zombies of other parents included).
bool group_has_members(pid_t pgid);
// Reaps `pid` if it is our exited child; returns its exit code (128+signal), else nullopt.
std::optional<int> reap_child(pid_t pid);

// Waits for one process to exit, as an event on an executor (pidfd; works for processes
// that are not our children too, e.g. a server adopted after a restart).
class ProcessExitWatch {
 public:
  ProcessExitWatch(Executor ex, pid_t pid);  // throws when the pid cannot be watched
  ~ProcessExitWatch();
  ProcessExitWatch(const ProcessExitWatch&) = delete;
  ProcessExitWatch& operator=(const ProcessExitWatch&) = delete;
  pid_t pid() const { return pid_; }
  // Completes when the process has exited (or the watch was cancelled: false).
  Task<bool> wait();
  // Whether the process has exited already, without waiting (a zero-timeout poll).
  bool exited_now();
  void cancel();

 private:
  pid_t pid_;
  asio::posix::basic_stream_descriptor<Executor> fd_;
};

}  // namespace imageworks
