// SPDX-License-Identifier: GPL-2.0-or-later
// VMs added at runtime: parsed with relinkd.toml's keys and checks, refused
// when they clash with the VMs relinkd has, and kept in runtime.toml.
#include "config/runtime_vms.h"

#include <gtest/gtest.h>

namespace relink::config {
namespace {

const char* kWeb1 = R"([[vm]]
name = "web1"
qmp = "/run/qemu/web1.qmp"

[[vm.macvtap]]
nic = "nic0"
parent = "eth0"
mac = "52:54:00:12:34:56"
)";

const char* kTwo = R"(
[[vm]]
name = "a"
qmp = "/run/qemu/a.qmp"
[[vm.macvtap]]
nic = "nic0"
parent = "eth0"
mac = "52:54:00:00:00:01"
attach = "replug"
queues = 4
release_timeout = 20
parent_mac = "a0:36:9f:00:00:01"
follow_carrier = false
macvtap = "mv-a"
mode = "vepa"

[[vm]]
name = "b"
qmp = "/run/qemu/b.qmp"
[[vm.passt]]
netdev = "net0"
socket = "/run/qemu/b-passt.sock"
mode = "stream-client"
args = ["--mtu", "1500"]
[[vm.macvtap]]
nic = "nic0"
parent = "eth1"
mac = "52:54:00:00:00:02"
hub = 3
)";

std::string error_of(const std::string& text) {
  try {
    (void)parse_runtime_vms(text, "add");
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

// The VM a text describes, through the parser under test.
Vm vm_of(const std::string& text) {
  auto vms = parse_runtime_vms(text, "t");
  EXPECT_EQ(vms.size(), 1u);
  return vms.at(0).vm;
}

TEST(RuntimeVms, ParsesOneVmWithItsOwnToml) {
  auto vms = parse_runtime_vms(kWeb1, "add");
  ASSERT_EQ(vms.size(), 1u);
  const Vm& vm = vms[0].vm;
  EXPECT_EQ(vm.name, "web1");
  EXPECT_EQ(vm.qmp, "/run/qemu/web1.qmp");
  ASSERT_EQ(vm.macvtaps.size(), 1u);
  EXPECT_EQ(format_mac(vm.macvtaps[0].mac), "52:54:00:12:34:56");
  EXPECT_EQ(vm.macvtaps[0].macvtap, default_macvtap_name("web1", "nic0"));
  // Exactly what the configuration file would give.
  EXPECT_EQ(vm, load_string(kWeb1, "f").vms.at(0));
  EXPECT_EQ(vms[0].toml.rfind("[[vm]]\n", 0), 0u) << vms[0].toml;
  Config again = load_string(vms[0].toml, "again");
  ASSERT_EQ(again.vms.size(), 1u);
  EXPECT_EQ(again.vms[0], vm);
}

TEST(RuntimeVms, ParsesTwoVmsEachWithOnlyItsOwnTable) {
  auto vms = parse_runtime_vms(kTwo, "add");
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vms[0].vm.name, "a");
  EXPECT_EQ(vms[1].vm.name, "b");
  const auto& a = vms[0].vm.macvtaps.at(0);
  EXPECT_EQ(a.attach, AttachMode::Replug);
  EXPECT_EQ(a.queues, 4u);
  EXPECT_EQ(a.release_timeout_ms, 20'000u);
  EXPECT_FALSE(a.follow_carrier);
  EXPECT_EQ(a.macvtap, "mv-a");
  ASSERT_EQ(vms[1].vm.passts.size(), 1u);
  EXPECT_EQ(vms[1].vm.passts[0].mode, passt::Mode::StreamClient);
  EXPECT_EQ(vms[1].vm.macvtaps.at(0).hub, 3u);
  const Config whole = load_string(kTwo, "f");
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(vms[i].vm, whole.vms[i]);
    Config alone = load_string(vms[i].toml, "alone");
    ASSERT_EQ(alone.vms.size(), 1u) << vms[i].toml;
    EXPECT_EQ(alone.vms[0], vms[i].vm) << vms[i].toml;
  }
  EXPECT_EQ(vms[0].toml.find("b.qmp"), std::string::npos) << vms[0].toml;
}

TEST(RuntimeVms, InlineTablesAreWrittenAsSections) {
  auto vms = parse_runtime_vms(
      R"(vm = [{ name = "x", qmp = "/q", macvtap = [{ nic = "n0", parent = "eth0", mac = "52:54:00:00:00:09" }] }])",
      "add");
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].toml.rfind("[[vm]]\n", 0), 0u) << vms[0].toml;
  EXPECT_NE(vms[0].toml.find("[[vm.macvtap]]"), std::string::npos) << vms[0].toml;
  EXPECT_EQ(vm_of(vms[0].toml), vms[0].vm);
}

