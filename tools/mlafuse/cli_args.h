// Command-line options for the mlafuse subcommands: declared once, parsed, and listed in --help.
//
//   ArgParser p("compile", "build or read a graph and run the compiler pipeline");
//   int64_t layers = 1;
//   p.add_int("--layers", &layers, "N", "number of MLA layers", 1, 4096);
//   bool json = false;
//   p.add_flag("--json", &json, "print one JSON object");
//   if (!p.parse(args)) return 0;  // --help was printed
//
// Values are given as `--name VALUE` or `--name=VALUE`. Errors (unknown option, missing or
// malformed value, a value outside its range or choices, a stray positional argument) throw
// mlafuse::Error with one clear message naming the option.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mlafuse::cli {

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  void add_flag(std::string name, bool* out, std::string help);
  void add_string(std::string name, std::string* out, std::string meta, std::string help);
  void add_int(std::string name, int64_t* out, std::string meta, std::string help, int64_t min,
               int64_t max);
  void add_choice(std::string name, std::string* out, std::vector<std::string> choices,
                  std::string help);

  // `alias` is another spelling of the declared option `name` (kept for old command lines); the
  // parser and given() see only `name`.
  void add_alias(std::string alias, std::string name);

  // Returns false when --help / -h was given (the help went to stdout).
  bool parse(const std::vector<std::string>& args);
  // Whether the option appeared on the command line.
  bool given(std::string_view name) const { return given_.count(std::string(name)) != 0; }
  std::string help() const;

 private:
  enum class Kind { kFlag, kString, kInt, kChoice };
  struct Option {
    std::string name;
    Kind kind;
    void* out;
    std::string meta;
    std::string help;
    int64_t min = 0;
    int64_t max = 0;
    std::vector<std::string> choices;
  };
  void add(Option o);
  const Option* find(std::string_view name) const;
  void assign(const Option& o, const std::string& value);

  std::string command_;
  std::string summary_;
  std::vector<Option> options_;
  std::vector<std::pair<std::string, std::string>> aliases_;  // alias -> name
  std::set<std::string> given_;
};

// Writes a whole file; throws naming the path when it cannot be written.
void write_text_file(const std::string& path, std::string_view text);

}  // namespace mlafuse::cli
