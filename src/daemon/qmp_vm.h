// SPDX-License-Identifier: GPL-2.0-or-later
// A VM whose QEMU relinkd talks to over QMP (from the config file or
// registered with relinkctl add): it owns its QMP session, the hub and replug
// attachers on it, its macvtap and passt runners, and routes QMP events to
// them.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include "daemon/passt_supervisor.h"
#include "daemon/vm.h"
#include "qemu/qmp_client.h"

namespace relink::daemon {

class QmpVm final : public ManagedVm {
 public:
  // origin: "config" or "runtime". carry: passt runners of the VM's previous
  // incarnation whose binding did not change (by netdev): their passt keeps
  // running.
  QmpVm(config::Vm cfg, std::string origin, const Services& s, PasstSupervisor& passt,
        std::map<std::string, std::unique_ptr<PasstRunner>> carry = {});
  ~QmpVm() override;

  const char* origin() const override { return origin_.c_str(); }
  void set_origin(std::string origin) { origin_ = std::move(origin); }
  bool connected() const override { return qmp_->connected(); }
  std::string offline_reason() const override { return "QMP not connected: " + qmp_->last_error(); }
  void start() override;
  nlohmann::json status() const override;
  Result<nlohmann::json> qemu_args() const override;
  const char* release_method() const override { return "device_del"; }
  // An adopted launcher's macvtap is shown by its own name.
  void describe(nlohmann::json& binding) const override;
  void restart_failed() override;

  // Passt runners to hand to the VM's next incarnation, by netdev; those
  // whose binding is not in `keep` are retired.
  std::map<std::string, std::unique_ptr<PasstRunner>> take_passts(const std::vector<std::string>& keep);
  // The VM left: every passt is stopped.
  void retire_passts();
  // [daemon] qemu_binaries changed: the session's peer is checked again.
  void reverify();

 protected:
  void unasked_release(MacvtapRunner& b) override;

 private:
  void on_connected();
  void on_disconnected(const Error& why);
  void on_event(const std::string& event, const nlohmann::json& data);
  void on_refused(const Error& why);
  void on_device_deleted(const nlohmann::json& data);
  // Each strategy's attacher looks at what QEMU has of its bindings, one
  // after the other; what they found is fed in binding order.
  struct ProbeFound;
  void probe_from(uint64_t session, size_t index, std::shared_ptr<ProbeFound> found);
  void passts_connected(uint64_t session);
  Attacher& attacher_for(config::AttachMode m);

  std::string origin_;
  PasstSupervisor& passt_;
  std::unique_ptr<qemu::QmpClient> qmp_;
  std::unique_ptr<Attacher> hub_, replug_;
  pid_t qemu_pid_ = 0;
  uint64_t session_ = 0;     // bumped per QMP session, to drop stale probe results
  std::string last_refusal_;  // why the QMP peer was last refused (logged once per reason)
  // Replug NICs whose presence check (qom-get after an unasked-for
  // DEVICE_DELETED) is in flight, with the session it was sent on.
  std::map<std::string, uint64_t> presence_checks_;
};

}  // namespace relink::daemon
