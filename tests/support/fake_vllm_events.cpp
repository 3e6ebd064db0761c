#include "support/fake_vllm_events.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace imageworks::test {

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(5);

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

FakeVllmEvents::FakeVllmEvents(std::filesystem::path path) : path_(std::move(path)) {}

// Only lines ending in '\n': each line is one write(), but a read may overlap a write still
// in progress and see the first part of a line.
std::vector<nlohmann::json> FakeVllmEvents::all() const {
  const std::string text = slurp(path_);
  std::vector<nlohmann::json> out;
  std::size_t pos = 0;
  for (std::size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    auto j = nlohmann::json::parse(text.begin() + static_cast<std::ptrdiff_t>(pos),
                                   text.begin() + static_cast<std::ptrdiff_t>(nl), nullptr, false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

std::vector<nlohmann::json> FakeVllmEvents::all(const std::string& event) const {
  std::vector<nlohmann::json> out;
  for (auto& e : all()) {
    if (e.value("event", "") == event) out.push_back(std::move(e));
  }
  return out;
}

std::optional<nlohmann::json> FakeVllmEvents::wait_for(std::string event, std::chrono::milliseconds timeout,
                                                       std::size_t nth) const {
  return wait_for([&](const nlohmann::json& e) { return e.value("event", "") == event; }, timeout, nth);
}

std::optional<nlohmann::json> FakeVllmEvents::wait_for(const std::function<bool(const nlohmann::json&)>& pred,
                                                       std::chrono::milliseconds timeout, std::size_t nth) const {
  if (nth == 0) nth = 1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::size_t seen = 0;
    for (auto& e : all()) {
      if (pred(e) && ++seen == nth) return std::move(e);
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollInterval);  // another process writes it: nothing to wait on
  }
}

std::string fake_vllm_binary() {
  if (const char* p = std::getenv("IMAGEWORKS_FAKE_VLLM_BIN"); p && *p) return p;
#ifdef IMAGEWORKS_FAKE_VLLM_BIN_DEFAULT
  return IMAGEWORKS_FAKE_VLLM_BIN_DEFAULT;
#else
  throw std::runtime_error("IMAGEWORKS_FAKE_VLLM_BIN is not set");
#endif
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno != EPERM) return false;
  // /proc/<pid>/stat: "pid (comm) S …"; comm may hold spaces or ')', so the state is the
  // first field after the last ')'.
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;  // gone meanwhile
  const char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

bool wait_process_gone(pid_t pid, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0 && errno == ESRCH) return true;  // no such process (any more)
  if (fd >= 0) {  // a pidfd turns readable when the process exits: an event, no polling
    pollfd pfd{fd, POLLIN, 0};
    const int r = poll(&pfd, 1, static_cast<int>(timeout.count()));
    close(fd);
    return r > 0 || !process_alive(pid);
  }
  // No pidfds (old kernel, seccomp): look at /proc every few milliseconds.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (process_alive(pid)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);
  }
  return true;
}

}  // namespace imageworks::test
