// What every benchmark needs: percentiles, and a fatal error that unwinds.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace relink::bench {

// The p-th percentile (0..100) of v, nearest rank; 0 for an empty v.
inline double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Thrown, not exit(): the sandboxes' destructors must run to remove their
// namespaces, QEMUs, passts and relinkd.
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] inline void die(const std::string& msg) { throw Fatal(msg); }

}  // namespace relink::bench
