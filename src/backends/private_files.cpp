#include "imageworks/private_files.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace imageworks {

namespace fs = std::filesystem;

namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

std::optional<std::string> create_private_dirs(const fs::path& dir) {
  if (dir.empty()) return std::nullopt;
  fs::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (::mkdir(partial.c_str(), 0700) == 0 || errno == EEXIST) continue;
    return errno_text("cannot create " + partial.string());
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return errno_text("cannot stat " + dir.string());
  if (!S_ISDIR(st.st_mode)) return dir.string() + " is not a directory";
  return std::nullopt;
}

std::optional<std::string> write_private_file(const fs::path& path, std::string_view content) {
  if (path.has_parent_path())
    if (auto e = create_private_dirs(path.parent_path())) return e;
  const fs::path tmp = path.string() + ".tmp";
  ::unlink(tmp.c_str());  // a leftover of a crash (or a planted symlink): start afresh
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return errno_text("cannot create " + tmp.string());
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto e = errno_text("cannot write " + tmp.string());
      ::close(fd);
      ::unlink(tmp.c_str());
      return e;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    auto e = errno_text("cannot write " + tmp.string());
    ::unlink(tmp.c_str());
    return e;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto e = errno_text("cannot replace " + path.string());
    ::unlink(tmp.c_str());
    return e;
  }
  return std::nullopt;
}

std::optional<std::string> untrusted_file_problem(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  if (!S_ISREG(st.st_mode)) return path.string() + " is not a regular file";
  if (st.st_uid != ::geteuid()) return path.string() + " belongs to another user (uid " + std::to_string(st.st_uid) + ")";
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return path.string() + " is writable by other users";
  return std::nullopt;
}

}  // namespace imageworks
