#include "config/config.h"

#include <gtest/gtest.h>

namespace relink::config {
namespace {

const char* kValid = R"(
[daemon]
control_socket = "/run/relinkd/control.sock"
state_dir = "/run/relinkd"

[[vm]]
name = "web1"
qmp = "/run/qemu/web1.qmp"

[[vm.macvtap]]
nic = "nic0"
parent = "eth0"
mode = "bridge"
mac = "52:54:00:12:34:56"
queues = 1
attach = "hub"
hub = 0
)";

// Loads text and returns the error message ("" if it loaded).
std::string error_of(const std::string& text) {
  try {
    (void)load_string(text, "t.toml");
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

std::string with_binding(const std::string& binding_lines) {
  return "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\n" + binding_lines;
}

TEST(Config, LoadsTheDesignExample) {
  Config c = load_string(kValid, "t.toml");
  EXPECT_EQ(c.daemon.control_socket, "/run/relinkd/control.sock");
  ASSERT_EQ(c.vms.size(), 1u);
  const auto& b = c.vms[0].macvtaps.at(0);
  EXPECT_EQ(c.vms[0].name, "web1");
  EXPECT_EQ(c.vms[0].qmp, "/run/qemu/web1.qmp");
  EXPECT_EQ(b.nic, "nic0");
  EXPECT_EQ(b.parent, "eth0");
  EXPECT_EQ(b.mode, macvtap::Mode::Bridge);
  EXPECT_EQ(format_mac(b.mac), "52:54:00:12:34:56");
  EXPECT_EQ(b.queues, 1u);
  EXPECT_EQ(b.hub, 0u);
  EXPECT_EQ(b.macvtap, default_macvtap_name("web1", "nic0"));
  EXPECT_NE(c.find_vm("web1"), nullptr);
  EXPECT_EQ(c.find_vm("nope"), nullptr);
}

TEST(Config, DefaultsApply) {
  Config c = load_string(with_binding("nic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n"), "t.toml");
  EXPECT_EQ(c.daemon.state_dir, "/run/relinkd");
  EXPECT_EQ(c.daemon.log_level, "info");
  EXPECT_EQ(c.daemon.netlink_receive_buffer, size_t{8} << 20);
  EXPECT_EQ(c.daemon.node_dir, "/dev/relinkd");
  const auto& b = c.vms[0].macvtaps[0];
  EXPECT_EQ(b.mode, macvtap::Mode::Bridge);
  EXPECT_EQ(b.attach, AttachMode::Hub);
  EXPECT_EQ(b.queues, 1u);
}

TEST(Config, EmptyFileIsValid) { EXPECT_EQ(error_of(""), ""); }

TEST(Config, DefaultMacvtapNameIsStableAndFits) {
  auto n = default_macvtap_name("web1", "nic0");
  EXPECT_EQ(n, default_macvtap_name("web1", "nic0"));
  EXPECT_NE(n, default_macvtap_name("web1", "nic1"));
  EXPECT_LE(n.size(), 15u);
  EXPECT_TRUE(valid_ifname(n));
}

TEST(Config, SyntaxErrorHasLineAndColumn) {
  EXPECT_EQ(error_of("[daemon]\ncontrol_socket = \n").rfind("t.toml:2:", 0), 0u) << error_of("[daemon]\ncontrol_socket = \n");
}

TEST(Config, ErrorsPointAtTheOffendingValue) {
  // line 7 is "mac = ..." in this text, value at column 7
  std::string text = with_binding("nic = \"nic0\"\nparent = \"eth0\"\nmac = \"52:54:00:zz:34:56\"\n");
  EXPECT_EQ(error_of(text), "t.toml:7:7: 'mac' must look like 52:54:00:12:34:56, not \"52:54:00:zz:34:56\"");
}

struct BadCase {
  const char* text;
  const char* where;  // "LINE:COL"
  const char* says;   // a part of the message
};

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, AreReportedWithPosition) {
  const auto& c = GetParam();
  std::string err = error_of(c.text);
  ASSERT_FALSE(err.empty()) << "accepted: " << c.text;
  EXPECT_EQ(err.rfind(std::string("t.toml:") + c.where + ": ", 0), 0u) << err;
  EXPECT_NE(err.find(c.says), std::string::npos) << err;
}

INSTANTIATE_TEST_SUITE_P(
    All, ConfigErrors,
    ::testing::Values(
        BadCase{"[deamon]\n", "1:2", "unknown key 'deamon'"},
        BadCase{"[daemon]\ncontrol_sokcet = \"/x\"\n", "2:1", "unknown key 'control_sokcet'"},
        BadCase{"[daemon]\ncontrol_socket = \"relative.sock\"\n", "2:18", "absolute path"},
        BadCase{"[daemon]\nlog_level = \"loud\"\n", "2:13", "log_level"},
        BadCase{"[daemon]\nstate_dir = 3\n", "2:13", "must be a string"},
        BadCase{"[daemon]\nnetlink_receive_buffer = 100\n", "2:26", "between 4096 and"},
        BadCase{"vm = 3\n", "1:6", "array of tables"},
        BadCase{"[[vm]]\nqmp = \"/q\"\n", "1:1", "missing required key 'name'"},
        BadCase{"[[vm]]\nname = \"a b\"\nqmp = \"/q\"\n", "2:8", "VM name"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"q\"\n", "3:7", "absolute path"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm]]\nname = \"a\"\nqmp = \"/r\"\n", "5:8", "duplicate VM name"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm]]\nname = \"b\"\nqmp = \"/q\"\n", "6:7", "already used"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\n", "4:1", "not supported"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n",
                "4:1", "missing required key 'nic'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"0nic\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n",
                "5:7", "QEMU device id"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"a/b\"\nmac = \"52:54:00:00:00:01\"\n",
                "6:10", "interface name"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"averyveryverylongname\"\nmac = \"52:54:00:00:00:01\"\n",
                "6:10", "interface name"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nmode = \"vlan\"\n",
                "8:8", "vepa, bridge, private, passthru"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"01:54:00:00:00:01\"\n",
                "7:7", "multicast"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"00:00:00:00:00:00\"\n",
                "7:7", "all zero"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nqueues = 0\n",
                "8:10", "between 1 and 256"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nqueues = 4\n",
                "8:10", "only queues = 1"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nattach = \"replug\"\n",
                "8:10", "not supported"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nhub = -1\n",
                "8:7", "between 0 and"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nqueus = 1\n",
                "8:1", "unknown key 'queus'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n"
                "[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:02\"\n",
                "9:7", "bound twice"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n"
                "[[vm.macvtap]]\nnic = \"m\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n",
                "8:1", "used by two bindings"}));

TEST(Config, MissingFileIsAClearError) {
  try {
    (void)load_file("/nonexistent/relinkd.toml");
    FAIL() << "loaded a missing file";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/relinkd.toml:0:0: cannot read"), std::string::npos) << e.what();
  }
}

TEST(Config, IdAndIfnameRules) {
  EXPECT_TRUE(valid_qemu_id("nic0"));
  EXPECT_TRUE(valid_qemu_id("net-1.a_b"));
  EXPECT_FALSE(valid_qemu_id(""));
  EXPECT_FALSE(valid_qemu_id("1nic"));
  EXPECT_FALSE(valid_qemu_id("nic 0"));
  EXPECT_TRUE(valid_ifname("eth0"));
  EXPECT_TRUE(valid_ifname("br-lan.100"));
  EXPECT_FALSE(valid_ifname("."));
  EXPECT_FALSE(valid_ifname("a:b"));
  EXPECT_FALSE(valid_ifname("0123456789abcdef"));
}

}  // namespace
}  // namespace relink::config
