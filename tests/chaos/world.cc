// SPDX-License-Identifier: GPL-2.0-or-later
// Setting up the chaos run's world and pulling its levers (see world.h).
#include "world.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "ctl/control_client.h"

namespace relink::chaos {

using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr const char* kGuestIp = "192.0.2.2";
constexpr const char* kPeerIp = "192.0.2.1";

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

}  // namespace

World::World(bool keep_logs) : keep_logs_(keep_logs), dir_("/tmp/relink-chaos-" + test::random_suffix()) {
  std::filesystem::create_directories(dir_);
  chmod(dir_.c_str(), 0700);
  struct Def {
    Target t;
    const char *name, *nic, *parent, *mac;
    bool guest;
  };
  const Def defs[] = {{Target::Hub, "hub1", "nic0", "ph", "52:54:00:c0:00:01", false},
                      {Target::Replug, "rep1", "nic0", "pr", "52:54:00:c0:00:02", true},
                      {Target::Libvirt, "lv1", "net0", "pl", "52:54:00:c0:00:03", true}};
  for (const auto& d : defs) {
    auto v = std::make_unique<Vm>();
    v->target = d.t;
    v->name = d.name;
    v->nic = d.nic;
    v->parent = d.parent;
    v->mac = d.mac;
    v->guest = d.guest;
    vms_.push_back(std::move(v));
  }
}

World::~World() {
  monitor_stop();
  relinkd_.reset();
  lv_.reset();
  for (auto& v : vms_) {
    v->qmp.reset();
    v->qemu.reset();
    v->peer.reset();
  }
  std::error_code ec;
  if (keep_logs_) {
    for (const char* f : {"relinkd.log", "rep1.console", "lv1.console", "hub1.qemu.log", "rep1.qemu.log"})
      std::filesystem::copy_file(dir_ + "/" + f, std::string("/tmp/relink-chaos-") + f,
                                 std::filesystem::copy_options::overwrite_existing, ec);
  }
  std::filesystem::remove_all(dir_, ec);
}

std::vector<Vm*> World::vms() {
  std::vector<Vm*> out;
  for (auto& v : vms_) out.push_back(v.get());
  return out;
}

std::string World::kernel() const {
  return guest_dir_ + (std::filesystem::exists(guest_dir_ + "/vmlinux") ? "/vmlinux" : "/vmlinuz");
}

void World::init() {
  if (!std::filesystem::exists("/run/netns/" + ns_.name())) throw SetupError("cannot create a network namespace");
  guest_dir_ = test::binary_dir() + "/guest";
  auto built = test::sh("bash " + test::source_dir() + "/tests/guest/build-guest.sh " + guest_dir_);
  if (built.status != 0) throw SetupError("building the test guest failed:\n" + built.out);
  // libvirt opens a macvtap as /dev/tap<ifindex>, and /dev is shared.
  test::push_ifindex(ns_);
  // passt copies the host's address and wants a default route.
  ns_.run("ip link add up0 type veth peer name up1 && ip addr add 192.0.2.1/24 dev up0 && ip link set up0 up && "
          "ip link set up1 up && ip route add default via 192.0.2.254 dev up0");
  for (auto& v : vms_) {
    v->peer = std::make_unique<test::Netns>("chaosp");
    parent_up(*v);
  }
  lv_ = std::make_unique<test::LibvirtEnv>(ns_);
  lv_->start();
  if (!lv_->running()) throw SetupError("libvirtd did not start\n" + lv_->log());
  for (auto& v : vms_) launch(*v);
  write_config();
  start_relinkd();
}

// ---------------------------------------------------------------- parents

bool World::parent_exists(const Vm& v) { return ns_.ifindex(v.parent) > 0; }

void World::parent_down(Vm& v) { ns_.run("ip link del " + v.parent); }

// The far end keeps a fixed MAC and knows the guest's (a LAN peer keeps
// the guest's MAC across an outage: no ARP timing in the ping check).
void World::parent_up(Vm& v) {
  if (parent_exists(v)) return;
  const std::string peer = v.peer->name();
  auto r = ns_.run("ip link add " + v.parent + " type veth peer name p1 netns " + peer + " address 02:00:00:00:0a:01" +
                   " && ip link set " + v.parent + " up && ip -n " + peer + " addr add " + kPeerIp +
                   "/24 dev p1 && ip -n " + peer + " neigh replace " + kGuestIp + " lladdr " + v.mac +
                   " dev p1 nud permanent && ip -n " + peer + " link set p1 up");
  if (r.status != 0) incidents_.push_back("harness: re-creating parent " + v.parent + " failed: " + r.out);
}

