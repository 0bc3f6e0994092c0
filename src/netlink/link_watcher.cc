// SPDX-License-Identifier: GPL-2.0-or-later
// The rtnetlink socket on the event loop: link dumps, notifications, re-dump after ENOBUFS.
#include "netlink/link_watcher.h"

#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <span>
#include <utility>

#include "netlink/link_parser.h"
#include "util/log.h"

namespace relink::netlink {
namespace {

// The kernel sizes dump chunks by the reader's buffer, up to 32 KiB
// (netlink_recvmsg caps max_recvmsg_len there); single notifications are far
// smaller. A larger datagram would come back MSG_TRUNC.
constexpr size_t kRecvBufSize = 32768;
// Under a storm a link dump can be interrupted (NLM_F_DUMP_INTR) repeatedly.
constexpr int kMaxDumpAttempts = 16;
// A dump chunk is produced synchronously by sendmsg()/recvmsg(); waiting
// longer than this means the dump is stuck.
constexpr int kDumpRecvTimeoutMs = 1000;
constexpr uint64_t kResyncRetryUsec = 200'000;
// Datagrams read per wakeup, from the event socket and from a re-dump: a
// storm or a dump of thousands of links must not keep the loop from the
// control socket and QMP.
constexpr int kDatagramsPerWakeup = 32;
// A dump datagram holds up to 32 KiB of links: fewer of them per wakeup.
constexpr int kDumpDatagramsPerWakeup = 8;

spdlog::logger& logger() {
  static auto l = log::get("netlink");
  return *l;
}

// Receives one datagram into buf. Returns 0 and its length, or a positive
// errno (EMSGSIZE when the datagram did not fit). Datagrams not sent by the
// kernel come back with length 0: any local process may unicast to our
// portid, and relinkd must not act on forged link messages.
int recv_from_kernel(int fd, std::vector<uint8_t>& buf, size_t& len) {
  sockaddr_nl from{};
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t n = recvmsg(fd, &msg, 0);
  if (n < 0) return errno;
  if (msg.msg_flags & MSG_TRUNC) return EMSGSIZE;
  len = from.nl_pid == 0 ? static_cast<size_t>(n) : 0;
  return 0;
}

// Reads and drops everything queued on fd.
void drain(int fd, std::vector<uint8_t>& buf) {
  while (true) {
    size_t len = 0;
    int err = recv_from_kernel(fd, buf, len);
    // ENOBUFS/EMSGSIZE: more was lost, which is what draining means anyway.
    if (err != 0 && err != EINTR && err != ENOBUFS && err != EMSGSIZE) return;
  }
}

struct DumpHeaders {
  bool ours = false;         // answers the request with this seq on this socket
  bool interrupted = false;  // NLM_F_DUMP_INTR: links changed while dumping
};

// A dump datagram holds replies to one request only, so its first header
// says whose it is. buf must have passed parse_link_messages() (framing).
DumpHeaders check_dump_headers(std::span<const uint8_t> buf, unsigned seq, unsigned portid) {
  DumpHeaders h;
  int len = static_cast<int>(buf.size());
  auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
  if (!mnl_nlmsg_ok(nlh, len)) return h;
  h.ours = mnl_nlmsg_seq_ok(nlh, seq) && mnl_nlmsg_portid_ok(nlh, portid);
  for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
    if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) h.interrupted = true;
  }
  return h;
}

}  // namespace

// One datagram of a link dump. Done: the dump is complete; Continue: more
// is coming (or the datagram belonged to another request).
LinkWatcher::DumpStep LinkWatcher::consume_dump(std::span<const uint8_t> data, unsigned seq, DumpState& st) {
  auto batch = parse_link_messages(data);
  if (!batch) return batch.error();
  auto headers = check_dump_headers(data, seq, mnl_socket_get_portid(dump_sock_.get()));
  if (!headers.ours) return false;
  st.interrupted |= headers.interrupted;
  if (batch->error != 0) return Error::from_errno(batch->error, "link dump");
  for (auto& msg : batch->links)
    if (!msg.deleted) st.links.push_back(std::move(msg.link));
  return batch->done;
}

