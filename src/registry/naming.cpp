// Simplified model names (§4): the id OpenWebUI shows, matching the CLI's list.
#include <cctype>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

std::string_view trim(std::string_view s) {
  const auto* ws = " \t\r\n\f\v";
  auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }
bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

bool equal_ci_at(std::string_view hay, std::size_t pos, std::string_view needle) {
  for (std::size_t i = 0; i < needle.size(); ++i)
    if (lower(hay[pos + i]) != lower(needle[i])) return false;
  return true;
}

// The first non-empty of display_name, family, name.
std::string_view base_name(const ModelEntry& e) {
  for (std::string_view candidate : {std::string_view(e.display_name), std::string_view(e.family),
                                     std::string_view(e.name)}) {
    auto t = trim(candidate);
    if (!t.empty()) return t;
  }
  return {};
}

}  // namespace

bool contains_token(std::string_view haystack, std::string_view needle) {
  needle = trim(needle);
  if (needle.empty() || needle.size() > haystack.size()) return false;
  for (std::size_t pos = 0; pos + needle.size() <= haystack.size(); ++pos) {
    if (!equal_ci_at(haystack, pos, needle)) continue;
    // A '.' before counts as glued too: "2b" inside "3.2b" is a different size.
    bool left_ok = pos == 0 || (!alnum(haystack[pos - 1]) && haystack[pos - 1] != '.');
    auto end = pos + needle.size();
    bool right_ok = end == haystack.size() || !alnum(haystack[end]);
    if (left_ok && right_ok) return true;
  }
  return false;
}

std::string quant_label(std::string_view quantization) {
  std::string out;
  for (char c : trim(quantization))
    out += c == '_' ? ' ' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string simplified_name(const ModelEntry& e) {
  std::string name(base_name(e));
  auto size = trim(e.parameter_size);
  if (!size.empty() && !contains_token(name, size)) name += " " + std::string(size);
  auto quant = trim(e.quantization);
  auto label = quant_label(quant);
  // The base may spell the quantization either way: "…-q4_k_m" or "… (Q4 K M)".
  if (!quant.empty() && !contains_token(name, quant) && !contains_token(name, label))
    name += " (" + label + ")";
  return std::string(trim(name));
}

std::vector<std::string> unique_ids(const std::vector<std::string>& names) {
  // Reserve every plain name first so a generated " [2]" never steals a real model's name.
  std::set<std::string> taken(names.begin(), names.end());
  std::set<std::string> assigned;
  std::vector<std::string> ids;
  ids.reserve(names.size());
  for (const auto& n : names) {
    if (assigned.insert(n).second) {
      ids.push_back(n);
      continue;
    }
    for (int k = 2;; ++k) {
      auto candidate = n + " [" + std::to_string(k) + "]";
      if (taken.count(candidate) == 0) {
        taken.insert(candidate);
        assigned.insert(candidate);
        ids.push_back(candidate);
        break;
      }
    }
  }
  return ids;
}

}  // namespace imageworks
