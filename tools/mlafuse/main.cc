// mlafuse: compile, run and time MLA attention blocks with output quantization fused in.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "command.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cli {

static std::vector<CommandInfo>& registry() {
  static std::vector<CommandInfo> r;
  return r;
}
bool register_command(CommandInfo info) {
  registry().push_back(std::move(info));
  return true;
}
const std::vector<CommandInfo>& commands() { return registry(); }

}  // namespace mlafuse::cli

static void usage(FILE* f) {
  std::fprintf(f, "usage: mlafuse <command> [options]   (mlafuse <command> --help for options)\n");
  std::fprintf(f, "       mlafuse --version\n\n");
  for (const auto& c : mlafuse::cli::commands()) {
    std::fprintf(f, "  %-10s %s\n", c.name.c_str(), c.summary.c_str());
  }
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // The main job: with no command, run the DeepSeek-V3 block (the README's first command).
  if (args.empty()) args.push_back("run");
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    usage(stdout);
    return 0;
  }
  if (args[0] == "--version") {
    if (args.size() > 1) {
      std::fprintf(stderr, "mlafuse: --version takes no arguments, got '%s'\n", args[1].c_str());
      return 2;
    }
    std::string backends;
    for (const std::string& b : mlafuse::available_backends()) {
      backends += (backends.empty() ? "" : ", ") + b;
    }
    std::printf("mlafuse %s (backends built: %s)\n", MLAFUSE_VERSION, backends.c_str());
    return 0;
  }
  for (const auto& c : mlafuse::cli::commands()) {
    if (c.name != args[0]) continue;
    try {
      return c.run(std::vector<std::string>(args.begin() + 1, args.end()));
    } catch (const mlafuse::Error& e) {
      std::fprintf(stderr, "mlafuse %s: error: %s\n", c.name.c_str(), e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mlafuse %s: internal error: %s\n", c.name.c_str(), e.what());
      return 3;
    } catch (...) {
      std::fprintf(stderr, "mlafuse %s: internal error: a non-standard exception\n",
                   c.name.c_str());
      return 3;
    }
  }
  std::fprintf(stderr, "mlafuse: unknown command '%s'\n\n", args[0].c_str());
  usage(stderr);
  return 2;
}
