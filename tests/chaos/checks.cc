// SPDX-License-Identifier: GPL-2.0-or-later
// The chaos run's invariants (see checks.h).
#include "checks.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <cstdio>
#include <thread>

#include "ctl/control_client.h"
#include "daemon/qemu_names.h"
#include "qemu/info_network.h"

namespace relink::chaos {

using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Expected {
  Target target;
  const char* vm;
  const char* id;  // nic or netdev
  bool passt;
};
constexpr Expected kBindings[] = {{Target::Hub, "hub1", "nic0", false},
                                  {Target::Hub, "hub1", "net1", true},
                                  {Target::Replug, "rep1", "nic0", false},
                                  {Target::Libvirt, "lv1", "net0", false}};

json find_vm(const json& st, const std::string& vm) {
  for (const auto& v : st.value("vms", json::array()))
    if (v.value("name", "") == vm) return v;
  return nullptr;
}
json find_binding(const json& st, const std::string& vm, const std::string& id) {
  json v = find_vm(st, vm);
  if (!v.is_object()) return nullptr;
  for (const auto& b : v.value("bindings", json::array()))
    if (b.value("nic", "") == id || b.value("netdev", "") == id) return b;
  return nullptr;
}
std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool settled(const std::string& state, bool passt) {
  return passt ? state == "running" || state == "failed"
               : state == "attached" || state == "waiting-parent" || state == "failed";
}

// A line per binding and VM: unchanged over quiet_for means quiet. Empty
// reason: everything is settled.
std::string snapshot(World& w, const json& st, std::string& reason) {
  std::string snap;
  for (const auto& e : kBindings) {
    json b = find_binding(st, e.vm, e.id);
    json v = find_vm(st, e.vm);
    const std::string state = b.is_object() ? b.value("state", "") : "missing";
    snap += std::string(e.vm) + "/" + e.id + "=" + state + "@" +
            std::to_string(b.is_object() ? b.value("generation", uint64_t{0}) : 0) + " pid=" +
            std::to_string(b.is_object() && b["pid"].is_number() ? b["pid"].get<int>() : 0) + "; ";
    if (!b.is_object() || !settled(state, e.passt)) reason += std::string(e.vm) + "/" + e.id + " " + state + "; ";
    const std::string qmp = v.is_object() ? v.value("qmp", "") : "";
    snap += "qmp=" + qmp + "; ";
    if (e.target != Target::Libvirt && qmp != "connected") reason += std::string(e.vm) + " QMP " + qmp + "; ";
  }
  for (Vm* v : w.vms())
    if (!w.guest_booted(*v)) {
      reason += v->name + " guest not booted; ";
      snap += v->name + " booting; ";
    }
  return snap;
}

double wait_quiet(World& w, const CheckLimits& lim, std::string& unsettled) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string last;
  auto since = t0;
  while (std::chrono::steady_clock::now() - t0 < lim.quiet_bound) {
    auto st = w.status(3000);
    std::string reason = st ? "" : "no status; ";
    const std::string snap = st ? snapshot(w, *st, reason) : "";
    const auto now = std::chrono::steady_clock::now();
    if (snap != last) since = now, last = snap;
    unsettled = reason.empty() ? "" : reason + "(" + snap + ")";
    if (reason.empty() && now - since >= lim.quiet_for)
      return std::chrono::duration<double>(now - t0).count();
    // Unsettled and unchanged for stuck_for, with every guest up: nothing
    // more is coming (a binding gone for good, a state never left).
    if (!reason.empty() && reason.find("not booted") == std::string::npos && now - since >= lim.stuck_for)
      break;
    std::this_thread::sleep_for(250ms);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// What a process holds of the macvtap major: "dev path" per fd.
struct HeldFd {
  dev_t dev;
  std::string path;
};
std::vector<HeldFd> macvtap_fds(pid_t pid, unsigned major) {
  std::vector<HeldFd> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    struct stat st {};
    if (stat(e.path().c_str(), &st) != 0 || !S_ISCHR(st.st_mode) || ::major(st.st_rdev) != major) continue;
    std::error_code ec2;
    out.push_back({st.st_rdev, std::filesystem::read_symlink(e.path(), ec2).string()});
  }
  return out;
}
// The namespace's interface with this ifindex ("" if none).
std::string name_of(World& w, int ifindex) {
  if (ifindex <= 0) return "";
  std::istringstream in(w.ns().run("ip -o link show").out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string idx, name;
    if (f >> idx >> name && idx == std::to_string(ifindex) + ":") return name.substr(0, name.find_first_of("@:"));
  }
  return "";
}
// The interface names of the attached bindings' macvtaps (by the ifindex
// relinkd reports: its "macvtap" is the configured name, also while it
// uses a launcher's adopted macvtap).
std::set<std::string> attached_macvtaps(World& w, const json& st);

std::string devstr(dev_t d) { return std::to_string(::major(d)) + ":" + std::to_string(::minor(d)); }

class Checker {
 public:
  Checker(World& w, const CheckLimits& lim, CheckResult& r) : w_(w), lim_(lim), r_(r) {}

