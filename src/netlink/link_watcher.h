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
#include <vector>

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

  const LinkTable& table() const { return table_; }
  // Number of ENOBUFS overruns recovered by a re-dump (for status/tests).
  uint64_t overruns() const { return overruns_; }

 private:
  struct MnlDeleter {
    void operator()(mnl_socket* s) const;
  };
  using MnlSocketPtr = std::unique_ptr<mnl_socket, MnlDeleter>;

  static int on_io(sd_event_source* s, int fd, uint32_t revents, void* userdata);
  static int on_retry(sd_event_source* s, uint64_t usec, void* userdata);
  void read_all();
  Result<std::vector<LinkInfo>> dump();
  Result<std::vector<LinkInfo>> dump_once();
  void resync();

  sd_event* loop_;
  Callback cb_;
  size_t rcvbuf_;
  MnlSocketPtr sock_;       // subscribed to RTNLGRP_LINK
  MnlSocketPtr dump_sock_;  // no groups: only answers to our dump requests
  SdEventSourcePtr io_;
  SdEventSourcePtr retry_;    // one-shot timer re-trying a failed resync
  std::vector<uint8_t> buf_;  // one recv() worth of messages
  LinkTable table_;
  uint64_t overruns_ = 0;
  unsigned seq_ = 1;
};

}  // namespace relink::netlink
