#pragma once
// --help: the "Examples:" footer of the program and of each subcommand, and the layout.
#include <memory>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

namespace imageworks::cli {

// `command`: "" for the program, else the subcommand's path ("models list", "config"…).
std::string help_footer(std::string_view command);

// CLI11's layout with the subcommands before the options (the ~60 settings' flags, in their
// section groups, would otherwise hide them) and one blank line between groups.
std::shared_ptr<CLI::Formatter> help_formatter(std::size_t column_width);

}  // namespace imageworks::cli
