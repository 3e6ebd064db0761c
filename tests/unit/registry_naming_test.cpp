// Simplified names (§4): base name, size and quantization suffixes, unique ids.
#include <set>

#include <gtest/gtest.h>

#include "imageworks/registry.hpp"

namespace imageworks {
namespace {

struct NamingCase {
  const char* what;
  const char* display_name;
  const char* family;
  const char* name;
  const char* parameter_size;
  const char* quantization;
  const char* expected;
};

ModelEntry entry_of(const NamingCase& c) {
  ModelEntry e;
  e.display_name = c.display_name;
  e.family = c.family;
  e.name = c.name;
  e.parameter_size = c.parameter_size;
  e.quantization = c.quantization;
  return e;
}

const NamingCase kCases[] = {
    {"spec example", "llama", "", "x", "12.2b", "q4_k_m", "llama 12.2b (Q4 K M)"},
    {"missing size", "llama", "", "x", "", "q4_k_m", "llama (Q4 K M)"},
    {"missing quant", "llama", "", "x", "12.2b", "", "llama 12.2b"},
    {"missing both", "llama", "", "x", "", "", "llama"},
    {"odd casing of quant", "llama", "", "x", "7b", "Q4_k_M", "llama 7b (Q4 K M)"},
    {"base has size, other case", "Llama 12.2B", "", "x", "12.2b", "q4_k_m", "Llama 12.2B (Q4 K M)"},
    {"base has raw quant", "llama-12.2b-q4_k_m", "", "x", "12.2b", "q4_k_m", "llama-12.2b-q4_k_m"},
    {"base has quant label", "Llama 12.2b (Q4 K M)", "", "x", "12.2b", "q4_k_m", "Llama 12.2b (Q4 K M)"},
    {"base has label lower case", "llama (q4 k m)", "", "x", "", "q4_k_m", "llama (q4 k m)"},
    {"base has raw quant upper case", "llama Q4_K_M", "", "x", "7b", "q4_k_m", "llama Q4_K_M 7b"},
    {"family fallback", "", "gemma3", "gemma3-12b-it", "12.2b", "q4_k_m", "gemma3 12.2b (Q4 K M)"},
    {"name fallback", "", "", "my-model", "7b", "", "my-model 7b"},
    {"whitespace trimmed", "  llama  ", "", "x", " 7b ", " q8_0 ", "llama 7b (Q8 0)"},
    {"blank display name falls back", "   ", "mistral", "x", "7b", "", "mistral 7b"},
    {"size glued to a digit is not the size", "gemma-12b", "", "x", "2b", "", "gemma-12b 2b"},
    {"size after a dot is not the size", "phi 3.2b", "", "x", "2b", "", "phi 3.2b 2b"},
    {"family version is not the size", "", "llama3.2", "x", "3.2b", "q4_k_m", "llama3.2 3.2b (Q4 K M)"},
    {"size inside a dashed name", "Qwen2.5-7B-Instruct", "", "x", "7b", "awq", "Qwen2.5-7B-Instruct (AWQ)"},
    {"single-word quant", "Qwen2.5 7B Instruct", "", "x", "7b", "awq", "Qwen2.5 7B Instruct (AWQ)"},
    {"underscore separates tokens", "qwen_7b_chat", "", "x", "7b", "", "qwen_7b_chat"},
    {"everything blank but name", "", "", "only-name", "", "", "only-name"},
};

class NamingTable : public ::testing::TestWithParam<NamingCase> {};

TEST_P(NamingTable, SimplifiedName) {
  const auto& c = GetParam();
  EXPECT_EQ(simplified_name(entry_of(c)), c.expected) << c.what;
}

INSTANTIATE_TEST_SUITE_P(Naming, NamingTable, ::testing::ValuesIn(kCases));

TEST(NamingQuantLabel, UnderscoresBecomeSpacesUpperCase) {
  EXPECT_EQ(quant_label("q4_k_m"), "Q4 K M");
  EXPECT_EQ(quant_label("Q8_0"), "Q8 0");
  EXPECT_EQ(quant_label(" fp16 "), "FP16");
  EXPECT_EQ(quant_label(""), "");
}

TEST(NamingContainsToken, RespectsTokenBoundaries) {
  EXPECT_TRUE(contains_token("Llama 12.2B", "12.2b"));
  EXPECT_TRUE(contains_token("llama3.2:3b-instruct", "3b"));
  EXPECT_TRUE(contains_token("x_7b_y", "7b"));
  EXPECT_FALSE(contains_token("gemma-12b", "2b"));
  EXPECT_FALSE(contains_token("phi 3.2b", "2b"));
  EXPECT_FALSE(contains_token("7bx", "7b"));
  EXPECT_FALSE(contains_token("llama", ""));
  EXPECT_FALSE(contains_token("a", "abc"));
}

TEST(NamingUniqueIds, CollisionsGetNumberedSuffixesInOrder) {
  std::vector<std::string> ids = unique_ids({"a", "b", "a", "a"});
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "a [2]", "a [3]"}));
}

TEST(NamingUniqueIds, SuffixNeverCollidesWithARealName) {
  // A model really called "a [2]" keeps its name; the second "a" moves on to [3].
  EXPECT_EQ(unique_ids({"a", "a", "a [2]"}), (std::vector<std::string>{"a", "a [3]", "a [2]"}));
  EXPECT_EQ(unique_ids({"a [2]", "a", "a"}), (std::vector<std::string>{"a [2]", "a", "a [3]"}));
}

TEST(NamingUniqueIds, GeneratedSuffixesDoNotCollideWithEachOther) {
  // "a [2]" twice: the second becomes "a [2] [2]"; "a" twice skips the taken "a [2]".
  auto ids = unique_ids({"a", "a [2]", "a", "a [2]"});
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "a [2]", "a [3]", "a [2] [2]"}));
  std::set<std::string> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), ids.size());
}

TEST(NamingUniqueIds, EmptyAndDistinctInputsAreUnchanged) {
  EXPECT_TRUE(unique_ids({}).empty());
  EXPECT_EQ(unique_ids({"x", "y"}), (std::vector<std::string>{"x", "y"}));
}

}  // namespace
}  // namespace imageworks
