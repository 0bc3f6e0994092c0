// SPDX-License-Identifier: GPL-2.0-or-later
// Text of HMP "info network" (QEMU's, so the peer's) through every parser
// relinkd applies to it when adopting hub attachments and passt streams.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/qemu_names.h"
#include "fuzz_check.h"
#include "qemu/info_network.h"

using namespace relink::daemon;
using namespace relink::qemu;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  auto clients = parse_info_network(text);
  for (const auto& c : clients) {
    FUZZ_CHECK(!c.name.empty());
    FUZZ_CHECK(c.name.find('\n') == std::string::npos);
    // Generations of every NIC the text names, as adoption asks for them.
    for (const auto& [gen, pieces] : find_generations(clients, c.name)) {
      (void)gen;
      FUZZ_CHECK(pieces.tap || pieces.uplink);
    }
  }
  find_generations(clients, "nic0");

  auto streams = parse_stream_netdevs(text);
  for (const auto& [netdev, connected] : streams) {
    (void)connected;
    FUZZ_CHECK(!netdev.empty());
    // Names come from lines, so a NIC found for a netdev is one line's name.
    std::string nic = nic_of_netdev(text, netdev);
    FUZZ_CHECK(nic.find('\n') == std::string::npos);
  }
  nic_of_netdev(text, "net1");
  return 0;
}
