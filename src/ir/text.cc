#include "mlafuse/ir/text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/verifier.h"

namespace mlafuse::ir {

// ---- printing ----------------------------------------------------------------------------------

namespace {

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);  // shortest form that reads back exactly
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // keep it an f64 in the text
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string attr_str(const AttrValue& v) {
  switch (v.index()) {
    case 0:
      return std::to_string(std::get<int64_t>(v));
    case 1:
      return format_double(std::get<double>(v));
    case 2:
      return std::get<bool>(v) ? "true" : "false";
    case 3:
      return quote(std::get<std::string>(v));
    default: {
      std::string s = "[";
      const auto& list = std::get<std::vector<int64_t>>(v);
      for (size_t i = 0; i < list.size(); ++i) s += (i ? ", " : "") + std::to_string(list[i]);
      return s + "]";
    }
  }
}

void append_ref(std::string& s, const Value* v) {
  if (v == nullptr) {
    s += '_';
    return;
  }
  s += '%';
  s += v->name();
}

}  // namespace

std::string print_graph(const Graph& g) {
  // Appends in place: printing is part of every compile (and of the timed pipeline).
  std::string s = "graph {\n";
  s.reserve(128 * (g.num_values() + g.num_nodes()));
  for (const auto* list : {&g.inputs(), &g.weights()}) {
    for (const Value* v : *list) {
      s += v->is_weight() ? "  weight %" : "  input %";
      s += v->name();
      s += " : ";
      s += v->type().str();
      s += '\n';
    }
  }
  for (const Node* n : g.nodes()) {
    s += "  ";
    for (size_t i = 0; i < n->num_outputs(); ++i) {
      if (i) s += ", ";
      append_ref(s, n->output(i));
    }
    s += " = ";
    s += n->op();
    s += '(';
    for (size_t i = 0; i < n->num_inputs(); ++i) {
      if (i) s += ", ";
      append_ref(s, n->input(i));
    }
    s += ')';
    if (!n->attrs().items().empty()) {
      s += " {";
      bool first = true;
      for (const auto& [key, v] : n->attrs().items()) {
        if (!first) s += ", ";
        first = false;
        s += key;
        s += " = ";
        s += attr_str(v);
      }
      s += '}';
    }
    s += " : ";
    for (size_t i = 0; i < n->num_outputs(); ++i) {
      if (i) s += ", ";
      const Value* v = n->output(i);
      s += v ? v->type().str() : std::string("_");
    }
    s += '\n';
  }
  if (!g.outputs().empty()) {
    s += "  output ";
    for (size_t i = 0; i < g.outputs().size(); ++i) {
      if (i) s += ", ";
      append_ref(s, g.outputs()[i]);
    }
    s += '\n';
  }
  s += "}\n";
  return s;
}

// ---- parsing -----------------------------------------------------------------------------------

ParseError::ParseError(const std::string& source, int line, int column, const std::string& message)
    : Error(source + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message),
      line_(line),
      column_(column),
      message_(message) {}

namespace {

enum class Tok { kEnd, kIdent, kName, kNumber, kString, kPunct };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;  // identifier, name without '%', number text, unescaped string, punctuation
  int line = 1;
  int col = 1;
};

std::string describe(const Token& t) {
  switch (t.kind) {
    case Tok::kEnd:
      return "end of input";
    case Tok::kIdent:
      return "'" + t.text + "'";
    case Tok::kName:
      return "'%" + t.text + "'";
    case Tok::kNumber:
      return "number " + t.text;
    case Tok::kString:
      return "a string";
    case Tok::kPunct:
      return "'" + t.text + "'";
  }
  return "?";
}

class Lexer {
 public:
  Lexer(std::string_view text, const std::string& source) : s_(text), source_(source) {}

  [[noreturn]] void fail(int line, int col, const std::string& msg) const {
    throw ParseError(source_, line, col, msg);
  }