TEST(RuntimeVms, StringsThatNeedEscapingSurviveReserialization) {
  auto vms = parse_runtime_vms(R"([[vm]]
name = "q"
qmp = "/run/it's \"here\"/q.qmp"
[[vm.passt]]
netdev = "net0"
socket = "/run/q\tp.sock"
)",
                               "add");
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].vm.qmp, "/run/it's \"here\"/q.qmp");
  EXPECT_EQ(vm_of(vms[0].toml), vms[0].vm);
}

TEST(RuntimeVms, RefusesDaemonAndLibvirtTables) {
  EXPECT_EQ(error_of(std::string("[daemon]\nlog_level = \"debug\"\n") + kWeb1),
            "add:1:2: [daemon] belongs in relinkd's configuration file; only [[vm]] tables can be added at runtime");
  std::string e = error_of(std::string(kWeb1) + "\n[libvirt]\n");
  EXPECT_EQ(e.rfind("add:10:2: [libvirt] belongs in relinkd's configuration file", 0), 0u) << e;
  e = error_of(std::string("daemon = 1\n") + kWeb1);
  EXPECT_EQ(e.rfind("add:1:1: [daemon] belongs", 0), 0u) << e;
}

TEST(RuntimeVms, RefusesATextWithoutVms) {
  EXPECT_EQ(error_of(""), "add:1:1: no [[vm]] table: give at least one VM to add");
  EXPECT_EQ(error_of("# nothing\n\n"), "add:1:1: no [[vm]] table: give at least one VM to add");
  EXPECT_EQ(error_of("vm = []\n"), "add:1:1: no [[vm]] table: give at least one VM to add");
}

TEST(RuntimeVms, ErrorsHaveLineAndColumn) {
  EXPECT_EQ(error_of("[[vm]]\nname = \"a\"\nqmp = \"/q\"\n  bogus = 1\n"), "add:4:3: unknown key 'bogus' in [[vm]]");
  EXPECT_EQ(error_of("[[vm]]\nname = \"a\"\nqmp = \"/q\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"eth0\"\n"
                     "mac = \"52:54:00:zz:34:56\"\n"),
            "add:7:7: 'mac' must look like 52:54:00:12:34:56, not \"52:54:00:zz:34:56\"");
  EXPECT_EQ(error_of("[[vm]]\nname = \"a\"\nqmp = \"/q\"\nfoo = \n").rfind("add:4:", 0), 0u)
      << error_of("[[vm]]\nname = \"a\"\nqmp = \"/q\"\nfoo = \n");
  EXPECT_EQ(error_of("top = 1\n"), "add:1:1: unknown key 'top' in the top level");
}

TEST(RuntimeVms, DuplicatesWithinTheTextAreRefusedAsInTheFile) {
  std::string text = std::string(kWeb1) + "\n" + kWeb1;
  EXPECT_NE(error_of(text).find("duplicate VM name 'web1'"), std::string::npos) << error_of(text);
}

// --- runtime_conflict ---

class RuntimeVmsConflict : public ::testing::Test {
 protected:
  void SetUp() override {
    web1_ = vm_of(R"([[vm]]
name = "web1"
qmp = "/run/qemu/web1.qmp"
[[vm.macvtap]]
nic = "nic0"
parent = "eth0"
mac = "52:54:00:12:34:56"
[[vm.macvtap]]
nic = "nic1"
parent = "eth0"
mac = "52:54:00:12:34:57"
macvtap = "mv-web1"
[[vm.passt]]
netdev = "net0"
socket = "/run/qemu/web1-passt.sock"
)");
    db_ = vm_of(R"([[vm]]
name = "db"
qmp = "/run/qemu/db.qmp"
)");
  }
  // The conflict of the VM `added_text` describes with web1 and db.
  std::string conflict(const std::string& added_text, const std::string& control = "/run/relinkd/control.sock") {
    Vm added = vm_of(added_text);
    return runtime_conflict({&db_, &web1_}, added, control);
  }
  static std::string vm(const std::string& name, const std::string& qmp, const std::string& more = "") {
    return "[[vm]]\nname = \"" + name + "\"\nqmp = \"" + qmp + "\"\n" + more;
  }
  static std::string macvtap(const std::string& nic, const std::string& mac, const std::string& more = "") {
    return "[[vm.macvtap]]\nnic = \"" + nic + "\"\nparent = \"eth0\"\nmac = \"" + mac + "\"\n" + more;
  }
  static std::string passt(const std::string& netdev, const std::string& socket) {
    return "[[vm.passt]]\nnetdev = \"" + netdev + "\"\nsocket = \"" + socket + "\"\n";
  }
  Vm web1_, db_;
};

