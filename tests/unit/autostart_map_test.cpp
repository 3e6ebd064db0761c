// CHAT_PROXY_AUTOSTART_MAP: `backend=command line` items, `backend:command` too, no shell.
#include <gtest/gtest.h>

#include "imageworks/autostart.hpp"

namespace imageworks {
namespace {

using Map = std::map<std::string, std::vector<std::string>>;

TEST(AutostartMap, BothSeparatorsQuotesAndSpaces) {
  EXPECT_EQ(parse_autostart_map("ollama=ollama serve"), (Map{{"ollama", {"ollama", "serve"}}}));
  EXPECT_EQ(parse_autostart_map(" ollama : ollama  serve , llamacpp=llama-server -m \"/models/a b.gguf\" --port 8080"),
            (Map{{"ollama", {"ollama", "serve"}}, {"llamacpp", {"llama-server", "-m", "/models/a b.gguf", "--port", "8080"}}}));
  EXPECT_EQ(parse_autostart_map(""), Map{});
  EXPECT_EQ(parse_autostart_map(" , "), Map{});
  // The first separator splits: a command may hold ':' and '=' itself.
  EXPECT_EQ(parse_autostart_map("openai=srv --bind 127.0.0.1:9000 --opt=x"),
            (Map{{"openai", {"srv", "--bind", "127.0.0.1:9000", "--opt=x"}}}));
}

TEST(AutostartMap, MalformedItemsNameTheVariable) {
  for (const char* bad : {"ollama", "=ollama serve", "ollama=", "ollama=   "}) {
    try {
      parse_autostart_map(bad);
      ADD_FAILURE() << bad;
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.variable, "CHAT_PROXY_AUTOSTART_MAP") << bad;
    }
  }
}

}  // namespace
}  // namespace imageworks
