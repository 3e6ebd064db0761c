// The settings agree three ways (§11): the CHAT_PROXY_* variables the code reads, the ones
// docs/configuration.md lists and the ones `imageworks-chat-proxy config` prints are the same
// set. And every option's value is read by some code, unless the option is marked as accepted
// without effect. Both read the source tree (IMAGEWORKS_SOURCE_DIR).
#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "imageworks/config.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Names = std::set<std::string>;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A C++ source split into code (comments and literals blanked out) and its string literals;
// `uncommented` is the source without its comments.
struct Lexed {
  std::string code, uncommented;
  std::vector<std::string> literals;
};

Lexed lex(const std::string& s) {
  Lexed out;
  const auto n = s.size();
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (std::size_t i = 0; i < n;) {
    const std::size_t start = i;
    const bool comment = s.compare(i, 2, "//") == 0 || s.compare(i, 2, "/*") == 0;
    if (s.compare(i, 2, "//") == 0) {
      i = std::min(s.find('\n', i), n);
    } else if (s.compare(i, 2, "/*") == 0) {
      auto end = s.find("*/", i + 2);
      i = end == std::string::npos ? n : end + 2;
    } else if (s.compare(i, 2, "R\"") == 0 && (i == 0 || !ident(s[i - 1]))) {
      auto open = s.find('(', i + 2);
      const std::string close = ")" + s.substr(i + 2, open - i - 2) + "\"";
      auto end = s.find(close, open);
      out.literals.push_back(s.substr(open + 1, end - open - 1));
      i = end == std::string::npos ? n : end + close.size();
    } else if (s[i] == '"') {
      std::string lit;
      for (++i; i < n && s[i] != '"'; ++i) {
        if (s[i] == '\\' && i + 1 < n) lit += s[i++];
        lit += s[i];
      }
      ++i;
      out.literals.push_back(std::move(lit));
    } else if (s[i] == '\'' && !(i > 0 && std::isxdigit(static_cast<unsigned char>(s[i - 1])) && i + 1 < n &&
                                 std::isxdigit(static_cast<unsigned char>(s[i + 1])))) {  // not 1'000
      for (++i; i < n && s[i] != '\''; ++i)
        if (s[i] == '\\') ++i;
      ++i;
    } else {
      out.uncommented += s[i];
      out.code += s[i++];
      continue;
    }
    out.code += ' ';
    out.uncommented += comment ? std::string(" ") : s.substr(start, i - start);
  }
  return out;
}

std::vector<fs::path> sources_under(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    auto ext = e.path().extension();
    if (e.is_regular_file() && (ext == ".cpp" || ext == ".hpp")) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path source_root() {
  auto root = source_dir();
  if (!fs::exists(root / "src" / "config" / "proxy_config.cpp"))
    ADD_FAILURE() << "no sources at " << root << " (set IMAGEWORKS_SOURCE_DIR)";
  return root;
}

Names names_in(const std::string& text, const std::regex& re) {
  Names out;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) out.insert((*it)[1]);
  return out;
}

const std::regex kVariable{R"(\b(CHAT_PROXY_[A-Z0-9_]*[A-Z0-9]))"};  // not the bare prefix

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// What the code reads: read_process_env() getenv()s the variable of every row of the option
// table (CHAT_PROXY_ + the field named in the row), and any CHAT_PROXY_* string literal in
// src/ or include/ names a variable too (an error message, a lookup).
Names variables_the_code_reads(const fs::path& root) {
  Names out;
  auto table = lex(read_text(root / "src" / "config" / "proxy_config.cpp"));
  // A row is `text("field", &C::field, …)`; bind_field() derives the variable from "field".
  const std::regex row{R"re(\b(?:text|integer|boolean|fraction|list)\(\s*"([a-z0-9_]+)")re"};
  for (const auto& field : names_in(table.uncommented, row)) out.insert("CHAT_PROXY_" + upper(field));
  for (const auto& dir : {root / "src", root / "include"}) {
    for (const auto& file : sources_under(dir)) {
      for (const auto& lit : lex(read_text(file)).literals)
        for (const auto& name : names_in(lit, kVariable)) out.insert(name);
    }
  }
  return out;
}

