// RotatingFile: the request log's writes, rotation and failure accounting.
#include "telemetry/rotating_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <spdlog/spdlog.h>

namespace imageworks::telemetry {

namespace {

constexpr std::size_t kMaxIov = IOV_MAX;
constexpr auto kErrorLogEvery = std::chrono::seconds(10);

std::uint64_t count_lines(std::string_view s) { return std::count(s.begin(), s.end(), '\n'); }

// The length of the longest prefix of `s` of at most `limit` bytes that ends a line.
std::size_t whole_lines_within(std::string_view s, std::uint64_t limit) {
  if (limit == 0) return 0;
  const auto nl = s.substr(0, std::min<std::uint64_t>(limit, s.size())).rfind('\n');
  return nl == std::string_view::npos ? 0 : nl + 1;
}

}  // namespace

std::string error_text(int err) {
  char buf[256];
  return strerror_r(err, buf, sizeof buf);  // GNU variant: thread-safe, returns the text
}

RotatingFile::RotatingFile(std::string path, std::uint64_t max, int keep)
    : base(std::move(path)), max_bytes(max), keep_files(keep) {}

RotatingFile::~RotatingFile() {
  if (fd >= 0) ::close(fd);
}

// Writes `segs` (each a run of whole lines) in as few writes as rotation allows: whatever
// fits below max_bytes, then a rotation, then the rest. A line longer than max_bytes gets a
// fresh file of its own rather than being split.
void RotatingFile::write_batch(std::vector<std::string_view>& segs) {
  std::size_t i = 0;
  while (i < segs.size()) {
    if (segs[i].empty()) {
      ++i;
      continue;
    }
    if (fd < 0) {
      if (int err = open_file()) {
        lose(segs, i);  // the next batch tries again
        return report("cannot open", base, err);
      }
    }
    const std::uint64_t room = !regular ? UINT64_MAX : size < max_bytes ? max_bytes - size : 0;
    chunk.clear();
    std::uint64_t take = 0;
    std::size_t j = i;
    for (; j < segs.size() && chunk.size() < kMaxIov; ++j) {
      const std::string_view s = segs[j];
      if (take + s.size() <= room) {
        if (!s.empty()) chunk.push_back(s);
        take += s.size();
        continue;
      }
      const std::size_t cut = whole_lines_within(s, room - take);
      if (cut > 0) {
        chunk.push_back(s.substr(0, cut));
        take += cut;
        segs[j] = s.substr(cut);
      }
      break;
    }
    if (take == 0) {
      if (size > 0) {
        rotate();
        continue;
      }
      const std::size_t nl = segs[i].find('\n');
      const std::size_t n = nl == std::string_view::npos ? segs[i].size() : nl + 1;
      chunk.push_back(segs[i].substr(0, n));
      segs[i] = segs[i].substr(n);
      j = i;
    }
    if (int err = write_chunk(chunk)) {
      lose(segs, j);
      return report("cannot write", base, err);
    }
    i = j;
  }
}

// 0, or the errno of a failed write: then the chunk's unwritten lines are counted as lost
// and the file is closed, to be reopened by the next batch.
int RotatingFile::write_chunk(const std::vector<std::string_view>& chunk) {
  int err = 0;
  if (torn) {  // end the half line a failed write left, so the lines after it stay whole
    static const std::vector<std::string_view> newline{"\n"};
    size += write_all(newline, err);
    if (!err) torn = false;
  }
  std::uint64_t written = 0;
  if (!err) {
    written = write_all(chunk, err);
    size += written;
    if (!err) return 0;
  }
  // The lines not written whole are lost; count them (their '\n' was not written).
  std::uint64_t skip = written, lost = 0;
  for (std::string_view s : chunk) {
    const std::uint64_t k = std::min<std::uint64_t>(skip, s.size());
    skip -= k;
    if (k == s.size()) continue;              // written whole
    if (k > 0) torn = s[k - 1] != '\n';       // segments end at line ends: only here can one tear
    lost += count_lines(s.substr(k));
  }
  lost_.fetch_add(lost, std::memory_order_relaxed);
  ::close(fd);
  fd = -1;
  return err;
}

// writev(2) of the whole chunk, resuming after short writes. Returns the bytes written;
// `err` is the errno that stopped it, 0 when everything was written.
std::uint64_t RotatingFile::write_all(const std::vector<std::string_view>& chunk, int& err) {
  iov.clear();
  for (std::string_view s : chunk) iov.push_back({const_cast<char*>(s.data()), s.size()});
  std::uint64_t total = 0;
  std::size_t k = 0;
  err = 0;
  while (k < iov.size()) {
    const ssize_t n = ::writev(fd, iov.data() + k, static_cast<int>(std::min(iov.size() - k, kMaxIov)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    total += static_cast<std::uint64_t>(n);
    auto left = static_cast<std::size_t>(n);
    while (k < iov.size() && left >= iov[k].iov_len) left -= iov[k++].iov_len;
    if (left > 0) {
      iov[k].iov_base = static_cast<char*>(iov[k].iov_base) + left;
      iov[k].iov_len -= left;
    }
  }
  return total;
}

// path.{k-1} → path.k … path → path.1, then a fresh path; keep_files 0 empties the file.
void RotatingFile::rotate() {
  torn = false;  // the next line starts a new file
  if (keep_files <= 0) {
    if (::ftruncate(fd, 0) != 0) report("cannot truncate", base, errno);
    size = 0;  // even on failure: write on rather than retry on every chunk
    return;
  }
  // Shift only up to the first missing number: the older files beyond a gap stay older.
  const auto numbered = [&](int n) { return base + "." + std::to_string(n); };
  int top = 1;
  struct stat st{};
  while (top < keep_files && ::lstat(numbered(top).c_str(), &st) == 0) ++top;
  for (int n = top - 1; n >= 1; --n) {
    if (::rename(numbered(n).c_str(), numbered(n + 1).c_str()) != 0 && errno != ENOENT)
      report("cannot rename", numbered(n), errno);
  }
  const bool moved = ::rename(base.c_str(), numbered(1).c_str()) == 0;
  if (!moved) report("cannot rename", base, errno);
  ::close(fd);
  fd = -1;
  if (int err = open_file()) return report("cannot open", base, err);  // the batch drops the rest
  if (!moved) size = 0;  // still the full file: write on rather than rotate on every chunk
}

// Opens (appends to) the log; its current size counts toward the next rotation.
int RotatingFile::open_file() {
  const int f = ::open(base.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (f < 0) return errno;
  struct stat st{};
  regular = ::fstat(f, &st) != 0 || S_ISREG(st.st_mode);
  size = regular ? static_cast<std::uint64_t>(st.st_size) : 0;
  fd = f;
  return 0;
}

void RotatingFile::lose(const std::vector<std::string_view>& segs, std::size_t from) {
  std::uint64_t lost = 0;
  for (std::size_t i = from; i < segs.size(); ++i) lost += count_lines(segs[i]);
  lost_.fetch_add(lost, std::memory_order_relaxed);
}

// At most one log line per 10 s: a full disk must not flood the daemon's own log.
void RotatingFile::report(std::string_view what, const std::string& target, int err) {
  ++unreported;
  const auto now = std::chrono::steady_clock::now();
  if (reported && now - last_report < kErrorLogEvery) return;
  spdlog::error("[request-log] {} {}: {} ({} error(s) since the last report; {} line(s) lost so far)", what,
                target, error_text(err), unreported, lost_.load(std::memory_order_relaxed));
  reported = true;
  last_report = now;
  unreported = 0;
}

}  // namespace imageworks::telemetry
