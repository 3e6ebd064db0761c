#pragma once
// Files only the proxy's user may touch (issue 12, security): the vLLM state file names a
// process group the proxy will adopt and later signal, so another local user must not be
// able to write it, nor the directory it lives in.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace imageworks {

// Creates the missing directories of `dir` with mode 0700; existing ones are left as they
// are. Returns the error text, nullopt on success.
std::optional<std::string> create_private_dirs(const std::filesystem::path& dir);

// Writes `content` to a temporary file (mode 0600, not following a symlink) next to `path`,
// flushes it and renames it over `path`: a reader never sees half a file. Returns the error
// text, nullopt on success.
std::optional<std::string> write_private_file(const std::filesystem::path& path, std::string_view content);

// Why the file at `path` cannot be trusted (owned by another user, writable by group or
// others, not a regular file), nullopt when it can. A missing file is trusted (nothing to read).
std::optional<std::string> untrusted_file_problem(const std::filesystem::path& path);

}  // namespace imageworks
