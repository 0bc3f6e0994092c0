// SPDX-License-Identifier: GPL-2.0-or-later
// ReplugAttacher against a real QEMU 7.2, driven directly on an sd-event loop
// with a real QmpClient. QEMU is started as a launcher starts it: a macvtap
// ("mvl0") on a veth parent in a throwaway namespace, opened and passed as
// fd 3 (3..6 for four queues), `-netdev tap,id=hostnet0,fd=3 -device
// virtio-net-pci,netdev=hostnet0,id=net0`. Without a guest OS a device_del
// never completes, so the replug cases boot the project's test guest
// (tests/guest), whose init configures any NIC that appears.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/hub_attach.h"  // process_holds_device
#include "daemon/qemu_names.h"
#include "daemon/replug_attach.h"
#include "qemu/info_network.h"
#include "macvtap/macvtap_factory.h"
#include "qemu/qmp_client.h"
#include "support/fake_qmp.h"  // run_until
#include "support/harness.h"
#include "support/qmp_sync.h"
#include "util/defer_queue.h"
#include "util/log.h"

namespace relink::daemon {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using test::run_until;

constexpr const char* kMac = "52:54:00:12:34:56";
constexpr const char* kGuestIp = "192.0.2.2";
constexpr const char* kPeerIp = "192.0.2.1";
// What the template is made of (compared before and after a replug).
constexpr const char* kProps[] = {"type",    "mac",     "addr",     "parent_bus",    "mq",
                                  "vectors", "host_mtu", "romfile", "rx_queue_size", "tx_queue_size",
                                  "bootindex", "acpi-index"};

struct QemuSetup {
  std::string machine = "pc";
  unsigned queues = 1;       // queues of the launcher's macvtap (fds 3, 4, ...)
  std::string device_extra;  // appended to the NIC's -device option
  bool guest = false;        // boot the test guest (otherwise -S: no OS)
};

class ReplugAttachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    if (test::sh("command -v qemu-system-x86_64").status != 0) GTEST_SKIP() << "qemu-system-x86_64 not installed";
    if (getenv("RELINK_TEST_DEBUG")) log::setup(spdlog::level::debug, false);
    char tmpl[] = "/tmp/relink-replug-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ns_ = std::make_unique<test::Netns>("rpl");
    peer_ = std::make_unique<test::Netns>("rplp");
    // Parent p0; its veth peer p1 in the peer namespace, as a switch port.
    ns_->ip("link add p0 type veth peer name p1 netns " + peer_->name());
    ns_->ip("link set p0 up");
    peer_->ip("addr add " + std::string(kPeerIp) + "/24 dev p1");
    peer_->ip("link set p1 up");
    parent_ = ns_->ifindex("p0");
    ASSERT_GT(parent_, 0);

