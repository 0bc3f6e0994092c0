// SPDX-License-Identifier: GPL-2.0-or-later
// The journal of intent: state_dir/intent.json. A replug leaves the guest
// without its NIC between the release (device_del, libvirt's detach) and the
// attach; what is needed to plug it in again (the NIC's device_add template,
// or the libvirt interface's description) is written here before the
// release is asked for and forgotten once the attach is confirmed. A relinkd
// that died in between, or a reload that started the VM's objects anew,
// reads it back and finishes what was begun.
//
// An entry belongs to a VM's identity, which outlives relinkd but not the VM:
// the QEMU process (pid and start time) or the libvirt domain (UUID, with its
// QEMU's pid and start time where known). Entries of a process that is gone
// are dropped. The file is relinkd's alone (0600 in the trusted state_dir,
// written atomically through the directory's fd) and bounded.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace relink::daemon {

struct Intent {
  std::string identity;     // "qemu:PID:START" or "libvirt:UUID"
  std::string nic;          // the NIC: its QEMU id (QMP) or its MAC (libvirt)
  std::string vm;           // the VM's name, for whoever reads the file
  pid_t pid = 0;            // the QEMU process (0: not known) and its start
  uint64_t start_time = 0;  // time (/proc/PID/stat, clock ticks since boot)
  nlohmann::json what;      // how to plug the NIC in again
  int64_t written_at = 0;   // wall clock, seconds since the epoch
  bool operator==(const Intent&) const = default;
};

// The journal's bytes, both ways (pure; the parser takes untrusted bytes:
// bounded, never throws).
std::string format_intents(const std::vector<Intent>& entries);
Result<std::vector<Intent>> parse_intents(std::string_view text, const std::string& shown);

// The identity of the QEMU process `pid` ("qemu:PID:START"), with its start
// time; nullopt when the process cannot be read (gone).
std::optional<std::string> qemu_identity(pid_t pid, uint64_t* start_time = nullptr,
                                         const std::string& proc_root = "/proc");

class IntentJournal {
 public:
  static constexpr const char* kFileName = "intent.json";
  static constexpr const char* kInvalidName = "intent.json.invalid";
  static constexpr size_t kMaxBytes = size_t{256} << 10;
  static constexpr size_t kMaxEntries = 256;

  // state_dir must be trusted (util/trusted_dir.h); it is opened at every
  // read and write, as runtime.toml's is.
  explicit IntentJournal(std::string state_dir, std::string proc_root = "/proc");

  // Reads the file (missing: no entries). One that cannot be used is renamed
  // to intent.json.invalid (the error says so) and the journal starts empty.
  // Then drop_gone().
  Result<void> load();
  // Drops the entries of processes that are gone (or whose pid is another
  // process now) and writes the file if that changed anything; returns how
  // many went.
  size_t drop_gone();

  const Intent* find(const std::string& identity, const std::string& nic) const;
  // Adds or replaces the entry for (identity, nic) and writes the file before
  // returning; refused (nothing changes) when the journal would pass its
  // bounds or cannot be written.
  Result<void> record(Intent entry);
  // Removes the entry, if any, and writes the file.
  Result<void> forget(const std::string& identity, const std::string& nic);

  const std::vector<Intent>& entries() const { return entries_; }
  std::string path() const { return state_dir_ + "/" + kFileName; }

 private:
  Result<void> save(const std::vector<Intent>& entries);
  bool alive(const Intent& e) const;

  std::string state_dir_;
  std::string proc_root_;
  std::vector<Intent> entries_;
};

}  // namespace relink::daemon