void World::carrier(Vm& v, bool up) { v.peer->run(std::string("ip link set p1 ") + (up ? "up" : "down")); }

// ---------------------------------------------------------------- guests and QEMU

void World::pause(Vm& v) {
  if (v.target == Target::Libvirt)
    lv_->virsh("suspend " + v.name);
  else if (v.qmp)
    v.qmp->execute("stop");
  v.paused = true;
}

void World::resume(Vm& v) {
  if (!v.paused) return;
  if (v.target == Target::Libvirt)
    lv_->virsh("resume " + v.name);
  else if (v.qmp)
    v.qmp->execute("cont");
  v.paused = false;
}

pid_t World::qemu_pid(Vm& v) {
  if (v.target == Target::Libvirt) return lv_->qemu_pid(v.name);
  return v.qemu && v.qemu->running() ? v.qemu->pid() : 0;
}

bool World::qemu_running(Vm& v) { return qemu_pid(v) > 0; }

bool World::guest_booted(Vm& v) {
  if (!v.guest) return true;
  return test::read_file(dir_ + "/" + v.name + ".console").find("RELINK-GUEST-READY") != std::string::npos;
}

void World::kill_qemu(Vm& v) {
  v.paused = false;
  if (v.target == Target::Libvirt) {
    const pid_t pid = lv_->qemu_pid(v.name);
    if (pid > 0) ::kill(pid, SIGKILL);
    // libvirt notices its monitor's EOF, ends the domain and deletes its macvtap.
    test::wait_until([&] { return lv_->qemu_pid(v.name) == 0 && lv_->domains().empty(); }, 20s, 50ms);
    return;
  }
  v.qmp.reset();
  v.qemu.reset();  // SIGKILL and reaped
  // The launcher deletes the macvtap it made for that QEMU, as libvirt does.
  if (!v.launcher_macvtap.empty()) ns_.run("ip link del " + v.launcher_macvtap + " 2>/dev/null");
  v.launcher_macvtap.clear();
}

void World::launch(Vm& v) {
  ++v.launches;
  std::filesystem::remove(dir_ + "/" + v.name + ".console");
  if (v.target != Target::Libvirt) return launch_qmp(v);
  test::DomainSpec d;
  d.name = v.name;
  d.nics.push_back(test::DirectNic{v.mac, v.parent});
  d.guest_dir = guest_dir_;
  d.cmdline_extra = std::string("relink.ip=") + kGuestIp + "/24 relink.poll=0.05";
  d.serial_log = dir_ + "/" + v.name + ".console";
  if (!parent_exists(v)) parent_up(v);  // libvirt cannot start a domain whose source dev is missing
  if (!lv_->create(test::domain_xml(d))) throw SetupError("libvirt could not start " + v.name + "\n" + lv_->log());
}

