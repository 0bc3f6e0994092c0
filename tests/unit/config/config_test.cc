// SPDX-License-Identifier: GPL-2.0-or-later
#include "config/config.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <pwd.h>

#include <fstream>
#include <sstream>

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

// Names the case in test output instead of dumping its bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.where << " " << c.says; }

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
        BadCase{"[[vm]]\nname = \"..\"\nqmp = \"/q\"\n", "2:8", "is not allowed"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"q\"\n", "3:7", "absolute path"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm]]\nname = \"a\"\nqmp = \"/r\"\n", "5:8", "duplicate VM name"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm]]\nname = \"b\"\nqmp = \"/q\"\n", "6:7", "already used"},
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
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nattach = \"plug\"\n",
                "8:10", "\"hub\" or \"replug\""},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nattach = \"replug\"\nhub = 1\n",
                "9:7", "attach = \"hub\" only"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nrelease_timeout = 5\n",
                "8:19", "attach = \"replug\" only"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nattach = \"replug\"\nrelease_timeout = 0\n",
                "9:19", "between 1 and 600"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nrelease = \"on-loss\"\n",
                "8:11", "a hub NIC is never released"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nattach = \"replug\"\nrelease = \"on_loss\"\n",
                "9:11", "\"on-return\" or \"on-loss\", not \"on_loss\""},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nfollow_carrier = \"yes\"\n",
                "8:18", "true or false"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nparent_mac = \"ff:ff:ff:ff:ff:ff\"\n",
                "8:14", "unicast MAC"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nmacvtap = \"macvtap3\"\n",
                "8:11", "libvirt's"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nmacvtap = \"p\"\n",
                "8:11", "parent's name"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nhub = -1\n",
                "8:7", "between 0 and"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\nqueus = 1\n",
                "8:1", "unknown key 'queus'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n"
                "[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:02\"\n",
                "9:7", "bound twice"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n"
                "[[vm.macvtap]]\nnic = \"m\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n",
                "11:7", "used by two bindings"},
        BadCase{"[daemon]\npasst = \"passt\"\n", "2:9", "'passt' must be an absolute path"},
        BadCase{"[libvirt]\nuri = \"\"\n", "2:7", "must not be empty"},
        BadCase{"[libvirt]\ndomains = \"web\"\n", "2:11", "array of domain names"},
        BadCase{"[libvirt]\ndomains = [\"web\", \"web\"]\n", "2:19", "listed twice"},
        BadCase{"[libvirt]\nrelease_timeout = 0\n", "2:19", "between 1 and 600"},
        BadCase{"[libvirt]\npid_dir = \"run/libvirt\"\n", "2:11", "absolute path"},
        BadCase{"[libvirt]\nrelease = \"never\"\n", "2:11", "\"on-return\" or \"on-loss\", not \"never\""},
        BadCase{"[libvirt]\nrelease = true\n", "2:11", "must be a string"},
        BadCase{"[libvirt]\nenabled = 1\n", "2:11", "true or false"},
        BadCase{"[libvirt]\nurl = \"qemu:///system\"\n", "2:1", "unknown key 'url'"},
        BadCase{"libvirt = 1\n", "1:11", "must be a table"},
        BadCase{"[daemon]\npasst = 1\n", "2:9", "'passt' must be a string"}));

// [[vm.passt]] ---------------------------------------------------------------

const char* kPasst = R"(
[daemon]
passt = "/opt/passt/bin/passt"

[[vm]]
name = "web1"
qmp = "/run/qemu/web1.qmp"

[[vm.passt]]
netdev = "net1"
mode = "stream-client"
socket = "/run/relinkd/web1-net1.sock"
args = ["--tcp-ports", "10001", "-4"]
runas = "nobody"
)";

const std::string kLongSocket =
    "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/" + std::string(107, 'x') + "\"\n";

std::string with_passt(const std::string& binding_lines) {
  return "[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\n" + binding_lines;
}

