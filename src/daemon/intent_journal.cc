// SPDX-License-Identifier: GPL-2.0-or-later
// state_dir/intent.json: what a begun replug needs to be finished, kept across relinkd's death.
#include "daemon/intent_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "passt/pidfile.h"
#include "util/atomic_file.h"
#include "util/log.h"
#include "util/trusted_dir.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

using nlohmann::json;

auto logger() { return log::get("journal"); }

constexpr int kVersion = 1;

Error malformed(const std::string& shown, const std::string& why) {
  return Error{EINVAL, shown + ": " + why};
}

std::optional<std::string> string_at(const json& o, const char* key, size_t max) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string() || it->get_ref<const std::string&>().size() > max) return std::nullopt;
  return it->get<std::string>();
}

std::optional<uint64_t> unsigned_at(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end()) return 0;
  if (!it->is_number_unsigned()) return std::nullopt;
  return it->get<uint64_t>();
}

}  // namespace

std::string format_intents(const std::vector<Intent>& entries) {
  json list = json::array();
  for (const auto& e : entries) {
    json j = {{"identity", e.identity}, {"nic", e.nic}, {"vm", e.vm}, {"what", e.what}, {"written_at", e.written_at}};
    if (e.pid > 0) {
      j["pid"] = e.pid;
      j["start_time"] = e.start_time;
    }
    list.push_back(std::move(j));
  }
  return untrusted::dump_json(json{{"version", kVersion}, {"entries", std::move(list)}}) + "\n";
}

