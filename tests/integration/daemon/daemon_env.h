// SPDX-License-Identifier: GPL-2.0-or-later
// A sandbox for relinkd integration tests: a throwaway network namespace for
// the host side, a real QEMU (-S: QMP only, no guest) wired for hub attach,
// and a real relinkd running in the namespace. Everything is removed on
// destruction, whatever the test did.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/hub_attach.h"
#include "daemon/qemu_names.h"
#include "qemu/info_network.h"
#include "support/harness.h"
#include "support/qmp_sync.h"

namespace relink::test {

// A string field of a status object; "" when it is null (none) or missing.
inline std::string text_of(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

inline std::string relinkd_bin() { return binary_dir() + "/relinkd"; }
inline std::string relinkctl_bin() { return binary_dir() + "/relinkctl"; }
// This test program, for [daemon] qemu_binaries when it plays QEMU (FakeQmp).
// The test guest (tests/guest), built into BUILD/guest when missing or
// stale; its directory, or "" (with the build's output as a test failure).
inline std::string test_guest_dir() {
  const std::string dir = binary_dir() + "/guest";
  auto r = sh("bash " + source_dir() + "/tests/guest/build-guest.sh " + dir);
  if (r.status == 0) return dir;
  ADD_FAILURE() << "building the test guest failed:\n" << r.out;
  return "";
}
inline std::string self_exe() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

struct VmSpec {
  std::string name = "vm1";
  std::string nic = "nic0";
  std::string parent = "p0";
  std::string mac = "52:54:00:12:34:56";
  int hub = 0;
  std::string attach = "hub";  // "hub" or "replug"
  unsigned queues = 1;
  std::string extra;           // more lines for the [[vm.macvtap]] table
};

class DaemonEnv {
 public:
  DaemonEnv() : dir_("/tmp/relink-it-" + random_suffix()) {
    std::filesystem::create_directories(dir_);
    // Parent directories of sockets must not be world-writable paths we share.
    chmod(dir_.c_str(), 0700);
  }
  ~DaemonEnv() {
    relinkd_.kill_now();
    qemus_.clear();
    std::error_code ec;
    if (!::testing::Test::HasFailure() || getenv("RELINK_KEEP_LOGS") == nullptr)
      std::filesystem::remove_all(dir_, ec);
  }

  // Run before every QEMU (exec'ing it, so that the pid stays QEMU's), with
  // these fds inherited.
  std::vector<std::string> qemu_wrapper;
  std::vector<int> qemu_keep_fds;

  Netns& ns() { return ns_; }
  const std::string& dir() const { return dir_; }
  std::string qmp_path(const std::string& vm) const { return dir_ + "/" + vm + ".qmp"; }
  std::string test_qmp_path(const std::string& vm) const { return dir_ + "/" + vm + ".test.qmp"; }
  std::string control() const { return dir_ + "/control.sock"; }
  std::string config_path() const { return dir_ + "/relinkd.toml"; }
  std::string log_path() const { return dir_ + "/relinkd.log"; }

  std::string config_text(const std::vector<VmSpec>& vms) const {
    std::string t = "[daemon]\ncontrol_socket = \"" + control() + "\"\nstate_dir = \"" + dir_ +
                    "/state\"\nnode_dir = \"" + dir_ + "/dev\"\nlog_level = \"debug\"\n";
    for (const auto& vm : vms) {
      t += "\n[[vm]]\nname = \"" + vm.name + "\"\nqmp = \"" + qmp_path(vm.name) + "\"\n";
      t += "[[vm.macvtap]]\nnic = \"" + vm.nic + "\"\nparent = \"" + vm.parent + "\"\nmode = \"bridge\"\nmac = \"" +
           vm.mac + "\"\n";
      if (vm.attach == "replug")
        t += "attach = \"replug\"\nqueues = " + std::to_string(vm.queues) + "\n";
      else
        t += "hub = " + std::to_string(vm.hub) + "\n";
      t += vm.extra;
    }
    return t;
  }
  void write_config(const std::vector<VmSpec>& vms, const std::string& daemon_extra = "") {
    std::string t = config_text(vms);
    if (!daemon_extra.empty()) t.insert(t.find("\n[[vm]]"), "\n" + daemon_extra);
    write_file(config_path(), t);
  }
  static void write_file(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }

  // A QEMU whose NIC hangs off hub `hub` through "<nic>.port". With no
  // `guest` arguments it runs no guest (-S: QMP only); otherwise they are
  // appended (kernel, initrd, serial, ...).
  void start_qemu(const VmSpec& vm, const std::vector<std::string>& guest = {}) {
    start_qemu_with(vm.name,
                    {"-netdev", "hubport,id=" + vm.nic + ".port,hubid=" + std::to_string(vm.hub), "-device",
                     "virtio-net-pci,netdev=" + vm.nic + ".port,id=" + vm.nic + ",mac=" + vm.mac},
                    guest);
  }
  // A QEMU with the given network options (-netdev/-device ...).
  // `prefix` runs QEMU by exec'ing it (e.g. a shell that opens an fd for it).
  void start_qemu_with(const std::string& name, const std::vector<std::string>& net,
                       const std::vector<std::string>& guest = {}, const std::string& machine = "q35",
                       const std::vector<std::string>& prefix = {}) {
    VmSpec vm;
    vm.name = name;
    std::filesystem::remove(qmp_path(vm.name));
    std::filesystem::remove(test_qmp_path(vm.name));
    std::vector<std::string> argv = qemu_wrapper;
    argv.insert(argv.end(), prefix.begin(), prefix.end());
    argv.insert(argv.end(), {
        "qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", machine, "-accel", "tcg",
        "-m", guest.empty() ? "64" : "256", "-qmp", "unix:" + qmp_path(vm.name) + ",server=on,wait=off", "-qmp",
        "unix:" + test_qmp_path(vm.name) + ",server=on,wait=off"});
    argv.insert(argv.end(), net.begin(), net.end());
    if (guest.empty()) argv.push_back("-S");
    argv.insert(argv.end(), guest.begin(), guest.end());
    qemus_[vm.name] = std::make_unique<Child>(argv, Child::Options{"", dir_ + "/" + vm.name + ".qemu.log", qemu_keep_fds});
    auto q = std::make_unique<QmpSync>();
    ASSERT_TRUE(q->connect(test_qmp_path(vm.name))) << read_file(dir_ + "/" + vm.name + ".qemu.log");
    test_qmp_[vm.name] = std::move(q);
  }
  // A QEMU wired directly, as a launcher starts one: the NIC peered with a
  // tap netdev whose fd is a macvtap the launcher made (`launcher_macvtap`
  // on the VM's parent, opened and passed on the command line), or with no
  // netdev at all when that is empty. On q35 the NIC sits on a
  // pcie-root-port of its own.
  void start_qemu_direct(const VmSpec& vm, const std::string& machine, const std::string& launcher_macvtap,
                         const std::vector<std::string>& guest = {}) {
    std::vector<std::string> net, prefix;
    std::string dev = "virtio-net-pci,id=" + vm.nic + ",mac=" + vm.mac;
    if (machine == "q35") {
      net = {"-device", "pcie-root-port,id=rp1,chassis=1,slot=1"};
      dev += ",bus=rp1";
    }
    if (!launcher_macvtap.empty()) {
      ns_.ip("link add link " + vm.parent + " name " + launcher_macvtap + " address " + vm.mac +
             " type macvtap mode bridge");
      ns_.ip("link set " + launcher_macvtap + " up");
      const int ifindex = ns_.ifindex(launcher_macvtap);
      const std::string devno =
          ns_.run("cat /sys/class/net/" + launcher_macvtap + "/macvtap/tap" + std::to_string(ifindex) + "/dev").out;
      unsigned maj = 0, min = 0;
      ASSERT_EQ(sscanf(devno.c_str(), "%u:%u", &maj, &min), 2) << devno;
      const std::string node = dir_ + "/" + launcher_macvtap + ".node";
      ASSERT_EQ(mknod(node.c_str(), S_IFCHR | 0600, makedev(maj, min)), 0) << node;
      prefix = {"sh", "-c", "exec 3<>" + node + "; exec \"$0\" \"$@\""};
      net.insert(net.end(), {"-netdev", "tap,id=hostnet0,fd=3,vhost=off"});
      dev += ",netdev=hostnet0";
    }
    net.insert(net.end(), {"-device", dev});
    start_qemu_with(vm.name, net, guest, machine, prefix);
  }
  void kill_qemu(const std::string& vm) {
    test_qmp_.erase(vm);
    qemus_.erase(vm);
  }
  Child* qemu(const std::string& vm) { return qemus_.count(vm) ? qemus_[vm].get() : nullptr; }
  QmpSync& test_qmp(const std::string& vm) { return *test_qmp_.at(vm); }

  // `wrapper` is a command that runs relinkd by exec'ing it, so that pid()
  // is relinkd's (e.g. {"prlimit", "--nofile=48:48"}).
  void start_relinkd(const std::vector<std::string>& wrapper = {}) {
    std::vector<std::string> argv = wrapper;
    argv.insert(argv.end(), {relinkd_bin(), "--config", config_path()});
    relinkd_ = Child(argv, Child::Options{ns_.name(), log_path(), {}});
    ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(control()); }, std::chrono::seconds(10)))
        << "relinkd did not create its control socket\n"
        << read_file(log_path());
  }
  Child& relinkd() { return relinkd_; }

  // `relinkctl status --json`, parsed (null on failure).
  nlohmann::json status() {
    auto r = sh(relinkctl_bin() + " --socket " + control() + " status --json 2>/dev/null");
    if (r.status != 0) return nullptr;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json(nullptr) : j;
  }
  nlohmann::json binding(const std::string& vm, const std::string& nic = "nic0") {
    auto st = status();
    if (!st.is_object()) return nullptr;
    for (const auto& v : st["vms"])
      if (v["name"] == vm)
        for (const auto& b : v["bindings"])
          if (b.value("nic", "") == nic || b.value("netdev", "") == nic) return b;
    return nullptr;
  }
  std::string state(const std::string& vm = "vm1") {
    auto b = binding(vm);
    return b.is_object() ? b.value("state", "") : "";
  }
  // Waits until the binding is in `want` (and, if gen > 0, at that generation).
  bool wait_state(const std::string& want, uint64_t gen = 0, const std::string& vm = "vm1",
                  std::chrono::milliseconds timeout = std::chrono::seconds(10), const std::string& nic = "nic0") {
    return wait_until(
        [&] {
          auto b = binding(vm, nic);
          return b.is_object() && b.value("state", "") == want && (gen == 0 || b.value("generation", 0ull) == gen);
        },
        timeout, std::chrono::milliseconds(10));
  }
  std::string explain() {
    return "status: " + status().dump() + "\nrelinkd log (tail):\n" + tail(read_file(log_path()), 3000);
  }
  static std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

  // What QEMU holds for the binding, as seen through the test's own QMP.
  std::map<uint64_t, daemon::GenerationPieces> generations(const std::string& vm = "vm1",
                                                           const std::string& nic = "nic0") {
    return daemon::find_generations(qemu::parse_info_network(test_qmp(vm).info_network()), nic);
  }

  // Asserts the binding is attached at `gen`: QEMU's hub has exactly that
  // generation's uplink peering its tap, the macvtap exists on the parent
  // with the guest's MAC, and QEMU holds that very macvtap's device open.
  void expect_attached(uint64_t gen, const VmSpec& vm = VmSpec{}) {
    auto gens = generations(vm.name, vm.nic);
    ASSERT_EQ(gens.size(), 1u) << test_qmp(vm.name).info_network();
    ASSERT_TRUE(gens.count(gen)) << test_qmp(vm.name).info_network();
    const auto& p = gens.at(gen);
    EXPECT_TRUE(p.tap && p.uplink && p.uplink_peers_tap) << test_qmp(vm.name).info_network();
    EXPECT_EQ(p.uplink_hub, vm.hub);
    auto b = binding(vm.name, vm.nic);
    const std::string mvt = text_of(b, "macvtap");
    auto link = ns_.run("ip -d link show " + mvt);
    ASSERT_EQ(link.status, 0) << "macvtap " << mvt << " missing";
    EXPECT_NE(link.out.find("macvtap mode bridge"), std::string::npos) << link.out;
    EXPECT_NE(link.out.find(vm.mac), std::string::npos) << link.out;
    const std::string lower = ns_.run("ip -o link show " + vm.parent + " | sed -n 's/.*@\\([^:]*\\):.*/\\1/p'").out;
    const bool on_parent = link.out.find("@" + vm.parent + ":") != std::string::npos ||
                           (!lower.empty() && link.out.find("@" + lower.substr(0, lower.size() - 1) + ":") != std::string::npos);
    EXPECT_TRUE(on_parent) << link.out;  // on the parent, or on a macvlan parent's lower device
    EXPECT_EQ(b.value("macvtap_ifindex", 0), ns_.ifindex(mvt));
    const int ifindex = ns_.ifindex(mvt);
    auto dev = ns_.run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev");
    unsigned maj = 0, min = 0;
    ASSERT_EQ(sscanf(dev.out.c_str(), "%u:%u", &maj, &min), 2) << dev.out;
    EXPECT_TRUE(daemon::process_holds_device(qemu(vm.name)->pid(), makedev(maj, min)))
        << "QEMU does not hold macvtap " << mvt << "'s device " << dev.out;
    expect_only_tap_fds(qemu(vm.name)->pid(), makedev(maj, min), 1);
  }

  // The macvtap devices (character devices of the macvtap major) a process
  // holds open, one entry per fd, read from /proc/PID/fd.
  static std::vector<dev_t> tap_fds(pid_t pid, unsigned major) {
    std::vector<dev_t> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      struct stat st {};
      if (stat(e.path().c_str(), &st) == 0 && S_ISCHR(st.st_mode) && ::major(st.st_rdev) == major)
        out.push_back(st.st_rdev);
    }
    return out;
  }
  // QEMU holds exactly `queues` fds of macvtap device `dev` and none of any
  // other macvtap: an old generation's tap is closed (within 2 s: QEMU may
  // release a deleted backend's fd a little after netdev_del returns).
  static void expect_only_tap_fds(pid_t pid, dev_t dev, size_t queues) {
    std::vector<dev_t> fds;
    const bool ok = wait_until(
        [&] {
          fds = tap_fds(pid, ::major(dev));
          return fds.size() == queues && std::all_of(fds.begin(), fds.end(), [&](dev_t d) { return d == dev; });
        },
        std::chrono::seconds(2), std::chrono::milliseconds(20));
    std::string seen;
    for (dev_t d : fds) seen += " " + std::to_string(::major(d)) + ":" + std::to_string(::minor(d));
    EXPECT_TRUE(ok) << "QEMU pid " << pid << " should hold " << queues << " fd(s) of macvtap " << ::major(dev) << ":"
                    << ::minor(dev) << " and no other macvtap; it holds:" << (seen.empty() ? " none" : seen);
  }

  // An uplink for passt, which copies the host's address and will not start
  // without a default route: up0 (192.0.2.1/24, peer up1), default via
  // 192.0.2.254, lo up.
  void add_passt_uplink() {
    ns_.ip("link add up0 type veth peer name up1");
    ns_.ip("addr add 192.0.2.1/24 dev up0");
    ns_.ip("link set up0 up");
    ns_.ip("link set up1 up");
    ns_.ip("link set lo up");
    ns_.ip("route add default via 192.0.2.254 dev up0");
  }

  // A veth pair NAME / NAME-<random>, both up: NAME is the parent.
  void add_veth_parent(const std::string& name = "p0") {
    const std::string peer = "pr" + random_suffix(8);
    ns_.ip("link add " + name + " type veth peer name " + peer);
    ns_.ip("link set " + name + " up");
    ns_.ip("link set " + peer + " up");
  }

 private:
  Netns ns_{"it"};
  std::string dir_;
  std::map<std::string, std::unique_ptr<Child>> qemus_;
  std::map<std::string, std::unique_ptr<QmpSync>> test_qmp_;
  Child relinkd_;
};

}  // namespace relink::test
