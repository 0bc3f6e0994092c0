// SPDX-License-Identifier: GPL-2.0-or-later
// A libvirt domain's taps on a host bridge, end to end: a real libvirtd in
// the test's namespace (tests/support/libvirt_env.h), the real test guest on
// an <interface type='bridge'> or on a network that forwards to a host
// bridge, and relinkd following libvirt with no VM in its config file. The
// bridge is deleted and created again under the same name with its uplink
// port re-added, as NetworkManager does: relinkd puts the tap back, the
// guest answers, and libvirt is not touched (the live XML, dominfo and the
// domain's state and reason stay as they were). An interface its owner
// detaches is no longer followed; libvirt's own networks are left to
// libvirt.
#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

#include "test_guest.h"
#include "support/libvirt_env.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kMac = "52:54:00:12:34:56";

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

class LibvirtBridges : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ASSERT_FALSE(guest.dir().empty());
    // The uplink: up0 in relinkd's (and libvirtd's) namespace, its veth
    // peer up1 in the peer namespace with the peer's address.
    env.ns().ip("link add up0 type veth peer name up1 netns " + guest.peer().name());
    guest.peer().ip("addr add " + std::string(TestGuest::kPeerIp) + "/24 dev up1");
    guest.peer().ip("link set up1 up");
    make_bridge();
    ASSERT_NO_FATAL_FAILURE(lv.start());
  }
  // What NetworkManager does when it activates a bridge profile: the bridge
  // (a new ifindex), its port, up.
  void make_bridge() {
    env.ns().ip("link add br0 type bridge");
    env.ns().ip("link set up0 master br0");
    env.ns().ip("link set up0 up");
    env.ns().ip("link set br0 up");
  }
  void start_relinkd() {
    DaemonEnv::write_file(env.config_path(), env.config_text({}) + "\n[libvirt]\nuri = \"" + lv.uri() +
                                                 "\"\npid_dir = \"" + lv.pid_dir() + "\"\n");
    ASSERT_NO_FATAL_FAILURE(env.start_relinkd());
  }
  DomainSpec guest_domain(const std::string& name, BridgeNic nic) {
    DomainSpec d;
    d.name = name;
    d.bridge_nics.push_back(std::move(nic));
    d.guest_dir = guest.dir();
    d.cmdline_extra = TestGuest::cmdline();
    d.serial_log = env.dir() + "/" + name + ".console.log";
    return d;
  }
  void boot(const DomainSpec& d) {
    ASSERT_TRUE(lv.create(domain_xml(d))) << lv.log();
    ASSERT_TRUE(guest.answers(90s)) << "guest unreachable through its bridge\n" << explain(d.name);
  }
  // The tap's binding in status, an empty object when there is none.
  json tap_binding(const std::string& vm, const std::string& tap) {
    auto st = env.status();
    if (!st.is_object()) return json::object();
    for (const auto& v : st["vms"])
      if (v.value("name", "") == vm)
        for (const auto& b : v["bindings"])
          if (b.value("kind", "") == "bridge" && b.value("tap", "") == tap) return b;
    return json::object();
  }
  json vm(const std::string& name) {
    auto st = env.status();
    if (!st.is_object()) return nullptr;
    for (const auto& v : st["vms"])
      if (v.value("name", "") == name) return v;
    return nullptr;
  }
  std::string vm_source(const std::string& name) {
    auto v = vm(name);
    return v.is_object() ? v.value("source", "") : "";
  }
  size_t bindings_of(const std::string& name) {
    auto v = vm(name);
    return v.is_object() ? v["bindings"].size() : 0;
  }
  // `virsh domiflist`: the tap of the interface with this MAC ("" none).
  std::string tap_of(const std::string& domain, const std::string& mac = kMac) {
    std::istringstream in(lv.virsh("domiflist " + domain).out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string iface, type, source, model, m;
      if (f >> iface >> type >> source >> model >> m && m == mac) return iface;
    }
    return "";
  }
  // The name of the interface's master, from `ip -o link` ("" none).
  std::string master_of(const std::string& dev) {
    const std::string out = env.ns().run("ip -o link show dev " + dev).out;
    const size_t at = out.find(" master ");
    if (at == std::string::npos) return "";
    std::istringstream f(out.substr(at + 8));
    std::string name;
    f >> name;
    return name;
  }
  // What libvirt says about the domain, minus what a running guest changes
  // by itself (CPU time).
  std::string libvirt_view(const std::string& domain) {
    std::string info;
    std::istringstream in(lv.virsh_ok("dominfo " + domain));
    for (std::string line; std::getline(in, line);)
      if (line.rfind("CPU time:", 0) != 0) info += line + "\n";
    return lv.virsh_ok("dumpxml " + domain) + info + lv.virsh_ok("domstate --reason " + domain);
  }
  std::string explain(const std::string& domain) {
    return env.explain() + "\nlibvirtd log (tail):\n" + lv.log() + "\ndomain's QEMU log (tail):\n" +
           DaemonEnv::tail(lv.qemu_log(domain), 1500) + "\nconsole (tail):\n" +
           DaemonEnv::tail(read_file(env.dir() + "/" + domain + ".console.log"), 1500) + "\nlinks:\n" +
           env.ns().run("ip -o link; bridge link").out;
  }
  // Deletes br0 and creates it again: the tap is a port of the new bridge
  // and up, the uplink too, the binding counted one more re-join, and the
  // guest answers. Returns the time from the bridge's return to the guest's
  // answer, in ms.
  double recreate_bridge(const std::string& domain, const std::string& tap, uint64_t rejoins) {
    const int old_bridge = env.ns().ifindex("br0");
    env.ns().ip("link del br0");
    make_bridge();
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_NE(env.ns().ifindex("br0"), old_bridge);
    EXPECT_TRUE(guest.answers(30s)) << "guest unreachable after re-creation " << rejoins << "\n" << explain(domain);
    const double answered_ms = ms_since(t0);
    EXPECT_EQ(master_of(tap), "br0") << explain(domain);
    EXPECT_NE(env.ns().run("ip -o link show dev " + tap).out.find(",UP"), std::string::npos)
        << env.ns().run("ip -o link show dev " + tap).out;
    EXPECT_TRUE(wait_until(
        [&] {
          auto b = tap_binding(domain, tap);
          return b.value("state", "") == "attached" && b.value("rejoins", 0u) == rejoins;
        },
        10s))
        << explain(domain);
    return answered_ms;
  }
  void expect_untainted(const std::string& domain) {
    EXPECT_EQ(lv.qemu_log(domain).find("custom-monitor"), std::string::npos)
        << DaemonEnv::tail(lv.qemu_log(domain), 2000);
  }

  DaemonEnv env;
  TestGuest guest{env.dir() + "/g1.console.log"};
  LibvirtEnv lv{env.ns()};
};