  void run(const json& st) {
    for (const auto& e : kBindings) binding(st, e);
    strays(st);
    passt(st);
    for (Vm* v : w_.vms())
      if (v->guest) expect(w_.ping(*v, lim_.ping_bound), "ping", v->name, "the guest does not answer ping");
    relinkd();
  }

 private:
  bool expect(bool ok, const char* kind, const std::string& vm, const std::string& detail) {
    ++r_.checks;
    if (!ok) r_.failed.push_back({kind, vm, detail});
    return ok;
  }

  void binding(const json& st, const Expected& e) {
    const json b = find_binding(st, e.vm, e.id);
    if (!expect(b.is_object(), "binding-missing", e.vm, std::string(e.id) + " is not in relinkd's status")) return;
    if (e.passt) return;
    Vm& v = w_.vm(e.target);
    const std::string state = b.value("state", "");
    const bool parent = w_.parent_exists(v);
    if (!expect(parent ? state == "attached" : state == "waiting-parent", "not-attached", e.vm,
                std::string(e.id) + " is " + state + " with its parent " + (parent ? "present" : "absent") +
                    " (last_error: " + text(b, "last_error") + ")"))
      return;
    if (state == "attached") held(v, b, find_vm(st, e.vm));
    if (e.target != Target::Libvirt) qmp(v, b);
    else libvirt_nics(v);
  }

  // QEMU holds exactly one fd (queues = 1) of the binding's macvtap and none
  // of another; the fd is live: opened through /dev/tap<its ifindex> (or
  // relinkd's private node), not a deleted node whose minor came back.
  void held(Vm& v, const json& b, const json& vmj) {
    const int ifindex = b.value("macvtap_ifindex", 0);
    const std::string mvt = name_of(w_, ifindex);
    if (!expect(!mvt.empty(), "macvtap-gone", v.name,
                "binding's macvtap " + text(b, "macvtap") + " (ifindex " + std::to_string(ifindex) +
                    ") is not in the namespace"))
      return;
    auto link = w_.ns().run("ip -o -d link show " + mvt).out;
    expect(link.find(v.mac) != std::string::npos && link.find("@" + v.parent + ":") != std::string::npos,
           "macvtap-wrong", v.name, "macvtap " + mvt + " is not on " + v.parent + " with " + v.mac + ": " + link);
    const std::string devno =
        w_.ns().run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev").out;
    unsigned maj = 0, min = 0;
    if (!expect(sscanf(devno.c_str(), "%u:%u", &maj, &min) == 2, "macvtap-gone", v.name, "no device for " + mvt))
      return;
    const dev_t dev = makedev(maj, min);
    const pid_t pid = w_.qemu_pid(v);
    expect(vmj.is_object() && vmj.value("qemu_pid", 0) == pid, "qemu-pid", v.name,
           "status says qemu_pid " + std::to_string(vmj.is_object() ? vmj.value("qemu_pid", 0) : 0) + ", QEMU is " +
               std::to_string(pid));
    std::vector<HeldFd> fds;
    bool ok = false;
    // QEMU may close an old backend's fd a little after netdev_del returned.
    test::wait_until(
        [&] {
          fds = macvtap_fds(pid, maj);
          ok = fds.size() == 1 && fds[0].dev == dev;
          return ok;
        },
        3s, 50ms);
    std::string seen;
    for (const auto& f : fds) seen += " " + devstr(f.dev) + "=" + f.path;
    if (!expect(ok, "qemu-fds", v.name,
                "QEMU pid " + std::to_string(pid) + " should hold 1 fd of " + mvt + " (" + devstr(dev) + ", ifindex " +
                    std::to_string(ifindex) + ") and no other macvtap; it holds:" + (seen.empty() ? " none" : seen)))
      return;
    const std::string& path = fds[0].path;
    const bool dev_node = path.rfind("/dev/tap", 0) == 0;
    expect(!dev_node || path == "/dev/tap" + std::to_string(ifindex), "qemu-fd-dead", v.name,
           "QEMU's fd of " + devstr(dev) + " was opened as " + path + ", not /dev/tap" + std::to_string(ifindex) +
               ": a dead macvtap whose minor was reused");
  }