void World::launch_qmp(Vm& v) {
  const std::string qmp = dir_ + "/" + v.name + ".qmp", test_qmp = dir_ + "/" + v.name + ".test.qmp";
  std::filesystem::remove(qmp);
  std::filesystem::remove(test_qmp);
  std::vector<std::string> argv, net;
  if (v.target == Target::Hub) {
    net = {"-netdev", "hubport,id=nic0.port,hubid=0", "-device", "virtio-net-pci,netdev=nic0.port,id=nic0,mac=" + v.mac,
           "-netdev", "stream,id=net1,server=on,addr.type=unix,addr.path=" + dir_ + "/hub1-net1.sock", "-device",
           "virtio-net-pci,netdev=net1,id=nic1,mac=52:54:00:c0:00:11"};
  } else {
    std::string dev = "virtio-net-pci,id=" + v.nic + ",mac=" + v.mac + ",bus=rp1";
    net = {"-device", "pcie-root-port,id=rp1,chassis=1,slot=1"};
    if (parent_exists(v)) {
      // The launcher's own macvtap, as a script or a management tool makes it.
      const std::string mvt = "lt" + std::to_string(v.launches);
      auto r = ns_.run("ip link add link " + v.parent + " name " + mvt + " address " + v.mac +
                       " type macvtap mode bridge && ip link set " + mvt + " up");
      if (r.status != 0) {
        incidents_.push_back("launcher: cannot bring up its macvtap " + mvt + " for " + v.name + " on " + v.parent +
                             " (a leftover macvtap with the guest's MAC?): " + r.out);
        ns_.run("ip link del " + mvt + " 2>/dev/null");
      } else {
        const int ifindex = ns_.ifindex(mvt);
        const std::string devno =
            ns_.run("cat /sys/class/net/" + mvt + "/macvtap/tap" + std::to_string(ifindex) + "/dev").out;
        unsigned maj = 0, min = 0;
        const std::string node = dir_ + "/" + mvt + ".node";
        std::filesystem::remove(node);
        if (sscanf(devno.c_str(), "%u:%u", &maj, &min) != 2 || mknod(node.c_str(), S_IFCHR | 0600, makedev(maj, min)))
          throw SetupError("launcher: node for " + mvt + ": " + devno);
        argv = {"sh", "-c", "exec 3<>" + node + "; rm -f " + node + "; exec \"$0\" \"$@\""};
        net.insert(net.end(), {"-netdev", "tap,id=hostnet0,fd=3,vhost=off"});
        dev += ",netdev=hostnet0";
        v.launcher_macvtap = mvt;
      }
    }
    net.insert(net.end(), {"-device", dev});
  }
  argv.insert(argv.end(), {"qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg",
                           "-m", v.guest ? "256" : "64", "-qmp", "unix:" + qmp + ",server=on,wait=off", "-qmp",
                           "unix:" + test_qmp + ",server=on,wait=off"});
  argv.insert(argv.end(), net.begin(), net.end());
  if (v.guest)
    argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + dir_ + "/" + v.name + ".console", "-kernel", kernel(),
                             "-initrd", guest_dir_ + "/initramfs.cpio.gz", "-append",
                             "console=ttyS0 quiet panic=-1 relink.tag=" + v.name + " relink.ip=" + kGuestIp +
                                 "/24 relink.poll=0.05"});
  else
    argv.push_back("-S");
  v.qemu = std::make_unique<test::Child>(argv, test::Child::Options{"", dir_ + "/" + v.name + ".qemu.log", {}});
  reconnect_qmp(v);
}

void World::reconnect_qmp(Vm& v) {
  if (v.target == Target::Libvirt) return;
  v.qmp = std::make_unique<test::QmpSync>();
  if (!v.qmp->connect(dir_ + "/" + v.name + ".test.qmp"))
    throw SetupError("QEMU " + v.name + " did not open its QMP socket\n" +
                     tail(test::read_file(dir_ + "/" + v.name + ".qemu.log"), 2000));
}

bool World::ping(Vm& v, std::chrono::seconds timeout) {
  return test::wait_until(
      [&] { return v.peer->run(std::string("busybox ping -c1 -W1 ") + kGuestIp + " >/dev/null 2>&1").status == 0; },
      timeout, 200ms);
}

std::set<int> World::passt_pids() {
  std::set<int> out;
  std::istringstream in(test::sh("ip netns pids " + ns_.name()).out);
  for (int pid; in >> pid;) {
    const std::string comm = test::read_file("/proc/" + std::to_string(pid) + "/comm");
    const std::string stat = test::read_file("/proc/" + std::to_string(pid) + "/stat");
    if (comm.rfind("passt", 0) == 0 && stat.find(") Z") == std::string::npos) out.insert(pid);
  }
  return out;
}

// ---------------------------------------------------------------- relinkd

void World::write_config() {
  std::string t = "[daemon]\ncontrol_socket = \"" + control() + "\"\nstate_dir = \"" + dir_ + "/state\"\nnode_dir = \"" +
                  dir_ + "/dev\"\nlog_level = \"debug\"\n";
  t += "\n[[vm]]\nname = \"hub1\"\nqmp = \"" + dir_ + "/hub1.qmp\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"ph\"\n"
       "mac = \"" + vm(Target::Hub).mac + "\"\nattach = \"hub\"\nhub = 0\n[[vm.passt]]\nnetdev = \"net1\"\n"
       "mode = \"stream-server\"\nsocket = \"" + dir_ + "/hub1-net1.sock\"\n";
  t += "\n[[vm]]\nname = \"rep1\"\nqmp = \"" + dir_ + "/rep1.qmp\"\n[[vm.macvtap]]\nnic = \"nic0\"\nparent = \"pr\"\n"
       "mac = \"" + vm(Target::Replug).mac + "\"\nattach = \"replug\"\nrelease_timeout = " +
       std::to_string(replug_release_timeout_) + "\n";
  t += "\n[libvirt]\nuri = \"" + lv_->uri() + "\"\npid_dir = \"" + lv_->pid_dir() + "\"\nrelease_timeout = " +
       std::to_string(libvirt_release_timeout_) + "\n";
  std::ofstream(dir_ + "/relinkd.toml") << t;
}

