#pragma once
// The request log's file side (JsonlLogger's writer thread only): batches of whole lines
// written with writev(2), rotated before a write would pass max_bytes (path → path.1 → …
// path.keep_files), never splitting a line. Failures are counted as lost lines and logged
// at most every 10 s; the file is reopened by the next batch.
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace imageworks::telemetry {

class RotatingFile {
 public:
  RotatingFile(std::string path, std::uint64_t max_bytes, int keep_files);
  ~RotatingFile();
  RotatingFile(const RotatingFile&) = delete;
  RotatingFile& operator=(const RotatingFile&) = delete;

  // Opens (appends to) the file: 0, or the errno.
  int open_file();
  // Writes `segs` (each a run of whole lines; the views may be shortened).
  void write_batch(std::vector<std::string_view>& segs);
  // Lines lost to failed opens and writes so far (any thread).
  std::uint64_t lost() const { return lost_.load(std::memory_order_relaxed); }
  void report(std::string_view what, const std::string& target, int err);

 private:
  int write_chunk(const std::vector<std::string_view>& chunk);
  std::uint64_t write_all(const std::vector<std::string_view>& chunk, int& err);
  void rotate();
  void lose(const std::vector<std::string_view>& segs, std::size_t from);

  const std::string base;  // rotated files are base + ".N"
  const std::uint64_t max_bytes;
  const int keep_files;
  std::atomic<std::uint64_t> lost_{0};
  int fd = -1;
  std::uint64_t size = 0;  // bytes in the current file
  bool regular = true;     // a FIFO or a device (/dev/stdout) is written to, never rotated
  bool torn = false;       // a failed write left half a line at the end of the file
  std::vector<std::string_view> chunk;
  std::vector<iovec> iov;
  std::chrono::steady_clock::time_point last_report{};
  bool reported = false;
  std::uint64_t unreported = 0;
};

// strerror_r's text for `err`.
std::string error_text(int err);

}  // namespace imageworks::telemetry
