// JsonlLogger (§10): append() copies the line into a buffer of the calling thread (a
// "shard": its own mutex, so the only contention is the writer's swap); one writer thread
// swaps the shards' buffers out, writes them with one writev(2) per batch and rotates the
// file before a write would pass max_bytes, cutting batches only between lines.
#include "imageworks/telemetry.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>

namespace imageworks {
namespace {

// A shard this full wakes the writer; only the append that crosses it notifies, so the
// event loop pays for a notify about once per 64 KiB, not per line.
constexpr std::size_t kWakeBytes = 64u << 10;
// Writer-side buffers bigger than this are freed after a burst instead of kept.
constexpr std::size_t kKeepCapacity = 1u << 20;
constexpr std::size_t kMaxIov = IOV_MAX;
constexpr auto kErrorLogEvery = std::chrono::seconds(10);

std::atomic<std::uint64_t> next_generation{1};

struct alignas(64) Shard {  // own cache line: shards of different threads never share one
  std::mutex mu;
  std::string buf;            // whole lines, oldest first; guarded by mu
  std::uint64_t dropped = 0;  // guarded by mu
  std::string out;            // the writer's side of the swap; only the writer touches it
};

// The shard of the logger this thread appended to last. Keyed by a generation number, not
// the logger's address: a later logger may be allocated where a destroyed one was.
struct ShardCache {
  std::uint64_t generation = 0;
  Shard* shard = nullptr;
};
thread_local ShardCache tls_shard;

std::string error_text(int err) {
  char buf[256];
  return strerror_r(err, buf, sizeof buf);  // GNU variant: thread-safe, returns the text
}

std::uint64_t count_lines(std::string_view s) { return std::count(s.begin(), s.end(), '\n'); }

// The length of the longest prefix of `s` of at most `limit` bytes that ends a line.
std::size_t whole_lines_within(std::string_view s, std::uint64_t limit) {
  if (limit == 0) return 0;
  const auto nl = s.substr(0, std::min<std::uint64_t>(limit, s.size())).rfind('\n');
  return nl == std::string_view::npos ? 0 : nl + 1;
}

}  // namespace

struct JsonlLogger::Impl {
  explicit Impl(JsonlLogOptions o);
  ~Impl();

  Shard& shard_for_this_thread();
  void wake_writer();
  void run();
  void collect(std::vector<std::string_view>& segs);
  void write_batch(std::vector<std::string_view>& segs);
  int write_chunk(const std::vector<std::string_view>& chunk);
  std::uint64_t write_all(const std::vector<std::string_view>& chunk, int& err);
  void rotate();
  int open_file();
  void lose(const std::vector<std::string_view>& segs, std::size_t from);
  void report(std::string_view what, const std::string& target, int err);

  const JsonlLogOptions opts;
  const std::string base;  // opts.path as a string; rotated files are base + ".N"
  const std::uint64_t generation = next_generation.fetch_add(1);
  const std::size_t wake_bytes;

  // Every thread that ever appended has a shard here until the logger dies.
  std::mutex registry_mu;
  std::vector<std::unique_ptr<Shard>> shards;
  std::unordered_map<std::thread::id, Shard*> by_thread;

  // Writer control. The writer never holds `mu` across I/O.
  std::mutex mu;
  std::condition_variable wake_cv, done_cv;
  bool wake = false, stop = false;
  std::uint64_t flush_requested = 0, flush_done = 0;

  std::atomic<std::uint64_t> write_dropped{0};

  // Writer thread only (and the constructor, before it starts).
  int fd = -1;
  std::uint64_t size = 0;  // bytes in the current file
  bool regular = true;     // a FIFO or a device (/dev/stdout) is written to, never rotated
  bool torn = false;       // a failed write left half a line at the end of the file
  std::vector<Shard*> batch_shards;
  std::vector<std::string_view> chunk;
  std::vector<iovec> iov;
  std::chrono::steady_clock::time_point last_report{};
  bool reported = false;
  std::uint64_t unreported = 0;

