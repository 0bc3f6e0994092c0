// SPDX-License-Identifier: GPL-2.0-or-later
// RtnlMacvtapFactory against the real kernel, each test in its own namespace.
// The factory runs in a thread that entered the namespace with setns(), whose
// /sys still shows the root namespace: every test here also proves the factory
// reads the test namespace's sysfs, not the process's.
#include "macvtap/macvtap_factory.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "macvtap_helpers.h"
#include "support/harness.h"
#include "util/mac.h"

namespace relink::macvtap {
namespace {

using mvtest::count_macvtaps;
using mvtest::dev_text;
using mvtest::expect_queue_fd;
using mvtest::fd_path;
using mvtest::ip_link;
using mvtest::sysfs_dev_text;
using mvtest::TempDir;

constexpr MacAddress kMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

class MacvtapFactoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RELINK_REQUIRE_ROOT();
    ns_ = std::make_unique<test::Netns>("mvt");
    ASSERT_FALSE(nodes_.path().empty());
    node_dir_ = nodes_ / "nodes";  // the factory makes it when it needs it
  }

  // A veth pair v0 (the parent) / v1 (its peer), both up.
  int make_veth_parent() {
    ns_->ip("link add v0 type veth peer name v1");
    ns_->ip("link set v0 up");
    ns_->ip("link set v1 up");
    return ns_->ifindex("v0");
  }

  MacvtapSpec spec(int parent, Mode mode = Mode::Bridge, unsigned queues = 1) {
    MacvtapSpec s;
    s.name = "mvt0";
    s.parent_ifindex = parent;
    s.mode = mode;
    s.mac = kMac;
    s.queues = queues;
    return s;
  }

  std::unique_ptr<test::Netns> ns_;
  TempDir nodes_;
  std::string node_dir_;
};

// --- every parent kind in every mode ------------------------------------

struct ParentAndMode {
  std::string parent_kind;  // "veth" or "bridge"
  Mode mode;
};

void PrintTo(const ParentAndMode& p, std::ostream* os) {
  *os << p.parent_kind << " parent, " << mode_name(p.mode) << " mode";
}

class MacvtapFactoryModes : public MacvtapFactoryTest,
                            public ::testing::WithParamInterface<ParentAndMode> {};

TEST_P(MacvtapFactoryModes, CreatesWorkingMacvtap) {
  const auto [kind, mode] = GetParam();
  std::string parent_name = "v0";
  if (kind == "veth") {
    make_veth_parent();
  } else {
    parent_name = "br0";
    ns_->ip("link add br0 type bridge");
    ns_->ip("link set br0 up");
  }
  const int parent = ns_->ifindex(parent_name);
  ASSERT_GT(parent, 0);

  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent, mode));
  ASSERT_TRUE(created) << created.error().message;

  auto link = ip_link(*ns_, "mvt0");
  ASSERT_TRUE(link);
  EXPECT_EQ(created->ifindex, link->ifindex);
  EXPECT_EQ(created->name, "mvt0");
  EXPECT_EQ(link->kind, "macvtap");
  EXPECT_EQ(link->parent, parent_name);
  EXPECT_EQ(link->mode, mode_name(mode));
  EXPECT_TRUE(link->up);
  EXPECT_TRUE(link->allmulti) << "the guest's multicast (IPv6 ND) must pass";
  if (mode == Mode::Passthru) {
    // The kernel gives a passthru macvtap its parent's MAC (see the header).
    EXPECT_EQ(link->mac, ip_link(*ns_, parent_name)->mac);
  } else {
    EXPECT_EQ(link->mac, format_mac(kMac));
  }

  EXPECT_EQ(dev_text(created->dev), sysfs_dev_text(*ns_, "mvt0", created->ifindex));
  ASSERT_EQ(created->fds.size(), 1u);
  expect_queue_fd(created->fds[0].get(), created->dev, "mvt0", false);
}

INSTANTIATE_TEST_SUITE_P(
    ParentsAndModes, MacvtapFactoryModes,
    ::testing::Values(ParentAndMode{"veth", Mode::Vepa}, ParentAndMode{"veth", Mode::Bridge},
                      ParentAndMode{"veth", Mode::Private}, ParentAndMode{"veth", Mode::Passthru},
                      ParentAndMode{"bridge", Mode::Vepa}, ParentAndMode{"bridge", Mode::Bridge},
                      ParentAndMode{"bridge", Mode::Private},
                      ParentAndMode{"bridge", Mode::Passthru}),
    [](const ::testing::TestParamInfo<ParentAndMode>& param_info) {
      return param_info.param.parent_kind + "_" + mode_name(param_info.param.mode);
    });

