// SPDX-License-Identifier: GPL-2.0-or-later
// What tests that measure a real relinkd need to know of a sanitized build:
// whether this one is (kSanitized), and a way to hand relinkd ASan options.
#pragma once

#include <cstdlib>
#include <string>

namespace relink::test {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Appends `item` to a ':'-separated environment variable until destruction.
class EnvAppend {
 public:
  EnvAppend(const char* name, const std::string& item, bool enabled) : name_(name), enabled_(enabled) {
    if (!enabled_) return;
    const char* old = getenv(name);
    had_ = old != nullptr;
    saved_ = had_ ? old : "";
    setenv(name, (saved_ + (saved_.empty() ? "" : ":") + item).c_str(), 1);
  }
  ~EnvAppend() {
    if (!enabled_) return;
    if (had_)
      setenv(name_, saved_.c_str(), 1);
    else
      unsetenv(name_);
  }
  EnvAppend(const EnvAppend&) = delete;
  EnvAppend& operator=(const EnvAppend&) = delete;

 private:
  const char* name_;
  bool enabled_;
  bool had_ = false;
  std::string saved_;
};

}  // namespace relink::test