  std::thread writer;
};

JsonlLogger::Impl::Impl(JsonlLogOptions o)
    : opts(std::move(o)),
      base(opts.path.string()),
      // A small queue limit must still wake the writer before the shard is full.
      wake_bytes(std::clamp<std::size_t>(opts.queue_limit_bytes / 2, 1, kWakeBytes)) {
  std::error_code dir_error;
  if (opts.path.has_parent_path()) std::filesystem::create_directories(opts.path.parent_path(), dir_error);
  if (int err = open_file()) {
    // open(2)'s reason names the problem best ("Not a directory" for a file in the way)
    // unless the directory could not be made at all (e.g. "Permission denied").
    const std::string why = dir_error && err == ENOENT
                                ? "cannot create " + opts.path.parent_path().string() + ": " + dir_error.message()
                                : error_text(err);
    throw std::runtime_error("cannot open request log " + base + ": " + why);
  }
  try {
    writer = std::thread([this] { run(); });
  } catch (...) {
    ::close(fd);
    throw;
  }
}

JsonlLogger::Impl::~Impl() {
  {
    std::lock_guard lk(mu);
    stop = true;
  }
  wake_cv.notify_one();
  writer.join();  // its last batch takes everything appended before this point
  if (fd >= 0) ::close(fd);
}

Shard& JsonlLogger::Impl::shard_for_this_thread() {
  if (tls_shard.generation == generation) return *tls_shard.shard;
  std::lock_guard lk(registry_mu);
  // A thread id reused after its thread ended gets the old shard: harmless, it is unowned.
  Shard*& slot = by_thread[std::this_thread::get_id()];
  if (!slot) {
    shards.push_back(std::make_unique<Shard>());
    slot = shards.back().get();
  }
  tls_shard = {generation, slot};
  return *slot;
}

void JsonlLogger::Impl::wake_writer() {
  {
    std::lock_guard lk(mu);
    wake = true;
  }
  wake_cv.notify_one();
}

void JsonlLogger::Impl::run() {
  // wait_for(0) would spin; 1 ms is as eager as an idle writer needs to be.
  const auto interval = std::max(opts.flush_interval, std::chrono::milliseconds(1));
  std::vector<std::string_view> segs;
  for (;;) {
    std::uint64_t ticket = 0;
    bool stopping = false;
    {
      std::unique_lock lk(mu);
      wake_cv.wait_for(lk, interval, [&] { return wake || stop || flush_requested > flush_done; });
      wake = false;
      ticket = flush_requested;  // every line appended before these flushes is in a shard now
      stopping = stop;
    }
    try {
      collect(segs);
      write_batch(segs);
    } catch (const std::exception& e) {  // e.g. bad_alloc: the writer must outlive it
      spdlog::error("[request-log] {}: writer: {}", base, e.what());
    } catch (...) {
      spdlog::error("[request-log] {}: writer: unknown exception", base);
    }
    for (Shard* s : batch_shards) {
      if (s->out.capacity() > kKeepCapacity) std::string().swap(s->out);
      else s->out.clear();  // keeps its capacity for the next swap
    }
    {
      std::lock_guard lk(mu);
      flush_done = ticket;
    }
    done_cv.notify_all();
    if (stopping) return;
  }
}

// Takes every shard's lines by swapping its buffer with the (empty) one written last time.
void JsonlLogger::Impl::collect(std::vector<std::string_view>& segs) {
  segs.clear();
  batch_shards.clear();
  std::lock_guard reg(registry_mu);
  for (auto& s : shards) {
    {
      std::lock_guard lk(s->mu);
      s->buf.swap(s->out);
    }
    batch_shards.push_back(s.get());
    if (!s->out.empty()) segs.emplace_back(s->out);
  }
}

// Writes `segs` (each a run of whole lines) in as few writes as rotation allows: whatever
// fits below max_bytes, then a rotation, then the rest. A line longer than max_bytes gets a
// fresh file of its own rather than being split.
void JsonlLogger::Impl::write_batch(std::vector<std::string_view>& segs) {
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
    const std::uint64_t room = !regular ? UINT64_MAX : size < opts.max_bytes ? opts.max_bytes - size : 0;
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
int JsonlLogger::Impl::write_chunk(const std::vector<std::string_view>& chunk) {
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
  write_dropped.fetch_add(lost, std::memory_order_relaxed);
  ::close(fd);
  fd = -1;
  return err;
}

// writev(2) of the whole chunk, resuming after short writes. Returns the bytes written;
// `err` is the errno that stopped it, 0 when everything was written.
std::uint64_t JsonlLogger::Impl::write_all(const std::vector<std::string_view>& chunk, int& err) {
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
void JsonlLogger::Impl::rotate() {
  torn = false;  // the next line starts a new file
  if (opts.keep_files <= 0) {
    if (::ftruncate(fd, 0) != 0) report("cannot truncate", base, errno);
    size = 0;  // even on failure: write on rather than retry on every chunk
    return;
  }
  // Shift only up to the first missing number: the older files beyond a gap stay older.
  const auto numbered = [&](int n) { return base + "." + std::to_string(n); };
  int top = 1;
  struct stat st{};
  while (top < opts.keep_files && ::lstat(numbered(top).c_str(), &st) == 0) ++top;
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
int JsonlLogger::Impl::open_file() {
  const int f = ::open(base.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (f < 0) return errno;
  struct stat st{};
  regular = ::fstat(f, &st) != 0 || S_ISREG(st.st_mode);
  size = regular ? static_cast<std::uint64_t>(st.st_size) : 0;
  fd = f;
  return 0;
}

void JsonlLogger::Impl::lose(const std::vector<std::string_view>& segs, std::size_t from) {
  std::uint64_t lost = 0;
  for (std::size_t i = from; i < segs.size(); ++i) lost += count_lines(segs[i]);
  write_dropped.fetch_add(lost, std::memory_order_relaxed);
}

// At most one log line per 10 s: a full disk must not flood the daemon's own log.
void JsonlLogger::Impl::report(std::string_view what, const std::string& target, int err) {
  ++unreported;
  const auto now = std::chrono::steady_clock::now();
  if (reported && now - last_report < kErrorLogEvery) return;
  spdlog::error("[request-log] {} {}: {} ({} error(s) since the last report; {} line(s) lost so far)", what,
                target, error_text(err), unreported, write_dropped.load(std::memory_order_relaxed));
  reported = true;
  last_report = now;
  unreported = 0;
}

JsonlLogger::JsonlLogger(JsonlLogOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}

JsonlLogger::~JsonlLogger() = default;

bool JsonlLogger::append(std::string_view line) {
  if (line.empty()) return true;
  const bool add_newline = line.back() != '\n';  // a line without its '\n' would merge with the next
  const std::size_t n = line.size() + add_newline;
  Impl& m = *impl_;
  Shard& s = m.shard_for_this_thread();
  bool crossed = false;
  {
    std::lock_guard lk(s.mu);
    const std::size_t before = s.buf.size();
    if (before + n > m.opts.queue_limit_bytes) {
      ++s.dropped;
      return false;
    }
    s.buf.append(line);
    if (add_newline) s.buf.push_back('\n');
    crossed = before < m.wake_bytes && before + n >= m.wake_bytes;
  }
  if (crossed) m.wake_writer();
  return true;
}

void JsonlLogger::flush() {
  Impl& m = *impl_;
  std::unique_lock lk(m.mu);
  const std::uint64_t ticket = ++m.flush_requested;
  m.wake_cv.notify_one();
  m.done_cv.wait(lk, [&] { return m.flush_done >= ticket; });
}

std::uint64_t JsonlLogger::dropped() const {
  std::uint64_t n = impl_->write_dropped.load(std::memory_order_relaxed);
  std::lock_guard reg(impl_->registry_mu);
  for (auto& s : impl_->shards) {
    std::lock_guard lk(s->mu);
    n += s->dropped;
  }
  return n;
}

const std::filesystem::path& JsonlLogger::path() const { return impl_->opts.path; }

}  // namespace imageworks
