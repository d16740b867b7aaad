#include "json.h"

#include <cstdlib>
#include <string>
#include <unordered_set>

#include "sparsenet/errors.h"

namespace sparsenet {
namespace {

class Parser {
 public:
  Parser(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  Json document() {
    Json value = parse(0);
    skip();
    if (p_ != s_.size()) fail("trailing characters");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(where_ + ": invalid JSON at offset " + std::to_string(p_) + ": " + what);
  }
  void skip() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\r' || s_[p_] == '\t')) ++p_;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(p_, w.size(), w) != 0) return false;
    p_ += w.size();
    return true;
  }

  Json parse(int depth) {
    if (depth > 64) fail("nested too deeply");
    skip();
    if (p_ >= s_.size()) fail("unexpected end");
    Json v;
    const char c = s_[p_];
    if (c == '{') {
      v.type = Json::Type::kObject;
      std::unordered_set<std::string> keys;
      ++p_;
      skip();
      if (p_ < s_.size() && s_[p_] == '}') return ++p_, v;
      for (;;) {
        skip();
        if (p_ >= s_.size() || s_[p_] != '"') fail("expected a key");
        std::string key = str();
        if (!keys.insert(key).second) fail("duplicate key \"" + key + "\"");  // as Python's loader
        skip();
        if (p_ >= s_.size() || s_[p_] != ':') fail("expected ':'");
        ++p_;
        v.object.emplace_back(std::move(key), parse(depth + 1));
        skip();
        if (p_ < s_.size() && s_[p_] == ',') { ++p_; continue; }
        if (p_ < s_.size() && s_[p_] == '}') { ++p_; return v; }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.type = Json::Type::kArray;
      ++p_;
      skip();
      if (p_ < s_.size() && s_[p_] == ']') return ++p_, v;
      for (;;) {
        v.array.push_back(parse(depth + 1));
        skip();
        if (p_ < s_.size() && s_[p_] == ',') { ++p_; continue; }
        if (p_ < s_.size() && s_[p_] == ']') { ++p_; return v; }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.type = Json::Type::kString;
      v.string = str();
      return v;
    }
    if (literal("true")) { v.type = Json::Type::kBool; v.boolean = true; return v; }
    if (literal("false")) { v.type = Json::Type::kBool; return v; }
    if (literal("null")) return v;
    return number();
  }

  Json number() {
    const size_t start = p_;
    bool integral = true;
    if (p_ < s_.size() && s_[p_] == '-') ++p_;
    if (p_ >= s_.size() || s_[p_] < '0' || s_[p_] > '9') fail("unexpected character");
    while (p_ < s_.size() && ((s_[p_] >= '0' && s_[p_] <= '9') || s_[p_] == '.' || s_[p_] == 'e' ||
                              s_[p_] == 'E' || s_[p_] == '+' || s_[p_] == '-')) {
      if (s_[p_] == '.' || s_[p_] == 'e' || s_[p_] == 'E') integral = false;
      ++p_;
    }
    const std::string text = s_.substr(start, p_ - start);
    Json v;
    v.type = Json::Type::kNumber;
    char* end = nullptr;
    v.number = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) fail("bad number");
    if (integral && text.size() <= 18) {
      v.integral = true;
      v.integer = std::strtoll(text.c_str(), nullptr, 10);
    }
    return v;
  }

  std::string str() {
    ++p_;  // opening quote
    std::string out;
    while (p_ < s_.size() && s_[p_] != '"') {
      char c = s_[p_++];
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (p_ >= s_.size()) fail("bad escape");
      c = s_[p_++];
      switch (c) {
        case '"': case '\\': case '/': out += c; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (s_.size() - p_ < 4) fail("bad \\u escape");
          unsigned code = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = s_[p_++];
            code <<= 4;
            if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
            else fail("bad \\u escape");
          }
          // Basic Multilingual Plane only, as UTF-8 (surrogates kept as-is).
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xc0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3f));
          } else {
            out += static_cast<char>(0xe0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (code & 0x3f));
          }
          break;
        }
        default: fail("bad escape");
      }
    }
    if (p_ >= s_.size()) fail("unterminated string");
    ++p_;
    return out;
  }

  const std::string& s_;
  const std::string& where_;
  size_t p_ = 0;
};

}  // namespace

const Json* Json::find(const std::string& key) const {
  if (type != Type::kObject) return nullptr;
  for (const auto& kv : object)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Json parse_json(const std::string& text, const std::string& where) {
  return Parser(text, where).document();
}

}  // namespace sparsenet
