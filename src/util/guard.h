// SPDX-License-Identifier: GPL-2.0-or-later
// A liveness guard for callbacks that may outlive their object: an object
// holds a Guard, a callback captures guarded(this, fn) and runs fn only while
// the object still exists. Replaces finding the object again by name.
#pragma once

#include <memory>
#include <utility>

namespace relink {

class Guard {
 public:
  Guard() : token_(std::make_shared<char>(0)) {}
  // A moved or copied object is another object: it gets its own token.
  Guard(const Guard&) : Guard() {}
  Guard& operator=(const Guard&) { return *this; }
  std::weak_ptr<char> watch() const { return token_; }

 private:
  std::shared_ptr<char> token_;
};

// fn, called only while `guard`'s owner is alive.
template <typename F>
auto guarded(const Guard& guard, F fn) {
  return [alive = guard.watch(), fn = std::move(fn)](auto&&... args) {
    if (!alive.expired()) fn(std::forward<decltype(args)>(args)...);
  };
}

}  // namespace relink
