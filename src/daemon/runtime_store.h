// SPDX-License-Identifier: GPL-2.0-or-later
// runtime.toml in state_dir: the VMs added with relinkctl add, read when
// relinkd starts and rewritten after every add and remove.
#pragma once

#include <string>
#include <vector>

#include "config/runtime_vms.h"
#include "util/result.h"

namespace relink::daemon {

class RuntimeStore {
 public:
  static constexpr const char* kFileName = "runtime.toml";
  static constexpr const char* kInvalidName = "runtime.toml.invalid";
  static constexpr size_t kMaxSize = size_t{1} << 20;  // 1 MiB, for reading and writing

  explicit RuntimeStore(std::string state_dir);

  // Reads state_dir/runtime.toml (missing: no VMs). state_dir must be
  // trusted (root's alone, see util/trusted_dir.h; it is created when
  // missing, as relinkd does at start). A VM that does not load is held
  // (config::parse_runtime_file), the others load. A file that cannot be
  // used as a whole (not TOML, larger than kMaxSize, not a regular file of
  // root's that only root may write) is renamed to runtime.toml.invalid, or
  // .invalid.1, .2, ... (never over an earlier one), so that it is neither
  // lost nor overwritten by the next save; the error is returned and there
  // are no runtime VMs. When it cannot be renamed either, the error says so
  // and `stuck` is set: the file must not be saved over.
  Result<config::RuntimeFile> load(bool* stuck = nullptr);

  // Writes runtime.toml atomically: a temporary file in state_dir (mode 0600,
  // O_CLOEXEC|O_NOFOLLOW), fsync, rename over runtime.toml, fsync of
  // state_dir. Nothing to keep removes the file.
  Result<void> save(const std::vector<config::RuntimeVm>& vms, const std::vector<config::HeldVm>& held = {});

  // state_dir/runtime.toml
  std::string path() const;

 private:
  std::string state_dir_;
};

}  // namespace relink::daemon