  Token next() {
    skip_space();
    Token t;
    t.line = line_;
    t.col = col_;
    if (pos_ >= s_.size()) return t;
    const char c = s_[pos_];
    if (c == '%') {
      advance();
      const size_t start = pos_;
      while (pos_ < s_.size() && is_name_char(s_[pos_])) advance();
      if (pos_ == start) fail(t.line, t.col, "expected a value name after '%'");
      t.kind = Tok::kName;
      t.text = std::string(s_.substr(start, pos_ - start));
      return t;
    }
    if (is_alpha(c) || c == '_') {
      const size_t start = pos_;
      while (pos_ < s_.size() && (is_alpha(s_[pos_]) || is_digit(s_[pos_]) || s_[pos_] == '_')) {
        advance();
      }
      t.kind = Tok::kIdent;
      t.text = std::string(s_.substr(start, pos_ - start));
      return t;
    }
    if (is_digit(c) || c == '-' || c == '+') return number(t);
    if (c == '"') return string(t);
    if (std::string_view("{}()[],=:").find(c) != std::string_view::npos) {
      advance();
      t.kind = Tok::kPunct;
      t.text = std::string(1, c);
      return t;
    }
    const unsigned char uc = static_cast<unsigned char>(c);
    if (uc < 0x20 || uc >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "0x%02x", uc);
      fail(t.line, t.col, std::string("unexpected byte ") + buf);
    }
    fail(t.line, t.col, std::string("unexpected character '") + c + "'");
  }

 private:
  static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_name_char(char c) {
    return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
  }

  void advance() {
    if (s_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
    ++pos_;
  }

  void skip_space() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (c == '/' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '/') {
        while (pos_ < s_.size() && s_[pos_] != '\n') advance();
      } else {
        break;
      }
    }
  }

  // [-+]? (digits ('.' digits*)? ([eE] [-+]? digits)? | inf | nan)
  Token number(Token t) {
    const size_t start = pos_;
    if (s_[pos_] == '-' || s_[pos_] == '+') advance();
    if (s_.substr(pos_, 3) == "inf" || s_.substr(pos_, 3) == "nan") {
      for (int i = 0; i < 3; ++i) advance();
    } else {
      if (pos_ >= s_.size() || !is_digit(s_[pos_])) fail(t.line, t.col, "expected a digit");
      while (pos_ < s_.size() && is_digit(s_[pos_])) advance();
      if (pos_ < s_.size() && s_[pos_] == '.') {
        advance();
        while (pos_ < s_.size() && is_digit(s_[pos_])) advance();
      }
      if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
        advance();
        if (pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) advance();
        if (pos_ >= s_.size() || !is_digit(s_[pos_])) {
          fail(line_, col_, "expected the exponent's digits");
        }
        while (pos_ < s_.size() && is_digit(s_[pos_])) advance();
      }
    }
    if (pos_ < s_.size() && (is_alpha(s_[pos_]) || s_[pos_] == '_')) {
      fail(line_, col_, "unexpected character after a number");
    }
    t.kind = Tok::kNumber;
    t.text = std::string(s_.substr(start, pos_ - start));
    return t;
  }

  Token string(Token t) {
    advance();  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size() || s_[pos_] == '\n') fail(t.line, t.col, "unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        advance();
        break;
      }
      if (c != '\\') {
        out += c;
        advance();
        continue;
      }
      const int esc_line = line_, esc_col = col_;
      advance();
      if (pos_ >= s_.size()) fail(t.line, t.col, "unterminated string");
      const char e = s_[pos_];
      advance();
      if (e == '"' || e == '\\') {
        out += e;
      } else if (e == 'n') {
        out += '\n';
      } else if (e == 'x') {
        int v = 0;
        for (int i = 0; i < 2; ++i) {
          if (pos_ >= s_.size()) fail(esc_line, esc_col, "\\x needs two hex digits");
          const char h = s_[pos_];
          int d = (h >= '0' && h <= '9')   ? h - '0'
                  : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                  : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                           : -1;
          if (d < 0) fail(esc_line, esc_col, "\\x needs two hex digits");
          v = v * 16 + d;
          advance();
        }
        out += static_cast<char>(v);
      } else {
        fail(esc_line, esc_col, std::string("unknown escape '\\") + e + "'");
      }
    }
    t.kind = Tok::kString;
    t.text = std::move(out);
    return t;
  }

  std::string_view s_;
  const std::string& source_;
  size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
};

class Parser {
 public:
  Parser(std::string_view text, const ParseOptions& opts)
      : lex_(text, opts.source_name), opts_(opts) {
    tok_ = lex_.next();
  }

  Graph parse() {
    expect_ident("graph");
    expect_punct("{");
    while (!is_punct("}")) {
      if (tok_.kind == Tok::kEnd) fail(tok_, "expected '}' closing the graph");
      statement();
    }
    take();
    if (tok_.kind != Tok::kEnd) fail(tok_, "unexpected " + describe(tok_) + " after the graph");
    if (opts_.verify) {
      try {
        verify(g_);
      } catch (const Error& e) {
        throw ParseError(opts_.source_name, 1, 1, e.what());
      }
    }
    return std::move(g_);
  }

