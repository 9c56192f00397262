#include "cli_args.h"

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mlafuse/core/error.h"

namespace mlafuse::cli {

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void ArgParser::add(Option o) {
  MLAFUSE_CHECK(o.name.rfind("--", 0) == 0 && o.name.size() > 2,
                "option names start with --: ", o.name);
  MLAFUSE_CHECK(find(o.name) == nullptr, "option ", o.name, " is declared twice");
  options_.push_back(std::move(o));
}

void ArgParser::add_flag(std::string name, bool* out, std::string help) {
  add(Option{std::move(name), Kind::kFlag, out, "", std::move(help), 0, 0, {}});
}

void ArgParser::add_string(std::string name, std::string* out, std::string meta, std::string help) {
  add(Option{std::move(name), Kind::kString, out, std::move(meta), std::move(help), 0, 0, {}});
}

void ArgParser::add_int(std::string name, int64_t* out, std::string meta, std::string help,
                        int64_t min, int64_t max) {
  add(Option{std::move(name), Kind::kInt, out, std::move(meta), std::move(help), min, max, {}});
}

void ArgParser::add_choice(std::string name, std::string* out, std::vector<std::string> choices,
                           std::string help) {
  std::string meta;
  for (const auto& c : choices) meta += (meta.empty() ? "" : "|") + c;
  add(Option{std::move(name), Kind::kChoice, out, std::move(meta), std::move(help), 0, 0,
             std::move(choices)});
}

void ArgParser::add_alias(std::string alias, std::string name) {
  MLAFUSE_CHECK(find(name) != nullptr && find(alias) == nullptr, "alias ", alias, " of ", name);
  aliases_.emplace_back(std::move(alias), std::move(name));
}

const ArgParser::Option* ArgParser::find(std::string_view name) const {
  for (const Option& o : options_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

void ArgParser::assign(const Option& o, const std::string& value) {
  switch (o.kind) {
    case Kind::kFlag:
      *static_cast<bool*>(o.out) = true;
      return;
    case Kind::kString:
      MLAFUSE_CHECK(!value.empty(), "option ", o.name, " needs a non-empty ", o.meta);
      *static_cast<std::string*>(o.out) = value;
      return;
    case Kind::kInt: {
      int64_t v = 0;
      auto res = std::from_chars(value.data(), value.data() + value.size(), v);
      MLAFUSE_CHECK(res.ec == std::errc() && res.ptr == value.data() + value.size(), "option ",
                    o.name, " expects an integer ", o.meta, ", got '", value, "'");
      MLAFUSE_CHECK(v >= o.min && v <= o.max, "option ", o.name, " must be in [", o.min, ", ",
                    o.max, "], got ", v);
      *static_cast<int64_t*>(o.out) = v;
      return;
    }
    case Kind::kChoice:
      for (const auto& c : o.choices) {
        if (c == value) {
          *static_cast<std::string*>(o.out) = value;
          return;
        }
      }
      MLAFUSE_FAIL("option ", o.name, " must be one of ", o.meta, ", got '", value, "'");
  }
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    MLAFUSE_CHECK(arg.rfind("--", 0) == 0, "unexpected argument '", arg,
                  "' (options start with --; see mlafuse ", command_, " --help)");
    const size_t eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    for (const auto& [alias, target] : aliases_) {
      if (name == alias) name = target;
    }
    const Option* o = find(name);
    MLAFUSE_CHECK(o != nullptr, "unknown option '", name, "' (see mlafuse ", command_, " --help)");
    MLAFUSE_CHECK(given_.insert(name).second, "option ", name, " is given twice");
    if (o->kind == Kind::kFlag) {
      MLAFUSE_CHECK(eq == std::string::npos, "option ", name, " takes no value");
      assign(*o, "");
      continue;
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else {
      MLAFUSE_CHECK(i + 1 < args.size(), "option ", name, " needs a value (", o->meta, ")");
      value = args[++i];
    }
    assign(*o, value);
  }
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream os;
  os << "usage: mlafuse " << command_ << " [options]\n" << summary_ << "\n\noptions:\n";
  for (const Option& o : options_) {
    std::string left = o.name + (o.meta.empty() ? "" : " " + o.meta);
    os << "  " << left;
    for (size_t pad = left.size(); pad < 28; ++pad) os << ' ';
    os << ' ' << o.help << '\n';
  }
  for (const auto& [alias, target] : aliases_) {
    std::string left = alias;
    for (size_t pad = left.size(); pad < 28; ++pad) left += ' ';
    os << "  " << left << " the same as " << target << '\n';
  }
  os << "  --help                       this text\n";
  return os.str();
}

void write_text_file(const std::string& path, std::string_view text) {
  std::error_code ec;
  MLAFUSE_CHECK(!std::filesystem::is_directory(path, ec), "cannot write '", path,
                "': it is a directory, not a file");
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  MLAFUSE_CHECK(f.good(), "cannot write '", path, "'");
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  MLAFUSE_CHECK(!f.fail(), "error while writing '", path, "'");
}

}  // namespace mlafuse::cli
