// A small streaming JSON writer for the CLI's --json output (one object per command).
//
//   JsonWriter j;
//   j.begin_object().key("passes").begin_array();
//   j.begin_object().key("name").value("dce").key("matches").value(int64_t{2}).end_object();
//   j.end_array().end_object();
//   std::puts(j.str().c_str());
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace mlafuse::cli {

std::string json_escape(std::string_view s);  // with the surrounding quotes

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(int64_t v);
  JsonWriter& value(int v) { return value(static_cast<int64_t>(v)); }
  JsonWriter& value(double v);  // non-finite values are written as null
  JsonWriter& value(bool v);
  JsonWriter& null();
  // {"k": v, ...} from a map of counts.
  JsonWriter& value(const std::map<std::string, int64_t>& counts);

  // The document; throws when objects or arrays are left open.
  std::string str() const;

 private:
  void before_value();
  std::string out_;
  std::vector<char> stack_;      // '{' or '['
  std::vector<bool> has_items_;  // per open container
  bool after_key_ = false;
};

}  // namespace mlafuse::cli
