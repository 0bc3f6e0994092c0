// SPDX-License-Identifier: GPL-2.0-or-later
// A real libvirtd (the system's /usr/sbin/libvirtd, qemu:///system driver)
// for integration tests, confined to a test's network namespace and to a
// private mount namespace, with real QEMU domains (TCG).
//
// Layout of dir() (bind-mounted over the system paths inside libvirtd's
// mount namespace, so nothing of the host's libvirt is read or written):
//   DIR/etc/libvirt        -> /etc/libvirt        (written from scratch: qemu.conf, libvirtd.conf)
//   DIR/run                -> /run                (libvirt-sock, libvirt/qemu/NAME.pid, NAME.xml)
//   DIR/var/lib/libvirt    -> /var/lib/libvirt    (monitor sockets, domain-N-NAME/)
//   DIR/var/log/libvirt    -> /var/log/libvirt    (libvirtd.log, qemu/NAME.log)
//   DIR/var/cache/libvirt  -> /var/cache/libvirt  (qemu/capabilities/, seeded from the build's cache)
//   DIR/libvirtd.out       libvirtd's stdout and stderr
// Paths a domain names (kernel, serial log) are opened by libvirtd or QEMU
// in that mount namespace: under those five system paths they mean DIR's.
// There is no virtlogd (stdio_handler = "file"), no security driver, no
// DAC relabelling, no cgroups and no per-domain mount namespace; QEMU runs
// as root.
//
// Processes: libvirtd runs in the foreground (no --daemon) under a small
// reaper process forked from the test (a child subreaper). QEMU, which
// libvirt daemonizes, is re-parented to that reaper instead of PID 1, so
// it is reaped at once: libvirt waits for a QEMU to be gone, on destroy
// and after each capabilities probe, and a PID 1 that reaps slowly (about
// 1 s here) or never (many containers) stalls all of that. The reaper
// SIGKILLs libvirtd and every QEMU when the test process dies without
// cleaning up (EOF on its socket from the test; the directory then stays).
// libvirtd and its QEMUs are all in the Netns, so the Netns's own
// destructor (`ip netns pids` + kill) also gets them.
//
// Capabilities cache: libvirtd's first start in a fresh directory probes
// QEMU (1.5-2 s here; about 8 s when PID 1 reaps the probes). Each env seeds
// its private /var/cache/libvirt from binary_dir()+"/libvirt-cache" and,
// after a start, copies back whatever libvirt (re)wrote; libvirt checks the
// cache's validity itself (binaries, kernel, host CPU data) and re-probes
// when stale. libvirtd is pinned to one CPU (taskset; libvirt still gives
// each QEMU all host CPUs): its host CPU data includes CPUID leaf 0x1f,
// whose EDX is the current CPU's x2APIC ID, so unpinned it found the cache
// stale on about half of the starts. With a valid cache, start to ready takes
// 0.1-0.3 s.
//
// Typical use:
//   Netns ns;
//   LibvirtEnv lv(ns);
//   ASSERT_NO_FATAL_FAILURE(lv.start());
//   ASSERT_TRUE(lv.create(domain_xml(spec)));   // or virsh_ok("create FILE")
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "support/harness.h"

namespace relink::test {

// A real libvirtd in `ns` (its network namespace; a private mount namespace
// from `ip netns exec`), with private state under a fresh directory
// /tmp/relink-lv-XXXXXX. Stopped, with every domain it runs, on destruction
// (and the directory removed, unless the test failed and RELINK_KEEP_LOGS
// is set), whatever the test did. Declare the Netns first (ns() refers to
// it); if it goes first anyway, its destructor has killed libvirtd and the
// QEMUs (they are in it) and the env's destructor only removes the
// directory.
class LibvirtEnv {
 public:
  explicit LibvirtEnv(const Netns& ns);
  ~LibvirtEnv();
  LibvirtEnv(const LibvirtEnv&) = delete;
  LibvirtEnv& operator=(const LibvirtEnv&) = delete;

  // Starts libvirtd and waits until `virsh version` answers. On error or
  // after 60 s: a fatal test failure with libvirtd's log (use
  // ASSERT_NO_FATAL_FAILURE(env.start())), libvirtd killed. No-op when
  // already running.
  void start();
  // SIGTERM, waits for the exit (SIGKILL after 10 s). The domains (QEMU)
  // keep running, as with a real libvirtd restart; the next start()
  // reconnects to them.
  void stop();
  void restart();
  bool running() const;
  pid_t pid() const { return pid_; }  // libvirtd's pid, -1 when not started

  // qemu:///system?socket=DIR/run/libvirt/libvirt-sock
  std::string uri() const;
  // Where libvirt keeps its QEMU pidfiles and live status XMLs (NAME.pid,
  // NAME.xml) as seen from outside its mount namespace: DIR/run/libvirt/qemu.
  std::string pid_dir() const;
  const std::string& dir() const { return dir_; }
  const Netns& ns() const { return ns_; }

