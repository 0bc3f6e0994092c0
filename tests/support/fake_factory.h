// SPDX-License-Identifier: GPL-2.0-or-later
// A macvtap factory for unit tests: records what is asked of the kernel and
// hands out pipe fds as queues.
#pragma once

#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "macvtap/macvtap_factory.h"

namespace relink::test {

class FakeFactory final : public macvtap::MacvtapFactory {
 public:
  Result<macvtap::Macvtap> create(const macvtap::MacvtapSpec& spec) override {
    specs.push_back(spec);
    if (fail_create) return Error{EEXIST, "create macvtap " + spec.name + ": File exists"};
    macvtap::Macvtap m;
    m.ifindex = next_ifindex++;
    m.name = spec.name;
    m.dev = makedev(246, static_cast<unsigned>(m.ifindex));
    for (unsigned q = 0; q < spec.queues; ++q) {
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) return Error::last("pipe2");
      close(p[1]);
      m.fds.emplace_back(p[0]);
    }
    return m;
  }
  Result<void> remove(int ifindex) override {
    removed.push_back(ifindex);
    return {};
  }
  Result<std::optional<macvtap::ExistingMacvtap>> find(const std::string& name) override {
    found.push_back(name);
    if (auto it = existing.find(name); it != existing.end()) return std::optional<macvtap::ExistingMacvtap>{it->second};
    return std::optional<macvtap::ExistingMacvtap>{};
  }
  std::vector<macvtap::MacvtapSpec> specs;
  std::vector<int> removed;
  std::vector<std::string> found;
  std::map<std::string, macvtap::ExistingMacvtap> existing;  // what find() reports, by name
  bool fail_create = false;
  int next_ifindex = 40;
};

}  // namespace relink::test