// <interface type='bridge'>: ten re-creations in a row, each one answered
// by the guest through the new bridge, with libvirt untouched. Then the
// interface detached by its owner: dropped, and the next re-created bridge
// gets no port of it.
TEST_F(LibvirtBridges, TapRejoinsTenRecreatedBridgesAndLibvirtIsUntouched) {
  ASSERT_NO_FATAL_FAILURE(boot(guest_domain("g1", BridgeNic{kMac, "br0", ""})));
  const std::string tap = tap_of("g1");
  ASSERT_FALSE(tap.empty()) << lv.virsh("domiflist g1").out;
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(wait_until([&] { return tap_binding("g1", tap).value("state", "") == "attached"; }, 20s))
      << explain("g1");
  auto b = tap_binding("g1", tap);
  EXPECT_EQ(b.value("bridge", ""), "br0");
  EXPECT_EQ(vm_source("g1"), "libvirt");
  const std::string before = libvirt_view("g1");

  std::vector<double> answered;
  for (uint64_t i = 1; i <= 10; ++i) {
    answered.push_back(recreate_bridge("g1", tap, i));
    ASSERT_FALSE(HasFailure()) << "re-creation " << i;
  }
  std::sort(answered.begin(), answered.end());
  std::printf("bridge re-created -> guest answers: p50 %.0f ms, max %.0f ms over %zu\n", answered[answered.size() / 2],
              answered.back(), answered.size());
  EXPECT_EQ(libvirt_view("g1"), before) << "libvirt's view of the domain changed";
  EXPECT_EQ(tap_of("g1"), tap);
  expect_untainted("g1");

  // Detached by its owner: no longer followed, and not put back.
  lv.virsh_ok(std::string("detach-interface g1 bridge --mac ") + kMac + " --live");
  ASSERT_TRUE(wait_until([&] { return tap_of("g1").empty() && bindings_of("g1") == 0; }, 20s)) << explain("g1");
  env.ns().ip("link del br0");
  make_bridge();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(env.ns().run("bridge link show master br0 | grep -c .").out, "1\n")
      << "only the uplink is a port: " << env.ns().run("bridge link").out;
  EXPECT_TRUE(vm("g1").is_object());
  EXPECT_TRUE(env.relinkd().running());
}