  // query-fdsets empty; QEMU's netdevs: exactly the binding's (hub: one
  // generation, its uplink on hub 0 peering its tap; replug: the NIC peered
  // with the one tap); one NIC with the guest's MAC. getfd names live in
  // relinkd's own monitor session: one left behind shows up as an extra
  // fd in held().
  void qmp(Vm& v, const json& b) {
    if (!v.qmp) return;
    json fdsets = v.qmp->execute("query-fdsets", json::object(), 5000);
    if (fdsets.is_null()) {
      w_.reconnect_qmp(v);
      fdsets = v.qmp->execute("query-fdsets", json::object(), 5000);
    }
    expect(fdsets.contains("return") && fdsets["return"].empty(), "fdsets", v.name, "query-fdsets: " + fdsets.dump());
    const std::string info = v.qmp->info_network();
    const auto clients = qemu::parse_info_network(info);
    size_t taps = 0, nics = 0;
    for (const auto& c : clients)
      if (c.type == "tap" && c.index == 0) ++taps;
    for (size_t p = info.find("macaddr=" + v.mac); p != std::string::npos; p = info.find("macaddr=" + v.mac, p + 1))
      ++nics;
    expect(nics == 1, "nic-count", v.name, std::to_string(nics) + " NICs with " + v.mac + " in QEMU:\n" + info);
    const bool attached = b.value("state", "") == "attached";
    if (v.target == Target::Hub) {
      auto gens = daemon::find_generations(clients, v.nic);
      const uint64_t g = b.value("generation", uint64_t{0});
      const bool ok = attached ? gens.size() == 1 && gens.count(g) && gens[g].tap && gens[g].uplink &&
                                     gens[g].uplink_peers_tap && gens[g].uplink_hub == 0
                               : gens.empty();
      expect(ok && taps == (attached ? 1u : 0u), "qemu-netdevs", v.name,
             "QEMU's netdevs for " + v.nic + " (generation " + std::to_string(g) + ", " +
                 b.value("state", "") + "):\n" + info);
    } else {
      auto peer = qemu::nic_peer(clients, v.nic);
      expect(!attached || (peer && peer->type == "tap" && taps == 1), "qemu-netdevs", v.name,
             "the NIC should be peered with the one tap:\n" + info);
    }
  }

  void libvirt_nics(Vm& v) {
    const std::string list = w_.libvirt().virsh("domiflist " + v.name).out;
    size_t n = 0;
    for (size_t p = list.find(v.mac); p != std::string::npos; p = list.find(v.mac, p + 1)) ++n;
    expect(n == 1, "nic-count", v.name, std::to_string(n) + " interfaces with " + v.mac + ":\n" + list);
  }

  // Every macvtap in the namespace is an attached binding's.
  void strays(const json& st) {
    const std::set<std::string> wanted = attached_macvtaps(w_, st);
    std::istringstream in(w_.ns().run("ip -o link show type macvtap").out);
    std::string found;
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string idx, name;
      if (!(f >> idx >> name)) continue;
      name = name.substr(0, name.find_first_of("@:"));
      const size_t mac = line.find("link/ether ");
      if (!wanted.count(name)) found += " " + name + (mac == std::string::npos ? "" : " (" + line.substr(mac + 11, 17) + ")");
    }
    expect(found.empty(), "stray-macvtap", "", "macvtaps no binding has:" + found);
  }

  void passt(const json& st) {
    json b = find_binding(st, "hub1", "net1");
    const int pid = b.is_object() && b["pid"].is_number() ? b["pid"].get<int>() : 0;
    std::set<int> pids;
    test::wait_until([&] { return (pids = w_.passt_pids()) == std::set<int>{pid}; }, 3s, 50ms);
    std::string seen;
    for (int p : pids) seen += " " + std::to_string(p);
    expect(pid > 0 && pids == std::set<int>{pid} && b.value("state", "") == "running", "passt", "hub1",
           "passt binding " + (b.is_object() ? b.value("state", "") : std::string("missing")) + " with pid " +
               std::to_string(pid) + "; passt processes in the namespace:" + (seen.empty() ? " none" : seen));
  }

