// Subcommands of the mlafuse CLI register themselves here; main() dispatches by name.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace mlafuse::cli {

using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct CommandInfo {
  std::string name;
  std::string summary;
  CommandFn run;
};

// Called from a static initialiser in each command's file.
bool register_command(CommandInfo info);
const std::vector<CommandInfo>& commands();

}  // namespace mlafuse::cli