Result<void> LinkWatcher::request_dump(unsigned seq) {
  int fd = mnl_socket_get_fd(dump_sock_.get());
  // Drain what an abandoned dump left behind. Each recvmsg() makes the kernel
  // produce the next chunk, so this also runs such a dump to its end; a new
  // dump request on a socket with a running dump fails with EBUSY.
  drain(fd, buf_);
  alignas(nlmsghdr) char req[NLMSG_SPACE(sizeof(ifinfomsg)) + MNL_ATTR_HDRLEN + sizeof(uint32_t)];
  nlmsghdr* nlh = mnl_nlmsg_put_header(req);
  nlh->nlmsg_type = RTM_GETLINK;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  nlh->nlmsg_seq = seq;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  // Counters are of no use here and are most of each message's size.
  mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  if (mnl_socket_sendto(dump_sock_.get(), nlh, nlh->nlmsg_len) < 0) return Error::last("requesting link dump");
  return ok();
}

void LinkWatcher::MnlDeleter::operator()(mnl_socket* s) const {
  if (s) mnl_socket_close(s);
}

LinkWatcher::LinkWatcher(sd_event* loop, Callback cb, size_t rcvbuf)
    : loop_(loop), cb_(std::move(cb)), rcvbuf_(rcvbuf), buf_(kRecvBufSize) {}

LinkWatcher::~LinkWatcher() = default;