    sd_event* e = nullptr;
    ASSERT_GE(sd_event_new(&e), 0);
    loop_.reset(e);
    defer_ = std::make_unique<DeferQueue>(loop_.get());
    {
      test::ScopedNetnsEnter in(ns_->name());
      ASSERT_TRUE(in.ok());
      factory_ = std::make_unique<macvtap::RtnlMacvtapFactory>(dir_ + "/nodes");
    }
    b_.nic = "net0";
    b_.parent = "p0";
    b_.mac = *parse_mac(kMac);
    b_.attach = config::AttachMode::Replug;
    b_.macvtap = "rplt0";
  }

  void TearDown() override {
    attacher_.reset();
    client_.reset();
    sync_.reset();
    qemu_.kill_now();
    factory_.reset();
    defer_.reset();
    loop_.reset();
    peer_.reset();
    ns_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  static std::string guest_dir() { return test::binary_dir() + "/guest"; }
  void build_guest() {
    auto r = test::sh("bash " + test::source_dir() + "/tests/guest/build-guest.sh " + guest_dir());
    ASSERT_EQ(r.status, 0) << "building the test guest failed:\n" << r.out;
  }

  // The launcher: its macvtap mvl0 on p0, opened once per queue, and QEMU.
  void start_qemu(const QemuSetup& s) {
    if (s.guest) {
      build_guest();
      if (HasFatalFailure()) return;
    }
    ns_->ip("link add link p0 name mvl0 address " + std::string(kMac) + " type macvtap mode bridge");
    ns_->ip("link set mvl0 up");
    launcher_ifindex_ = ns_->ifindex("mvl0");
    ASSERT_GT(launcher_ifindex_, 0);
    const std::string devno =
        ns_->run("cat /sys/class/net/mvl0/macvtap/tap" + std::to_string(launcher_ifindex_) + "/dev").out;
    unsigned maj = 0, min = 0;
    ASSERT_EQ(sscanf(devno.c_str(), "%u:%u", &maj, &min), 2) << devno;
    launcher_dev_ = makedev(maj, min);
    // /dev/tapN is named by a per-namespace ifindex: a private node instead.
    const std::string node = dir_ + "/mvl0.node";
    ASSERT_EQ(mknod(node.c_str(), S_IFCHR | 0600, launcher_dev_), 0) << node;
    std::string opens, fds;
    for (unsigned q = 0; q < s.queues; ++q) {
      opens += "exec " + std::to_string(3 + q) + "<>" + node + "; ";
      fds += (q ? ":" : "") + std::to_string(3 + q);
    }
    std::string dev = "virtio-net-pci,netdev=hostnet0,id=net0,mac=" + std::string(kMac);
    std::vector<std::string> argv = {"sh", "-c", opens + "exec \"$0\" \"$@\"", "qemu-system-x86_64", "-nodefaults",
                                     "-display", "none", "-machine", s.machine, "-accel", "tcg", "-m",
                                     s.guest ? "256" : "64", "-qmp", "unix:" + dir_ + "/qmp.sock,server=on,wait=off",
                                     "-qmp", "unix:" + dir_ + "/test.sock,server=on,wait=off"};
    if (s.machine == "q35") {
      argv.insert(argv.end(), {"-device", "pcie-root-port,id=rp1,chassis=1,slot=1"});
      dev += ",bus=rp1";
    }
    if (s.queues > 1) dev += ",mq=on,vectors=" + std::to_string(2 * s.queues + 2);
    dev += s.device_extra;
    argv.insert(argv.end(), {"-netdev", s.queues > 1 ? "tap,id=hostnet0,fds=" + fds : "tap,id=hostnet0,fd=3",
                             "-device", dev});
    if (s.guest) {
      const std::string kernel = std::filesystem::exists(guest_dir() + "/vmlinux") ? "/vmlinux" : "/vmlinuz";
      argv.insert(argv.end(), {"-no-reboot", "-serial", "file:" + console_path(), "-kernel", guest_dir() + kernel,
                               "-initrd", guest_dir() + "/initramfs.cpio.gz", "-append",
                               "console=ttyS0 quiet panic=-1 relink.tag=replug relink.ip=" + std::string(kGuestIp) +
                                   "/24 relink.poll=0.05"});
    } else {
      argv.push_back("-S");
    }
    qemu_ = test::Child(argv, test::Child::Options{"", dir_ + "/qemu.log", {}});
    sync_ = std::make_unique<test::QmpSync>();
    ASSERT_TRUE(sync_->connect(dir_ + "/test.sock")) << test::read_file(dir_ + "/qemu.log");

    qemu::QmpClient::Callbacks cbs;
    cbs.on_connected = [this] { ++connected_; };
    cbs.on_event = [this](const std::string& name, const json& data) { events_.emplace_back(name, data); };
    qemu::QmpOptions opts;
    opts.reconnect_min_us = 10'000;
    opts.reconnect_max_us = 100'000;
    client_ = std::make_unique<qemu::QmpClient>(loop_.get(), dir_ + "/qmp.sock", std::move(cbs), opts);
    client_->start();
    ASSERT_TRUE(run_until(loop_.get(), [&] { return connected_ == 1; }, 30s)) << explain();
    ASSERT_EQ(client_->peer_pid(), qemu_.pid());
    attacher_ = std::make_unique<ReplugAttacher>(*factory_, *client_, *defer_);
  }

  std::string console_path() const { return dir_ + "/console.log"; }
  std::string console() const { return test::read_file(console_path()); }
  size_t markers(const std::string& marker) const {
    const std::string c = console();
    size_t n = 0;
    for (size_t p = c.find(marker); p != std::string::npos; p = c.find(marker, p + 1)) ++n;
    return n;
  }
  std::string explain() const {
    std::string c = console();
    if (c.size() > 3000) c = c.substr(c.size() - 3000);
    return "QEMU log:\n" + test::read_file(dir_ + "/qemu.log") + "\nguest console (tail):\n" + c;
  }
  bool wait_guest_ready() {
    return test::wait_until([&] { return console().find("RELINK-GUEST-READY") != std::string::npos; }, 120s, 100ms);
  }
  bool guest_answers(std::chrono::seconds timeout) {
    return test::wait_until(
        [&] { return peer_->run(std::string("busybox ping -c1 -W1 ") + kGuestIp).status == 0; }, timeout, 200ms);
  }

  // --- the attacher, one call at a time ---------------------------------------
  // sd-event arms relative timers (QmpClient's command timeouts) from the
  // time of the loop's last wakeup: after the test blocked for a while (a
  // guest booting), let the loop see the time again first.
  void refresh_loop() { test::run_for(loop_.get(), 1ms); }
  // After a hand-over, the old backend's netdev_del is still on its way: run
  // the loop until QEMU holds the new macvtap's queue and nothing else.
  bool old_backend_closed(dev_t dev) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < 2s) {
      if (macvtap_fds(dev) == std::vector<dev_t>{dev}) return true;
      test::run_for(loop_.get(), 5ms);
    }
    return false;
  }

  std::vector<engine::VmConnected> probe(const std::vector<config::MacvtapBinding>& bs, ReplugAttacher* a = nullptr) {
    refresh_loop();
    std::optional<std::vector<engine::VmConnected>> out;
    (a ? *a : *attacher_).probe(bs, [&](std::vector<engine::VmConnected> v) { out = std::move(v); });
    EXPECT_TRUE(run_until(loop_.get(), [&] { return out.has_value(); }, 10s)) << "probe never answered";
    return out.value_or(std::vector<engine::VmConnected>{});
  }
  Attacher::ReleaseResult release(const config::MacvtapBinding& b, ReplugAttacher* a = nullptr) {
    refresh_loop();
    std::optional<Attacher::ReleaseResult> out;
    (a ? *a : *attacher_).release(b, 0, [&](Attacher::ReleaseResult r) { out = std::move(r); });
    EXPECT_TRUE(run_until(loop_.get(), [&] { return out.has_value(); }, 10s)) << "release never answered";
    return out.value_or(Attacher::ReleaseResult{false, "test: no answer"});
  }
  size_t deleted_events(const std::string& nic) const {
    size_t n = 0;
    for (const auto& [name, data] : events_)
      n += name == "DEVICE_DELETED" && data.is_object() && data.value("device", "") == nic;
    return n;
  }
  // release() and the guest's DEVICE_DELETED for the NIC.
  void release_and_wait(const config::MacvtapBinding& b) {
    const size_t before = deleted_events(b.nic);
    auto r = release(b);
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_FALSE(r.already_gone);
    ASSERT_TRUE(run_until(loop_.get(), [&] { return deleted_events(b.nic) > before; }, 20s))
        << "no DEVICE_DELETED for " << b.nic << "\n" << explain();
  }
  // create() + hand_over(); `dev` gets the new macvtap's device.
  AttachResult attach(const config::MacvtapBinding& b, uint64_t gen, dev_t* dev = nullptr,
                      ReplugAttacher* a = nullptr) {
    ReplugAttacher& at = a ? *a : *attacher_;
    refresh_loop();
    auto m = at.create(b, parent_);
    if (!m) return AttachResult{false, 0, "create: " + m.error().message};
    if (dev) *dev = m->dev;
    std::optional<AttachResult> out;
    at.hand_over(b, gen, std::move(m.value()), true, [&](AttachResult r) { out = std::move(r); });
    EXPECT_TRUE(run_until(loop_.get(), [&] { return out.has_value(); }, 10s)) << "hand_over never answered";
    return out.value_or(AttachResult{false, 0, "test: no answer"});
  }

  // --- QEMU as the test sees it (its own QMP socket) ---------------------------
  json qom(const std::string& nic, const std::string& prop) {
    auto r = sync_->execute("qom-get", {{"path", "/machine/peripheral/" + nic}, {"property", prop}});
    return r.is_object() && r.contains("return") ? r["return"] : json("<" + r.dump() + ">");
  }
  json nic_props(const std::string& nic) {
    json out = json::object();
    for (const char* p : kProps) out[p] = qom(nic, p);
    return out;
  }
  // The lines of the NIC's directly peered backend in "info network".
  std::vector<qemu::NetClient> backend_lines(const std::string& text, const std::string& nic) {
    std::vector<qemu::NetClient> out;
    for (const auto& c : qemu::parse_info_network(text))
      if (c.peer == nic && c.type != "nic") out.push_back(c);
    return out;
  }
  bool holds(dev_t dev) { return process_holds_device(qemu_.pid(), dev); }
  // Every macvtap queue QEMU has open (char devices of macvtap's major), as
  // devices. Minors are reused as soon as a macvtap is deleted, so "the old
  // one is closed" shows as one entry per queue, not as an absent number.
  std::vector<dev_t> macvtap_fds(dev_t like) {
    std::vector<dev_t> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(qemu_.pid()) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      struct stat st {};
      if (stat(it->path().c_str(), &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == major(like))
        out.push_back(st.st_rdev);
    }
    return out;
  }
  // QEMU's fds other than eventfds and the like (their number follows the
  // guest driver's queue setup): files, device nodes, sockets, pipes.
  size_t qemu_fd_count() {
    size_t n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(qemu_.pid()) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      std::error_code lec;
      n += std::filesystem::read_symlink(it->path(), lec).string().rfind("anon_inode:", 0) != 0;
    }
    return n;
  }
  bool macvtap_exists(const std::string& name) {
    auto f = factory_->find(name);
    return f && f->has_value();
  }
  // Runs the loop until QEMU has answered everything sent so far.
  void settle() {
    refresh_loop();
    bool done = false;
    client_->execute("query-status", nullptr, [&](qemu::QmpReply) { done = true; });
    ASSERT_TRUE(run_until(loop_.get(), [&] { return done; }, 10s));
  }

  std::string dir_;
  std::unique_ptr<test::Netns> ns_, peer_;
  int parent_ = 0;
  int launcher_ifindex_ = 0;
  dev_t launcher_dev_ = 0;
  SdEventPtr loop_;
  std::unique_ptr<DeferQueue> defer_;
  std::unique_ptr<macvtap::MacvtapFactory> factory_;
  test::Child qemu_;
  std::unique_ptr<test::QmpSync> sync_;
  std::unique_ptr<qemu::QmpClient> client_;
  std::unique_ptr<ReplugAttacher> attacher_;
  int connected_ = 0;
  std::vector<std::pair<std::string, json>> events_;
  config::MacvtapBinding b_;
};