TEST_F(RuntimeVmsConflict, NoneForADistinctVm) {
  // The same NIC id as web1's: the default macvtap names differ by VM name.
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp", macvtap("nic0", "52:54:00:12:34:58") +
                                                          passt("net0", "/run/qemu/web2-passt.sock"))),
            "");
  EXPECT_EQ(runtime_conflict({}, web1_, "/run/relinkd/control.sock"), "");
}

TEST_F(RuntimeVmsConflict, SameName) {
  EXPECT_EQ(conflict(vm("web1", "/run/qemu/other.qmp")), "VM 'web1' already exists");
}

TEST_F(RuntimeVmsConflict, SameQmpSocket) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/db.qmp")), "QMP socket '/run/qemu/db.qmp' is already used by VM 'db'");
}

TEST_F(RuntimeVmsConflict, QmpSocketThatIsAnotherVmsPasstSocket) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web1-passt.sock")),
            "QMP socket '/run/qemu/web1-passt.sock' is already used as a passt socket by VM 'web1' (net0)");
}

TEST_F(RuntimeVmsConflict, MacvtapName) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp", macvtap("eth", "52:54:00:00:00:01", "macvtap = \"mv-web1\"\n"))),
            "macvtap name 'mv-web1' of NIC eth is already used by VM 'web1' (nic1)");
  // A name given explicitly that is another binding's default name.
  const std::string taken = default_macvtap_name("web1", "nic0");
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp",
                        macvtap("nic0", "52:54:00:00:00:01", "macvtap = \"" + taken + "\"\n"))),
            "macvtap name '" + taken + "' of NIC nic0 is already used by VM 'web1' (nic0)");
}

TEST_F(RuntimeVmsConflict, Mac) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp", macvtap("nic0", "52:54:00:12:34:56"))),
            "MAC 52:54:00:12:34:56 is already used by VM 'web1' (nic0)");
}

TEST_F(RuntimeVmsConflict, PasstSocketOfAnotherBinding) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp", passt("net1", "/run/qemu/web1-passt.sock"))),
            "passt socket '/run/qemu/web1-passt.sock' is already used by VM 'web1' (net0)");
}

TEST_F(RuntimeVmsConflict, PasstSocketThatIsAQmpSocket) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp", passt("net0", "/run/qemu/db.qmp"))),
            "passt socket '/run/qemu/db.qmp' is the QMP socket of VM 'db'");
}

TEST_F(RuntimeVmsConflict, PasstSocketThatIsTheControlSocket) {
  EXPECT_EQ(conflict(vm("web2", "/run/qemu/web2.qmp", passt("net0", "/run/ctl.sock")), "/run/ctl.sock"),
            "passt socket '/run/ctl.sock' is relinkd's control socket");
}

TEST_F(RuntimeVmsConflict, AddedVmIsCheckedAgainstItselfToo) {
  Vm twice = web1_;
  twice.name = "twice";
  twice.qmp = "/run/qemu/twice.qmp";
  twice.passts.clear();
  twice.macvtaps[1].mac = twice.macvtaps[0].mac;
  twice.macvtaps[0].macvtap = "mv-t0";
  twice.macvtaps[1].macvtap = "mv-t1";
  EXPECT_EQ(runtime_conflict({}, twice, "/c"), "MAC 52:54:00:12:34:56 is already used by VM 'twice' (nic0)");
}

// --- runtime.toml ---

TEST(RuntimeVmsFile, RoundTripGivesEqualVms) {
  auto vms = parse_runtime_vms(kTwo, "add");
  auto one = parse_runtime_vms(kWeb1, "add");
  vms.push_back(one.at(0));
  const std::string text = format_runtime_file(vms);
  EXPECT_EQ(text.rfind("# ", 0), 0u) << text;
  EXPECT_NE(text.find("relinkd writes this file"), std::string::npos) << text;
  auto back = parse_runtime_file(text, "/run/relinkd/runtime.toml");
  ASSERT_EQ(back.vms.size(), vms.size());
  EXPECT_TRUE(back.held.empty());
  for (size_t i = 0; i < vms.size(); ++i) {
    EXPECT_EQ(back.vms[i].vm, vms[i].vm);
    EXPECT_EQ(back.vms[i].toml, vms[i].toml);
  }
  // And once more: the text is stable.
  EXPECT_EQ(format_runtime_file(back.vms), text);
}

TEST(RuntimeVmsFile, NoVmsIsAFileOfComments) {
  const std::string text = format_runtime_file({});
  EXPECT_TRUE(parse_runtime_file(text, "r").vms.empty());
  EXPECT_TRUE(parse_runtime_file("", "r").vms.empty());
}

