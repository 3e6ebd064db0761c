// JsonlLogger against real files: lines from many threads arrive whole and exactly once
// across rotations, keep_files bounds the rotated files, a full queue drops instead of
// blocking (the writer stalled on a FIFO nobody reads), and flush() is a real barrier.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "imageworks/telemetry.hpp"
#include "support/test_support.hpp"

namespace imageworks {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

// A JSON line, built by hand: the tests append ~10 MiB and a json dump per line would
// dominate their time under the sanitizers.
std::string make_line(int thread, int id, std::size_t pad = 20) {
  return "{\"t\":" + std::to_string(thread) + ",\"i\":" + std::to_string(id) + ",\"pad\":\"" +
         std::string(pad, 'x') + "\"}\n";
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The lines of a file; every one must be complete (end in '\n').
std::vector<std::string> read_lines(const fs::path& p) {
  const std::string text = read_all(p);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << p << " ends in half a line";
  std::vector<std::string> lines;
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t nl = text.find('\n', at);
    const std::size_t end = nl == std::string::npos ? text.size() : nl;
    lines.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return lines;
}

fs::path numbered(const fs::path& p, int n) { return p.string() + "." + std::to_string(n); }

// path.N … path.1, path: the log oldest first. Also checks that the numbers are contiguous
// and that no file other than these lives in the directory.
std::vector<fs::path> log_files(const fs::path& p) {
  int n = 0;
  while (fs::exists(numbered(p, n + 1))) ++n;
  std::vector<fs::path> files;
  for (int i = n; i >= 1; --i) files.push_back(numbered(p, i));
  if (fs::exists(p)) files.push_back(p);
  std::size_t in_dir = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(p.parent_path())) ++in_dir;
  EXPECT_EQ(in_dir, files.size()) << "rotated files are not numbered contiguously";
  return files;
}

struct Parsed {
  int t, i;
};
Parsed parse(const std::string& line) {
  const json j = json::parse(line);  // throws (fails the test) on a torn line
  return {j.at("t").get<int>(), j.at("i").get<int>()};
}

// Appends `per_thread` lines from each of `threads` threads at once; none may be dropped.
void append_from_threads(JsonlLogger& log, int threads, int per_thread, std::size_t pad = 20) {
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) ASSERT_TRUE(log.append(make_line(t, i, pad)));
    });
  }
  for (auto& w : workers) w.join();
}

TEST(JsonlLogger, ManyThreadsEveryLineOnceWholeAcrossRotations) {
  TempDir tmp;
  const fs::path path = tmp.path() / "logs" / "requests.jsonl";  // the directory is created
  constexpr std::uint64_t kMax = 16 << 10;
  constexpr int kThreads = 8, kLines = 5000;
  {
    JsonlLogger log({.path = path, .max_bytes = kMax, .keep_files = 1000, .flush_interval = std::chrono::milliseconds(5)});
    append_from_threads(log, kThreads, kLines);
    EXPECT_EQ(log.dropped(), 0u);
  }
  const auto files = log_files(path);
  ASSERT_GT(files.size(), 10u);
  std::vector<std::vector<bool>> seen(kThreads, std::vector<bool>(kLines, false));
  std::vector<int> last(kThreads, -1);
  for (const auto& f : files) {
    EXPECT_LE(fs::file_size(f), kMax) << f;
    for (const auto& line : read_lines(f)) {
      const auto [t, i] = parse(line);
      ASSERT_TRUE(t >= 0 && t < kThreads && i >= 0 && i < kLines) << line;
      EXPECT_FALSE(seen[t][i]) << "twice: " << line;
      seen[t][i] = true;
      EXPECT_GT(i, last[t]) << "out of order: " << line;  // a thread's lines keep their order
      last[t] = i;
    }
  }
  for (int t = 0; t < kThreads; ++t)
    EXPECT_EQ(std::count(seen[t].begin(), seen[t].end(), true), kLines) << "thread " << t;
}

