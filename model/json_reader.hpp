// Reads a JSON object while tracking its path, so every error names where it happened
// (`parallelism.tp: ...`), and refuses keys nobody read, with a did-you-mean.
#pragma once
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

#include "model/errors.hpp"

namespace ditwin {

// Levenshtein distance, used for did-you-mean suggestions.
int edit_distance(const std::string& a, const std::string& b);
// The closest of `candidates` to `word`, or "" when none is close enough to suggest.
std::string closest_word(const std::string& word, const std::vector<std::string>& candidates);

class JsonReader {
public:
  JsonReader(const nlohmann::json& object, std::string path);

  const std::string& path() const { return path_; }
  std::string path_of(const std::string& key) const;
  bool has(const std::string& key) const;

  // Required and optional fields. Each marks the key as known, so finish() accepts it.
  double number(const std::string& key);
  double number(const std::string& key, double fallback);
  long long integer(const std::string& key);
  long long integer(const std::string& key, long long fallback);
  bool boolean(const std::string& key, bool fallback);
  std::string string(const std::string& key);
  std::string string(const std::string& key, const std::string& fallback);
  // A string that must be one of `allowed`.
  std::string choice(const std::string& key, const std::vector<std::string>& allowed,
                     const std::string& fallback);
  // A nested object; an absent key gives an empty object.
  JsonReader object(const std::string& key);
  const nlohmann::json& raw(const std::string& key);

  // Declares keys that are read by someone else (so they are not reported as unknown).
  void accept(const std::string& key) { known_.insert(key); }

  // Throws on any key that no accessor asked for, suggesting the closest known key.
  void finish() const;

  [[noreturn]] void fail(const std::string& key, const std::string& rule) const;

private:
  const nlohmann::json* find(const std::string& key);
  nlohmann::json empty_;
  const nlohmann::json& object_;
  std::string path_;
  std::set<std::string> known_;
};

}  // namespace ditwin