 private:
  [[noreturn]] void fail(const Token& at, const std::string& msg) const {
    lex_.fail(at.line, at.col, msg);
  }
  Token take() {
    Token t = std::move(tok_);
    tok_ = lex_.next();
    return t;
  }
  bool is_punct(const char* p) const { return tok_.kind == Tok::kPunct && tok_.text == p; }
  bool is_ident(const char* w) const { return tok_.kind == Tok::kIdent && tok_.text == w; }
  void expect_punct(const char* p) {
    if (!is_punct(p)) fail(tok_, std::string("expected '") + p + "', got " + describe(tok_));
    take();
  }
  void expect_ident(const char* w) {
    if (!is_ident(w)) fail(tok_, std::string("expected '") + w + "', got " + describe(tok_));
    take();
  }
  Token expect(Tok kind, const char* what) {
    if (tok_.kind != kind) fail(tok_, std::string("expected ") + what + ", got " + describe(tok_));
    return take();
  }

  void statement() {
    if (is_ident("input") || is_ident("weight")) {
      const bool weight = tok_.text == "weight";
      take();
      const Token name = expect(Tok::kName, "a value name (%name)");
      expect_punct(":");
      ValueType type = parse_type();
      check_new_name(name);
      if (weight) {
        g_.add_weight(name.text, std::move(type));
      } else {
        g_.add_input(name.text, std::move(type));
      }
      return;
    }
    if (is_ident("output")) {
      take();
      while (true) {
        const Token name = expect(Tok::kName, "a value name (%name)");
        Value* v = lookup(name);
        if (v->is_graph_output()) fail(name, "%" + name.text + " is already a graph output");
        g_.mark_output(v);
        if (!is_punct(",")) break;
        take();
      }
      return;
    }
    if (tok_.kind == Tok::kName || is_ident("_")) {
      node();
      return;
    }
    fail(tok_,
         "expected 'input', 'weight', 'output' or a node (%name = op(...)), got " + describe(tok_));
  }

  // %a, %b, _ = op(%x, _) {k = v} : type, type, _
  void node() {
    std::vector<Token> results;
    while (true) {
      if (tok_.kind == Tok::kName) {
        results.push_back(take());
      } else if (is_ident("_")) {
        results.push_back(take());
      } else {
        fail(tok_, "expected a result name (%name) or '_', got " + describe(tok_));
      }
      if (!is_punct(",")) break;
      take();
    }
    expect_punct("=");
    const Token op = expect(Tok::kIdent, "an op name");
    const OpSchema* schema = OpRegistry::global().find(op.text);
    if (schema == nullptr) {
      std::string known;
      for (const std::string& n : OpRegistry::global().names()) {
        known += (known.empty() ? "" : ", ") + n;
      }
      fail(op, "unknown op '" + op.text + "' (known: " + known + ")");
    }
    expect_punct("(");
    std::vector<Value*> inputs;
    if (!is_punct(")")) {
      while (true) {
        if (tok_.kind == Tok::kName) {
          const Token name = take();
          inputs.push_back(lookup(name));
        } else if (is_ident("_")) {
          take();
          inputs.push_back(nullptr);
        } else {
          fail(tok_, "expected an operand (%name or '_'), got " + describe(tok_));
        }
        if (inputs.size() > schema->inputs.size()) {
          fail(op, op.text + " takes " + std::to_string(schema->inputs.size()) + " inputs");
        }
        if (!is_punct(",")) break;
        take();
      }
    }
    expect_punct(")");
    AttrMap attrs;
    if (is_punct("{")) attrs = parse_attrs();
    expect_punct(":");
    std::vector<std::optional<ValueType>> types;
    std::vector<Token> type_tokens;
    while (true) {
      type_tokens.push_back(tok_);
      if (is_ident("_")) {
        take();
        types.push_back(std::nullopt);
      } else {
        types.push_back(parse_type());
      }
      if (!is_punct(",")) break;
      take();
    }
    if (types.size() != results.size()) {
      fail(type_tokens.back(), std::to_string(results.size()) + " result(s) but " +
                                   std::to_string(types.size()) + " type(s)");
    }
    if (results.size() > schema->outputs.size()) {
      fail(results[schema->outputs.size()],
           op.text + " has " + std::to_string(schema->outputs.size()) + " outputs");
    }
    std::vector<OutputDecl> outs(results.size());
    for (size_t i = 0; i < results.size(); ++i) {
      const bool absent = results[i].kind != Tok::kName;
      if (absent != !types[i].has_value()) {
        fail(type_tokens[i], "result " + std::to_string(i) +
                                 (absent ? " is '_' but has a type" : " needs a type, not '_'"));
      }
      if (absent) continue;
      check_new_name(results[i]);
      for (size_t j = 0; j < i; ++j) {
        if (results[j].kind == Tok::kName && results[j].text == results[i].text) {
          fail(results[i], "%" + results[i].text + " is defined twice");
        }
      }
      outs[i] = OutputDecl{results[i].text, types[i]};
    }
    inputs.resize(schema->inputs.size(), nullptr);
    if (opts_.verify) check_node(op, *schema, inputs, attrs, outs);
    try {
      g_.add_node_typed(op.text, std::move(inputs), std::move(attrs), std::move(outs));
    } catch (const Error& e) {
      fail(op, e.what());
    }
  }