TEST(ConfigPasst, LoadsEveryField) {
  const passwd* nobody = getpwnam("nobody");
  if (!nobody) GTEST_SKIP() << "no user 'nobody' here";
  Config c = load_string(kPasst, "t.toml");
  EXPECT_EQ(c.daemon.passt, "/opt/passt/bin/passt");
  ASSERT_EQ(c.vms.size(), 1u);
  EXPECT_TRUE(c.vms[0].macvtaps.empty());
  ASSERT_EQ(c.vms[0].passts.size(), 1u);
  const PasstBinding& b = c.vms[0].passts[0];
  EXPECT_EQ(b.netdev, "net1");
  EXPECT_EQ(b.mode, passt::Mode::StreamClient);
  EXPECT_EQ(b.socket, "/run/relinkd/web1-net1.sock");
  EXPECT_EQ(b.args, (std::vector<std::string>{"--tcp-ports", "10001", "-4"}));
  EXPECT_EQ(b.runas, "nobody");
  EXPECT_EQ(b.uid, nobody->pw_uid);
  EXPECT_EQ(b.gid, nobody->pw_gid);
}

TEST(ConfigPasst, EachModeParses) {
  for (auto m : {passt::Mode::StreamServer, passt::Mode::StreamClient, passt::Mode::VhostUser}) {
    Config c = load_string(with_passt("netdev = \"n\"\nsocket = \"/s\"\nmode = \"" + std::string(passt::mode_name(m)) +
                                      "\"\nrunas = \"1000:1000\"\n"),
                           "t.toml");
    EXPECT_EQ(c.vms[0].passts.at(0).mode, m) << passt::mode_name(m);
  }
}

TEST(ConfigPasst, DefaultsApply) {
  const passwd* nobody = getpwnam("nobody");
  if (!nobody) GTEST_SKIP() << "no user 'nobody' here";
  Config c = load_string(with_passt("netdev = \"n\"\nsocket = \"/s\"\n"), "t.toml");
  EXPECT_EQ(c.daemon.passt, "/usr/bin/passt");
  const PasstBinding& b = c.vms[0].passts.at(0);
  EXPECT_EQ(b.mode, passt::Mode::StreamServer);
  EXPECT_TRUE(b.args.empty());
  EXPECT_EQ(b.runas, "nobody");
  EXPECT_EQ(b.uid, nobody->pw_uid);
  EXPECT_EQ(b.gid, nobody->pw_gid);
  EXPECT_EQ(b.uid, 65534u);  // Debian's nobody, and PasstBinding's defaults
  EXPECT_EQ(b, (PasstBinding{.netdev = "n", .socket = "/s"}));
}

TEST(ConfigPasst, RunasUserColonGroup) {
  const passwd* nobody = getpwnam("nobody");
  const group* nogroup = getgrnam("nogroup");
  if (!nobody || !nogroup) GTEST_SKIP() << "no user 'nobody' or group 'nogroup' here";
  uid_t uid = nobody->pw_uid;
  gid_t gid = nogroup->gr_gid;
  Config c = load_string(with_passt("netdev = \"n\"\nsocket = \"/s\"\nrunas = \"nobody:nogroup\"\n"), "t.toml");
  const PasstBinding& b = c.vms[0].passts.at(0);
  EXPECT_EQ(b.runas, "nobody:nogroup");
  EXPECT_EQ(b.uid, uid);
  EXPECT_EQ(b.gid, gid);
}

TEST(ConfigPasst, RunasNumericForms) {
  Config c = load_string(with_passt("netdev = \"n\"\nsocket = \"/s\"\nrunas = \"1234:5678\"\n"), "t.toml");
  EXPECT_EQ(c.vms[0].passts.at(0).uid, 1234u);
  EXPECT_EQ(c.vms[0].passts.at(0).gid, 5678u);
  // A bare uid: its passwd entry's primary group, or the gid of the same number.
  const passwd* pw = getpwuid(43210);
  gid_t expected = pw ? pw->pw_gid : 43210;
  c = load_string(with_passt("netdev = \"n\"\nsocket = \"/s\"\nrunas = \"43210\"\n"), "t.toml");
  EXPECT_EQ(c.vms[0].passts.at(0).uid, 43210u);
  EXPECT_EQ(c.vms[0].passts.at(0).gid, expected);
}

