#pragma once
// Test helper for the response rules: compares parsed JSON where an expected string "$ID<n>"
// stands for a synthesised tool-call id. Such an id must look like call_ + 24 [A-Za-z0-9],
// be the same wherever the same placeholder appears in one case, and differ between
// placeholders.
#include <map>
#include <regex>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace rules_test {

inline bool looks_synthesised(const std::string& id) {
  static const std::regex pattern("^call_[A-Za-z0-9]{24}$");
  return std::regex_match(id, pattern);
}

class IdBinder {
 public:
  ::testing::AssertionResult match(const nlohmann::json& expected, const nlohmann::json& actual,
                                   const std::string& path = "$") {
    if (expected.is_string() && expected.get<std::string>().rfind("$ID", 0) == 0) {
      if (!actual.is_string() || !looks_synthesised(actual.get<std::string>()))
        return ::testing::AssertionFailure() << path << ": " << actual.dump() << " is not a synthesised id";
      const std::string placeholder = expected.get<std::string>(), id = actual.get<std::string>();
      for (const auto& [other, value] : bound_)
        if (other != placeholder && value == id)
          return ::testing::AssertionFailure() << path << ": " << placeholder << " reuses " << other << "'s id";
      auto [it, inserted] = bound_.emplace(placeholder, id);
      if (!inserted && it->second != id)
        return ::testing::AssertionFailure() << path << ": " << placeholder << " was " << it->second << ", now " << id;
      return ::testing::AssertionSuccess();
    }
    if (expected.type() != actual.type() && !(expected.is_number() && actual.is_number()))
      return ::testing::AssertionFailure() << path << ": expected " << expected.dump() << ", got " << actual.dump();
    if (expected.is_object()) {
      if (expected.size() != actual.size())
        return ::testing::AssertionFailure() << path << ": expected " << expected.dump() << ", got " << actual.dump();
      for (const auto& [key, value] : expected.items()) {
        if (!actual.contains(key)) return ::testing::AssertionFailure() << path << ": missing " << key << " in " << actual.dump();
        if (auto r = match(value, actual[key], path + "." + key); !r) return r;
      }
      return ::testing::AssertionSuccess();
    }
    if (expected.is_array()) {
      if (expected.size() != actual.size())
        return ::testing::AssertionFailure() << path << ": expected " << expected.dump() << ", got " << actual.dump();
      for (std::size_t i = 0; i < expected.size(); ++i)
        if (auto r = match(expected[i], actual[i], path + "[" + std::to_string(i) + "]"); !r) return r;
      return ::testing::AssertionSuccess();
    }
    if (expected != actual)
      return ::testing::AssertionFailure() << path << ": expected " << expected.dump() << ", got " << actual.dump();
    return ::testing::AssertionSuccess();
  }

 private:
  std::map<std::string, std::string> bound_;
};

}  // namespace rules_test
