// The one exception type for bad user input (plans, profiles, traces): its message names
// where (a JSON path or a file) and which rule was broken, and the CLI prints it as is.
#pragma once
#include <stdexcept>
#include <string>

namespace ditwin {

class InputError : public std::runtime_error {
public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace ditwin
