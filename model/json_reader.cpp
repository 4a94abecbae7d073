// Path-tracking JSON object reader: the single place plan-like inputs are validated from.
#include "model/json_reader.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ditwin {

int edit_distance(const std::string& a, const std::string& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      int substitution = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, substitution});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_word(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  int best_distance = 1 << 30;
  for (const auto& c : candidates) {
    int d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  // Suggest only when the typo is small relative to the word.
  int limit = std::max<int>(2, static_cast<int>(word.size()) / 3);
  return best_distance <= limit ? best : std::string();
}

static const nlohmann::json& empty_object() {
  static const nlohmann::json e = nlohmann::json::object();
  return e;
}

JsonReader::JsonReader(const nlohmann::json& object, std::string path)
    : object_(object), path_(std::move(path)) {
  if (!object_.is_object()) {
    throw InputError((path_.empty() ? std::string("plan") : path_) + ": must be a JSON object, got " +
                     std::string(object_.type_name()));
  }
}

std::string JsonReader::path_of(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

bool JsonReader::has(const std::string& key) const {
  auto it = object_.find(key);
  return it != object_.end() && !it->is_null();  // null means absent
}

void JsonReader::fail(const std::string& key, const std::string& rule) const {
  throw InputError(path_of(key) + ": " + rule);
}

const nlohmann::json* JsonReader::find(const std::string& key) {
  known_.insert(key);
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

static std::string shown(const nlohmann::json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

double JsonReader::number(const std::string& key) {
  const auto* v = find(key);
  if (!v) fail(key, "is required");
  if (!v->is_number()) fail(key, "must be a number, got " + shown(*v));
  double d = v->get<double>();
  if (!std::isfinite(d)) fail(key, "must be finite");
  return d;
}

double JsonReader::number(const std::string& key, double fallback) {
  return find(key) ? number(key) : fallback;
}

long long JsonReader::integer(const std::string& key) {
  const auto* v = find(key);
  if (!v) fail(key, "is required");
  if (v->is_number_integer()) return v->get<long long>();
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9e15) return static_cast<long long>(d);
  }
  fail(key, "must be an integer, got " + shown(*v));
}

long long JsonReader::integer(const std::string& key, long long fallback) {
  return find(key) ? integer(key) : fallback;
}

bool JsonReader::boolean(const std::string& key, bool fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail(key, "must be true or false, got " + shown(*v));
  return v->get<bool>();
}

std::string JsonReader::string(const std::string& key) {
  const auto* v = find(key);
  if (!v) fail(key, "is required");
  if (!v->is_string()) fail(key, "must be a string, got " + shown(*v));
  return v->get<std::string>();
}

std::string JsonReader::string(const std::string& key, const std::string& fallback) {
  return find(key) ? string(key) : fallback;
}

std::string JsonReader::choice(const std::string& key, const std::vector<std::string>& allowed,
                               const std::string& fallback) {
  std::string s = string(key, fallback);
  if (std::find(allowed.begin(), allowed.end(), s) != allowed.end()) return s;
  std::ostringstream os;
  os << "\"" << s << "\" is not one of";
  for (const auto& a : allowed) os << " \"" << a << "\"";
  std::string hint = closest_word(s, allowed);
  if (!hint.empty()) os << " (did you mean \"" << hint << "\"?)";
  fail(key, os.str());
}

JsonReader JsonReader::object(const std::string& key) {
  const auto* v = find(key);
  if (!v) return JsonReader(empty_object(), path_of(key));
  if (!v->is_object()) fail(key, "must be an object, got " + shown(*v));
  return JsonReader(*v, path_of(key));
}

const nlohmann::json& JsonReader::raw(const std::string& key) {
  const auto* v = find(key);
  return v ? *v : empty_object();
}

void JsonReader::finish() const {
  std::vector<std::string> known(known_.begin(), known_.end());
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (known_.count(it.key())) continue;
    std::string message = "unknown key";
    std::string hint = closest_word(it.key(), known);
    if (!hint.empty()) message += " (did you mean \"" + hint + "\"?)";
    else {
      message += "; known keys:";
      for (const auto& k : known) message += " " + k;
    }
    throw InputError(path_of(it.key()) + ": " + message);
  }
}

}  // namespace ditwin
