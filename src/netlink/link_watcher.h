// Follows host links over rtnetlink (libmnl) on an sd-event loop.
#pragma once

#include <systemd/sd-event.h>

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

  LinkWatcher(sd_event* loop, Callback cb);
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
  static int on_io(sd_event_source* s, int fd, uint32_t revents, void* userdata);
  void read_all();
  Result<std::vector<LinkInfo>> dump();
  void resync();

  sd_event* loop_;
  Callback cb_;
  struct MnlDeleter { void operator()(mnl_socket* s) const; };
  std::unique_ptr<mnl_socket, MnlDeleter> sock_;  // subscribed to RTNLGRP_LINK
  SdEventSourcePtr io_;
  LinkTable table_;
  uint64_t overruns_ = 0;
  unsigned seq_ = 1;
};

}  // namespace relink::netlink
