// SPDX-License-Identifier: GPL-2.0-or-later
// Follows host links over rtnetlink (libmnl) on an sd-event loop. When the
// kernel drops notifications (ENOBUFS) or sends something undecodable, the
// watcher re-dumps all links and reports the difference; a failed re-dump is
// retried on a timer.
#pragma once

#include <systemd/sd-event.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "netlink/bridge_port.h"
#include "netlink/link.h"
#include "netlink/link_table.h"
#include "util/result.h"
#include "util/sd_event.h"

struct mnl_socket;

namespace relink::netlink {

class LinkWatcher {
 public:
  // Called with the events of one receive batch (or of one re-dump), in order.
  using Callback = std::function<void(const std::vector<LinkEvent>&)>;

  // rcvbuf: receive buffer of the event socket (SO_RCVBUFFORCE, else
  // SO_RCVBUF capped by net.core.rmem_max). Large, so that storms rarely
  // overrun it; tests shrink it to force overruns.
  static constexpr size_t kDefaultRcvbuf = size_t{8} << 20;

  LinkWatcher(sd_event* loop, Callback cb, size_t rcvbuf = kDefaultRcvbuf);
  ~LinkWatcher();
  LinkWatcher(const LinkWatcher&) = delete;
  LinkWatcher& operator=(const LinkWatcher&) = delete;

  // Opens NETLINK_ROUTE (SOCK_CLOEXEC | SOCK_NONBLOCK), joins RTNLGRP_LINK,
  // sets a large receive buffer, dumps all links synchronously into the
  // table (no callback for the initial dump) and starts watching.
  Result<void> start();

  // Called when the bridge ports' table changed (AF_BRIDGE messages on
  // RTNLGRP_LINK, after the batch's link events); set before start().
  void set_port_callback(std::function<void()> cb) { port_cb_ = std::move(cb); }

  const LinkTable& table() const { return table_; }
  // Every bridge port with its options and VLANs, kept by the same socket.
  const BridgePortTable& ports() const { return ports_; }
  // Number of ENOBUFS overruns recovered by a re-dump (for status/tests).
  uint64_t overruns() const { return overruns_; }
  // A re-dump is in progress (it runs a few datagrams per loop iteration).
  bool resyncing() const { return resync_ != nullptr; }

 private:
  struct MnlDeleter {
    void operator()(mnl_socket* s) const;
  };
  using MnlSocketPtr = std::unique_ptr<mnl_socket, MnlDeleter>;

  // A link dump in progress.
  struct DumpState {
    unsigned seq = 0;
    int attempts = 0;  // dumps started for this resync (interrupted ones are redone)
    bool interrupted = false;
    std::vector<LinkInfo> links;
  };
  using DumpStep = Result<bool>;  // true: the dump is complete

  static int on_io(sd_event_source* s, int fd, uint32_t revents, void* userdata);
  static int on_retry(sd_event_source* s, uint64_t usec, void* userdata);
  static int on_dump_io(sd_event_source* s, int fd, uint32_t revents, void* userdata);
  void read_all();
  // The initial dump, synchronous (start() needs the table).
  Result<std::vector<LinkInfo>> dump();
  Result<std::vector<LinkInfo>> dump_once();
  // The bridge ports with their VLAN tables (AF_BRIDGE dump), synchronous:
  // at start and after a link re-dump.
  Result<std::vector<BridgePort>> dump_ports();
  void refresh_ports();
  Result<void> request_dump(unsigned seq);
  DumpStep consume_dump(std::span<const uint8_t> data, unsigned seq, DumpState& st);
  // Re-dumps after an overrun, asynchronously on the loop.
  void schedule_resync(uint64_t delay_us);
  void start_resync();
  void read_dump();
  void finish_resync();
  void resync_failed(const Error& why);

  sd_event* loop_;
  Callback cb_;
  size_t rcvbuf_;
  MnlSocketPtr sock_;       // subscribed to RTNLGRP_LINK
  MnlSocketPtr dump_sock_;  // no groups: only answers to our dump requests
  SdEventSourcePtr io_;
  SdEventSourcePtr dump_io_;  // the dump socket, enabled while a re-dump runs
  SdEventSourcePtr retry_;    // one-shot: starts a resync, or ends a stuck one
  std::unique_ptr<DumpState> resync_;  // the re-dump in progress
  std::vector<uint8_t> buf_;  // one recv() worth of messages
  LinkTable table_;
  BridgePortTable ports_;
  std::function<void()> port_cb_;
  uint64_t overruns_ = 0;
  unsigned seq_ = 1;
};

}  // namespace relink::netlink
