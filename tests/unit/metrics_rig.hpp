#pragma once
// Helpers of the Metrics tests: records, a clock the test moves, a reader of the Prometheus
// text (samples with their labels), and promtool as the format's oracle.
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "imageworks/request_record.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {

inline RequestRecord model_request(const std::string& model, double latency_ms, int status = 200,
                                   const std::string& error_code = "") {
  RequestRecord r;
  r.route = "/v1/chat/completions";
  r.model_requested = model;
  r.model_resolved = model;
  r.backend = "vllm";
  r.latency_ms = latency_ms;
  r.upstream_wait_ms = latency_ms * 0.9;
  r.status = status;
  r.error_code = error_code;
  return r;
}

// steady_clock time that moves only when the test says so.
class FakeClock {
 public:
  std::function<std::chrono::steady_clock::time_point()> fn() const {
    return [ms = ms_] { return kBase + std::chrono::milliseconds(ms->load()); };
  }
  void advance(std::chrono::milliseconds d) { *ms_ += d.count(); }

 private:
  static constexpr auto kBase = std::chrono::steady_clock::time_point{} + std::chrono::hours(1000);
  std::shared_ptr<std::atomic<std::int64_t>> ms_ = std::make_shared<std::atomic<std::int64_t>>(0);
};

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The samples of an exposition (comments skipped; label values unescaped).
inline std::vector<PromSample> parse_samples(const std::string& text) {
  std::vector<PromSample> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    PromSample s;
    std::size_t i = line.find_first_of("{ ");
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (line[i] != '}') {
        std::size_t eq = line.find('=', i);
        std::string key = line.substr(i, eq - i), value;
        for (i = eq + 2; line[i] != '"'; ++i) {
          if (line[i] == '\\') {
            ++i;
            value += line[i] == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
        }
        s.labels[key] = value;
        i += line[i + 1] == ',' ? 2 : 1;
      }
      ++i;
    }
    s.value = std::stod(line.substr(i + 1));
    out.push_back(std::move(s));
  }
  return out;
}

// Sum of the samples named `name` whose labels include `match`.
inline double sum_of(const std::vector<PromSample>& samples, const std::string& name,
                     const std::map<std::string, std::string>& match = {}) {
  double sum = 0;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool ok = true;
    for (const auto& [k, v] : match) ok = ok && s.labels.count(k) && s.labels.at(k) == v;
    if (ok) sum += s.value;
  }
  return sum;
}

inline std::size_t count_of(const std::vector<PromSample>& samples, const std::string& name) {
  std::size_t n = 0;
  for (const auto& s : samples) n += s.name == name;
  return n;
}

inline bool have_promtool() { return std::filesystem::exists("/usr/bin/promtool"); }

// `promtool check metrics` on `text`: its exit code and everything it printed.
inline std::pair<int, std::string> promtool_check(const std::string& text) {
  TempDir dir;
  auto in = dir.write("metrics.txt", text);
  auto out = dir.path() / "promtool.out";
  std::string cmd = "/usr/bin/promtool check metrics < '" + in.string() + "' > '" + out.string() + "' 2>&1";
  int status = std::system(cmd.c_str());
  std::ifstream f(out);
  std::stringstream printed;
  printed << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, printed.str()};
}

}  // namespace imageworks::test