TEST(JsonlLogger, KeepFilesKeepsTheLastLinesInOrder) {
  TempDir tmp;
  const fs::path path = tmp.path() / "requests.jsonl";
  constexpr int kThreads = 3, kLines = 4000;
  {
    JsonlLogger log({.path = path, .max_bytes = 4096, .keep_files = 3, .flush_interval = std::chrono::milliseconds(5)});
    append_from_threads(log, kThreads, kLines);
  }
  const auto files = log_files(path);
  ASSERT_EQ(files.size(), 4u);  // path.3, path.2, path.1, path
  EXPECT_EQ(files.back(), path);
  // Each thread's kept lines are the tail of what it wrote: contiguous, in order, up to its last.
  std::map<int, std::vector<int>> kept;
  Parsed newest{-1, -1};
  for (const auto& f : files) {
    const auto lines = read_lines(f);
    EXPECT_FALSE(lines.empty()) << f;
    for (const auto& line : lines) kept[(newest = parse(line)).t].push_back(newest.i);
  }
  EXPECT_EQ(newest.i, kLines - 1);  // the file `path` ends with a thread's very last line
  for (const auto& [t, ids] : kept) {
    for (std::size_t k = 0; k < ids.size(); ++k)
      ASSERT_EQ(ids[k], kLines - static_cast<int>(ids.size()) + static_cast<int>(k)) << "thread " << t;
  }
}

TEST(JsonlLogger, KeepFilesZeroLeavesOnlyTheCurrentFile) {
  TempDir tmp;
  const fs::path path = tmp.path() / "requests.jsonl";
  constexpr int kLines = 3000;
  {
    JsonlLogger log({.path = path, .max_bytes = 2048, .keep_files = 0});
    for (int i = 0; i < kLines; ++i) ASSERT_TRUE(log.append(make_line(0, i)));
  }
  ASSERT_EQ(log_files(path), std::vector<fs::path>{path});
  EXPECT_LE(fs::file_size(path), 2048u);
  const auto lines = read_lines(path);
  ASSERT_FALSE(lines.empty());
  for (std::size_t k = 0; k < lines.size(); ++k)
    EXPECT_EQ(parse(lines[k]).i, kLines - static_cast<int>(lines.size()) + static_cast<int>(k));
}

TEST(JsonlLogger, LineLongerThanMaxBytesIsWrittenWholeAlone) {
  TempDir tmp;
  const fs::path path = tmp.path() / "requests.jsonl";
  const std::string before = make_line(0, 0), huge = make_line(0, 1, 5000), after = make_line(0, 2);
  {
    JsonlLogger log({.path = path, .max_bytes = 1000, .keep_files = 10});
    ASSERT_TRUE(log.append(before));
    ASSERT_TRUE(log.append(huge));
    ASSERT_TRUE(log.append(after));
  }
  EXPECT_EQ(log_files(path), (std::vector<fs::path>{numbered(path, 2), numbered(path, 1), path}));
  EXPECT_EQ(read_all(numbered(path, 2)), before);
  EXPECT_EQ(read_all(numbered(path, 1)), huge);
  EXPECT_EQ(read_all(path), after);
}