TEST(RuntimeVmsFile, AVmThatDoesNotLoadIsHeldAlone) {
  const std::string text = std::string(kWeb1) + "\n[[vm]]\nname = \"a\"\n";
  auto f = parse_runtime_file(text, "/s/runtime.toml");
  ASSERT_EQ(f.vms.size(), 1u);
  ASSERT_EQ(f.held.size(), 1u);
  EXPECT_EQ(f.held[0].name, "a");
  EXPECT_EQ(f.held[0].error, "/s/runtime.toml (VM 'a'):1:1: [[vm]] 'a': missing required key 'qmp'");
  // Written back as it was, and held again.
  auto again = parse_runtime_file(format_runtime_file(f.vms, f.held), "/s/runtime.toml");
  EXPECT_EQ(again.held, f.held);
  // The file as a whole: not TOML, or a table relinkd does not write.
  EXPECT_THROW((void)parse_runtime_file("[daemon]\n", "r"), ConfigError);
  EXPECT_THROW((void)parse_runtime_file("[[vm]\n", "r"), ConfigError);
}

TEST(RuntimeVmsFile, KeptIdsStandInForARunasThatDoesNotResolve) {
  const std::string vm = R"([[vm]]
name = "s"
qmp = "/run/qemu/s.qmp"
[[vm.passt]]
netdev = "net1"
socket = "/run/relinkd/s.sock"
runas = "relink-no-such-user"
)";
  const std::string kept = "\n[[resolved]]\nvm = \"s\"\nnetdev = \"net1\"\nrunas = \"relink-no-such-user\"\nuid = 4242\n"
                           "gid = 4343\n";
  auto f = parse_runtime_file(vm + kept, "r");
  ASSERT_EQ(f.vms.size(), 1u) << (f.held.empty() ? "" : f.held[0].error);
  const auto& p = f.vms[0].vm.passts.at(0);
  EXPECT_EQ(p.runas, "relink-no-such-user");
  EXPECT_EQ(p.uid, 4242u);
  EXPECT_EQ(p.gid, 4343u);
  ASSERT_EQ(f.notes.size(), 1u);
  EXPECT_NE(f.notes[0].find("unknown user 'relink-no-such-user'; using uid 4242 gid 4343"), std::string::npos)
      << f.notes[0];
  // Written back with its ids.
  EXPECT_NE(format_runtime_file(f.vms).find("uid = 4242"), std::string::npos);
  // Without kept ids, or kept for another runas, or naming root: held.
  EXPECT_EQ(parse_runtime_file(vm, "r").held.size(), 1u);
  std::string other = kept;
  other.replace(other.find("relink-no-such-user"), 19, "someone-else");
  EXPECT_EQ(parse_runtime_file(vm + other, "r").held.size(), 1u);
  std::string root = kept;
  root.replace(root.find("uid = 4242"), 10, "uid = 0");
  auto r = parse_runtime_file(vm + root, "r");
  EXPECT_EQ(r.held.size(), 1u);
  EXPECT_NE(r.notes.at(0).find("malformed [[resolved]]"), std::string::npos);
  // A runas NSS resolves keeps NSS's ids.
  std::string nobody = vm + kept;
  for (size_t at; (at = nobody.find("relink-no-such-user")) != std::string::npos;) nobody.replace(at, 19, "nobody");
  auto n = parse_runtime_file(nobody, "r");
  ASSERT_EQ(n.vms.size(), 1u);
  EXPECT_EQ(n.vms[0].vm.passts.at(0).uid, 65534u);
  EXPECT_TRUE(n.notes.empty());
}

// A registration chooses its passt's arguments: those that write files or
// make sockets at a path of its choosing stay in root's file. The same
// text is accepted by the file loader, and runtime.toml still loads it.
TEST(RuntimeVms, PasstOptionsThatWriteFilesAreRefusedInRegistrations) {
  for (const char* arg : {"--pcap", "-p", "--log-file", "-l", "--pca", "--repair-path"}) {
    const std::string text = std::string(R"([[vm]]
name = "b"
qmp = "/run/qemu/b.qmp"
[[vm.passt]]
netdev = "net1"
socket = "/run/qemu/b-net1.sock"
args = [")") + arg + R"(", "/home/alice/.bashrc"]
)";
    try {
      parse_runtime_vms(text, "add");
      ADD_FAILURE() << arg << " was accepted";
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("add:7:"), std::string::npos) << what;
      EXPECT_NE(what.find("allowed only in relinkd's configuration file"), std::string::npos) << what;
    }
    EXPECT_EQ(load_string(text, "relinkd.toml").vms.size(), 1u) << arg;
    EXPECT_EQ(parse_runtime_file(text, "runtime.toml").vms.size(), 1u) << arg;
  }
}

}  // namespace
}  // namespace relink::config
