#pragma once
// Wall-clock times as the JSON bodies and state files show them.
#include <chrono>
#include <ctime>
#include <string>

namespace imageworks {

// "2026-12-01T14:42:47Z" (UTC, seconds).
inline std::string iso8601(std::chrono::system_clock::time_point tp) {
  std::time_t t = std::chrono::system_clock::to_time_t(tp);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace imageworks