  void relinkd() {
    const pid_t pid = w_.relinkd_pid();
    int fds = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); ++it)
      ++fds;
    long rss = 0;
    std::istringstream in(test::read_file("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);)
      if (line.rfind("VmRSS:", 0) == 0) rss = std::atol(line.c_str() + 6);
    r_.relinkd_fds = fds;
    r_.relinkd_rss_kib = rss;
    expect(fds > 0 && fds <= lim_.max_fds, "relinkd-fds", "", std::to_string(fds) + " open fds");
    expect(rss > 0 && rss <= lim_.max_rss_kib, "relinkd-rss", "", std::to_string(rss) + " KiB resident");
  }

  World& w_;
  const CheckLimits& lim_;
  CheckResult& r_;
};

std::set<std::string> attached_macvtaps(World& w, const json& st) {
  std::set<std::string> out;
  for (const auto& e : kBindings) {
    json b = find_binding(st, e.vm, e.id);
    if (b.is_object() && b.value("state", "") == "attached") out.insert(name_of(w, b.value("macvtap_ifindex", 0)));
  }
  return out;
}

}  // namespace

CheckResult check_world(World& w, const CheckLimits& lim) {
  CheckResult r;
  std::string unsettled;
  r.quiet_s = wait_quiet(w, lim, unsettled);
  for (auto& i : w.incidents()) r.failed.push_back({"incident", "", i});
  w.incidents().clear();
  ++r.checks;
  if (!unsettled.empty()) r.failed.push_back({"not-quiet", "", unsettled});
  auto st = w.status(5000);
  ++r.checks;
  if (!st) {
    r.failed.push_back({"no-status", "", "relinkd does not answer status"});
    return r;
  }
  Checker(w, lim, r).run(*st);
  return r;
}

void repair(World& w, const CheckResult& r) {
  if (r.failed.empty()) return;
  // A fresh QEMU is the one sure way back for a VM whose NIC, fds or
  // netdevs are wrong; a binding merely not attached is asked to reattach.
  static const std::set<std::string> relaunch = {"binding-missing", "nic-count", "qemu-netdevs", "qemu-fds",
                                                 "qemu-fd-dead", "fdsets", "ping", "macvtap-gone", "macvtap-wrong"};
  std::set<std::string> reattach, fresh;
  bool restart = !w.relinkd_running();
  for (const auto& v : r.failed) {
    if (v.kind == "no-status") restart = true;
    if (v.vm.empty()) continue;
    (relaunch.count(v.kind) ? fresh : reattach).insert(v.vm);
  }
  // Strays and extra passts first: they can block what follows.
  std::istringstream in(w.ns().run("ip -o link show type macvtap").out);
  auto st = w.status(5000);
  const std::set<std::string> wanted = st ? attached_macvtaps(w, *st) : std::set<std::string>{};
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string idx, name;
    if (!(f >> idx >> name)) continue;
    name = name.substr(0, name.find_first_of("@:"));
    if (!wanted.count(name)) w.ns().run("ip link del " + name);
  }
  const json pb = st ? find_binding(*st, "hub1", "net1") : json(nullptr);
  for (int pid : w.passt_pids())
    if (!pb.is_object() || !pb["pid"].is_number() || pb["pid"].get<int>() != pid) ::kill(pid, SIGKILL);
  if (restart) {
    w.stop_relinkd(SIGTERM);
    w.start_relinkd();
  }
  for (Vm* v : w.vms())
    if (fresh.count(v->name)) {
      w.kill_qemu(*v);
      w.launch(*v);
    } else if (reattach.count(v->name)) {
      // Its outcome is what the check below sees.
      (void)ctl::control_request(w.control(), {{"command", "reattach"}, {"vm", v->name}}, 20000);
    }
  CheckLimits quick;
  quick.quiet_bound = 90s;
  const CheckResult after = check_world(w, quick);
  std::printf("    repair: %zu relaunched, %zu reattached; %zu violations left after it (not counted)\n",
              fresh.size(), reattach.size(), after.failed.size());
  for (const auto& v : after.failed)
    std::printf("      [%s%s] %s\n", v.kind.c_str(), v.vm.empty() ? "" : (" " + v.vm).c_str(), v.detail.substr(0, 300).c_str());
  std::fflush(stdout);
  w.incidents().clear();
}

}  // namespace relink::chaos
