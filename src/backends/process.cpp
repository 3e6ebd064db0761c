// posix_spawn rather than fork+exec: no async-signal-safety traps in a multithreaded daemon,
// and glibc's closefrom action keeps the proxy's sockets (the listener above all) out of the
// child, so a vLLM server that outlives the proxy does not hold its port.
#include "imageworks/process.hpp"
#include "imageworks/private_files.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <spawn.h>
#include <stdexcept>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace imageworks {

namespace {

std::string command_line(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

// RAII for the spawn attribute objects (they own allocations in glibc).
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

}  // namespace

pid_t spawn_in_own_group(const std::vector<std::string>& argv, const std::filesystem::path& log_path) {
  if (argv.empty() || argv.front().empty()) throw std::runtime_error("empty command");
  // Owner-only: the log directory usually sits next to the vLLM state file (_staging/logs).
  if (log_path.has_parent_path()) (void)create_private_dirs(log_path.parent_path());
  SpawnSetup s;
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&s.actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0640);
  posix_spawn_file_actions_adddup2(&s.actions, 1, 2);
  posix_spawn_file_actions_addclosefrom_np(&s.actions, 3);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &defaults);
  posix_spawnattr_setpgroup(&s.attr, 0);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const bool search = argv.front().find('/') == std::string::npos;
  const int rc = search ? posix_spawnp(&pid, args[0], &s.actions, &s.attr, args.data(), environ)
                        : posix_spawn(&pid, args[0], &s.actions, &s.attr, args.data(), environ);
  if (rc != 0)
    throw std::runtime_error("cannot start '" + command_line(argv) + "': " + std::strerror(rc) +
                             " (log " + log_path.string() + ")");
  return pid;
}

namespace {

// /proc/<pid>/stat after the command (which may hold spaces and parentheses): fields 3...
std::optional<std::string> stat_tail(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) return std::nullopt;
  return line.substr(close + 2);
}

}  // namespace

bool process_alive(pid_t pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) return false;
  auto tail = stat_tail(pid);
  return tail && !tail->empty() && tail->front() != 'Z' && tail->front() != 'X';
}

std::optional<unsigned long long> process_start_ticks(pid_t pid) {
  auto tail = stat_tail(pid);
  if (!tail) return std::nullopt;
  // The tail starts at field 3 (state); starttime is field 22.
  std::size_t pos = 0;
  for (int field = 3; field < 22; ++field) {
    pos = tail->find(' ', pos);
    if (pos == std::string::npos) return std::nullopt;
    ++pos;
  }
  try {
    return std::stoull(tail->substr(pos, tail->find(' ', pos) - pos));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void signal_group(pid_t pgid, int sig) {
  if (pgid > 1) ::kill(-pgid, sig);
}

bool group_has_members(pid_t pgid) { return pgid > 1 && (::kill(-pgid, 0) == 0 || errno == EPERM); }

std::optional<int> reap_child(pid_t pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r != pid) return std::nullopt;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return std::nullopt;
}

ProcessExitWatch::ProcessExitWatch(Executor ex, pid_t pid) : pid_(pid), fd_(ex) {
  // glibc 2.36's <sys/pidfd.h> lacks C linkage for C++; the system call is the same.
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw std::runtime_error("cannot watch pid " + std::to_string(pid) + ": " + std::strerror(errno));
  beast::error_code ec;
  fd_.assign(fd, ec);
  if (ec) {
    ::close(fd);
    throw std::runtime_error("cannot watch pid " + std::to_string(pid) + ": " + ec.message());
  }
}

ProcessExitWatch::~ProcessExitWatch() {
  beast::error_code ec;
  fd_.close(ec);
}

Task<bool> ProcessExitWatch::wait() {
  beast::error_code ec;
  co_await fd_.async_wait(asio::posix::descriptor_base::wait_read, asio::redirect_error(use_task, ec));
  co_return !ec;
}

bool ProcessExitWatch::exited_now() {
  pollfd p{};
  p.fd = fd_.native_handle();
  p.events = POLLIN;
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

void ProcessExitWatch::cancel() {
  beast::error_code ec;
  fd_.cancel(ec);
}

}  // namespace imageworks