// --- queues and traffic ----------------------------------------------------

TEST_F(MacvtapFactoryTest, MultiQueueGivesOneFdPerQueue) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent, Mode::Bridge, 4));
  ASSERT_TRUE(created) << created.error().message;
  ASSERT_EQ(created->fds.size(), 4u);
  std::set<int> distinct;
  for (const auto& fd : created->fds) {
    distinct.insert(fd.get());
    expect_queue_fd(fd.get(), created->dev, "mvt0", true);
  }
  EXPECT_EQ(distinct.size(), 4u);
}

// relinkd spawns helpers: nothing the factory keeps or hands out may lack
// FD_CLOEXEC (its netlink socket and sysfs mount included).
TEST_F(MacvtapFactoryTest, EveryFdItOpensIsCloseOnExec) {
  auto fds_without_cloexec = [] {
    std::set<int> out;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      const int fd = std::stoi(entry.path().filename().string());
      const int flags = fcntl(fd, F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC)) out.insert(fd);
    }
    return out;
  };
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  const auto before = fds_without_cloexec();
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent, Mode::Bridge, 2));
  ASSERT_TRUE(created) << created.error().message;
  auto found = factory.find("mvt0");
  ASSERT_TRUE(found) << found.error().message;
  EXPECT_EQ(fds_without_cloexec(), before);
}

TEST_F(MacvtapFactoryTest, RejectsQueueCountsTheKernelRefuses) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  for (unsigned queues : {0u, 257u}) {
    auto created = factory.create(spec(parent, Mode::Bridge, queues));
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().code, EINVAL);
  }
  EXPECT_EQ(count_macvtaps(*ns_), 0u);
}

// Frames between a macvtap fd and a packet socket on the parent's peer v1.
// Only an experimental EtherType counts, so IPv6 autoconfiguration stays out.
class MacvtapTrafficTest : public MacvtapFactoryTest {
 protected:
  static constexpr uint16_t kEtherType = 0x88b5;

  // Call inside the namespace: the socket joins the thread's namespace.
  void open_peer_socket() {
    peer_ = UniqueFd(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType)));
    ASSERT_TRUE(peer_) << strerror(errno);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(kEtherType);
    sll.sll_ifindex = ns_->ifindex("v1");
    ASSERT_EQ(bind(peer_.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll), 0)
        << strerror(errno);
    auto mac = parse_mac(ip_link(*ns_, "v1")->mac);
    ASSERT_TRUE(mac);
    peer_mac_ = *mac;
  }

  static std::string frame(const MacAddress& dst, const MacAddress& src,
                           const std::string& payload) {
    std::string f(reinterpret_cast<const char*>(dst.data()), dst.size());
    f.append(reinterpret_cast<const char*>(src.data()), src.size());
    f += static_cast<char>(kEtherType >> 8);
    f += static_cast<char>(kEtherType & 0xff);
    f += payload;
    f.resize(std::max<size_t>(f.size(), ETH_ZLEN), '\0');
    return f;
  }

  // Reads frames from fd until one with our EtherType carries `payload`.
  static bool receive(int fd, size_t skip, const std::string& payload) {
    char buf[4096];
    return test::wait_until(
        [&] {
          pollfd pfd{fd, POLLIN, 0};
          if (poll(&pfd, 1, 10) != 1) return false;
          const ssize_t n = read(fd, buf, sizeof buf);
          if (n < static_cast<ssize_t>(skip + ETH_HLEN + payload.size())) return false;
          const char* eth = buf + skip;
          return static_cast<uint8_t>(eth[12]) == (kEtherType >> 8) &&
                 static_cast<uint8_t>(eth[13]) == (kEtherType & 0xff) &&
                 std::string(eth + ETH_HLEN, payload.size()) == payload;
        },
        std::chrono::seconds(2), std::chrono::milliseconds(0));
  }

  static size_t vnet_hdr_len(int fd) {
    int len = 0;
    EXPECT_EQ(ioctl(fd, TUNGETVNETHDRSZ, &len), 0) << strerror(errno);
    return static_cast<size_t>(len);
  }

  UniqueFd peer_;
  MacAddress peer_mac_{};
};

