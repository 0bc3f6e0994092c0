// SPDX-License-Identifier: GPL-2.0-or-later
// What the guest benchmarks share (replug_bench, libvirt_bench): a guest's
// parent made and deleted in-process over rtnetlink, an ICMP pinger in the
// peer namespace that says when the guest answers again, and stopping at the
// next wait on SIGINT/SIGTERM, through the destructors.
#pragma once

// glibc's net/if.h first: linux/icmp.h brings linux/if.h, which steps aside for it.
#include <net/if.h>
#include <linux/icmp.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

#include "bench_util.h"
#include "support/harness.h"
#include "util/clock.h"

namespace relink::bench {

constexpr const char* kGuestIp = "192.0.2.2";
constexpr const char* kPeerIp = "192.0.2.1";
constexpr const char* kPeerIf = "p1";                  // a parent's far end, in its peer namespace
constexpr const char* kPeerMac = "02:00:00:00:0a:01";  // the same after every re-creation, as a real peer's
constexpr uint64_t kPingStepUs = 10'000;               // one echo request every 10 ms

// SIGINT/SIGTERM: stop at the next wait, through the destructors.
inline std::atomic<bool> g_interrupted{false};
inline void on_interrupt(int) { g_interrupted = true; }
inline void check_interrupted() {
  if (g_interrupted) die("interrupted");
}
inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                     std::chrono::milliseconds step = std::chrono::milliseconds(10)) {
  return test::wait_until(
      [&] {
        check_interrupted();
        return pred();
      },
      timeout, step);
}
inline void pause_for(std::chrono::milliseconds d) {
  wait_for([] { return false; }, d, std::chrono::milliseconds(10));
}

inline uint16_t inet_checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// ICMP echo from a raw socket opened in the peer namespace.
class Pinger {
 public:
  // tag: bytes of the payload that say which program sent it.
  Pinger(const std::string& netns, const std::string& target, uint16_t id_base, std::string tag)
      : id_(id_base), tag_(std::move(tag)) {
    test::ScopedNetnsEnter in(netns);
    if (!in.ok()) die("cannot enter " + netns);
    fd_ = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_ICMP);
    if (fd_ < 0) die(std::string("raw ICMP socket: ") + std::strerror(errno));
    icmp_filter f{};
    f.data = ~(1U << ICMP_ECHOREPLY);
    setsockopt(fd_, SOL_RAW, ICMP_FILTER, &f, sizeof f);
    to_.sin_family = AF_INET;
    inet_pton(AF_INET, target.c_str(), &to_.sin_addr);
  }
  ~Pinger() {
    if (fd_ >= 0) close(fd_);
  }
  Pinger(const Pinger&) = delete;
  Pinger& operator=(const Pinger&) = delete;

  // Sends an echo request every kPingStepUs from now on (with an id of its
  // own, so that late answers to earlier rounds do not count); returns when
  // the first answer arrived, nullopt if none came by `deadline_us`.
  std::optional<uint64_t> first_answer(uint64_t deadline_us) {
    const uint16_t id = ++id_;
    uint16_t seq = 0;
    drain(0);
    uint64_t next_send = monotonic_us();
    while (true) {
      check_interrupted();
      uint64_t now = monotonic_us();
      if (now >= deadline_us) return std::nullopt;
      if (now >= next_send) {
        send(id, seq++);
        next_send += kPingStepUs;
        if (next_send <= now) next_send = now + kPingStepUs;
      }
      const uint64_t until = std::min(next_send, deadline_us);
      timespec ts{};
      now = monotonic_us();
      if (until > now)
        ts = {static_cast<time_t>((until - now) / 1'000'000), static_cast<long>((until - now) % 1'000'000 * 1000)};
      pollfd p{fd_, POLLIN, 0};
      if (ppoll(&p, 1, &ts, nullptr) > 0) {
        const uint64_t t = monotonic_us();
        if (drain(id)) return t;
      }
    }
  }

 private:
  void send(uint16_t id, uint16_t seq) {
    uint8_t pkt[64] = {};
    pkt[0] = ICMP_ECHO;
    pkt[4] = static_cast<uint8_t>(id >> 8);
    pkt[5] = static_cast<uint8_t>(id);
    pkt[6] = static_cast<uint8_t>(seq >> 8);
    pkt[7] = static_cast<uint8_t>(seq);
    std::memcpy(pkt + 8, tag_.data(), std::min(tag_.size(), sizeof pkt - 8));
    const uint16_t sum = inet_checksum(pkt, sizeof pkt);
    pkt[2] = static_cast<uint8_t>(sum >> 8);
    pkt[3] = static_cast<uint8_t>(sum);
    // Unreachable while the far end is being set up: the next one goes 10 ms later.
    (void)sendto(fd_, pkt, sizeof pkt, 0, reinterpret_cast<const sockaddr*>(&to_), sizeof to_);
  }
  // Reads everything queued; true if an echo reply from the target with `id` was among it.
  bool drain(uint16_t id) {
    bool found = false;
    uint8_t buf[2048];
    while (true) {
      sockaddr_in from{};
      socklen_t len = sizeof from;
      const ssize_t n = recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) return found;
      const size_t ihl = static_cast<size_t>(buf[0] & 0x0f) * 4;
      if (static_cast<size_t>(n) < ihl + 8 || from.sin_addr.s_addr != to_.sin_addr.s_addr) continue;
      const uint8_t* icmp = buf + ihl;
      if (icmp[0] == ICMP_ECHOREPLY && id && (icmp[4] << 8 | icmp[5]) == id) found = true;
    }
  }
  int fd_ = -1;
  sockaddr_in to_{};
  uint16_t id_ = 0;
  std::string tag_;
};