void World::start_relinkd() {
  relinkd_ = std::make_unique<test::Child>(
      std::vector<std::string>{test::binary_dir() + "/relinkd", "--config", dir_ + "/relinkd.toml"},
      test::Child::Options{ns_.name(), relinkd_log(), {}});
  // The control socket of a killed relinkd may still be there: wait for an answer.
  if (!test::wait_until([&] { return status(1000).has_value() || !relinkd_->running(); }, 30s, 20ms) ||
      !relinkd_->running())
    incidents_.push_back("relinkd did not answer on its control socket within 30 s of its start\n" +
                         tail(test::read_file(relinkd_log()), 2000));
}

bool World::relinkd_running() { return relinkd_ && relinkd_->running(); }

bool World::stop_relinkd(int sig) {
  if (!relinkd_running()) return false;
  const int st = relinkd_->stop(sig, sig == SIGKILL ? 5s : 10s);
  if (st == -1) {
    incidents_.push_back("relinkd did not exit within 10 s of signal " + std::to_string(sig));
    relinkd_->kill_now();
  }
  relinkd_.reset();
  return true;
}

std::string World::reload(int variant) {
  if (variant == 1) replug_release_timeout_ = replug_release_timeout_ == 5 ? 6 : 5;
  if (variant == 2) libvirt_release_timeout_ = libvirt_release_timeout_ == 5 ? 6 : 5;
  write_config();
  auto r = ctl::control_request(control(), {{"command", "reload"}}, 20000);
  if (!r) return r.error().message;
  if (!r->value("ok", false)) return r->dump();
  return "";
}

std::optional<json> World::status(int timeout_ms) {
  auto r = ctl::control_request(control(), {{"command", "status"}}, timeout_ms);
  if (!r || !r->value("ok", false)) return std::nullopt;
  return (*r)["result"];
}

void World::monitor_start() {
  monitor_stop();
  monitor_file_ = dir_ + "/monitor-" + std::to_string(++monitors_) + ".jsonl";
  monitor_ = std::make_unique<test::Child>(
      std::vector<std::string>{test::binary_dir() + "/relinkctl", "--socket", control(), "monitor", "--json"},
      test::Child::Options{"", monitor_file_, {}});
  sleep_ms(150);  // subscribed before the fault begins
}

bool World::monitor_wait(const std::string& vm, const std::string& nic, const std::string& state,
                         std::chrono::milliseconds timeout) {
  size_t seen = 0;
  return test::wait_until(
      [&] {
        const std::string text = test::read_file(monitor_file_);
        for (size_t nl; (nl = text.find('\n', seen)) != std::string::npos; seen = nl + 1) {
          const json ev = json::parse(text.substr(seen, nl - seen), nullptr, false);
          if (ev.is_object() && ev.value("event", "") == "state" && ev.value("vm", "") == vm &&
              ev.value("nic", "") == nic && ev.value("state", "") == state)
            return true;
        }
        return false;
      },
      timeout, 1ms);
}

void World::monitor_stop() {
  monitor_.reset();
  if (!monitor_file_.empty()) std::filesystem::remove(monitor_file_);
  monitor_file_.clear();
}

std::string World::relinkd_last_words() {
  std::istringstream in(tail(test::read_file(relinkd_log()), 4000));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > 4 ? lines.size() - 4 : 0; i < lines.size(); ++i) out += "\n      " + lines[i];
  return out;
}

std::string World::tails() {
  std::string s = "relinkd log (tail):\n" + tail(test::read_file(relinkd_log()), 4000);
  for (auto& v : vms_)
    if (v->guest) s += "\n" + v->name + " console (tail):\n" + tail(test::read_file(dir_ + "/" + v->name + ".console"), 600);
  return s;
}

}  // namespace relink::chaos