TEST_F(MacvtapTrafficTest, FrameWrittenToFdLeavesThroughParent) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent));
  ASSERT_TRUE(created) << created.error().message;
  open_peer_socket();
  ASSERT_FALSE(HasFatalFailure());

  const int fd = created->fds[0].get();
  const std::string payload = "relink macvtap to parent";
  // IFF_VNET_HDR: every frame starts with a virtio-net header; zeros ask for
  // no offloads.
  const std::string out = std::string(vnet_hdr_len(fd), '\0') + frame(peer_mac_, kMac, payload);
  ASSERT_EQ(write(fd, out.data(), out.size()), static_cast<ssize_t>(out.size())) << strerror(errno);
  EXPECT_TRUE(receive(peer_.get(), 0, payload)) << "no frame arrived on the parent's peer";
}

TEST_F(MacvtapTrafficTest, PassthruDeliversFramesForGuestMac) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent, Mode::Passthru));
  ASSERT_TRUE(created) << created.error().message;
  open_peer_socket();
  ASSERT_FALSE(HasFatalFailure());

  // The macvtap carries the parent's MAC, yet frames for the guest's MAC
  // reach it (the header's passthru note).
  const std::string payload = "relink parent to guest";
  const std::string in = frame(kMac, peer_mac_, payload);
  ASSERT_EQ(send(peer_.get(), in.data(), in.size(), 0), static_cast<ssize_t>(in.size()))
      << strerror(errno);
  const int fd = created->fds[0].get();
  EXPECT_TRUE(receive(fd, vnet_hdr_len(fd), payload)) << "no frame arrived on the macvtap fd";
}

// --- the host keeps its IPv6 off the guest's interface ------------------------

// `ip -6 addr show dev DEV`: empty when the link has no IPv6 address.
std::string ipv6_addrs(const test::Netns& ns, const std::string& dev) {
  return ns.ip("-6 addr show dev " + dev);
}

// Frames the host itself sent through DEV (nothing writes to its queues here).
uint64_t tx_packets(const test::Netns& ns, const std::string& dev) {
  auto j = nlohmann::json::parse(ns.ip("-j -s link show dev " + dev), nullptr, false);
  if (!j.is_array() || j.empty() || !j[0].contains("stats64")) return UINT64_MAX;
  return j[0]["stats64"]["tx"].value("packets", UINT64_MAX);
}

// By default the host gives a macvtap that goes up the link-local address the
// guest derives from the same MAC, runs DAD and sends MLD reports and router
// solicitations from it. A macvtap made by `ip link` next to the factory's
// shows that this kernel does; the factory's gets no address and sends
// nothing.
TEST_F(MacvtapFactoryTest, HostConfiguresNoIpv6OnIt) {
  const int parent = make_veth_parent();
  std::optional<Macvtap> created;
  {
    test::ScopedNetnsEnter enter(ns_->name());
    ASSERT_TRUE(enter.ok());
    RtnlMacvtapFactory factory(node_dir_);
    auto r = factory.create(spec(parent));
    ASSERT_TRUE(r) << r.error().message;
    created = std::move(r).value();
  }
  const auto up_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(ip_link(*ns_, "mvt0")->up);

  ns_->ip("link add link v0 name ctl0 address 52:54:00:12:34:57 type macvtap");
  ns_->ip("link set ctl0 up");
  EXPECT_TRUE(test::wait_until(
      [&] {
        return ipv6_addrs(*ns_, "ctl0").find("inet6 fe80::") != std::string::npos &&
               tx_packets(*ns_, "ctl0") > 0;
      },
      std::chrono::seconds(5), std::chrono::milliseconds(50)))
      << "precondition: a macvtap set up by ip gets a link-local address and sends from it: "
      << ipv6_addrs(*ns_, "ctl0") << ", " << tx_packets(*ns_, "ctl0") << " frames sent";

  // Give the factory's as long (DAD and the first MLD report start within
  // about a second of IFF_UP).
  std::this_thread::sleep_until(up_at + std::chrono::seconds(2));
  EXPECT_EQ(ipv6_addrs(*ns_, "mvt0"), "");
  EXPECT_EQ(tx_packets(*ns_, "mvt0"), 0u) << "the host sent frames from the guest's MAC";
  const std::string details = ns_->ip("-d link show dev mvt0");
  EXPECT_NE(details.find("addrgenmode none"), std::string::npos) << details;
  expect_queue_fd(created->fds[0].get(), created->dev, "mvt0", false);
}

