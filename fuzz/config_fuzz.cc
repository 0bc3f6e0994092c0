// SPDX-License-Identifier: GPL-2.0-or-later
// Text of a configuration file through the loader. A ConfigError is the
// expected answer to bad input; any other exception, or a crash, is a bug
// (relinkd --check-config and reload must report, never die).
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "config/config.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  relink::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto cfg = relink::config::load_string(text, "fuzz.toml");
    for (const auto& vm : cfg.vms) {
      FUZZ_CHECK(cfg.find_vm(vm.name) != nullptr);
      for (const auto& p : vm.passts) FUZZ_CHECK(p.uid != 0);
    }
  } catch (const relink::config::ConfigError& e) {
    FUZZ_CHECK(e.what()[0] != '\0');
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_string threw %s, not ConfigError\n", e.what());
    std::abort();
  }
  return 0;
}
