// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd's configuration (TOML). Loading validates everything a binding
// needs, so the daemon never starts half-configured.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "macvtap/macvtap_factory.h"
#include "passt/passt.h"
#include "util/mac.h"
#include "util/result.h"

namespace relink::config {

enum class AttachMode {
  Hub,     // tap on a second hubport of the NIC's hub: no guest involvement
  Replug,  // NIC peered directly with the tap: device_del, then device_add on a new tap
  Libvirt,  // a libvirt domain's direct interface: detached and attached again through libvirt
};
const char* attach_mode_name(AttachMode m);

// When a re-plugged NIC (replug, libvirt) lets go of its dead tap.
enum class Release {
  OnReturn,  // when the parent returns: released, then plugged in anew on the new macvtap
  OnLoss,    // as soon as the parent is gone: on its return the NIC is only plugged in
};
const char* release_name(Release r);
std::optional<Release> parse_release(std::string_view s);

struct MacvtapBinding {
  std::string nic;      // the guest NIC's QEMU device id
  std::string parent;   // host interface name to follow
  macvtap::Mode mode = macvtap::Mode::Bridge;
  MacAddress mac{};
  unsigned queues = 1;
  AttachMode attach = AttachMode::Hub;
  unsigned hub = 0;     // hub id of the NIC's hubport
  std::string macvtap;  // name of the macvtap relinkd creates
  // Follow the interface with this permanent MAC (IFLA_PERM_ADDRESS, else its
  // address), whatever it is named; `parent` is then only a fallback.
  std::optional<MacAddress> parent_mac;
  bool follow_carrier = true;           // the guest NIC's link mirrors the parent's carrier
  uint64_t release_timeout_ms = 10'000;  // replug: how long the guest may take to release the NIC
  Release release = Release::OnReturn;   // replug, libvirt: when the NIC is released

  bool operator==(const MacvtapBinding&) const = default;
};

// A passt user-mode backend relinkd runs and supervises for one QEMU netdev.
struct PasstBinding {
  std::string netdev;  // QEMU netdev id of the stream / vhost-user backend
  passt::Mode mode = passt::Mode::StreamServer;
  std::string socket;             // absolute unix socket path (QEMU's or passt's, by mode)
  std::vector<std::string> args;  // extra passt options, checked by passt::check_user_args
  std::string runas = "nobody";   // as written in the file
  uid_t uid = 65534;              // resolved from runas at load time; never 0
  gid_t gid = 65534;

  bool operator==(const PasstBinding&) const = default;
};

// A tap that is a port of a host bridge (hand-started QEMU's `-netdev
// tap,ifname=TAP`, libvirt's <interface type='bridge'>): when the bridge is
// deleted and created again, relinkd puts the tap back with its port settings.
struct TapBinding {
  std::string tap;     // the tap's interface name
  std::string bridge;  // the bridge's name

  bool operator==(const TapBinding&) const = default;
};

struct Vm {
  std::string name;
  std::string qmp;  // QMP socket path
  // The user QEMU runs as (name or uid, as written) and its uid, resolved at
  // load time: only a process of that uid, on a socket whose every directory
  // is root's or that user's, is handed the VM's taps (qemu/qmp_peer.h).
  std::string qemu_user = "root";
  uid_t qemu_uid = 0;
  std::vector<MacvtapBinding> macvtaps;
  std::vector<PasstBinding> passts;
  std::vector<TapBinding> taps;

  bool operator==(const Vm&) const = default;
};

struct Daemon {
  std::string control_socket = "/run/relinkd/control.sock";
  std::string state_dir = "/run/relinkd";
  // Root-only directory for private tap device nodes, used when
  // /dev/tap<ifindex> belongs to another namespace's macvtap. It must allow
  // device nodes: /run is usually mounted nodev, /dev is not.
  std::string node_dir = "/dev/relinkd";
  std::string log_level = "info";  // trace | debug | info | warn | error
  // Receive buffer of the rtnetlink socket. Overruns are recovered by a
  // re-dump; a bigger buffer makes them rarer under link storms.
  size_t netlink_receive_buffer = size_t{8} << 20;
  // Group (name) whose members may also use the control socket; root always may.
  std::string control_group;
  // Absolute path of the passt binary run for [[vm.passt]] bindings.
  std::string passt = "/usr/bin/passt";
  // Programs (fnmatch patterns on /proc/PID/exe) that may receive tap fds
  // over a QMP socket: a peer running anything else is refused.
  std::vector<std::string> qemu_binaries = {"/usr/bin/qemu-system-*", "/usr/local/bin/qemu-system-*",
                                            "/usr/libexec/qemu-kvm"};
};

// libvirt as a source of VMs: every running domain's <interface
// type='direct'> is a binding, re-plugged through libvirt's API.
struct Libvirt {
  bool enabled = false;  // a [libvirt] table turns it on
  std::string uri = "qemu:///system";
  std::vector<std::string> domains;  // follow only these (empty: every running domain)
  // Where libvirt keeps its QEMU pidfiles (<domain>.pid), to check which tap
  // QEMU holds after an attach.
  std::string pid_dir = "/run/libvirt/qemu";
  uint64_t release_timeout_ms = 10'000;  // how long a guest may take to release a NIC
  bool follow_carrier = true;
  Release release = Release::OnReturn;  // when a domain's NIC is released (see MacvtapBinding)
  // [libvirt.domain_release]: `release` for these domains, by name.
  std::map<std::string, Release> domain_release;

  Release release_of(const std::string& domain) const;
  bool operator==(const Libvirt&) const = default;
};

// [bridge.NAME]: a host bridge whose taps relinkd follows with no VM
// behind them (hosts without libvirt or [[vm]] entries).
struct Bridge {
  std::string name;
  // Every tap (tun/tap device) that is a port of the bridge is followed and
  // put back when the bridge is re-created.
  bool follow_taps = true;

  bool operator==(const Bridge&) const = default;
};

struct Config {
  std::string path;
  Daemon daemon;
  Libvirt libvirt;
  std::vector<Vm> vms;
  std::vector<Bridge> bridges;

  const Vm* find_vm(const std::string& name) const;
};

// A configuration error, already formatted "FILE:LINE:COL: message".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr const char* kDefaultPath = "/etc/relinkd/relinkd.toml";

// Loads and validates a configuration file. Throws ConfigError.
Config load_file(const std::string& path);
// Same, from text (path is used in messages only).
Config load_string(const std::string& text, const std::string& path);

// The default macvtap name for a binding: "rl" + 8 hex digits of a hash of
// "vm/nic" (stable across restarts, fits IFNAMSIZ).
std::string default_macvtap_name(const std::string& vm, const std::string& nic);

// A [[vm.passt]] runas resolved as loading does (names through NSS); the
// reason ("'runas': unknown user 'x'") when it does not resolve.
struct RunasIds {
  uid_t uid = 0;
  gid_t gid = 0;
};
Result<RunasIds> resolve_runas_ids(const std::string& runas);

bool valid_qemu_id(const std::string& id);
bool valid_ifname(const std::string& name);
// "macvtapN" / "macvlanN": the names libvirt gives, and deletes when a domain stops.
bool kernel_style_macvtap_name(const std::string& name);

}  // namespace relink::config