  // The verifier's per-node check, at the node's position in the text.
  void check_node(const Token& op, const OpSchema& schema, const std::vector<Value*>& inputs,
                  const AttrMap& attrs, std::vector<OutputDecl>& outs) {
    std::vector<const ValueType*> in_types(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
      in_types[i] = inputs[i] ? &inputs[i]->type() : nullptr;
    std::vector<std::optional<ValueType>> expected;
    try {
      expected = schema.infer_outputs(in_types, attrs);
    } catch (const Error& e) {
      fail(op, e.what());
    }
    for (size_t i = 0; i < expected.size(); ++i) {
      const std::optional<ValueType> actual = i < outs.size() ? outs[i].type : std::nullopt;
      if (actual == expected[i]) continue;
      fail(op, op.text + " output " + schema.outputs[i].name + " is " +
                   (actual ? actual->str() : "absent") + ", the op infers " +
                   (expected[i] ? expected[i]->str() : "absent"));
    }
  }

  AttrMap parse_attrs() {
    expect_punct("{");
    AttrMap attrs;
    if (is_punct("}")) {
      take();
      return attrs;
    }
    while (true) {
      const Token key = expect(Tok::kIdent, "an attribute name");
      if (attrs.has(key.text)) fail(key, "attribute '" + key.text + "' is given twice");
      expect_punct("=");
      attrs.set(key.text, parse_attr_value());
      if (!is_punct(",")) break;
      take();
    }
    expect_punct("}");
    return attrs;
  }

  AttrValue parse_attr_value() {
    if (is_ident("true") || is_ident("false")) return take().text == "true";
    if (tok_.kind == Tok::kString) return take().text;
    if (tok_.kind == Tok::kNumber) {
      const Token t = take();
      const bool is_float = t.text.find_first_of(".eEin") != std::string::npos;
      return is_float ? AttrValue(to_double(t)) : AttrValue(to_int(t));
    }
    if (is_punct("[")) {
      take();
      std::vector<int64_t> list;
      if (!is_punct("]")) {
        while (true) {
          const Token t = expect(Tok::kNumber, "an integer");
          if (t.text.find_first_of(".eEin") != std::string::npos) {
            fail(t, "list attributes hold integers, got " + t.text);
          }
          list.push_back(to_int(t));
          if (!is_punct(",")) break;
          take();
        }
      }
      expect_punct("]");
      return list;
    }
    fail(tok_,
         "expected an attribute value (integer, float, true/false, string or [list]), "
         "got " +
             describe(tok_));
  }

  int64_t to_int(const Token& t) const {
    std::string_view s = t.text;
    if (!s.empty() && s[0] == '+') s.remove_prefix(1);
    int64_t v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec != std::errc() || res.ptr != s.data() + s.size()) {
      fail(t, "integer " + t.text + " is out of range (64-bit)");
    }
    return v;
  }