TEST(ConfigPasst, VmsMayMixBindingKinds) {
  std::string text = with_binding("nic = \"nic0\"\nparent = \"eth0\"\nmac = \"52:54:00:00:00:01\"\n") +
                     "[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"/s1\"\nrunas = \"1000\"\n"
                     "[[vm.passt]]\nnetdev = \"net2\"\nsocket = \"/s2\"\nrunas = \"1000\"\n"
                     "[[vm]]\nname = \"b\"\nqmp = \"/q2\"\n"
                     "[[vm.passt]]\nnetdev = \"net1\"\nsocket = \"/s3\"\nrunas = \"1000\"\n";
  Config c = load_string(text, "t.toml");
  ASSERT_EQ(c.vms.size(), 2u);
  EXPECT_EQ(c.vms[0].macvtaps.size(), 1u);
  EXPECT_EQ(c.vms[0].passts.size(), 2u);
  EXPECT_EQ(c.vms[1].passts.size(), 1u);
  EXPECT_EQ(c.vms[1].passts[0].netdev, "net1");  // netdev ids are per VM
  EXPECT_EQ(c.vms[0], c.vms[0]);
  EXPECT_NE(c.vms[0], c.vms[1]);
  Config again = load_string(text, "t.toml");
  EXPECT_EQ(again.vms[0], c.vms[0]);
}

INSTANTIATE_TEST_SUITE_P(
    Passt, ConfigErrors,
    ::testing::Values(
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nsocket = \"/s\"\n", "4:1",
                "missing required key 'netdev'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\n", "4:1",
                "missing required key 'socket'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"1n\"\nsocket = \"/s\"\n", "5:10",
                "QEMU netdev id"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nmode = \"tap\"\n",
                "7:8", "'mode' must be one of stream-server, stream-client, vhost-user, not \"tap\""},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"s.sock\"\n", "6:10",
                "'socket' must be an absolute path"},
        BadCase{kLongSocket.c_str(), "6:10", "too long for a unix socket path"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nsokcet = \"/t\"\n",
                "7:1", "unknown key 'sokcet' in [[vm.passt]]"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\n"
                "[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/t\"\n",
                "8:10", "netdev 'n' is bound twice in VM 'a'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\n"
                "[[vm]]\nname = \"b\"\nqmp = \"/r\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\n",
                "12:10", "passt socket '/s' is used by two [[vm.passt]] bindings"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/q\"\n", "6:10",
                "QMP socket"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/r\"\n"
                "[[vm]]\nname = \"b\"\nqmp = \"/r\"\n",
                "6:10", "QMP socket"},
        BadCase{"[daemon]\ncontrol_socket = \"/c\"\n[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/c\"\n",
                "8:10", "control socket"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\n"
                "args = [\"-t\", \"80\", \"--fd\", \"3\"]\n",
                "7:21", "'args': '--fd' is set by relinkd"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nargs = [\"-t\", 80]\n",
                "7:15", "must be a string"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nargs = \"-t 80\"\n",
                "7:8", "array of strings"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \"root\"\n",
                "7:9", "passt never runs as root"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \"0\"\n",
                "7:9", "passt never runs as root"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \"1000:0\"\n",
                "7:9", "passt never runs as root"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \"no-such-user-rl\"\n",
                "7:9", "unknown user 'no-such-user-rl'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \"1000:no-such-group-rl\"\n",
                "7:9", "unknown group 'no-such-group-rl'"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \"a:b:c\"\n",
                "7:9", "USER, UID, USER:GROUP or UID:GID"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.passt]]\nnetdev = \"n\"\nsocket = \"/s\"\nrunas = \":100\"\n",
                "7:9", "USER, UID, USER:GROUP or UID:GID"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\npasst = 3\n", "4:9", "array of tables"},
        BadCase{"[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n"
                "[[vm.passt]]\nnetdev = \"nic0.port\"\nsocket = \"/s\"\n",
                "9:10", "collides"}));

// The commented [[vm.passt]] example of contrib/relinkd.toml is valid once
// uncommented, and the file itself is valid as shipped.
TEST(ConfigPasst, ContribExampleIsValid) {
  std::ifstream f(std::string(RELINK_SOURCE_DIR) + "/contrib/relinkd.toml");
  ASSERT_TRUE(f) << "cannot read contrib/relinkd.toml";
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  EXPECT_NO_THROW((void)load_string(text, "relinkd.toml"));

  std::istringstream in(text);
  std::string line, uncommented;
  bool in_example = false, found = false;
  while (std::getline(in, line)) {
    if (line.rfind("# [[vm.passt]]", 0) == 0) in_example = found = true;
    if (in_example && line.empty()) in_example = false;
    if (in_example && line.rfind("# ", 0) == 0) line = line.substr(2);
    uncommented += line + "\n";
  }
  ASSERT_TRUE(found) << "contrib/relinkd.toml has no commented [[vm.passt]] example";
  Config c;
  ASSERT_NO_THROW(c = load_string(uncommented, "relinkd.toml")) << uncommented;
  ASSERT_FALSE(c.vms.empty());
  EXPECT_EQ(c.vms.back().passts.size(), 1u);
}