// --- no guest OS (-S) -------------------------------------------------------

TEST_F(ReplugAttachTest, ProbeAdoptsTheLaunchersMacvtapAndReadsTheTemplateOnI440fx) {
  start_qemu({"pc", 1, ",addr=0x5,rx_queue_size=512,host_mtu=1400,bootindex=3,romfile=", false});
  if (HasFatalFailure()) return;
  // A leftover of ours from a crash mid-replug: macvtap rplt0 (the binding's
  // name) handed to QEMU as net0.tap3, peered with nothing.
  // (Another MAC: only one macvtap per MAC can be up on p0.)
  auto left = factory_->create({b_.macvtap, parent_, macvtap::Mode::Bridge, *parse_mac("52:54:00:00:00:33"), 1});
  ASSERT_TRUE(left) << left.error().message;
  const dev_t left_dev = left->dev;
  bool added = false;
  client_->execute("getfd", {{"fdname", "left"}}, [](qemu::QmpReply r) { EXPECT_TRUE(r) << r.error().message; },
                   left->fds[0].get());
  client_->execute("netdev_add", {{"type", "tap"}, {"id", "net0.tap3"}, {"fd", "left"}}, [&](qemu::QmpReply r) {
    EXPECT_TRUE(r) << r.error().message;
    added = true;
  });
  ASSERT_TRUE(run_until(loop_.get(), [&] { return added; }, 10s));
  left->fds.clear();
  ASSERT_TRUE(holds(left_dev));

  auto found = probe({b_});
  ASSERT_EQ(found.size(), 1u);
  const auto& vc = found[0];
  EXPECT_TRUE(vc.nic_present);
  EXPECT_EQ(vc.max_generation_seen, 3u);
  ASSERT_TRUE(vc.adopt) << "the launcher's macvtap was not adopted";
  EXPECT_EQ(vc.adopt->generation, 0u) << "hostnet0 is not one of our generations";
  EXPECT_EQ(vc.adopt->macvtap_ifindex, launcher_ifindex_);
  EXPECT_EQ(vc.adopt->parent_ifindex, parent_);

  // The template says what QEMU says.
  const NicTemplate* t = attacher_->nic_template("net0");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->driver, qom("net0", "type"));
  EXPECT_EQ(t->driver, "virtio-net-pci");
  EXPECT_EQ(format_mac(t->mac), qom("net0", "mac"));
  EXPECT_EQ(t->netdev, "hostnet0");
  EXPECT_EQ(qom("net0", "parent_bus"), "/machine/i440fx/pci.0");
  EXPECT_EQ(t->bus, "pci.0");
  EXPECT_EQ(qom("net0", "addr"), 5 << 3);
  EXPECT_EQ(t->addr, 5 << 3);
  EXPECT_EQ(pci_addr_arg(t->addr), "5.0");
  EXPECT_TRUE(t->has_mq);
  // Only what differs from device_add's own choice (romfile always).
  EXPECT_EQ(t->props, (json{{"rx_queue_size", 512}, {"host_mtu", 1400}, {"bootindex", 3}, {"romfile", ""}}))
      << t->props.dump();
  EXPECT_EQ(qom("net0", "rx_queue_size"), 512);
  EXPECT_EQ(qom("net0", "tx_queue_size"), 256);
  EXPECT_EQ(qom("net0", "vectors"), 4);

  // The leftover tap is deleted (QEMU closes its fd), and so is our unused macvtap.
  settle();
  const std::string net = sync_->info_network();
  EXPECT_EQ(net.find("net0.tap3"), std::string::npos) << net;
  EXPECT_EQ(macvtap_fds(left_dev), std::vector<dev_t>{launcher_dev_}) << "the leftover's fd is still open";
  EXPECT_FALSE(macvtap_exists(b_.macvtap));
  EXPECT_TRUE(macvtap_exists("mvl0"));

  // detach of the adopted generation: the launcher's macvtap is not ours.
  attacher_->detach(b_, 0, launcher_ifindex_, true);
  settle();
  EXPECT_TRUE(macvtap_exists("mvl0"));
  // ...but one of ours is deleted.
  config::MacvtapBinding other = b_;
  other.mac = *parse_mac("52:54:00:00:00:34");
  auto own = attacher_->create(other, parent_);
  ASSERT_TRUE(own) << own.error().message;
  const int own_ifindex = own->ifindex;
  own->fds.clear();
  attacher_->detach(other, 7, own_ifindex, false);
  EXPECT_FALSE(macvtap_exists(b_.macvtap));
  // The NIC was never asked to go: the launcher's macvtap keeps the MAC.
  auto rival = attacher_->create(b_, parent_);
  EXPECT_FALSE(rival);
  EXPECT_TRUE(macvtap_exists("mvl0"));
}

