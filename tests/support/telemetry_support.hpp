#pragma once
// Reading what the proxy recorded (§10): its JSONL request log (rotated files included) and
// its Prometheus text, for the end-to-end tests.
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace imageworks::test {

// path, path.1, path.2, … that exist (oldest last).
std::vector<std::filesystem::path> log_files(const std::filesystem::path& path);
std::vector<std::string> read_lines(const std::filesystem::path& file);
// The lines of every log file once there are at least n (polled, up to 10 s: the log's
// writer thread flushes every 200 ms); what there is after that.
std::vector<std::string> wait_for_log_lines(const std::filesystem::path& path, std::size_t n);
// Lines parsed and keyed by request_id (a line that does not parse fails the test).
std::map<std::string, nlohmann::json> index_by_request_id(const std::vector<std::string>& lines);
// Every key §10 names is present.
void expect_every_key(const nlohmann::json& line);

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
std::vector<Sample> parse_prometheus(const std::string& text);
// Sum of the samples named `name` whose labels include `match`.
double sum_samples(const std::vector<Sample>& samples, const std::string& name,
                   const std::map<std::string, std::string>& match = {});
std::size_t count_samples(const std::vector<Sample>& samples, const std::string& name);
// Per series, the buckets never decrease as le grows.
void expect_cumulative_buckets(const std::vector<Sample>& samples, const std::string& bucket_name);
bool have_promtool();
// `promtool check metrics` on `text`: its exit code and everything it printed.
std::pair<int, std::string> promtool_check(const std::string& text);
// `promtool check metrics` accepts the text, lint included (skipped without promtool).
void expect_promtool_accepts(const std::string& text);

}  // namespace imageworks::test