// A link below IPv6's minimum MTU (1280) has no IPv6 state, as every link has
// on a kernel with IPv6 disabled: the kernel refuses an address generation
// mode for it (EAFNOSUPPORT), and creation goes on.
TEST_F(MacvtapFactoryTest, LinkWithoutIpv6IsCreatedAnyway) {
  ns_->ip("link add v0 mtu 1000 type veth peer name v1 mtu 1000");
  ns_->ip("link set v0 up");
  ns_->ip("link set v1 up");
  const int parent = ns_->ifindex("v0");
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent));
  ASSERT_TRUE(created) << created.error().message;

  const std::string details = ns_->ip("-d link show dev mvt0");
  EXPECT_NE(details.find(" mtu 1000 "), std::string::npos) << details;
  EXPECT_EQ(details.find("addrgenmode"), std::string::npos)
      << "precondition: the link has no IPv6 state: " << details;
  EXPECT_TRUE(ip_link(*ns_, "mvt0")->up);
  EXPECT_EQ(ipv6_addrs(*ns_, "mvt0"), "");
  ASSERT_EQ(created->fds.size(), 1u);
  expect_queue_fd(created->fds[0].get(), created->dev, "mvt0", false);
}

// --- failures leave nothing behind -----------------------------------------

TEST_F(MacvtapFactoryTest, NameTakenIsCleanError) {
  const int parent = make_veth_parent();
  ns_->ip("link add mvt0 type bridge");
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent));
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, EEXIST);
  EXPECT_EQ(created.error().message,
            "create macvtap mvt0 on ifindex " + std::to_string(parent) + ": File exists");
  EXPECT_EQ(ip_link(*ns_, "mvt0")->kind, "bridge") << "the existing link is left alone";
  EXPECT_EQ(count_macvtaps(*ns_), 0u);
}

TEST_F(MacvtapFactoryTest, SecondCreateOfSameNameFailsAndKeepsFirst) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto first = factory.create(spec(parent));
  ASSERT_TRUE(first) << first.error().message;
  auto second = factory.create(spec(parent));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, EEXIST);
  EXPECT_EQ(ip_link(*ns_, "mvt0")->ifindex, first->ifindex);
  expect_queue_fd(first->fds[0].get(), first->dev, "mvt0", false);
}

TEST_F(MacvtapFactoryTest, MissingParentIsError) {
  make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(4242));
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, ENODEV) << created.error().message;
  EXPECT_NE(created.error().message.find("create macvtap mvt0 on ifindex 4242"), std::string::npos)
      << created.error().message;
  EXPECT_FALSE(ip_link(*ns_, "mvt0"));
}

TEST_F(MacvtapFactoryTest, InvalidNameIsRejectedBeforeNetlink) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto s = spec(parent);
  s.name = "../mvt0";
  auto created = factory.create(s);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, EINVAL);
  EXPECT_EQ(count_macvtaps(*ns_), 0u);
}

// --- /dev/tap<ifindex> belongs to another namespace's macvtap --------------

class DevNodeCollisionTest : public MacvtapFactoryTest {
 protected:
  // Gives another namespace a macvtap with the ifindex that the next link in
  // ns_ will get, so that /dev/tap<ifindex> is the other one's node.
  void SetUp() override {
    MacvtapFactoryTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    parent_ = make_veth_parent();
    // The kernel hands out the last ifindex + 1; a probe link reveals it.
    ns_->ip("link add probe0 type bridge");
    next_ifindex_ = ns_->ifindex("probe0") + 1;
    ns_->ip("link del probe0");
    other_ = std::make_unique<test::Netns>("mvto");
    other_->ip("link add o0 type veth peer name o1");
    other_->ip("link add link o0 name omvt0 index " + std::to_string(next_ifindex_) +
               " type macvtap");
    ASSERT_EQ(other_->ifindex("omvt0"), next_ifindex_);
    other_dev_ = sysfs_dev_text(*other_, "omvt0", next_ifindex_);
    ASSERT_FALSE(other_dev_.empty());
  }
  std::string dev_node() const { return "/dev/tap" + std::to_string(next_ifindex_); }

  int parent_ = 0;
  int next_ifindex_ = 0;
  std::unique_ptr<test::Netns> other_;
  std::string other_dev_;
};

TEST_F(DevNodeCollisionTest, OpensOwnDeviceThroughPrivateNode) {
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent_));
  ASSERT_TRUE(created) << created.error().message;
  ASSERT_EQ(created->ifindex, next_ifindex_) << "precondition: both macvtaps share an ifindex";

  struct stat st {};
  ASSERT_EQ(stat(dev_node().c_str(), &st), 0) << dev_node();
  EXPECT_NE(dev_text(st.st_rdev), dev_text(created->dev)) << dev_node() << " is not ours";
  EXPECT_NE(dev_text(created->dev), other_dev_);
  EXPECT_EQ(dev_text(created->dev), sysfs_dev_text(*ns_, "mvt0", created->ifindex));

  ASSERT_EQ(created->fds.size(), 1u);
  expect_queue_fd(created->fds[0].get(), created->dev, "mvt0", false);
  const std::string path = fd_path(created->fds[0].get());
  EXPECT_EQ(path.rfind(node_dir_ + "/", 0), 0u) << path;
  EXPECT_NE(path.find("(deleted)"), std::string::npos) << "private node unlinked: " << path;
  EXPECT_TRUE(mvtest::dir_is_empty(node_dir_));
  EXPECT_EQ(ip_link(*other_, "omvt0")->ifindex, next_ifindex_) << "other namespace untouched";
}