TEST_F(ReplugAttachTest, ProbeOnQ35ReadsTheRootPortBusAndFourQueues) {
  start_qemu({"q35", 4, "", false});
  if (HasFatalFailure()) return;
  b_.queues = 4;
  config::MacvtapBinding absent = b_;
  absent.nic = "net9";
  absent.macvtap = "rplt9";
  auto found = probe({b_, absent});
  ASSERT_EQ(found.size(), 2u);
  ASSERT_TRUE(found[0].adopt) << "the launcher's 4-queue macvtap was not adopted";
  EXPECT_EQ(found[0].adopt->macvtap_ifindex, launcher_ifindex_);
  EXPECT_TRUE(found[0].nic_present);
  EXPECT_FALSE(found[1].nic_present);
  EXPECT_FALSE(found[1].adopt);
  EXPECT_EQ(attacher_->nic_template("net9"), nullptr);

  const NicTemplate* t = attacher_->nic_template("net0");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(qom("net0", "parent_bus"), "/machine/peripheral/rp1/rp1");
  EXPECT_EQ(t->bus, "rp1");
  EXPECT_EQ(t->addr, 0);
  EXPECT_EQ(pci_addr_arg(t->addr), "0.0");
  EXPECT_EQ(qom("net0", "vectors"), 10);
  // vectors=10 is QEMU's own choice for four queues: not carried.
  EXPECT_EQ(t->props, (json{{"mq", true}, {"romfile", "efi-virtio.rom"}})) << t->props.dump();

  // A NIC QEMU does not have is already released.
  auto r = release(absent);
  EXPECT_TRUE(r.already_gone);
  EXPECT_TRUE(r.error.empty()) << r.error;
}

