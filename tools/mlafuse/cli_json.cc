#include "cli_json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "mlafuse/core/error.h"

namespace mlafuse::cli {

std::string json_escape(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

void JsonWriter::before_value() {
  if (stack_.empty()) {
    MLAFUSE_CHECK(out_.empty(), "JSON: one top-level value only");
    return;
  }
  if (stack_.back() == '{') {
    MLAFUSE_CHECK(after_key_, "JSON: a value inside an object needs a key");
    after_key_ = false;
    return;
  }
  if (has_items_.back()) out_ += ", ";
  has_items_.back() = true;
}

JsonWriter& JsonWriter::begin_object() {
  before_value();
  out_ += '{';
  stack_.push_back('{');
  has_items_.push_back(false);
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  MLAFUSE_CHECK(!stack_.empty() && stack_.back() == '{' && !after_key_,
                "JSON: end_object without an open object");
  stack_.pop_back();
  has_items_.pop_back();
  out_ += '}';
  return *this;
}

JsonWriter& JsonWriter::begin_array() {
  before_value();
  out_ += '[';
  stack_.push_back('[');
  has_items_.push_back(false);
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  MLAFUSE_CHECK(!stack_.empty() && stack_.back() == '[', "JSON: end_array without an open array");
  stack_.pop_back();
  has_items_.pop_back();
  out_ += ']';
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view k) {
  MLAFUSE_CHECK(!stack_.empty() && stack_.back() == '{' && !after_key_,
                "JSON: a key outside an object");
  if (has_items_.back()) out_ += ", ";
  has_items_.back() = true;
  out_ += json_escape(k) + ": ";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::value(std::string_view s) {
  before_value();
  out_ += json_escape(s);
  return *this;
}

JsonWriter& JsonWriter::value(int64_t v) {
  before_value();
  out_ += std::to_string(v);
  return *this;
}

JsonWriter& JsonWriter::value(double v) {
  before_value();
  if (!std::isfinite(v)) {
    out_ += "null";
    return *this;
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, res.ptr);
  return *this;
}

JsonWriter& JsonWriter::value(bool v) {
  before_value();
  out_ += v ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  before_value();
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::value(const std::map<std::string, int64_t>& counts) {
  begin_object();
  for (const auto& [k, v] : counts) key(k).value(v);
  return end_object();
}

std::string JsonWriter::str() const {
  MLAFUSE_CHECK(stack_.empty() && !out_.empty(), "JSON: the document is incomplete");
  return out_;
}

}  // namespace mlafuse::cli
