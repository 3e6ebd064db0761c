// --help (§12): a short description, the subcommands, the settings' flags grouped by section,
// and an "Examples:" section of real invocations — for the program and each subcommand.
#include <filesystem>

#include <gtest/gtest.h>

#include "imageworks/config.hpp"
#include "support/proxy_process.hpp"
#include "support/test_support.hpp"

namespace imageworks::test {
namespace {

CommandResult help(std::vector<std::string> args) {
  args.push_back("--help");
  return run_proxy_command(args, {});
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(E2eCliHelp, ProgramHelpHasSubcommandsGroupedOptionsAndExamples) {
  auto r = help({});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto& out = r.out;
  EXPECT_NE(out.find("One OpenAI-compatible /v1 for every model"), std::string::npos) << out;
  for (const char* sub : {"serve", "config", "models", "activate-model", "current-model", "vllm-executor"})
    EXPECT_NE(out.find("\n  " + std::string(sub) + " "), std::string::npos) << "subcommand " << sub << "\n" << out;
  const auto examples = out.find("\nExamples:\n");
  ASSERT_NE(examples, std::string::npos) << out;
  for (const char* example : {
           "  imageworks-chat-proxy serve --host 0.0.0.0 --port 8100 --registry-dir ",
           "  imageworks-chat-proxy config ",
           "  imageworks-chat-proxy models list ",
           "  imageworks-chat-proxy models list --json ",
           "  imageworks-chat-proxy activate-model \"llama 12.2b (Q4 K M)\"",
           "  imageworks-chat-proxy activate-model --stop ",
           "  imageworks-chat-proxy current-model ",
           "  imageworks-chat-proxy vllm-executor --port 8600 ",
           "  docker exec imageworks-chat-proxy imageworks-chat-proxy activate-model NAME\n",
           "  imageworks-models list --json ",
       })
    EXPECT_NE(out.find(example, examples), std::string::npos) << "example " << example << "\n" << out;
  // Every setting once, under the heading of its section; the sections in table order.
  std::size_t last_heading = 0;
  std::string section;
  for (const auto& o : config_options()) {
    if (o.section != section) {
      section = o.section;
      auto heading = out.find("\n" + section + ":\n");
      ASSERT_NE(heading, std::string::npos) << "no group " << section << "\n" << out;
      EXPECT_GT(heading, last_heading) << section << " out of order";
      last_heading = heading;
    }
    auto at = out.find("  " + o.flag + " VALUE");
    EXPECT_NE(at, std::string::npos) << o.flag;
    EXPECT_EQ(count(out, "  " + o.flag + " "), 1u) << o.flag;
    EXPECT_GT(at, last_heading) << o.flag << " is not under " << section;
    EXPECT_LT(at, examples) << o.flag;
  }
  EXPECT_NE(out.find("--max-body-bytes is CHAT_PROXY_MAX_BODY_BYTES", examples), std::string::npos)
      << "the footer says how a flag names its variable";
  const auto subcommands = out.find("\nSubcommands:\n");
  ASSERT_NE(subcommands, std::string::npos);
  EXPECT_LT(subcommands, out.find("\nServer:\n")) << "the subcommands come before the ~60 settings";
  EXPECT_NE(out.find("--loopback-alias VALUE"), std::string::npos);
  EXPECT_NE(out.find("(no effect)"), std::string::npos) << "the option without effect says so";
}

TEST(E2eCliHelp, EverySubcommandHasItsOwnExamples) {
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases{
      {{"serve"}, {"imageworks-chat-proxy serve --host 0.0.0.0 --port 8100"}},
      {{"config"}, {"imageworks-chat-proxy config\n", "imageworks-chat-proxy config --port 9000"}},
      {{"models"}, {"imageworks-chat-proxy models list\n", "imageworks-chat-proxy models list --json\n"}},
      {{"models", "list"}, {"imageworks-chat-proxy models list --json\n", "imageworks-models list --json", "--url"}},
      {{"activate-model"},
       {"imageworks-chat-proxy activate-model --stop\n",
        "docker exec imageworks-chat-proxy imageworks-chat-proxy activate-model NAME\n", "NAME", "--stop"}},
      {{"current-model"}, {"imageworks-chat-proxy current-model\n", "--url"}},
      {{"vllm-executor"}, {"imageworks-chat-proxy vllm-executor --host 0.0.0.0 --port 8600"}},
  };
  for (const auto& [args, wanted] : cases) {
    auto r = help(args);
    const auto name = args.back();
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
    const auto examples = r.out.find("\nExamples:\n");
    ASSERT_NE(examples, std::string::npos) << name << "\n" << r.out;
    for (const auto& w : wanted) EXPECT_NE(r.out.find(w), std::string::npos) << name << ": " << w << "\n" << r.out;
    EXPECT_EQ(r.out.find("--max-body-bytes"), std::string::npos) << name << ": the settings are the program's help";
  }
}

TEST(E2eCliHelp, ImageworksModelsHelpIsTheModelsHelp) {
  TempDir dir;
  auto link = dir.path() / "imageworks-models";
  std::filesystem::create_symlink(proxy_binary(), link);
  std::string cmd = "'" + link.string() + "' --help 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[1024];
  while (auto n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << out;
  EXPECT_NE(out.find("imageworks-chat-proxy models list --json\n"), std::string::npos) << out;
  EXPECT_NE(out.find("list"), std::string::npos) << out;
}

}  // namespace
}  // namespace imageworks::test