TEST_F(ReplugAttachTest, ReleaseWithoutGuestOsNeverCompletesAndNothingBreaks) {
  start_qemu({"pc", 1, "", false});
  if (HasFatalFailure()) return;
  const json before = nic_props("net0");
  const std::string net_before = sync_->info_network();

  // The launcher's macvtap holds the guest's MAC on p0 (the NIC never goes
  // here): the attaches below use another.
  config::MacvtapBinding other = b_;
  other.mac = *parse_mac("52:54:00:00:00:34");

  // Never probed: no template, so no device_del (the NIC could not come back),
  // and no device_add either.
  ReplugAttacher fresh(*factory_, *client_, *defer_);
  auto refused = release(b_, &fresh);
  EXPECT_FALSE(refused.already_gone);
  EXPECT_NE(refused.error.find("not sent"), std::string::npos) << refused.error;
  auto blind = attach(other, 1, nullptr, &fresh);
  EXPECT_FALSE(blind.ok);
  EXPECT_NE(blind.error.find("never read how the NIC was plugged in"), std::string::npos) << blind.error;
  EXPECT_FALSE(macvtap_exists(b_.macvtap)) << "the macvtap was not rolled back";

  ASSERT_EQ(probe({b_}).size(), 1u);
  auto r = release(b_);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_FALSE(r.already_gone);
  test::run_for(loop_.get(), 2s);
  EXPECT_EQ(deleted_events("net0"), 0u) << "a guest with no OS released the NIC?";
  // Asked again: QEMU 7.2 says it is already being unplugged; still asked.
  auto again = release(b_);
  EXPECT_TRUE(again.error.empty()) << again.error;
  EXPECT_FALSE(again.already_gone);

  // hand_over while the NIC is still plugged in: device_add is refused on the
  // NIC's id, its backend is never touched (deleting it would orphan the
  // NIC), the new tap and macvtap are rolled back.
  dev_t dev = 0;
  auto early = attach(other, 1, &dev);
  EXPECT_FALSE(early.ok);
  EXPECT_NE(early.error.find("Duplicate device ID 'net0'"), std::string::npos) << early.error;
  test::run_for(loop_.get(), 200ms);  // the rollback's netdev_del
  EXPECT_FALSE(macvtap_exists(b_.macvtap));
  EXPECT_EQ(macvtap_fds(dev), std::vector<dev_t>{launcher_dev_});

  EXPECT_TRUE(client_->connected());
  auto st = sync_->execute("query-status");
  EXPECT_TRUE(st.contains("return")) << st.dump();
  EXPECT_EQ(nic_props("net0"), before);
  EXPECT_EQ(sync_->info_network(), net_before);
  EXPECT_TRUE(holds(launcher_dev_));
  EXPECT_TRUE(macvtap_exists("mvl0"));
}