  // `virsh -c URI ARGS 2>&1`, run in the namespace under a 60 s timeout.
  // ARGS are shell words (quote them yourself when needed).
  ShResult virsh(const std::string& args) const;
  // The same; ADD_FAILURE with the output on a nonzero exit.
  std::string virsh_ok(const std::string& args) const;
  // Writes `xml` to DIR/NAME.xml and runs `virsh create FILE [flags]`
  // (a transient domain; flags e.g. "--paused"). True on success; on
  // failure ADD_FAILURE with virsh's output and the domain's QEMU log.
  bool create(const std::string& xml, const std::string& flags = "");
  // Names of the running domains (`virsh list --name`).
  std::vector<std::string> domains() const;

  // QEMU pid of a running domain (from its pidfile, checked alive), 0 if
  // none.
  int qemu_pid(const std::string& domain) const;
  // Tail (last 6000 characters) of libvirtd's log file and of its
  // stdout/stderr, for failure messages.
  std::string log() const;
  // DIR/var/log/libvirt/qemu/NAME.log (QEMU's command line and stderr).
  std::string qemu_log(const std::string& domain) const;

  // Duration of the last start() until `virsh` answered, in seconds, and
  // whether libvirt found a cached QEMU capabilities set (i.e. it did not
  // rewrite the seeded cache).
  double last_start_seconds() const { return last_start_s_; }
  bool last_start_used_cache() const { return last_start_cached_; }

  // The shared capabilities cache (binary_dir()+"/libvirt-cache").
  static std::string cache_dir();

 private:
  class Reaper;
  void write_config();
  void refresh_cache();
  void destroy_all();
  void delete_leftover_macvtaps();

  const Netns& ns_;
  std::string ns_name_;  // used internally, so that a Netns gone first does no harm
  std::string dir_;
  pid_t pid_ = -1;
  Reaper* reaper_ = nullptr;
  double last_start_s_ = 0;
  bool last_start_cached_ = false;
  std::map<std::string, std::string> seeded_;  // cache file -> inode:mtime:size when seeded
};

// One <interface type='direct'> (a macvtap libvirt makes on source_dev).
struct DirectNic {
  std::string mac;         // empty: libvirt picks one
  std::string source_dev;  // the parent, in the env's namespace
  std::string mode = "bridge";
  std::string model = "virtio";
  unsigned queues = 1;  // > 1: <driver queues='N'/> (multiqueue macvtap)
  // PCI slot on bus 0, e.g. "0x05" on pc (hotpluggable there). Empty:
  // libvirt picks; on q35 it then puts each NIC on a pcie-root-port of its
  // own (hotpluggable), whereas a slot on q35's bus 0 is not hotpluggable.
  std::string pci_slot;
};

// One <interface type='bridge'> (a tap libvirt makes and enslaves to
// `bridge`), or, with `network` set, an <interface type='network'> of that
// libvirt network.
struct BridgeNic {
  std::string mac;
  std::string bridge;   // type='bridge': <source bridge=...>
  std::string network;  // non-empty: type='network' with <source network=...>
  std::string model = "virtio";
};

// One <interface type='user'> with <backend type='passt'/>: libvirt starts
// and owns that passt (libvirt >= 9.0 with passt enabled; Debian 12's is not).
struct PasstNic {
  std::string mac;
  int forward_tcp = 0;  // > 0: <portForward proto='tcp'> of this port
};

// A domain for tests: type='qemu' (TCG), 1 vCPU, 256 MiB, ACPI, no USB
// controller and no balloon, on_reboot/on_crash = destroy. With the real test
// guest when guest_dir is non-empty (guest_dir/vmlinux, PVH, or vmlinuz;
// guest_dir/initramfs.cpio.gz; cmdline "console=ttyS0 quiet panic=-1
// relink.tag=NAME " + cmdline_extra), else no OS at all (create it with
// "--paused": a running one only spins in the firmware).
struct DomainSpec {
  std::string name;
  std::string machine = "q35";  // "q35" or "pc"
  std::vector<DirectNic> nics;
  std::vector<PasstNic> passt_nics;
  std::vector<BridgeNic> bridge_nics;  // after `nics` in the XML
  std::string guest_dir;      // e.g. binary_dir() + "/guest" (tests/guest/build-guest.sh)
  std::string cmdline_extra;  // e.g. "relink.ip=192.0.2.2/24 relink.serve=8080"
  std::string serial_log;     // file for the guest's serial console (ttyS0); empty: none
};
std::string domain_xml(const DomainSpec& d);

// Pushes the namespace's ifindex counter past other namespaces': libvirt
// opens a macvtap as /dev/tap<ifindex>, and /dev is shared, so a macvtap
// with the same ifindex in another namespace would be opened instead. Creates
// n veth pairs (2n ifindexes) in one `ip -batch` in a link group and deletes
// the group (0.5-0.9 s for 1500 here); more when needed to get 64 past every
// /dev/tapN that exists and 512 past every namespace pushed before that
// still exists, by any process (each notes where it went as its lo's alias,
// "relink-ifindex-end=N"; pushes are serialized with a lock on /run/netns).
void push_ifindex(const Netns& ns, int n = 1500);

}  // namespace relink::test