TEST_F(DevNodeCollisionTest, UnusableNodeDirRollsBackTheLink) {
  // Readable by others: the factory must refuse to make device nodes there.
  ASSERT_EQ(mkdir(node_dir_.c_str(), 0755), 0);
  ASSERT_EQ(chmod(node_dir_.c_str(), 0755), 0);
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent_));
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, EPERM);
  const std::string& msg = created.error().message;
  EXPECT_EQ(msg.rfind("create macvtap mvt0 on ifindex " + std::to_string(parent_) + ": ", 0), 0u)
      << msg;
  EXPECT_NE(msg.find(dev_node()), std::string::npos) << msg;
  EXPECT_NE(msg.find("node dir " + node_dir_), std::string::npos) << msg;
  EXPECT_EQ(msg.find("rollback failed"), std::string::npos) << msg;
  EXPECT_FALSE(ip_link(*ns_, "mvt0")) << "rolled back";
  EXPECT_EQ(count_macvtaps(*ns_), 0u);
  EXPECT_TRUE(mvtest::dir_is_empty(node_dir_));
}

// --- remove ------------------------------------------------------------------

TEST_F(MacvtapFactoryTest, RemoveDeletesAndToleratesMissing) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto created = factory.create(spec(parent));
  ASSERT_TRUE(created) << created.error().message;

  auto removed = factory.remove(created->ifindex);
  EXPECT_TRUE(removed) << removed.error().message;
  EXPECT_FALSE(ip_link(*ns_, "mvt0"));
  auto again = factory.remove(created->ifindex);
  EXPECT_TRUE(again) << again.error().message;
  auto never = factory.remove(98765);
  EXPECT_TRUE(never) << never.error().message;
  auto invalid = factory.remove(0);
  ASSERT_FALSE(invalid);
  EXPECT_EQ(invalid.error().code, EINVAL);
  EXPECT_TRUE(ip_link(*ns_, "v0")) << "parent untouched";
}

TEST_F(MacvtapFactoryTest, RemoveRefusesOtherKinds) {
  const int parent = make_veth_parent();
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto removed = factory.remove(parent);
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code, EPERM);
  EXPECT_NE(removed.error().message.find("v0 is not a macvtap (kind veth)"), std::string::npos)
      << removed.error().message;
  EXPECT_TRUE(ip_link(*ns_, "v0"));
}

// --- find ----------------------------------------------------------------------

TEST_F(MacvtapFactoryTest, FindReportsExistingMacvtap) {
  make_veth_parent();
  ns_->ip("link add link v0 name mvt7 address 52:54:00:ab:cd:ef type macvtap mode vepa");
  const int ifindex = ns_->ifindex("mvt7");
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto found = factory.find("mvt7");
  ASSERT_TRUE(found) << found.error().message;
  ASSERT_TRUE(found->has_value());
  const ExistingMacvtap& m = **found;
  EXPECT_EQ(m.ifindex, ifindex);
  EXPECT_EQ(m.parent_ifindex, ns_->ifindex("v0"));
  ASSERT_TRUE(m.mac);
  EXPECT_EQ(format_mac(*m.mac), "52:54:00:ab:cd:ef");
  EXPECT_EQ(dev_text(m.dev), sysfs_dev_text(*ns_, "mvt7", ifindex));
}

TEST_F(MacvtapFactoryTest, FindOfAbsentNameIsNullopt) {
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto found = factory.find("mvt0");
  ASSERT_TRUE(found) << found.error().message;
  EXPECT_FALSE(found->has_value());
}

TEST_F(MacvtapFactoryTest, FindOfOtherKindIsError) {
  ns_->ip("link add mvt0 type bridge");
  test::ScopedNetnsEnter enter(ns_->name());
  ASSERT_TRUE(enter.ok());
  RtnlMacvtapFactory factory(node_dir_);
  auto found = factory.find("mvt0");
  ASSERT_FALSE(found);
  EXPECT_NE(found.error().message.find("exists and is not a macvtap"), std::string::npos)
      << found.error().message;
}

}  // namespace
}  // namespace relink::macvtap