// --- with a guest -----------------------------------------------------------

// i440fx: the NIC comes back as it was, 20 times in a row with nothing left
// over, and a device_add or netdev_add that fails leaves nothing behind.
TEST_F(ReplugAttachTest, ReplugsOnI440fxWithAGuest) {
  start_qemu({"pc", 1, ",addr=0x5,rx_queue_size=512,host_mtu=1400,bootindex=3,romfile=", true});
  if (HasFatalFailure()) return;
  ASSERT_TRUE(wait_guest_ready()) << explain();
  ASSERT_TRUE(guest_answers(20s)) << "guest unreachable through the launcher's macvtap\n" << explain();
  const json before = nic_props("net0");
  auto found = probe({b_});
  ASSERT_EQ(found.size(), 1u);
  ASSERT_TRUE(found[0].adopt);

  // The first replug: the launcher's tap out, ours in.
  const auto t0 = std::chrono::steady_clock::now();
  release_and_wait(b_);
  const auto released = std::chrono::steady_clock::now();
  dev_t dev = 0;
  auto r = attach(b_, 1, &dev);
  ASSERT_TRUE(r.ok) << r.error << "\n" << explain();
  const auto plugged = std::chrono::steady_clock::now();
  std::printf("[ replug ] release %lld ms, hand-over %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(released - t0).count()),
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(plugged - released).count()));
  EXPECT_EQ(r.macvtap_ifindex, ns_->ifindex(b_.macvtap));
  EXPECT_EQ(nic_props("net0"), before) << "after: " << nic_props("net0").dump();
  EXPECT_EQ(qom("net0", "netdev"), "net0.tap1");
  EXPECT_EQ(attacher_->nic_template("net0")->netdev, "net0.tap1");
  // The new macvtap's queue, and nothing else: the launcher's tap was closed
  // (its netdev_del follows device_add, off the guest's path).
  EXPECT_TRUE(old_backend_closed(dev)) << "QEMU still holds another macvtap";
  // Only one macvtap with the guest's MAC can be up on p0: the launcher's made room.
  EXPECT_FALSE(macvtap_exists("mvl0"));
  ASSERT_TRUE(test::wait_until([&] { return markers("RELINK-GUEST-LINK-NEW") >= 1; }, 20s, 50ms)) << explain();
  ASSERT_TRUE(guest_answers(20s)) << "guest unreachable after the replug\n" << explain();
  const size_t fds_after_first = qemu_fd_count();

  // 20 more in a row, as fast as the guest lets go of the NIC (it does not
  // always get to configure each one: an unplug can overtake its init).
  const auto loop_start = std::chrono::steady_clock::now();
  int prev_ifindex = r.macvtap_ifindex;
  for (uint64_t gen = 2; gen <= 21; ++gen) {
    SCOPED_TRACE("generation " + std::to_string(gen));
    release_and_wait(b_);
    // As the engine does on a reattach: the old generation's macvtap goes
    // (every other time; otherwise create() finds it and replaces it).
    if (gen % 2) attacher_->detach(b_, gen - 1, prev_ifindex, false);
    auto rr = attach(b_, gen, &dev);
    ASSERT_TRUE(rr.ok) << rr.error << "\n" << explain();
    EXPECT_TRUE(old_backend_closed(dev)) << "QEMU still holds another macvtap";
    prev_ifindex = rr.macvtap_ifindex;
  }
  std::printf("[ replug ] 20 replugs in %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - loop_start)
                                         .count()));
  const std::string net = sync_->info_network();
  const auto lines = backend_lines(net, "net0");
  ASSERT_EQ(lines.size(), 1u) << net;
  EXPECT_EQ(lines[0].name, "net0.tap21");
  EXPECT_EQ(lines[0].type, "tap");
  for (const auto& c : qemu::parse_info_network(net))
    EXPECT_TRUE(c.name.rfind("net0.tap", 0) != 0 || c.name == "net0.tap21") << net;
  EXPECT_EQ(sync_->execute("query-fdsets"), json({{"return", json::array()}}));
  for (const char* name : {"relink-net0-21", "relink-net0-20", "relink-net0-1"}) {
    auto c = sync_->execute("closefd", {{"fdname", name}});
    EXPECT_TRUE(c.contains("error")) << name << " is still held by QEMU's monitor";
  }
  EXPECT_EQ(qemu_fd_count(), fds_after_first);
  EXPECT_EQ(nic_props("net0"), before);
  ASSERT_TRUE(guest_answers(20s)) << "guest unreachable after 21 replugs\n" << explain();

  // device_add fails: another device took the NIC's slot while it was out.
  release_and_wait(b_);
  auto blocker = sync_->execute("device_add", {{"driver", "virtio-net-pci"}, {"id", "blocker"}, {"bus", "pci.0"},
                                               {"addr", "5.0"}, {"mac", "52:54:00:00:00:99"}});
  ASSERT_TRUE(blocker.contains("return")) << blocker.dump();
  // With no macvtap at all: one fd fewer than with the NIC's one queue.
  const size_t fds_without_tap = fds_after_first - 1;
  auto bad = attach(b_, 22, &dev);
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.error.rfind("device_add: ", 0), 0u) << bad.error;
  EXPECT_NE(bad.error.find("not available"), std::string::npos) << bad.error;
  settle();
  std::string after = sync_->info_network();
  EXPECT_EQ(after.find("net0.tap22"), std::string::npos) << after;
  EXPECT_TRUE(macvtap_fds(dev).empty()) << "the new tap's fd stayed in QEMU";
  EXPECT_FALSE(macvtap_exists(b_.macvtap));
  EXPECT_EQ(qemu_fd_count(), fds_without_tap);

  // netdev_add fails (an id already taken): the fds given with getfd are closed.
  auto squat = sync_->execute("netdev_add", {{"type", "user"}, {"id", "net0.tap23"}});
  ASSERT_TRUE(squat.contains("return")) << squat.dump();
  auto bad2 = attach(b_, 23, &dev);
  EXPECT_FALSE(bad2.ok);
  EXPECT_EQ(bad2.error.rfind("netdev_add tap: ", 0), 0u) << bad2.error;
  settle();
  EXPECT_TRUE(macvtap_fds(dev).empty()) << "a getfd'd fd stayed in QEMU";
  EXPECT_FALSE(macvtap_exists(b_.macvtap));
  EXPECT_EQ(qemu_fd_count(), fds_without_tap);
  EXPECT_TRUE(sync_->execute("netdev_del", {{"id", "net0.tap23"}}).contains("return"));

  // The slot free again: the NIC comes back and the guest answers.
  const size_t blocker_before = deleted_events("blocker");
  ASSERT_TRUE(sync_->execute("device_del", {{"id", "blocker"}}).contains("return"));
  ASSERT_TRUE(run_until(loop_.get(), [&] { return deleted_events("blocker") > blocker_before; }, 20s)) << explain();
  auto good = attach(b_, 24, &dev);
  ASSERT_TRUE(good.ok) << good.error << "\n" << explain();
  EXPECT_EQ(nic_props("net0"), before);
  EXPECT_EQ(macvtap_fds(dev), std::vector<dev_t>{dev});
  ASSERT_TRUE(guest_answers(20s)) << "guest unreachable after the rollbacks\n" << explain();
  // No RELINK-GUEST-ERROR check here: the guest's init reports a NIC unplugged
  // while it was configuring it, which the fast replugs above provoke.
}

