// SPDX-License-Identifier: GPL-2.0-or-later
// The booted test guest (tests/guest: Debian's kernel and a busybox
// initramfs, under TCG) as the daemon's end-to-end tests drive it: the peer
// namespace that reaches it across the parent, the guest's kernel command
// line, and its serial console with the RELINK-GUEST-* markers its init
// prints (tests/guest/README.md).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "daemon_env.h"

namespace relink::test {

class TestGuest {
 public:
  static constexpr const char* kIp = "192.0.2.2";
  static constexpr const char* kPeerIp = "192.0.2.1";

  // `console`: the file the guest's serial port is written to.
  explicit TestGuest(std::string console) : console_(std::move(console)) {}

  // The guest's image directory, built when missing or stale; "" with a test
  // failure when it cannot be built.
  const std::string& dir() {
    if (dir_.empty()) dir_ = test_guest_dir();
    return dir_;
  }
  const Netns& peer() const { return peer_; }
  const std::string& console_path() const { return console_; }

  // Parent `parent` in `ns` (relinkd's namespace), up; its veth peer p1 in
  // the peer namespace with the peer's address, as a switch port would be.
  void add_parent(const Netns& ns, const std::string& parent = "p0") const {
    ns.run_ok("ip link add " + parent + " type veth peer name p1 netns " + peer_.name() + " && ip link set " +
              parent + " up");
    peer_.ip("addr add " + std::string(kPeerIp) + "/24 dev p1");
    peer_.ip("link set p1 up");
  }

  // The guest's kernel parameters beyond its tag: its address, `extra`
  // (e.g. "relink.serve=8080"), and a link poll of 50 ms.
  static std::string cmdline(const std::string& extra = "") {
    return std::string("relink.ip=") + kIp + "/24 " + (extra.empty() ? "" : extra + " ") + "relink.poll=0.05";
  }
  // QEMU's arguments that boot it with `tag` and the kernel parameters
  // `params`, its serial port on console_path().
  std::vector<std::string> qemu_args(const std::string& tag, const std::string& params = cmdline()) {
    const std::string d = dir();
    const std::string kernel = std::filesystem::exists(d + "/vmlinux") ? "/vmlinux" : "/vmlinuz";
    return {"-no-reboot", "-serial", "file:" + console_,       "-kernel",
            d + kernel,   "-initrd", d + "/initramfs.cpio.gz", "-append",
            "console=ttyS0 quiet panic=-1 relink.tag=" + tag + " " + params};
  }

  // The peer pings the guest until it answers or `timeout` passes.
  bool answers(std::chrono::milliseconds timeout, std::chrono::milliseconds every = std::chrono::milliseconds(100)) const {
    return wait_until([&] { return peer_.run(std::string("busybox ping -c1 -W1 ") + kIp).status == 0; }, timeout,
                      every);
  }
  // What the guest's TCP service on 8080 says (relink.serve=8080).
  std::string hello() const { return peer_.run(std::string("busybox nc -w 3 ") + kIp + " 8080 </dev/null").out; }

  std::string console() const { return read_file(console_); }
  std::string console_tail(size_t bytes = 2000) const { return DaemonEnv::tail(console(), bytes); }
  // How often the console shows `marker`.
  size_t markers(const std::string& marker) const {
    const std::string c = console();
    size_t n = 0;
    for (size_t p = c.find(marker); p != std::string::npos; p = c.find(marker, p + 1)) ++n;
    return n;
  }
  bool wait_for_marker(const std::string& marker, size_t count,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
    return wait_until([&] { return markers(marker) >= count; }, timeout, std::chrono::milliseconds(20));
  }
  // The guest's init says READY once its NICs are configured and its
  // services listen.
  bool wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(120)) const {
    return wait_until([&] { return markers("RELINK-GUEST-READY") > 0; }, timeout, std::chrono::milliseconds(100));
  }

 private:
  std::string console_;
  std::string dir_;
  Netns peer_{"peer"};
};

}  // namespace relink::test