// The rows of docs/configuration.md's tables: "| `CHAT_PROXY_X` | `--x` | …".
Names variables_in_doc_tables(const fs::path& doc) {
  std::istringstream in(read_text(doc));
  Names out;
  const std::regex row{R"(^\| `(CHAT_PROXY_[A-Z0-9_]+)` \|)"};
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, m, row)) out.insert(m[1]);
  return out;
}

Names variables_config_prints(const std::map<std::string, std::string>& env) {
  auto r = run_proxy_command({"config"}, env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Names out;
  auto j = json::parse(r.out, nullptr, false);
  EXPECT_TRUE(j.is_object()) << r.out;
  if (j.is_object())
    for (const auto& [key, value] : j.items()) out.insert(key);
  return out;
}

std::string listed(const Names& names) {
  std::string out;
  for (const auto& n : names) out += " " + n;
  return out.empty() ? " (none)" : out;
}

// a minus b, for the failure message.
Names minus(const Names& a, const Names& b) {
  Names out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::inserter(out, out.end()));
  return out;
}

TEST(E2eCliConfigDocs, VariablesTheCodeReadsTheDocsListAndConfigPrintsAreOneSet) {
  TempDir registry;
  const auto root = source_root();
  const Names code = variables_the_code_reads(root);
  const Names docs = variables_in_doc_tables(root / "docs" / "configuration.md");
  const Names printed = variables_config_prints({{"CHAT_PROXY_REGISTRY_DIR", registry.path().string()}});
  EXPECT_GE(code.size(), 50u) << "the scan of the option table found too little:" << listed(code);
  EXPECT_EQ(code, docs) << "read but not documented:" << listed(minus(code, docs))
                        << "\ndocumented but not read:" << listed(minus(docs, code));
  EXPECT_EQ(code, printed) << "read but not printed by config:" << listed(minus(code, printed))
                           << "\nprinted but not read:" << listed(minus(printed, code));
  Names table;
  for (const auto& o : config_options()) table.insert(o.env);
  EXPECT_EQ(code, table) << "the source scan and config_options() disagree";
}