inline nl_sock* netlink_in(const std::string& netns) {
  test::ScopedNetnsEnter in(netns);
  if (!in.ok()) die("cannot enter " + netns);
  nl_sock* s = nl_socket_alloc();
  if (!s || nl_connect(s, NETLINK_ROUTE) < 0) die("libnl connect in " + netns);
  return s;
}

inline void set_up(nl_sock* s, const std::string& name);

// Re-creates the guest's parent, in-process (no `ip` process competes for
// the CPU): a veth whose far end p1 is made in the peer namespace with a
// fixed MAC, then given the peer's address and the guest as a permanent
// neighbour (a host on the LAN keeps the guest's MAC across a short
// outage; no ARP timer is measured), then both ends up. Returns when the
// create request was sent (time 0 of a flap).
inline uint64_t parent_up(nl_sock* nl, nl_sock* peer_nl, int peer_ns_fd, const std::string& parent,
                   const std::string& guest_mac) {
  rtnl_link* veth = rtnl_link_veth_alloc();
  rtnl_link_set_name(veth, parent.c_str());
  rtnl_link* far = rtnl_link_veth_get_peer(veth);
  rtnl_link_set_name(far, kPeerIf);
  rtnl_link_set_ns_fd(far, peer_ns_fd);
  nl_addr* far_mac = nullptr;
  nl_addr_parse(kPeerMac, AF_LLC, &far_mac);
  rtnl_link_set_addr(far, far_mac);
  nl_addr_put(far_mac);
  const uint64_t t0 = monotonic_us();
  const int created = rtnl_link_add(nl, veth, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_link_veth_release(veth);
  if (created < 0) die("create parent " + parent + ": " + nl_geterror(created));
  set_up(peer_nl, kPeerIf);
  rtnl_link* l = nullptr;
  if (rtnl_link_get_kernel(peer_nl, 0, kPeerIf, &l) < 0) die("look up p1");
  const int far_index = rtnl_link_get_ifindex(l);
  rtnl_link_put(l);
  rtnl_addr* a = rtnl_addr_alloc();
  nl_addr* local = nullptr;
  nl_addr_parse((std::string(kPeerIp) + "/24").c_str(), AF_INET, &local);
  rtnl_addr_set_ifindex(a, far_index);
  rtnl_addr_set_local(a, local);
  int err = rtnl_addr_add(peer_nl, a, 0);
  nl_addr_put(local);
  rtnl_addr_put(a);
  if (err < 0) die(std::string("peer address: ") + nl_geterror(err));
  rtnl_neigh* n = rtnl_neigh_alloc();
  nl_addr *dst = nullptr, *ll = nullptr;
  nl_addr_parse(kGuestIp, AF_INET, &dst);
  nl_addr_parse(guest_mac.c_str(), AF_LLC, &ll);
  rtnl_neigh_set_ifindex(n, far_index);
  rtnl_neigh_set_dst(n, dst);
  rtnl_neigh_set_lladdr(n, ll);
  rtnl_neigh_set_state(n, NUD_PERMANENT);
  err = rtnl_neigh_add(peer_nl, n, NLM_F_CREATE | NLM_F_REPLACE);
  nl_addr_put(dst);
  nl_addr_put(ll);
  rtnl_neigh_put(n);
  if (err < 0) die(std::string("peer neighbour: ") + nl_geterror(err));
  set_up(nl, parent);
  return t0;
}
inline void set_up(nl_sock* s, const std::string& name) {
  rtnl_link* l = nullptr;
  if (rtnl_link_get_kernel(s, 0, name.c_str(), &l) < 0) die("look up " + name);
  rtnl_link* up = rtnl_link_alloc();
  rtnl_link_set_flags(up, IFF_UP);
  const int err = rtnl_link_change(s, l, up, 0);
  rtnl_link_put(up);
  rtnl_link_put(l);
  if (err < 0) die("set up " + name + ": " + nl_geterror(err));
}
// Deletes the parent; its far end and every macvtap on it go with it.
inline void parent_down(nl_sock* nl, const std::string& parent) {
  rtnl_link* l = rtnl_link_alloc();
  rtnl_link_set_name(l, parent.c_str());
  const int err = rtnl_link_delete(nl, l);
  rtnl_link_put(l);
  if (err < 0) die("delete parent " + parent + ": " + nl_geterror(err));
}

}  // namespace relink::bench