Result<void> LinkWatcher::start() {
  if (sock_) return Error{EALREADY, "link watcher already started"};
  auto fail = [this](Error e) -> Result<void> {
    io_.reset();
    retry_.reset();
    sock_.reset();
    dump_sock_.reset();
    return e;
  };

  sock_.reset(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!sock_) return fail(Error::last("opening NETLINK_ROUTE socket"));
  if (mnl_socket_bind(sock_.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    return fail(Error::last("binding netlink socket"));
  int fd = mnl_socket_get_fd(sock_.get());
  int size = static_cast<int>(std::min<size_t>(rcvbuf_, INT_MAX));
  // SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by rmem_max.
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0) {
    return fail(Error::last("setting netlink receive buffer"));
  }
  // Join before dumping: a change during the dump then shows up as a queued
  // notification, and applying one already reflected in the dump is a no-op.
  int group = RTNLGRP_LINK;
  if (mnl_socket_setsockopt(sock_.get(), NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
    return fail(Error::last("joining RTNLGRP_LINK"));
  }

  dump_sock_.reset(mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!dump_sock_) return fail(Error::last("opening NETLINK_ROUTE dump socket"));
  if (mnl_socket_bind(dump_sock_.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    return fail(Error::last("binding netlink dump socket"));
  }

  sd_event_source* raw = nullptr;
  int r =
      sd_event_add_time_relative(loop_, &raw, CLOCK_MONOTONIC, kResyncRetryUsec, 0, on_retry, this);
  if (r < 0) return fail(Error::from_errno(-r, "adding netlink resync timer"));
  retry_.reset(raw);
  r = sd_event_source_set_enabled(retry_.get(), SD_EVENT_OFF);
  if (r < 0) return fail(Error::from_errno(-r, "disabling netlink resync timer"));

  auto links = dump();
  if (!links) return fail(links.error());
  (void)table_.replace_all(*links);  // the initial state is not news
  logger().debug("initial link dump: {} links", table_.size());
  // Without the bridge ports relinkd still follows links: tap bindings then
  // learn their ports' settings from the next notification or re-dump.
  auto ports = dump_ports();
  for (int attempt = 1; !ports && ports.error().code == EINTR && attempt < kMaxDumpAttempts; ++attempt)
    ports = dump_ports();
  if (ports) (void)ports_.replace_all(std::move(*ports));
  else logger().debug("bridge port dump failed: {}, going on without it", ports.error().message);

  r = sd_event_add_io(loop_, &raw, fd, EPOLLIN, on_io, this);
  if (r < 0) return fail(Error::from_errno(-r, "watching netlink socket"));
  io_.reset(raw);
  r = sd_event_add_io(loop_, &raw, mnl_socket_get_fd(dump_sock_.get()), EPOLLIN, on_dump_io, this);
  if (r < 0) return fail(Error::from_errno(-r, "watching netlink dump socket"));
  dump_io_.reset(raw);
  r = sd_event_source_set_enabled(dump_io_.get(), SD_EVENT_OFF);
  if (r < 0) return fail(Error::from_errno(-r, "disabling netlink dump watch"));
  return ok();
}

int LinkWatcher::on_io(sd_event_source*, int, uint32_t, void* userdata) {
  static_cast<LinkWatcher*>(userdata)->read_all();
  return 0;
}

int LinkWatcher::on_retry(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<LinkWatcher*>(userdata);
  if (self->resync_) {
    // A re-dump that got no answer in time: the kernel's dump is stuck.
    logger().debug("link re-dump: no reply from the kernel, starting over");
    self->resync_.reset();
  }
  self->start_resync();
  return 0;
}

int LinkWatcher::on_dump_io(sd_event_source*, int, uint32_t, void* userdata) {
  static_cast<LinkWatcher*>(userdata)->read_dump();
  return 0;
}

void LinkWatcher::schedule_resync(uint64_t delay_us) {
  if (resync_) return;  // one re-dump at a time covers every overrun before it
  if (sd_event_source_set_time_relative(retry_.get(), delay_us) < 0 ||
      sd_event_source_set_enabled(retry_.get(), SD_EVENT_ONESHOT) < 0)
    logger().debug("cannot arm the link resync timer, waiting for the next overrun");
}

void LinkWatcher::read_all() {
  int fd = mnl_socket_get_fd(sock_.get());
  // Level-triggered: what is left after this many comes on the next wakeup.
  for (int n = 0; n < kDatagramsPerWakeup; ++n) {
    size_t len = 0;
    int err = recv_from_kernel(fd, buf_, len);
    if (err == EINTR) continue;
    if (err == EAGAIN) return;
    if (err == ENOBUFS) {
      // The kernel dropped notifications for us: only a re-dump tells what we missed.
      ++overruns_;
      logger().debug("netlink receive queue overrun ({}), re-dumping links", overruns_);
      return schedule_resync(0);
    }
    if (err == EMSGSIZE) {
      logger().debug("oversized netlink datagram truncated, re-dumping links");
      return schedule_resync(0);
    }
    if (err != 0) {
      logger().debug("receiving link notifications: {}, ignoring", std::strerror(err));
      return;
    }
    if (len == 0) continue;

    auto batch = parse_link_messages({buf_.data(), len});
    if (!batch) {
      logger().debug("{}, re-dumping links", batch.error().message);
      return schedule_resync(0);
    }
    std::vector<LinkEvent> events;
    for (const auto& msg : batch->links) {
      auto evs = table_.apply(msg);
      events.insert(events.end(), std::make_move_iterator(evs.begin()),
                    std::make_move_iterator(evs.end()));
    }
    bool ports_changed = false;
    for (const auto& msg : batch->ports) ports_changed |= ports_.apply(msg);
    if (!events.empty()) cb_(events);
    if (ports_changed && port_cb_) port_cb_();
  }
}

// A re-dump runs from the loop, a few datagrams per wakeup, like any other
// input. The event socket is paused meanwhile: what it queues is newer than
// the dump and is applied after it (applying a change the dump already
// showed is a no-op).
void LinkWatcher::start_resync() {
  // Everything queued now predates the dump, which supersedes it; replaying
  // it after the dump would only flap links through old states.
  drain(mnl_socket_get_fd(sock_.get()), buf_);
  auto st = std::make_unique<DumpState>();
  st->seq = ++seq_;
  st->attempts = resync_ ? resync_->attempts + 1 : 1;
  if (auto r = request_dump(st->seq); !r) return resync_failed(r.error());
  (void)sd_event_source_set_enabled(io_.get(), SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(dump_io_.get(), SD_EVENT_ON);
  // The same timer, now as the dump's deadline.
  (void)sd_event_source_set_time_relative(retry_.get(), uint64_t{kDumpRecvTimeoutMs} * 1000);
  (void)sd_event_source_set_enabled(retry_.get(), SD_EVENT_ONESHOT);
  resync_ = std::move(st);
}

void LinkWatcher::read_dump() {
  if (!resync_) return;
  int fd = mnl_socket_get_fd(dump_sock_.get());
  for (int n = 0; n < kDumpDatagramsPerWakeup; ++n) {
    size_t len = 0;
    int err = recv_from_kernel(fd, buf_, len);
    if (err == EINTR) continue;
    if (err == EAGAIN) return;
    if (err != 0) return resync_failed(Error::from_errno(err, "receiving link dump"));
    if (len == 0) continue;
    auto step = consume_dump({buf_.data(), len}, resync_->seq, *resync_);
    if (!step) return resync_failed(step.error());
    if (!*step) continue;
    if (resync_->interrupted) {
      // NLM_F_DUMP_INTR: links changed while dumping. Start over, a bounded
      // number of times.
      if (resync_->attempts >= kMaxDumpAttempts)
        return resync_failed(Error{EINTR, "link dump interrupted by concurrent changes"});
      return start_resync();
    }
    return finish_resync();
  }
}

void LinkWatcher::finish_resync() {
  auto done = std::move(resync_);
  (void)sd_event_source_set_enabled(dump_io_.get(), SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(retry_.get(), SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(io_.get(), SD_EVENT_ON);
  auto events = table_.replace_all(done->links);
  logger().debug("link re-dump: {} links, {} events", table_.size(), events.size());
  if (!events.empty()) cb_(events);
  refresh_ports();
}

// The port messages lost in an overrun are as lost as the links': dump them
// too. A few hundred ports make one or two datagrams.
void LinkWatcher::refresh_ports() {
  auto ports = dump_ports();
  if (!ports) {
    logger().debug("bridge port dump failed: {}, keeping the ports known", ports.error().message);
    return;
  }
  if (ports_.replace_all(std::move(*ports)) && port_cb_) port_cb_();
}

Result<std::vector<BridgePort>> LinkWatcher::dump_ports() {
  int fd = mnl_socket_get_fd(dump_sock_.get());
  drain(fd, buf_);
  const unsigned seq = ++seq_;
  std::vector<uint8_t> req(kRequestBufSize);
  const size_t len = build_port_dump(req, seq);
  if (mnl_socket_sendto(dump_sock_.get(), req.data(), len) < 0) return Error::last("requesting bridge port dump");
  std::vector<BridgePort> ports;
  const unsigned portid = mnl_socket_get_portid(dump_sock_.get());
  while (true) {
    size_t got = 0;
    int err = recv_from_kernel(fd, buf_, got);
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      pollfd pfd{fd, POLLIN, 0};
      int r = poll(&pfd, 1, kDumpRecvTimeoutMs);
      if (r == 0) return Error{ETIMEDOUT, "bridge port dump: no reply from the kernel"};
      if (r < 0 && errno != EINTR) return Error::last("waiting for bridge port dump");
      continue;
    }
    if (err != 0) return Error::from_errno(err, "receiving bridge port dump");
    if (got == 0) continue;
    auto batch = parse_link_messages({buf_.data(), got});
    if (!batch) return batch.error();
    auto headers = check_dump_headers({buf_.data(), got}, seq, portid);
    if (!headers.ours) continue;
    if (headers.interrupted) return Error{EINTR, "bridge port dump interrupted by concurrent changes"};
    if (batch->error != 0) return Error::from_errno(batch->error, "bridge port dump");
    for (auto& m : batch->ports) ports.push_back(std::move(m.port));
    if (batch->done) return ports;
  }
}

void LinkWatcher::resync_failed(const Error& why) {
  resync_.reset();
  (void)sd_event_source_set_enabled(dump_io_.get(), SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(io_.get(), SD_EVENT_ON);
  (void)sd_event_source_set_enabled(retry_.get(), SD_EVENT_OFF);
  logger().debug("link re-dump failed: {}, retrying in {}ms", why.message, kResyncRetryUsec / 1000);
  schedule_resync(kResyncRetryUsec);
}

Result<std::vector<LinkInfo>> LinkWatcher::dump() {
  Result<std::vector<LinkInfo>> links = Error{EINTR, "link dump not attempted"};
  for (int attempt = 0; attempt < kMaxDumpAttempts; ++attempt) {
    links = dump_once();
    // EINTR: NLM_F_DUMP_INTR. ENOBUFS: the kernel could not allocate a chunk.
    if (links || (links.error().code != EINTR && links.error().code != ENOBUFS)) return links;
  }
  return links;
}

Result<std::vector<LinkInfo>> LinkWatcher::dump_once() {
  int fd = mnl_socket_get_fd(dump_sock_.get());
  DumpState st;
  st.seq = ++seq_;
  if (auto r = request_dump(st.seq); !r) return r.error();
  while (true) {
    size_t len = 0;
    int err = recv_from_kernel(fd, buf_, len);
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      pollfd pfd{fd, POLLIN, 0};
      int r = poll(&pfd, 1, kDumpRecvTimeoutMs);
      if (r == 0) return Error{ETIMEDOUT, "link dump: no reply from the kernel"};
      if (r < 0 && errno != EINTR) return Error::last("waiting for link dump");
      continue;
    }
    if (err != 0) return Error::from_errno(err, "receiving link dump");
    if (len == 0) continue;
    auto step = consume_dump({buf_.data(), len}, st.seq, st);
    if (!step) return step.error();
    if (*step) break;
  }
  if (st.interrupted) return Error{EINTR, "link dump interrupted by concurrent changes"};
  return std::move(st.links);
}

}  // namespace relink::netlink
