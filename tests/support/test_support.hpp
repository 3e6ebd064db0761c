#pragma once
// Helpers shared by the test binaries: temp directories, source paths.
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>

namespace imageworks::test {

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // Write `content` to path()/name (creating parent dirs) and return the full path.
  std::filesystem::path write(const std::string& name, const std::string& content) const;
 private:
  std::filesystem::path path_;
};

// The project's source directory (IMAGEWORKS_SOURCE_DIR), else the one this build came from.
std::filesystem::path source_dir();

// Runs `command` with /bin/sh and collects its stdout; exit_status is pclose's (0 = success).
struct ShellOutput {
  int exit_status = -1;
  std::string out;
};
ShellOutput run_shell(const std::string& command);

// A process's resident set in KiB (VmRSS); 0 when unreadable, which fails any bound check.
std::size_t resident_kib(pid_t pid);

}  // namespace imageworks::test
