// The search's Pareto plot (docs/search.md): tokens/s against memory per GPU for the layouts no
// other beats on both, the simulated best marked; with failures, a second panel of MFU against
// ETTR. Drawn offscreen with Qt; only built with the GUI (DITWIN_HAVE_PARETO_PNG).
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace ditwin::search {

// Writes the PNG of a search report; throws InputError when the file cannot be written.
void write_pareto_png(const nlohmann::json& report, const std::string& path);

}  // namespace ditwin::search