TEST(Config, LibvirtTableTurnsTheSourceOnWithDefaults) {
  EXPECT_FALSE(load_string("", "x").libvirt.enabled);
  auto on = load_string("[libvirt]\n", "x").libvirt;
  EXPECT_TRUE(on.enabled);
  EXPECT_EQ(on.uri, "qemu:///system");
  EXPECT_TRUE(on.domains.empty());
  EXPECT_EQ(on.pid_dir, "/run/libvirt/qemu");
  EXPECT_EQ(on.release_timeout_ms, 10'000u);
  EXPECT_TRUE(on.follow_carrier);
  auto c = load_string(R"([libvirt]
enabled = true
uri = "qemu:///system?socket=/tmp/x/libvirt-sock"
domains = ["web", "db"]
pid_dir = "/tmp/x/qemu"
release_timeout = 3
follow_carrier = false
release = "on-loss"
)", "x").libvirt;
  EXPECT_EQ(c.uri, "qemu:///system?socket=/tmp/x/libvirt-sock");
  EXPECT_EQ(c.domains, (std::vector<std::string>{"web", "db"}));
  EXPECT_EQ(c.pid_dir, "/tmp/x/qemu");
  EXPECT_EQ(c.release_timeout_ms, 3000u);
  EXPECT_FALSE(c.follow_carrier);
  EXPECT_EQ(c.release, config::Release::OnLoss);
  EXPECT_EQ(load_string("[libvirt]\nrelease = \"on-return\"\n", "x").libvirt.release, config::Release::OnReturn);
  EXPECT_FALSE(load_string("[libvirt]\nenabled = false\n", "x").libvirt.enabled);
}

// [libvirt] release for every domain, [libvirt.domain_release] over it for
// the domains it names; each reaches the domain's bindings.
TEST(Config, LibvirtReleaseWithPerDomainExceptions) {
  auto c = load_string(R"([libvirt]
release = "on-loss"

[libvirt.domain_release]
legacy = "on-return"
"web-2" = "on-loss"
)", "x").libvirt;
  EXPECT_EQ(c.release, Release::OnLoss);
  EXPECT_EQ(c.release_of("legacy"), Release::OnReturn);
  EXPECT_EQ(c.release_of("web-2"), Release::OnLoss);
  EXPECT_EQ(c.release_of("other"), Release::OnLoss);
  auto d = load_string("[libvirt]\ndomain_release = { db = \"on-loss\" }\n", "x").libvirt;
  EXPECT_EQ(d.release_of("db"), Release::OnLoss);
  EXPECT_EQ(d.release_of("web"), Release::OnReturn);
  EXPECT_FALSE(c == d);

  auto bad = [](const std::string& text) {
    try {
      load_string(text, "x");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(bad("[libvirt]\ndomain_release = \"on-loss\"\n").find("2:18: 'domain_release' must be a table"),
            std::string::npos);
  EXPECT_NE(bad("[libvirt.domain_release]\ndb = \"later\"\n").find("2:6: domain_release: 'db' must be"),
            std::string::npos);
  EXPECT_NE(bad("[libvirt.domain_release]\ndb = true\n").find("must be \"on-return\" or \"on-loss\""),
            std::string::npos);
}

// The shipped example follows libvirt's domains.
TEST(Config, ContribExampleFollowsLibvirt) {
  EXPECT_TRUE(load_file(std::string(RELINK_SOURCE_DIR) + "/contrib/relinkd.toml").libvirt.enabled);
}

TEST(Config, ReplugBindingLoadsEveryField) {
  auto cfg = config::load_string(R"([[vm]]
name = "a"
qmp = "/q"
[[vm.macvtap]]
nic = "net0"
parent = "eth0"
mac = "52:54:00:00:00:01"
attach = "replug"
queues = 4
release_timeout = 3
follow_carrier = false
parent_mac = "a0:36:9f:00:00:01"
release = "on-loss"
)",
                                 "t.toml");
  const auto& b = cfg.vms.at(0).macvtaps.at(0);
  EXPECT_EQ(b.attach, config::AttachMode::Replug);
  EXPECT_EQ(b.queues, 4u);
  EXPECT_EQ(b.release_timeout_ms, 3000u);
  EXPECT_FALSE(b.follow_carrier);
  ASSERT_TRUE(b.parent_mac);
  EXPECT_EQ(format_mac(*b.parent_mac), "a0:36:9f:00:00:01");
  EXPECT_EQ(b.release, config::Release::OnLoss);
  auto d = config::load_string("[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = "
                               "\"p\"\nmac = \"52:54:00:00:00:01\"\n",
                               "t.toml");
  const auto& h = d.vms.at(0).macvtaps.at(0);
  EXPECT_EQ(h.attach, config::AttachMode::Hub);
  EXPECT_TRUE(h.follow_carrier);
  EXPECT_EQ(h.release_timeout_ms, 10000u);
  EXPECT_FALSE(h.parent_mac);
}

TEST(Config, LibvirtStyleMacvtapNamesAreRecognised) {
  EXPECT_TRUE(config::kernel_style_macvtap_name("macvtap0"));
  EXPECT_TRUE(config::kernel_style_macvtap_name("macvlan12"));
  EXPECT_FALSE(config::kernel_style_macvtap_name("macvtap"));
  EXPECT_FALSE(config::kernel_style_macvtap_name("macvtap0a"));
  EXPECT_FALSE(config::kernel_style_macvtap_name("rl13c76489"));
}

TEST(Config, MissingFileIsAClearError) {
  try {
    (void)load_file("/nonexistent/relinkd.toml");
    FAIL() << "loaded a missing file";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/relinkd.toml: cannot read the file: No such file or directory");
  }
}

TEST(Config, DirectoriesDevicesAndEmptyFilesAreNotConfigurations) {
  auto error_of = [](const std::string& path) -> std::string {
    try {
      (void)load_file(path);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("/etc"), "/etc: is a directory, not a configuration file");
  EXPECT_EQ(error_of("/dev/null"), "/dev/null: is not a regular file");
  char tmpl[] = "/tmp/relink-cfg-XXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, " \n\t\n", 4), 4);
  close(fd);
  EXPECT_NE(error_of(tmpl).find(": the file is empty"), std::string::npos) << error_of(tmpl);
  unlink(tmpl);
}

TEST(Config, WarningIsALogLevel) {
  EXPECT_EQ(load_string("[daemon]\nlog_level = \"warning\"\n", "x").daemon.log_level, "warn");
}

TEST(Config, DuplicatesPointAtTheFirstOccurrence) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      (void)load_string(text, "t.toml");
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm]]\nname = \"a\"\nqmp = \"/r\"\n"),
            "t.toml:5:8: duplicate VM name 'a' (first at line 2, column 8)");
  EXPECT_NE(error_of("[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"n\"\nparent = \"p\"\nmac = "
                     "\"52:54:00:00:00:01\"\n[[vm.macvtap]]\nnic = \"m\"\nparent = \"p\"\nmac = \"52:54:00:00:00:01\"\n")
                .find("t.toml:11:7: MAC 52:54:00:00:00:01 is used by two bindings (first at line 7, column 7)"),
            std::string::npos);
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

// qemu_user: root by default, a name or a uid, resolved at load time.
TEST(Config, QemuUserIsResolvedAtLoad) {
  const std::string base = "[[vm]]\nname = \"a\"\nqmp = \"/run/qemu/a.qmp\"\n";
  auto cfg = load_string(base, "t.toml");
  EXPECT_EQ(cfg.vms[0].qemu_user, "root");
  EXPECT_EQ(cfg.vms[0].qemu_uid, 0u);
  cfg = load_string(base + "qemu_user = \"nobody\"\n", "t.toml");
  EXPECT_EQ(cfg.vms[0].qemu_uid, 65534u);
  cfg = load_string(base + "qemu_user = \"4242\"\n", "t.toml");
  EXPECT_EQ(cfg.vms[0].qemu_uid, 4242u);
  try {
    load_string(base + "qemu_user = \"no-such-user-here\"\n", "t.toml");
    ADD_FAILURE() << "an unknown user was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "t.toml:4:13: 'qemu_user': unknown user 'no-such-user-here'");
  }
}

}  // namespace
}  // namespace relink::config