// <interface type='network'> of a network that forwards to the host bridge
// br0: followed like a bridge interface (libvirt writes it as one in the
// live XML). The domain's second interface is on libvirt's own isolated
// network, whose bridge libvirt makes itself: left to libvirt. A stopped
// domain's taps are no longer followed.
TEST_F(LibvirtBridges, NetworkForwardedToAHostBridgeRejoinsAndLibvirtNetworksAreLeftAlone) {
  DaemonEnv::write_file(lv.dir() + "/hostbr.xml",
                        "<network><name>hostbr</name><forward mode='bridge'/><bridge name='br0'/></network>");
  lv.virsh_ok("net-create " + lv.dir() + "/hostbr.xml");
  DaemonEnv::write_file(lv.dir() + "/iso.xml", "<network><name>iso</name><bridge name='rlvirbr9'/></network>");
  lv.virsh_ok("net-create " + lv.dir() + "/iso.xml");
  DomainSpec d = guest_domain("g2", BridgeNic{kMac, "", "hostbr"});
  d.bridge_nics.push_back(BridgeNic{"52:54:00:12:34:57", "", "iso"});
  ASSERT_NO_FATAL_FAILURE(boot(d));
  const std::string tap = tap_of("g2");
  const std::string libvirts_tap = tap_of("g2", "52:54:00:12:34:57");
  ASSERT_FALSE(tap.empty()) << lv.virsh("domiflist g2").out;
  ASSERT_EQ(master_of(libvirts_tap), "rlvirbr9");
  ASSERT_NO_FATAL_FAILURE(start_relinkd());
  ASSERT_TRUE(wait_until([&] { return tap_binding("g2", tap).value("state", "") == "attached"; }, 20s))
      << explain("g2");
  EXPECT_EQ(bindings_of("g2"), 1u) << "the isolated network's tap is libvirt's";
  EXPECT_NE(read_file(env.log_path()).find(libvirts_tap + " on libvirt's network 'iso' (rlvirbr9): left to libvirt"),
            std::string::npos)
      << explain("g2");
  const std::string before = libvirt_view("g2");

  ASSERT_NO_FATAL_FAILURE(recreate_bridge("g2", tap, 1));
  EXPECT_EQ(libvirt_view("g2"), before) << "libvirt's view of the domain changed";
  EXPECT_EQ(master_of(libvirts_tap), "rlvirbr9");
  expect_untainted("g2");

  lv.virsh_ok("destroy g2");
  ASSERT_TRUE(wait_until([&] { return vm("g2").is_null(); }, 20s)) << explain("g2");
  EXPECT_TRUE(env.relinkd().running());
}

}  // namespace
}  // namespace relink::test