// IMAGEWORKS_OLLAMA_HOST is the one variable outside CHAT_PROXY_* (§11): read as the fallback
// of CHAT_PROXY_OLLAMA_BASE_URL, documented, and printed under that variable, not its own.
TEST(E2eCliConfigDocs, ImageworksOllamaHostIsReadDocumentedAndShownAsTheOllamaUrl) {
  TempDir registry;
  const auto root = source_root();
  bool in_code = false;
  for (const auto& lit : lex(read_text(root / "src" / "config" / "proxy_config.cpp")).literals)
    in_code = in_code || lit == "IMAGEWORKS_OLLAMA_HOST";
  EXPECT_TRUE(in_code);
  EXPECT_NE(read_text(root / "docs" / "configuration.md").find("`IMAGEWORKS_OLLAMA_HOST`"), std::string::npos);
  auto r = run_proxy_command({"config"}, {{"CHAT_PROXY_REGISTRY_DIR", registry.path().string()},
                                          {"IMAGEWORKS_OLLAMA_HOST", "ollama.test:11434"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out);
  EXPECT_EQ(j["CHAT_PROXY_OLLAMA_BASE_URL"], "http://ollama.test:11434");
  EXPECT_FALSE(j.contains("IMAGEWORKS_OLLAMA_HOST"));
}

// Prose anywhere in the docs may only name real variables. Exception: the misspelling that
// docs/configuration.md shows as the example of the typo warning.
TEST(E2eCliConfigDocs, DocsNameNoVariableThatDoesNotExist) {
  const auto root = source_root();
  Names options;
  for (const auto& o : config_options()) options.insert(o.env);
  const Names examples_of_typos{"CHAT_PROXY_PORTT"};
  std::vector<fs::path> docs{root / "README.md"};
  for (const auto& e : fs::directory_iterator(root / "docs"))
    if (e.path().extension() == ".md") docs.push_back(e.path());
  for (const auto& doc : docs) {
    auto unknown = minus(minus(names_in(read_text(doc), kVariable), options), examples_of_typos);
    EXPECT_TRUE(unknown.empty()) << doc.filename() << " names variables no option reads:" << listed(unknown);
  }
}

// ---- every option has an effect, or says it has none ---------------------------------------

// Options whose value only src/config uses, with the reason that is still an effect.
const std::map<std::string, std::string> kReadInsideConfig{
    {"CHAT_PROXY_API_KEYS_FILE", "load_config() reads the file's keys into api_keys"},
};

// Uses of cfg.<field> / cfg_.<field> / cfg-><field> in the code (comments and literals
// aside) of every file under src/ and include/ but the configuration's own. The daemon's
// ProxyConfig is named cfg (App::cfg, cfg_ in classes) everywhere; a read under another name
// shows up here as an unread option.
Names fields_read_outside_config(const fs::path& root) {
  Names out;
  const std::regex read{R"(\bcfg_?\s*(?:\.|->)\s*([a-z0-9_]+)\b)"};
  for (const auto& dir : {root / "src", root / "include"}) {
    for (const auto& file : sources_under(dir)) {
      if (file.parent_path() == root / "src" / "config" || file.filename() == "config.hpp") continue;
      auto found = names_in(lex(read_text(file)).code, read);
      out.insert(found.begin(), found.end());
    }
  }
  return out;
}

std::string field_of(const ConfigOption& o) {  // CHAT_PROXY_MAX_BODY_BYTES -> max_body_bytes
  std::string f = o.env.substr(std::string("CHAT_PROXY_").size());
  for (auto& c : f) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return f;
}

TEST(CliOptionUse, EveryOptionIsReadOrMarkedWithoutEffect) {
  const auto read = fields_read_outside_config(source_root());
  ASSERT_TRUE(read.count("port") && read.count("max_body_bytes")) << "the scan found no reads:" << listed(read);
  std::size_t unread = 0;
  for (const auto& o : config_options()) {
    const bool is_read = read.count(field_of(o)) > 0;
    if (auto it = kReadInsideConfig.find(o.env); it != kReadInsideConfig.end()) {
      EXPECT_FALSE(is_read) << o.env << " is read outside src/config now: drop it from kReadInsideConfig";
      EXPECT_TRUE(o.no_effect.empty()) << o.env << ": " << it->second;
      continue;
    }
    if (!is_read) ++unread;
    EXPECT_EQ(is_read, o.no_effect.empty())
        << o.env << (is_read ? " is read (cfg." + field_of(o) + ") but marked as without effect"
                             : ": no code reads cfg." + field_of(o) +
                                   "; use it, or mark the option no_effect in src/config/proxy_config.cpp");
  }
  EXPECT_EQ(unread, 1u) << "CHAT_PROXY_LOOPBACK_ALIAS is the one option accepted without effect today";
}

// `config` (stderr) and `serve` (log) name each set option that has no effect; unset, silence.
TEST(E2eCli, AnOptionWithoutEffectIsNamedWhenSet) {
  TempDir registry;
  std::map<std::string, std::string> env{{"CHAT_PROXY_REGISTRY_DIR", registry.path().string()}};
  const std::string warning =
      "warning: CHAT_PROXY_LOOPBACK_ALIAS is accepted but has no effect in imageworks-chat-proxy: ";
  auto quiet = run_proxy_command({"config"}, env);
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find("no effect"), std::string::npos) << quiet.err;
  auto by_flag = run_proxy_command({"config", "--loopback-alias", "imageworks-chat"}, env);
  ASSERT_EQ(by_flag.exit_code, 0) << by_flag.err;
  EXPECT_NE(by_flag.err.find(warning), std::string::npos) << by_flag.err;
  EXPECT_EQ(json::parse(by_flag.out)["CHAT_PROXY_LOOPBACK_ALIAS"], "imageworks-chat");
  env["CHAT_PROXY_LOOPBACK_ALIAS"] = "imageworks-chat";
  auto by_env = run_proxy_command({"config"}, env);
  ASSERT_EQ(by_env.exit_code, 0) << by_env.err;
  EXPECT_NE(by_env.err.find(warning), std::string::npos) << by_env.err;
  ProxyProcess proxy(env);
  EXPECT_TRUE(proxy.wait_for_log("CHAT_PROXY_LOOPBACK_ALIAS is accepted but has no effect", std::chrono::seconds(10)))
      << proxy.stderr_text();
}

}  // namespace
}  // namespace imageworks::test
