// SPDX-License-Identifier: GPL-2.0-or-later
#include "ctl/render.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <sstream>
#include <vector>

namespace relink::ctl {
namespace {

using nlohmann::json;

json sample() {
  return json::parse(R"({
    "version": 1,
    "vms": [
      {"name": "a-very-long-vm-name-indeed", "source": "config", "qmp": "disconnected",
       "qmp_error": "connect /run/qemu/x.qmp: No such file or directory",
       "bindings": [{"kind": "macvtap", "nic": "nic0", "state": "vm-offline", "generation": 0, "attach": "hub",
                     "parent": "eth0", "macvtap": "rl00000001", "last_error": null, "carrier": null}]},
      {"name": "web1", "source": "runtime", "qmp": "connected",
       "bindings": [{"kind": "passt", "netdev": "net1", "state": "failed", "generation": 0, "mode": "vhost-user",
                     "pid": null, "restarts": 0, "last_error": "the installed passt has no --vhost-user option"},
                    {"kind": "macvtap", "nic": "nic1", "state": "attached", "generation": 3, "attach": "replug",
                     "parent": "wlan0", "macvtap": "rl00000002", "last_error": null, "last_reattach_ms": 251.5,
                     "carrier": true, "warning": "parent wlan0 is a Wi-Fi interface"}]}
    ],
    "libvirt": {"enabled": true, "connected": false, "uri": "qemu:///system", "last_error": "no socket"}
  })");
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(RenderStatus, ColumnsFitTheirContentAndLineUp) {
  const auto out = lines(render_status(sample(), {}));
  ASSERT_GE(out.size(), 4u);
  const size_t state_col = out[0].find("STATE");
  for (size_t i = 1; i <= 3; ++i) {
    // Every row's STATE cell starts under the header's.
    EXPECT_NE(out[i].find_first_not_of(' ', state_col), std::string::npos);
    EXPECT_NE(out[i][state_col], ' ') << out[i];
    EXPECT_EQ(out[i][state_col - 1], ' ') << out[i];
  }
  // The VM column is as wide as the longest name, plus the gap.
  EXPECT_EQ(out[0].find("SOURCE"), std::string("a-very-long-vm-name-indeed").size() + 2);
}

TEST(RenderStatus, EachBindingShowsItsOwnErrorAndTheVmsErrorIsSaidOnce) {
  const std::string out = render_status(sample(), {});
  const auto l = lines(out);
  EXPECT_NE(l[2].find("the installed passt has no --vhost-user option"), std::string::npos) << out;
  EXPECT_EQ(l[3].substr(l[3].size() - 1), "-") << out;  // no error of its own
  EXPECT_EQ(l[1].find("No such file"), std::string::npos) << "the QMP error is not a binding's";
  EXPECT_NE(out.find("a-very-long-vm-name-indeed: QMP disconnected: connect /run/qemu/x.qmp"), std::string::npos);
  EXPECT_NE(out.find("web1/nic1: warning: parent wlan0 is a Wi-Fi interface"), std::string::npos) << out;
  EXPECT_NE(out.find("libvirt: not connected to qemu:///system: no socket"), std::string::npos) << out;
  EXPECT_NE(out.find("251.50 ms"), std::string::npos) << out;
}

TEST(RenderStatus, OneVmAndColour) {
  const std::string out = render_status(sample(), {}, "web1");
  EXPECT_EQ(out.find("a-very-long"), std::string::npos);
  EXPECT_EQ(out.find("\033["), std::string::npos);
  const std::string coloured = render_status(sample(), {true});
  EXPECT_NE(coloured.find("\033[32mattached\033[0m"), std::string::npos);
  EXPECT_NE(coloured.find("\033[31mfailed\033[0m"), std::string::npos);
}

TEST(RenderStatus, HeldRegistrationsHaveARowWithTheirReason) {
  json st = sample();
  st["held"] = json::parse(R"([{"name": "svc9", "origin": "runtime", "error": "'runas': unknown user 'x'"}])");
  const std::string out = render_status(st, {});
  const auto l = lines(out);
  ASSERT_GE(l.size(), 5u) << out;
  EXPECT_EQ(l[4].rfind("svc9", 0), 0u) << out;
  EXPECT_NE(l[4].find("held"), std::string::npos) << out;
  EXPECT_NE(l[4].find("'runas': unknown user 'x'"), std::string::npos) << out;
  EXPECT_EQ(render_status(st, {}, "web1").find("svc9"), std::string::npos);
}

TEST(RenderStatus, NoColourUnderNoColor) {
  setenv("NO_COLOR", "1", 1);
  EXPECT_FALSE(want_colour(1));
  unsetenv("NO_COLOR");
}

TEST(RenderChanges, ListsWhatChanged) {
  EXPECT_EQ(render_changes(json::parse(R"({"added":[],"removed":[],"changed":[]})")), "nothing changed");
  EXPECT_EQ(render_changes(json::parse(R"({"added":["web2","web1/nic1"],"removed":["web3"],"changed":[]})")),
            "added web2, web1/nic1; removed web3");
}

TEST(RenderEvent, StateChangeLine) {
  const auto ev = json::parse(R"({"event":"state","vm":"web1","kind":"macvtap","nic":"nic0","from":"attaching",
                                  "state":"backoff","generation":4,"error":"device_add failed","time":0})");
  const std::string line = render_event(ev, {});
  EXPECT_NE(line.find("web1/nic0 attaching -> backoff (generation 4): device_add failed"), std::string::npos) << line;
}

TEST(SettledState, ByKind) {
  EXPECT_TRUE(settled_state("macvtap", "attached"));
  EXPECT_FALSE(settled_state("macvtap", "releasing"));
  EXPECT_FALSE(settled_state("macvtap", "attaching"));
  EXPECT_TRUE(settled_state("passt", "running"));
  EXPECT_FALSE(settled_state("passt", "starting"));
}

}  // namespace
}  // namespace relink::ctl
