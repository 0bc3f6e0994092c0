// SPDX-License-Identifier: GPL-2.0-or-later
// A domain's live XML through its parser, and what relinkd builds from it.
// The XML comes from libvirtd, but relinkd runs as root and keeps running
// whatever a peer sends: any bytes are an error or a description, never a
// crash, a hang or a throw; every interface found yields XML that parses.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "libvirt/domain_xml.h"

using namespace relink::libvirt;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  relink::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = parse_domain(text);
  if (!r) {
    FUZZ_CHECK(!r.error().message.empty());
    return 0;
  }
  FUZZ_CHECK(!r->name.empty());
  for (const auto& p : r->bridge_ports) FUZZ_CHECK(!p.bridge.empty() && !p.tap.empty());
  for (const auto& i : r->interfaces) {
    FUZZ_CHECK(!i.source_dev.empty());
    FUZZ_CHECK(i.queues >= 1);
    for (bool up : {true, false}) {
      auto a = attach_xml(i, up);
      auto l = link_update_xml(i, up);
      if (!a || !l) continue;
      // What relinkd hands to libvirt is itself a well-formed interface.
      auto again = parse_domain("<domain><name>x</name><devices>" + a.value() + "</devices></domain>");
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK(again->interfaces.size() == 1);
      FUZZ_CHECK(again->interfaces[0].mac == i.mac);
      FUZZ_CHECK(again->interfaces[0].link_up == up);
      FUZZ_CHECK(again->interfaces[0].target_dev.empty());
    }
  }
  return 0;
}
