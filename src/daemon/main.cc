// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd: keeps QEMU guests' macvtap NICs connected while host links come and go.
#include <grp.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "daemon/daemon.h"
#include "daemon/instance_lock.h"
#include "netlink/link.h"
#include "qemu/qmp_peer.h"
#include "util/fd_limit.h"
#include "util/log.h"

namespace {

std::string plural(size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// What --check-config can see beyond the file itself: things on this host
// that would make relinkd fail or a binding useless. Returns the errors;
// warnings go to stderr as they are found.
std::vector<std::string> check_host(const relink::config::Config& cfg) {
  std::vector<std::string> errors;
  size_t passts = 0;
  for (const auto& vm : cfg.vms) passts += vm.passts.size();
  if (passts && access(cfg.daemon.passt.c_str(), X_OK) < 0)
    errors.push_back("[daemon] passt: cannot run " + cfg.daemon.passt + ": " + std::strerror(errno) + " (needed by " +
                     plural(passts, "[[vm.passt]] binding", "[[vm.passt]] bindings") + "; install passt)");
  if (!cfg.daemon.control_group.empty() && !getgrnam(cfg.daemon.control_group.c_str()))
    errors.push_back("[daemon] control_group: there is no group named '" + cfg.daemon.control_group + "'");
  // What exists of each QMP socket's path now: a directory others could
  // change gets the peer refused at every connection, so say it here.
  for (const auto& vm : cfg.vms)
    if (const std::string why = relink::qemu::judge_qmp_path(relink::qemu::walk_path(vm.qmp),
                                                             relink::qemu::QemuIdentity{vm.qemu_uid, vm.qemu_user});
        !why.empty())
      errors.push_back("[[vm]] " + vm.name + ": qmp = \"" + vm.qmp + "\": " + why);
  for (const auto& vm : cfg.vms)
    for (const auto& b : vm.macvtaps)
      if (relink::netlink::is_wifi(b.parent))
        std::cerr << "warning: " << vm.name << "/" << b.nic << ": " << relink::netlink::wifi_warning(b.parent) << "\n";
  return errors;
}

// The capabilities relinkd uses, and what for; CapEff from /proc/self/status
// (no libcap needed for one bit mask).
std::string missing_privileges(const relink::config::Config& cfg) {
  std::ifstream f("/proc/self/status");
  std::string line;
  uint64_t eff = 0;
  while (std::getline(f, line))
    if (line.rfind("CapEff:", 0) == 0) eff = std::stoull(line.substr(7), nullptr, 16);
  size_t passts = 0;
  for (const auto& vm : cfg.vms) passts += vm.passts.size();
  struct Need {
    int cap;
    const char* name;
    const char* why;
    bool needed;
  };
  const Need needs[] = {
      {CAP_NET_ADMIN, "CAP_NET_ADMIN", "to create macvtaps and follow links", true},
      {CAP_SETUID, "CAP_SETUID", "to run passt as its runas user, never root", passts > 0},
      {CAP_SETGID, "CAP_SETGID", "to run passt as its runas group", passts > 0},
      {CAP_KILL, "CAP_KILL", "to stop a passt running as another user", passts > 0},
      {CAP_CHOWN, "CAP_CHOWN", "to give the control socket to control_group", !cfg.daemon.control_group.empty()},
  };
  std::string missing;
  for (const auto& n : needs)
    if (n.needed && !(eff & (uint64_t{1} << n.cap)))
      missing += std::string(missing.empty() ? "" : "; ") + n.name + " (" + n.why + ")";
  return missing;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "relinkd: keeps QEMU guests' macvtap NICs connected when their host parent interface is\n"
      "deleted and re-created. Runs in the foreground (systemd style); logs to stderr.",
      "relinkd"};
  std::string config_path = relink::config::kDefaultPath;
  std::string check_path;
  std::string log_level;
  bool version = false;
  app.add_option("-c,--config", config_path, "configuration file")->type_name("FILE")->capture_default_str();
  app.add_option("--check-config", check_path,
                 "validate FILE and exit: 0 when valid, else 1 with FILE:LINE:COL: message on stderr")
      ->type_name("FILE");
  app.add_option("-l,--log-level", log_level, "trace, debug, info, warn or error (overrides the config)")
      ->type_name("LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error"}));
  app.add_flag("-V,--version", version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);
  if (log_level == "warning") log_level = "warn";  // the log's own spelling

  if (version) {
    std::cout << "relinkd " << RELINK_VERSION << "\n";
    return 0;
  }
  if (!check_path.empty()) {
    try {
      auto cfg = relink::config::load_file(check_path);
      size_t macvtaps = 0, passts = 0, taps = 0;
      for (const auto& vm : cfg.vms) {
        macvtaps += vm.macvtaps.size();
        passts += vm.passts.size();
        taps += vm.taps.size();
      }
      std::string bridges;
      for (const auto& b : cfg.bridges)
        if (b.follow_taps) bridges += (bridges.empty() ? "; the taps of bridge " : ", ") + b.name;
      const auto errors = check_host(cfg);
      for (const auto& e : errors) std::cerr << check_path << ": " << e << "\n";
      if (!errors.empty()) return 1;
      std::cout << check_path << ": valid (" << plural(cfg.vms.size(), "VM", "VMs") << ": "
                << plural(macvtaps, "macvtap binding", "macvtap bindings") << ", "
                << plural(passts, "passt binding", "passt bindings")
                << (taps ? ", " + plural(taps, "tap binding", "tap bindings") : "") << bridges
                << (cfg.libvirt.enabled ? "; and libvirt's domains at " + cfg.libvirt.uri : "") << ")\n";
      return 0;
    } catch (const relink::config::ConfigError& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }

  relink::config::Config cfg;
  try {
    cfg = relink::config::load_file(config_path);
  } catch (const relink::config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  if (const std::string missing = missing_privileges(cfg); !missing.empty()) {
    std::cerr << "relinkd: cannot start without the privileges it needs: " << missing
              << ". Run it as root (the systemd unit does).\n";
    return 1;
  }
  const bool journal = getenv("JOURNAL_STREAM") != nullptr;
  relink::log::setup(spdlog::level::from_str(log_level.empty() ? cfg.daemon.log_level : log_level), journal);
  // Before anything touches state_dir, the control socket or a passt: a
  // second relinkd on the same state_dir must change nothing.
  auto lock = relink::daemon::InstanceLock::acquire(cfg.daemon.state_dir);
  if (!lock) {
    relink::log::get("daemon")->critical("cannot start: {}", lock.error().message);
    return 1;
  }
  if (const std::string what = relink::fdlimit::raise_to_hard(); !what.empty())
    relink::log::get("daemon")->debug("{}", what);
  relink::daemon::Daemon daemon(std::move(cfg), log_level);
  return daemon.run();
}