// q35, the NIC on its own pcie-root-port, four queues: it comes back with
// four queues on the new macvtap and the guest answers ping from the peer.
TEST_F(ReplugAttachTest, MultiqueueReplugOnQ35GuestAnswersAgain) {
  start_qemu({"q35", 4, "", true});
  if (HasFatalFailure()) return;
  b_.queues = 4;
  ASSERT_TRUE(wait_guest_ready()) << explain();
  ASSERT_TRUE(guest_answers(20s)) << "guest unreachable through the launcher's macvtap\n" << explain();
  const json before = nic_props("net0");
  auto found = probe({b_});
  ASSERT_EQ(found.size(), 1u);
  ASSERT_TRUE(found[0].adopt);

  dev_t dev = 0;
  for (uint64_t gen = 1; gen <= 2; ++gen) {
    SCOPED_TRACE("generation " + std::to_string(gen));
    const size_t new_links = markers("RELINK-GUEST-LINK-NEW");
    release_and_wait(b_);
    auto r = attach(b_, gen, &dev);
    ASSERT_TRUE(r.ok) << r.error << "\n" << explain();
    EXPECT_EQ(nic_props("net0"), before) << "after: " << nic_props("net0").dump();
    EXPECT_EQ(qom("net0", "mq"), true);
    EXPECT_EQ(qom("net0", "parent_bus"), "/machine/peripheral/rp1/rp1");
    const std::string net = sync_->info_network();
    const auto lines = backend_lines(net, "net0");
    ASSERT_EQ(lines.size(), 4u) << net;
    for (size_t q = 0; q < 4; ++q) {
      EXPECT_EQ(lines[q].name, tap_id("net0", gen)) << net;
      EXPECT_EQ(lines[q].index, static_cast<int>(q)) << net;
      EXPECT_EQ(lines[q].type, "tap") << net;
    }
    EXPECT_EQ(macvtap_fds(dev), std::vector<dev_t>(4, dev)) << "one fd per queue, of the new macvtap only";
    EXPECT_FALSE(macvtap_exists("mvl0"));
    ASSERT_TRUE(test::wait_until([&] { return markers("RELINK-GUEST-LINK-NEW") > new_links; }, 20s, 50ms))
        << explain();
    ASSERT_TRUE(guest_answers(20s)) << "guest unreachable after the replug\n" << explain();
  }
  EXPECT_EQ(console().find("RELINK-GUEST-ERROR"), std::string::npos) << explain();
}

}  // namespace
}  // namespace relink::daemon