Result<std::vector<Intent>> parse_intents(std::string_view text, const std::string& shown) {
  // relinkd wrote it, but a file on disk is bytes like any other: limits apply.
  auto parsed = untrusted::parse_json(text, untrusted::JsonLimits{IntentJournal::kMaxBytes, 16});
  if (!parsed) return malformed(shown, parsed.error().message);
  const json& doc = *parsed;
  if (!doc.is_object() || doc.value("version", json()) != kVersion)
    return malformed(shown, "not a version " + std::to_string(kVersion) + " journal");
  auto list = doc.find("entries");
  if (list == doc.end() || !list->is_array()) return malformed(shown, "no \"entries\" array");
  if (list->size() > IntentJournal::kMaxEntries)
    return malformed(shown, "more than " + std::to_string(IntentJournal::kMaxEntries) + " entries");
  std::vector<Intent> out;
  for (const auto& j : *list) {
    const std::string which = "entry " + std::to_string(out.size() + 1);
    if (!j.is_object()) return malformed(shown, which + " is not an object");
    Intent e;
    auto identity = string_at(j, "identity", 200), nic = string_at(j, "nic", 200), vm = string_at(j, "vm", 200);
    auto pid = unsigned_at(j, "pid"), start = unsigned_at(j, "start_time");
    if (!identity || identity->empty() || !nic || nic->empty() || !vm)
      return malformed(shown, which + ": \"identity\", \"nic\" and \"vm\" must be short strings");
    if (!pid || *pid > 0x3fffffff || !start) return malformed(shown, which + ": bad \"pid\" or \"start_time\"");
    auto what = j.find("what");
    if (what == j.end() || !what->is_object()) return malformed(shown, which + ": \"what\" is not an object");
    auto at = j.find("written_at");
    e.identity = *identity;
    e.nic = *nic;
    e.vm = *vm;
    e.pid = static_cast<pid_t>(*pid);
    e.start_time = *start;
    e.what = *what;
    e.written_at = at != j.end() && at->is_number_integer() ? at->get<int64_t>() : 0;
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<std::string> qemu_identity(pid_t pid, uint64_t* start_time, const std::string& proc_root) {
  if (pid <= 0) return std::nullopt;
  auto p = passt::read_proc(pid, proc_root);
  if (!p || p->zombie || p->start_time == 0) return std::nullopt;
  if (start_time) *start_time = p->start_time;
  return "qemu:" + std::to_string(pid) + ":" + std::to_string(p->start_time);
}

IntentJournal::IntentJournal(std::string state_dir, std::string proc_root)
    : state_dir_(std::move(state_dir)), proc_root_(std::move(proc_root)) {
  while (state_dir_.size() > 1 && state_dir_.back() == '/') state_dir_.pop_back();
}

Result<void> IntentJournal::load() {
  entries_.clear();
  auto dir = trusted::open_dir(state_dir_, 0755);
  if (!dir) return Error{dir.error().code, "state_dir: " + dir.error().message};
  auto text = atomic_file::read_at(dir->get(), kFileName, kMaxBytes, path());
  if (!text && text.error().code == ENOENT) return ok();
  Result<std::vector<Intent>> parsed = text ? parse_intents(*text, path()) : Result<std::vector<Intent>>(text.error());
  if (!parsed) {
    Error why = parsed.error();
    // Never over an earlier one: that may be what someone still needs to read.
    if (auto aside = atomic_file::set_aside_at(dir->get(), kFileName, kInvalidName))
      why.message += "; it is kept as " + state_dir_ + "/" + *aside + " and nothing was read from it";
    else
      why.message += "; " + aside.error().message;
    return why;
  }
  entries_ = std::move(*parsed);
  drop_gone();
  return ok();
}

bool IntentJournal::alive(const Intent& e) const {
  if (e.pid <= 0) return true;  // nothing to check against: kept until its VM says
  auto p = passt::read_proc(e.pid, proc_root_);
  return p && !p->zombie && p->start_time == e.start_time;
}

size_t IntentJournal::drop_gone() {
  std::vector<Intent> kept;
  for (const auto& e : entries_) {
    if (alive(e)) {
      kept.push_back(e);
      continue;
    }
    logger()->info("{}/{}: dropping the intent to plug the NIC in again: its QEMU (pid {}) is gone", e.vm, e.nic,
                   e.pid);
  }
  const size_t gone = entries_.size() - kept.size();
  if (gone == 0) return 0;
  if (auto r = save(kept); !r) logger()->warn("{}: {}, keeping the entries in memory only", path(), r.error().message);
  entries_ = std::move(kept);
  return gone;
}

const Intent* IntentJournal::find(const std::string& identity, const std::string& nic) const {
  for (const auto& e : entries_)
    if (e.identity == identity && e.nic == nic) return &e;
  return nullptr;
}

Result<void> IntentJournal::record(Intent entry) {
  if (entry.written_at == 0) entry.written_at = static_cast<int64_t>(::time(nullptr));
  std::vector<Intent> next = entries_;
  auto it = std::find_if(next.begin(), next.end(),
                         [&](const Intent& e) { return e.identity == entry.identity && e.nic == entry.nic; });
  if (it != next.end()) *it = std::move(entry);
  else next.push_back(std::move(entry));
  if (next.size() > kMaxEntries)
    return Error{ENOSPC, path() + ": already holds " + std::to_string(kMaxEntries) + " releases in flight"};
  if (auto r = save(next); !r) return r;
  entries_ = std::move(next);
  return ok();
}

Result<void> IntentJournal::forget(const std::string& identity, const std::string& nic) {
  std::vector<Intent> next = entries_;
  std::erase_if(next, [&](const Intent& e) { return e.identity == identity && e.nic == nic; });
  if (next.size() == entries_.size()) return ok();
  // Forgotten in memory whatever the disk says: a stale entry on disk is
  // only ever applied to a NIC that is absent, and dropped with its process.
  entries_ = next;
  return save(next);
}

Result<void> IntentJournal::save(const std::vector<Intent>& entries) {
  auto dir = trusted::open_dir(state_dir_, 0755);
  if (!dir) return Error{dir.error().code, "state_dir: " + dir.error().message};
  if (entries.empty()) return atomic_file::remove_at(dir->get(), kFileName, path());
  const std::string text = format_intents(entries);
  if (text.size() > kMaxBytes)
    return Error{EFBIG, path() + ": " + std::to_string(entries.size()) + " entries take more than " +
                            std::to_string(kMaxBytes >> 10) + " KiB"};
  return atomic_file::write_at(dir->get(), kFileName, text, path());
}

}  // namespace relink::daemon
