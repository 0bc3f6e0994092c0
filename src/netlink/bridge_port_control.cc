// SPDX-License-Identifier: GPL-2.0-or-later
// A tap put back into its bridge over rtnetlink, one acknowledged request per step.
#include "netlink/bridge_port_control.h"

#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "netlink/link_parser.h"

namespace relink::netlink {
namespace {

constexpr int kReplyTimeoutMs = 1000;

}  // namespace

void RtnlBridgePortControl::Closer::operator()(mnl_socket* s) const {
  if (s) mnl_socket_close(s);
}

RtnlBridgePortControl::RtnlBridgePortControl() : req_(kRequestBufSize), buf_(32768) {}
RtnlBridgePortControl::~RtnlBridgePortControl() = default;

Result<void> RtnlBridgePortControl::open() {
  if (sock_) return ok();
  sock_.reset(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!sock_) return Error::last("opening NETLINK_ROUTE socket");
  if (mnl_socket_bind(sock_.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    sock_.reset();
    return Error::last("binding netlink socket");
  }
  return ok();
}

// Replies come from the kernel only (nl_pid 0) and carry our seq; anything
// else (a late answer to an abandoned request) is skipped. Calls `each` with
// each datagram until it returns true.
template <typename Each>
static Result<void> read_replies(mnl_socket* sock, std::vector<uint8_t>& buf, Each&& each, const char* what) {
  const int fd = mnl_socket_get_fd(sock);
  while (true) {
    sockaddr_nl from{};
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    const ssize_t n = recvmsg(fd, &mh, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return Error::last(what);
      pollfd pfd{fd, POLLIN, 0};
      const int r = poll(&pfd, 1, kReplyTimeoutMs);
      if (r == 0) return Error{ETIMEDOUT, std::string(what) + ": no answer from the kernel"};
      if (r < 0 && errno != EINTR) return Error::last(what);
      continue;
    }
    if (from.nl_pid != 0 || (mh.msg_flags & MSG_TRUNC)) continue;
    auto done = each(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    if (!done) return done.error();
    if (*done) return ok();
  }
}

Result<void> RtnlBridgePortControl::request(const uint8_t* msg, size_t len, const char* what) {
  if (auto r = open(); !r) return r;
  const uint32_t seq = reinterpret_cast<const nlmsghdr*>(msg)->nlmsg_seq;
  if (mnl_socket_sendto(sock_.get(), msg, len) < 0) return Error::last(what);
  return read_replies(
      sock_.get(), buf_,
      [&](std::span<const uint8_t> data) -> Result<bool> {
        auto* nlh = reinterpret_cast<const nlmsghdr*>(data.data());
        if (data.size() < sizeof(nlmsghdr) || nlh->nlmsg_seq != seq) return false;
        auto batch = parse_link_messages(data);
        if (!batch) return batch.error();
        if (batch->error) return Error::from_errno(batch->error, what);
        return nlh->nlmsg_type == NLMSG_ERROR;
      },
      what);
}

Result<std::vector<PortVlan>> RtnlBridgePortControl::port_vlans(int tap) {
  if (auto r = open(); !r) return r.error();
  const uint32_t seq = ++seq_;
  const size_t len = build_port_dump(req_, seq);
  if (mnl_socket_sendto(sock_.get(), req_.data(), len) < 0) return Error::last("bridge port dump");
  std::vector<PortVlan> vlans;
  auto r = read_replies(
      sock_.get(), buf_,
      [&](std::span<const uint8_t> data) -> Result<bool> {
        auto* nlh = reinterpret_cast<const nlmsghdr*>(data.data());
        if (data.size() < sizeof(nlmsghdr) || nlh->nlmsg_seq != seq) return false;
        auto batch = parse_link_messages(data);
        if (!batch) return batch.error();
        if (batch->error) return Error::from_errno(batch->error, "bridge port dump");
        for (auto& m : batch->ports)
          if (m.port.ifindex == tap) vlans = std::move(m.port.vlans);
        return batch->done;
      },
      "bridge port dump");
  if (!r) return r.error();
  return vlans;
}

Result<void> RtnlBridgePortControl::rejoin(int tap, int bridge, const PortSnapshot& was) {
  size_t len = build_set_master(req_, ++seq_, tap, bridge);
  if (auto r = request(req_.data(), len, "setting the tap's master"); !r) return r;
  if (was.vlans_known) {
    // A new port gets the bridge's default PVID: what the port did not
    // have goes, then its own VLANs come with their flags.
    auto current = port_vlans(tap);
    if (!current) return current.error();
    if (auto del = vlans_to_delete(*current, was.vlans); !del.empty()) {
      len = build_vlans(req_, ++seq_, tap, /*add=*/false, del);
      if (auto r = request(req_.data(), len, "deleting the port's default VLANs"); !r) return r;
    }
    if (!was.vlans.empty()) {
      len = build_vlans(req_, ++seq_, tap, /*add=*/true, was.vlans);
      if (auto r = request(req_.data(), len, "adding the port's VLANs"); !r) return r;
    }
  }
  if (!was.options.empty()) {
    len = build_port_options(req_, ++seq_, tap, was.options);
    if (auto r = request(req_.data(), len, "setting the port's options"); !r) return r;
  }
  if (was.up) {
    len = build_set_up(req_, ++seq_, tap);
    if (auto r = request(req_.data(), len, "bringing the tap up"); !r) return r;
  }
  return ok();
}

}  // namespace relink::netlink