  double to_double(const Token& t) const {
    std::string_view s = t.text;
    bool neg = false;
    if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
      neg = s[0] == '-';
      s.remove_prefix(1);
    }
    if (s == "inf") return neg ? -INFINITY : INFINITY;
    if (s == "nan") return NAN;
    double v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec != std::errc() || res.ptr != s.data() + s.size()) {
      fail(t, "float " + t.text + " is out of range");
    }
    return neg ? -v : v;
  }

  // dtype[dims]{layout}
  ValueType parse_type() {
    const Token dt = expect(Tok::kIdent, "a dtype (bf16, f32, fp8e4m3, ...)");
    ValueType t;
    auto dtype = parse_dtype(dt.text);
    if (!dtype) fail(dt, "unknown dtype '" + dt.text + "'");
    t.dtype = *dtype;
    expect_punct("[");
    if (!is_punct("]")) {
      while (true) {
        if (is_ident("T")) {
          take();
          t.shape.dims.push_back(Dim::tokens());
        } else {
          const Token n = expect(Tok::kNumber, "a dimension (an integer or T)");
          if (n.text.find_first_not_of("0123456789") != std::string::npos) {
            fail(n, "a dimension is a non-negative integer or T, got " + n.text);
          }
          t.shape.dims.push_back(Dim::fixed(to_int(n)));
        }
        if (t.shape.rank() > 8) fail(tok_, "a shape has at most 8 dimensions");
        if (!is_punct(",")) break;
        take();
      }
    }
    const Token close = tok_;
    expect_punct("]");
    if (!fixed_bytes_fit(t.shape, dtype_size(t.dtype))) {
      fail(close, "type " + dt.text + t.shape.str() + " is more than 2^63 bytes");
    }
    if (is_punct("{")) {
      take();
      const Token l = expect(Tok::kIdent, "a layout name");
      auto layout = parse_layout(l.text);
      if (!layout) {
        fail(l, "unknown layout '" + l.text +
                    "' (known: row_major, col_major, col_major_tma, nvfp4_swizzled)");
      }
      t.layout = *layout;
      expect_punct("}");
    }
    return t;
  }

  Value* lookup(const Token& name) const {
    Value* v = g_.find_value(name.text);
    if (v == nullptr) fail(name, "%" + name.text + " is not defined");
    return v;
  }

  void check_new_name(const Token& name) const {
    if (g_.find_value(name.text) != nullptr) fail(name, "%" + name.text + " is already defined");
  }

  Lexer lex_;
  const ParseOptions& opts_;
  Token tok_;
  Graph g_;
};

}  // namespace

Graph parse_graph(std::string_view text, const ParseOptions& options) {
  Parser p(text, options);
  return p.parse();
}

// ---- Graphviz ----------------------------------------------------------------------------------

namespace {

std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Graphviz ids: "v12" for a value, "n7" for a node, "o12" for a graph-output marker.
std::string dot_id(char prefix, int64_t id) {
  std::string s = std::to_string(id);
  s.insert(s.begin(), prefix);  // (not "v" + to_string(): GCC 12 warns falsely on that)
  return s;
}
std::string value_node_id(const Value* v) { return dot_id('v', v->id()); }

}  // namespace

std::string to_dot(const Graph& g) {
  std::string s =
      "digraph mlafuse {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n"
      "  edge [fontname=\"monospace\", fontsize=9];\n";
  for (const auto* list : {&g.inputs(), &g.weights()}) {
    for (const Value* v : *list) {
      s += "  " + value_node_id(v) + " [shape=ellipse, label=\"" +
           dot_escape((v->is_weight() ? "weight %" : "input %") + v->name() + "\n" +
                      v->type().str()) +
           "\"" + (v->is_weight() ? ", style=dashed" : "") + "];\n";
    }
  }
  for (const Node* n : g.nodes()) {
    std::string label = n->op();
    for (const auto& [key, v] : n->attrs().items()) label += "\n" + key + " = " + attr_str(v);
    s += "  " + dot_id('n', n->id()) + " [shape=box, style=rounded, label=\"" + dot_escape(label) +
         "\"];\n";
  }
  auto source = [](const Value* v) {
    return v->producer() ? dot_id('n', v->producer()->id()) : value_node_id(v);
  };
  auto edge_label = [](const Value* v) {
    return v->producer() ? "%" + v->name() + "\n" + v->type().str() : std::string();
  };
  for (const Node* n : g.nodes()) {
    for (size_t i = 0; i < n->num_inputs(); ++i) {
      const Value* v = n->input(i);
      if (v == nullptr) continue;
      s += "  " + source(v) + " -> " + dot_id('n', n->id()) + " [label=\"" +
           dot_escape(edge_label(v) + (v->producer() ? "\n" : "") + "(" +
                      n->schema().inputs[i].name + ")") +
           "\"];\n";
    }
  }
  for (const Value* v : g.outputs()) {
    const std::string id = dot_id('o', v->id());
    s += "  " + id + " [shape=doubleoctagon, label=\"" +
         dot_escape("output %" + v->name() + "\n" + v->type().str()) + "\"];\n";
    s += "  " + source(v) + " -> " + id + ";\n";
  }
  return s + "}\n";
}

}  // namespace mlafuse::ir
