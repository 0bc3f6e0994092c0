// SPDX-License-Identifier: GPL-2.0-or-later
// The replug attacher's part of the journal of intent: a NIC's template
// written down before its release, forgotten once it is plugged in again,
// and what a probe makes of an entry an earlier relinkd left.
#include <optional>
#include <string>

#include "daemon/replug_attach.h"
#include "util/log.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("replug"); }

}  // namespace

Result<void> ReplugAttacher::journal_release(const std::string& nic, const NicTemplate& t) {
  if (!journal_) return ok();
  uint64_t start = 0;
  auto identity = qemu_identity(t.qemu_pid, &start);
  if (!identity) return ok();  // QEMU is gone: nothing will be released
  Intent e{*identity, nic, vm_, t.qemu_pid, start, template_to_json(t), 0};
  if (auto r = journal_->record(std::move(e)); !r)
    return Error{r.error().code, "the journal of intent cannot be written (" + r.error().message + ")"};
  return ok();
}

void ReplugAttacher::journal_forget(const std::string& nic, pid_t pid) {
  if (!journal_) return;
  auto identity = qemu_identity(pid);
  if (!identity || !journal_->find(*identity, nic)) return;
  if (auto r = journal_->forget(*identity, nic); !r)
    logger()->warn("{}: {}, ignoring (the entry is dropped with its QEMU)", nic, r.error().message);
}

std::string ReplugAttacher::journalled_backend(const std::string& nic, pid_t pid) const {
  auto identity = journal_ ? qemu_identity(pid) : std::nullopt;
  const Intent* e = identity ? journal_->find(*identity, nic) : nullptr;
  auto t = e ? template_from_json(e->what) : Result<NicTemplate>(Error{ENOENT, ""});
  return t ? t->netdev : "";
}

bool ReplugAttacher::release_asked_before(const std::string& nic) const {
  const NicTemplate* t = nic_template(nic);
  return t && !t->netdev.empty() && journalled_backend(nic, qmp_.peer_pid()) == t->netdev;
}

// A replug a previous relinkd did not finish (killed between device_add and
// the old backend's netdev_del): the NIC is on its new tap, and the backend
// it had before the release, which the journal names, may still be in QEMU
// with a dead macvtap's fd.
// Only while info network shows it peered with nothing: a backend some NIC
// (or hub port) uses is not a leftover, whatever the journal says.
void ReplugAttacher::drop_journalled_backend(const std::string& nic, pid_t pid, const std::string& netdev_now,
                                             const std::vector<qemu::NetClient>* clients) {
  auto identity = journal_ ? qemu_identity(pid) : std::nullopt;
  const Intent* e = identity ? journal_->find(*identity, nic) : nullptr;
  if (!e) return;
  auto t = template_from_json(e->what);
  if (!t || t->netdev.empty() || t->netdev == netdev_now) return;
  const std::string shown = untrusted::safe_text(t->netdev, 80);
  if (!clients) {
    logger()->info("{}: keeping netdev {} (the NIC's backend before an unfinished replug): info network did not "
                   "say whether anything uses it",
                   nic, shown);
    return;
  }
  for (const auto& c : *clients)
    if ((c.name == t->netdev && !c.peer.empty()) || (c.peer == t->netdev && c.name != t->netdev)) {
      logger()->info("{}: keeping netdev {} (the NIC's backend before an unfinished replug): {} uses it", nic,
                     shown, untrusted::safe_text(c.name == t->netdev ? c.peer : c.name, 80));
      return;
    }
  logger()->info("{}: deleting netdev {}, the NIC's backend before a replug that was not finished", nic, shown);
  delete_netdev(qmp_, t->netdev);
}

bool ReplugAttacher::template_from_journal(const std::string& nic, pid_t pid) {
  auto identity = journal_ ? qemu_identity(pid) : std::nullopt;
  const Intent* e = identity ? journal_->find(*identity, nic) : nullptr;
  if (!e) return false;
  auto t = template_from_json(e->what);
  if (!t) {
    logger()->warn("{}: the journal of intent has an entry for the NIC that cannot be used: {}", nic,
                   t.error().message);
    return false;
  }
  t->qemu_pid = pid;
  logger()->info("{}: finishing a replug begun before: the NIC was released and will be plugged in again as "
                 "the journal of intent recorded it ({} bus {} addr {})",
                 nic, t->driver, t->bus, t->addr >= 0 ? pci_addr_arg(t->addr) : "-");
  templates_[nic] = std::move(*t);
  return true;
}

}  // namespace relink::daemon
