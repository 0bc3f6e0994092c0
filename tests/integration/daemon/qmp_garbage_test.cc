// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd against a QMP peer that misbehaves (the scripted fake server, since
// a real QEMU cannot be made to send garbage): each bad session is reset and
// retried, the daemon keeps running, and the next good session attaches.
#include <sys/stat.h>

#include "daemon_env.h"
#include "support/fake_qmp.h"
#include "util/sd_event.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

TEST(QmpGarbage, BadSessionsAreResetAndTheNextOneAttaches) {
  RELINK_REQUIRE_ROOT();
  DaemonEnv env;
  sd_event* raw = nullptr;
  ASSERT_GE(sd_event_new(&raw), 0);
  SdEventPtr loop(raw);
  FakeQmp qmp(loop.get());
  // First session: the adoption probe gets a 2 MiB line (over the 1 MiB cap).
  qmp.expect("human-monitor-command").raw(std::string(2 << 20, 'x') + "\n");
  // Second session: a line that is not JSON.
  qmp.expect("human-monitor-command").raw("{\"return\": oops}\n");
  // Third session: a QEMU that behaves; the attach goes through.
  qmp.expect("human-monitor-command").returns("");
  qmp.expect("getfd", {{"fdname", "relink-nic0-1"}}).returns();
  qmp.expect("netdev_add", {{"type", "tap"}, {"id", "nic0.tap1"}, {"fd", "relink-nic0-1"}}).returns();
  qmp.expect("netdev_add", {{"type", "hubport"}, {"id", "nic0.uplink1"}, {"netdev", "nic0.tap1"}}).returns();
  qmp.expect("set_link", {{"name", "nic0"}, {"up", true}}).returns();

  env.add_veth_parent("p0");
  VmSpec vm;
  // The fake QMP server is this test program, not QEMU: allow it explicitly.
  env.write_config({vm}, "qemu_binaries = [\"/usr/bin/qemu-system-*\", \"" + self_exe() + "\"]");
  ASSERT_EQ(symlink(qmp.path().c_str(), env.qmp_path("vm1").c_str()), 0);
  env.start_relinkd();
  ASSERT_TRUE(run_until(loop.get(), [&] { return env.state() == "attached"; }, 20s)) << env.explain();
  EXPECT_EQ(qmp.expectations_left(), 0u);
  EXPECT_EQ(qmp.connections(), 3u);
  EXPECT_TRUE(env.relinkd().running());
  // The fd relinkd passed is the macvtap it created.
  const auto& getfd = qmp.received().at(qmp.received().size() - 4);
  ASSERT_EQ(getfd.name, "getfd");
  ASSERT_EQ(getfd.fds.size(), 1u);
  struct stat st {};
  ASSERT_EQ(fstat(getfd.fds[0].get(), &st), 0);
  const std::string mvt = text_of(env.binding("vm1"), "macvtap");
  const int ifindex = env.ns().ifindex(mvt);
  unsigned maj = 0, min = 0;
  ASSERT_EQ(sscanf(env.ns().run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev").out.c_str(),
                   "%u:%u", &maj, &min),
            2);
  EXPECT_EQ(st.st_rdev, makedev(maj, min));
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("QMP disconnected"), std::string::npos) << DaemonEnv::tail(log, 2000);
}

}  // namespace
}  // namespace relink::test