TEST(JsonlLogger, FullQueueDropsWithoutBlockingAndCountsDrops) {
  TempDir tmp;
  const fs::path path = tmp.path() / "requests.fifo";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  // A reader that does not read yet: the logger's open succeeds, its writes stall once the
  // pipe (64 KiB) is full.
  const int reader = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  constexpr int kLines = 100000;  // ~10 MiB
  std::size_t refused = 0;
  std::string drained;
  std::thread drain;
  {
    JsonlLogger log({.path = path, .max_bytes = 1ull << 40, .queue_limit_bytes = 64 << 10});
    for (int i = 0; i < kLines; ++i) refused += !log.append(make_line(0, i, 80));
    EXPECT_GT(refused, 0u);
    EXPECT_EQ(log.dropped(), refused);
    // Now read everything, so the writer can finish; EOF comes when the logger closes.
    ::fcntl(reader, F_SETFL, ::fcntl(reader, F_GETFL) & ~O_NONBLOCK);
    drain = std::thread([&] {
      char buf[1 << 16];
      for (ssize_t n; (n = ::read(reader, buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        ASSERT_GT(n, 0) << std::strerror(errno);
        drained.append(buf, static_cast<std::size_t>(n));
      }
    });
  }
  drain.join();
  ::close(reader);
  ASSERT_TRUE(drained.empty() || drained.back() == '\n');
  std::size_t read_lines_count = 0;
  int previous = -1;
  for (std::size_t at = 0; at < drained.size(); ++read_lines_count) {
    const std::size_t nl = drained.find('\n', at);
    const int i = parse(drained.substr(at, nl - at)).i;
    EXPECT_GT(i, previous);
    previous = i;
    at = nl + 1;
  }
  EXPECT_EQ(read_lines_count + refused, static_cast<std::size_t>(kLines));
}

TEST(JsonlLogger, ConstructorNamesPathAndReason) {
  TempDir tmp;
  const fs::path file = tmp.write("file", "not a directory\n");
  const fs::path under_file = file / "log.jsonl";
  try {
    JsonlLogger log({.path = under_file});
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot open request log " + under_file.string() + ": Not a directory");
  }
  try {
    JsonlLogger log({.path = tmp.path()});  // a directory
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot open request log " + tmp.path().string() + ": Is a directory");
  }
}

TEST(JsonlLogger, AppendsToExistingFileAndCountsItsSize) {
  TempDir tmp;
  const std::string old_lines = make_line(9, 0, 400) + make_line(9, 1, 400);  // ~860 bytes
  const fs::path path = tmp.write("requests.jsonl", old_lines);
  const std::string small = make_line(1, 0, 20), big = make_line(1, 1, 200);
  {
    JsonlLogger log({.path = path, .max_bytes = 1000, .keep_files = 2});
    ASSERT_TRUE(log.append(small));  // fits after the old lines
    log.flush();
    EXPECT_EQ(read_all(path), old_lines + small);
    ASSERT_TRUE(log.append(big));  // would pass 1000 bytes together with the old ones
  }
  EXPECT_EQ(log_files(path), (std::vector<fs::path>{numbered(path, 1), path}));
  EXPECT_EQ(read_all(numbered(path, 1)), old_lines + small);
  EXPECT_EQ(read_all(path), big);
}

TEST(JsonlLogger, FlushMakesLinesVisibleWhileOpen) {
  TempDir tmp;
  const fs::path path = tmp.path() / "requests.jsonl";
  JsonlLogger log({.path = path, .flush_interval = std::chrono::hours(1)});  // only flush() writes
  EXPECT_EQ(log.path(), path);
  log.flush();  // nothing queued: returns at once
  EXPECT_EQ(read_all(path), "");
  std::vector<std::string> expected;
  for (int round = 0; round < 3; ++round) {
    // Lines from another thread are covered too, once its append() has returned.
    std::thread([&] { ASSERT_TRUE(log.append(make_line(1, round))); }).join();
    ASSERT_TRUE(log.append(make_line(0, round)));
    for (int t : {0, 1}) expected.push_back(make_line(t, round).substr(0, make_line(t, round).size() - 1));
    log.flush();
    auto lines = read_lines(path);  // the order between threads' buffers is not fixed
    std::sort(lines.begin(), lines.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(lines, expected);
  }
  EXPECT_TRUE(log.append("no newline"));  // the logger ends the line itself
  log.flush();
  EXPECT_EQ(read_lines(path).back(), "no newline");
  EXPECT_EQ(log.dropped(), 0u);
}

TEST(JsonlLogger, FailedWritesAreCountedAndTheWriterGoesOn) {
  // /dev/full: open succeeds, every write fails with ENOSPC. A device is never rotated.
  JsonlLogger log({.path = "/dev/full", .max_bytes = 100});
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(log.append(make_line(0, i)));
  log.flush();  // returns although nothing could be written
  EXPECT_EQ(log.dropped(), 10u);
  ASSERT_TRUE(log.append(make_line(0, 10)));
  log.flush();
  EXPECT_EQ(log.dropped(), 11u);
  EXPECT_TRUE(fs::exists("/dev/full"));
  EXPECT_FALSE(fs::exists("/dev/full.1"));
}

TEST(JsonlLogger, LineBiggerThanTheQueueIsDropped) {
  TempDir tmp;
  JsonlLogger log({.path = tmp.path() / "requests.jsonl", .queue_limit_bytes = 100});
  EXPECT_FALSE(log.append(std::string(200, 'x') + "\n"));
  EXPECT_TRUE(log.append(make_line(0, 0)));
  EXPECT_EQ(log.dropped(), 1u);
}

}  // namespace
}  // namespace imageworks
