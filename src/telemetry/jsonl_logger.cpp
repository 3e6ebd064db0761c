// JsonlLogger (§10): append() copies the line into a buffer of the calling thread (a
// "shard": its own mutex, so the only contention is the writer's swap); one writer thread
// swaps the shards' buffers out and hands them to its RotatingFile (rotating_file.hpp).
#include "imageworks/telemetry.hpp"
#include "telemetry/rotating_file.hpp"

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <condition_variable>
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

}  // namespace

struct JsonlLogger::Impl {
  explicit Impl(JsonlLogOptions o);
  ~Impl();

  Shard& shard_for_this_thread();
  void wake_writer();
  void run();
  void collect(std::vector<std::string_view>& segs);

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

  // Writer thread only (and the constructor, before it starts).
  telemetry::RotatingFile file;
  std::vector<Shard*> batch_shards;

  std::thread writer;
};

JsonlLogger::Impl::Impl(JsonlLogOptions o)
    : opts(std::move(o)),
      base(opts.path.string()),
      // A small queue limit must still wake the writer before the shard is full.
      wake_bytes(std::clamp<std::size_t>(opts.queue_limit_bytes / 2, 1, kWakeBytes)),
      file(base, opts.max_bytes, opts.keep_files) {
  std::error_code dir_error;
  if (opts.path.has_parent_path()) std::filesystem::create_directories(opts.path.parent_path(), dir_error);
  if (int err = file.open_file()) {
    // open(2)'s reason names the problem best ("Not a directory" for a file in the way)
    // unless the directory could not be made at all (e.g. "Permission denied").
    const std::string why = dir_error && err == ENOENT
                                ? "cannot create " + opts.path.parent_path().string() + ": " + dir_error.message()
                                : telemetry::error_text(err);
    throw std::runtime_error("cannot open request log " + base + ": " + why);
  }
  writer = std::thread([this] { run(); });  // (on failure `file` closes itself)
}

JsonlLogger::Impl::~Impl() {
  {
    std::lock_guard lk(mu);
    stop = true;
  }
  wake_cv.notify_one();
  writer.join();  // its last batch takes everything appended before this point
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
      file.write_batch(segs);
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
  std::uint64_t n = impl_->file.lost();
  std::lock_guard reg(impl_->registry_mu);
  for (auto& s : impl_->shards) {
    std::lock_guard lk(s->mu);
    n += s->dropped;
  }
  return n;
}

const std::filesystem::path& JsonlLogger::path() const { return impl_->opts.path; }

}  // namespace imageworks
