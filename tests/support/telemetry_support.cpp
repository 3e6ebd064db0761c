#include "support/telemetry_support.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "support/test_support.hpp"

namespace imageworks::test {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<fs::path> log_files(const fs::path& path) {
  std::vector<fs::path> out;
  if (fs::exists(path)) out.push_back(path);
  for (int i = 1; i < 1000000; ++i) {
    fs::path p = path.string() + "." + std::to_string(i);
    if (!fs::exists(p)) break;
    out.push_back(p);
  }
  return out;
}

std::vector<std::string> read_lines(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  EXPECT_TRUE(text.empty() || text.back() == '\n') << file << " ends with a torn line";
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(text.substr(start, nl - start));
  return lines;
}

std::vector<std::string> wait_for_log_lines(const fs::path& path, std::size_t n) {
  std::vector<std::string> all;
  for (int attempt = 0; attempt < 200; ++attempt) {
    all.clear();
    for (const auto& f : log_files(path))
      for (auto& l : read_lines(f)) all.push_back(std::move(l));
    if (all.size() >= n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the writer flushes on a timer
  }
  return all;
}

std::map<std::string, json> index_by_request_id(const std::vector<std::string>& lines) {
  std::map<std::string, json> out;
  for (const auto& l : lines) {
    auto j = json::parse(l, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("request_id")) << l;
    if (j.is_object() && j.contains("request_id")) out[j["request_id"].get<std::string>()] = j;
  }
  return out;
}

void expect_every_key(const json& line) {
  static const char* keys[] = {"ts", "request_id", "client", "route", "model_requested", "model_resolved",
                               "backend", "stream", "status", "error_code", "latency_ms", "ttft_ms",
                               "prompt_tokens", "completion_tokens", "switch_ms", "bytes_in", "bytes_out",
                               "user", "chat_id"};
  for (const char* k : keys) EXPECT_TRUE(line.contains(k)) << "missing " << k << " in " << line.dump();
  if (line.contains("ts")) {
    const std::string ts = line["ts"];
    EXPECT_EQ(ts.size(), 24u) << ts;  // 2026-12-01T20:22:06.123Z
    EXPECT_EQ(ts.back(), 'Z') << ts;
  }
}

namespace {

std::map<std::string, std::string> parse_labels(const std::string& s) {
  std::map<std::string, std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    auto eq = s.find('=', i);
    if (eq == std::string::npos) break;
    std::string name = s.substr(i, eq - i);
    std::string value;
    std::size_t j = eq + 2;  // after ="
    for (; j < s.size() && s[j] != '"'; ++j) {
      if (s[j] == '\\' && j + 1 < s.size()) {
        ++j;
        value += s[j] == 'n' ? '\n' : s[j];
      } else {
        value += s[j];
      }
    }
    out[name] = value;
    i = j + 1;
    if (i < s.size() && s[i] == ',') ++i;
  }
  return out;
}

}  // namespace

std::vector<Sample> parse_prometheus(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    if (brace != std::string::npos && brace < space) {
      auto close = line.rfind('}');
      s.name = line.substr(0, brace);
      s.labels = parse_labels(line.substr(brace + 1, close - brace - 1));
    } else {
      s.name = line.substr(0, space);
    }
    const std::string v = line.substr(space + 1);
    s.value = v == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(v);
    out.push_back(std::move(s));
  }
  return out;
}

double sum_samples(const std::vector<Sample>& samples, const std::string& name,
                   const std::map<std::string, std::string>& match) {
  double sum = 0;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool ok = std::all_of(match.begin(), match.end(), [&](const auto& kv) {
      auto it = s.labels.find(kv.first);
      return it != s.labels.end() && it->second == kv.second;
    });
    if (ok) sum += s.value;
  }
  return sum;
}

void expect_cumulative_buckets(const std::vector<Sample>& samples, const std::string& bucket_name) {
  std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> series;
  for (const auto& s : samples) {
    if (s.name != bucket_name) continue;
    auto labels = s.labels;
    const std::string le = labels["le"];
    labels.erase("le");
    double bound = le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le);
    series[labels].emplace_back(bound, s.value);
  }
  EXPECT_FALSE(series.empty()) << "no " << bucket_name;
  for (auto& [labels, buckets] : series) {
    std::sort(buckets.begin(), buckets.end());
    EXPECT_TRUE(std::isinf(buckets.back().first)) << "no +Inf bucket";
    for (std::size_t i = 1; i < buckets.size(); ++i)
      EXPECT_LE(buckets[i - 1].second, buckets[i].second) << bucket_name << " le=" << buckets[i].first;
  }
}

std::size_t count_samples(const std::vector<Sample>& samples, const std::string& name) {
  return static_cast<std::size_t>(
      std::count_if(samples.begin(), samples.end(), [&](const Sample& s) { return s.name == name; }));
}

bool have_promtool() { return fs::exists("/usr/bin/promtool"); }

std::pair<int, std::string> promtool_check(const std::string& text) {
  TempDir dir;
  auto file = dir.write("metrics.txt", text);
  auto out = dir.path() / "promtool.out";
  const std::string cmd = "/usr/bin/promtool check metrics < '" + file.string() + "' > '" + out.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(out);
  std::stringstream printed;
  printed << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, printed.str()};
}

void expect_promtool_accepts(const std::string& text) {
  if (!have_promtool()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  auto [code, printed] = promtool_check(text);
  EXPECT_EQ(code, 0) << "promtool check metrics failed:\n" << printed << "\n--- text ---\n" << text;
  EXPECT_EQ(printed, "") << "promtool lint:\n" << printed;
}

}  // namespace imageworks::test
