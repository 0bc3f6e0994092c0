// SPDX-License-Identifier: GPL-2.0-or-later
// The connection to libvirtd: one thread owns it,
// runs libvirt's event loop, follows the running domains and carries out
// requests (detach, attach, link updates). Everything it learns is posted
// back to relinkd's sd-event loop, so libvirt's synchronous RPCs never block
// it. The connection is re-opened with backoff when libvirtd goes away; each
// new connection lists every running domain again.
#pragma once

#include <systemd/sd-event.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "libvirt/domain_xml.h"
#include "util/path_watch.h"
#include "util/result.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"

namespace relink::libvirt {

// A running domain as libvirt describes it.
struct DomainInfo {
  Domain desc;
  int qemu_pid = 0;     // from libvirt's pidfile (0: unknown)
  bool paused = false;  // not running guest code (paused, suspended, ...)
};

struct ConnectionOptions {
  std::string uri = "qemu:///system";
  std::vector<std::string> domains;            // empty: every running domain
  std::string pid_dir = "/run/libvirt/qemu";   // where libvirt keeps <domain>.pid
  unsigned reconnect_min_ms = 250;
  unsigned reconnect_max_ms = 5000;
};

// What relinkd asks of libvirt about a domain's devices. Connection carries
// it out on its thread; a test hands in its own.
class DomainRequests {
 public:
  virtual ~DomainRequests() = default;
  struct DetachResult {
    bool ok = false;
    bool not_found = false;  // the domain has no device with this alias
    std::string error;
  };
  // Each reports once, from the loop.
  // virDomainDetachDeviceAlias (asynchronous: success means asked).
  virtual void detach(const std::string& domain, const std::string& alias, std::function<void(DetachResult)> done) = 0;
  // virDomainAttachDeviceFlags(LIVE), then the domain's live description.
  virtual void attach(const std::string& domain, const std::string& xml,
                      std::function<void(Result<DomainInfo>)> done) = 0;
  // virDomainUpdateDeviceFlags(LIVE).
  virtual void update(const std::string& domain, const std::string& xml, std::function<void(Result<void>)> done) = 0;
  // Where libvirt keeps its QEMU pidfiles (for messages).
  virtual const std::string& pid_dir() const = 0;
};

class Connection final : public DomainRequests {
 public:
  // All called from relinkd's loop.
  struct Callbacks {
    // The connection came up (after every domain was listed) or went down.
    std::function<void(bool up, const std::string& error)> on_connection;
    // A followed domain runs (on connect, start, resume, pause, device
    // change): its live description.
    std::function<void(const DomainInfo&)> on_domain;
    // A domain stopped; also, after a reconnect, one no longer running.
    std::function<void(const std::string& domain)> on_domain_gone;
    // After each (re)connect: every followed domain that runs now.
    std::function<void(const std::vector<std::string>& running)> on_listed;
    std::function<void(const std::string& domain, const std::string& alias)> on_device_removed;
    std::function<void(const std::string& domain, const std::string& alias)> on_device_removal_failed;
  };

  Connection(sd_event* loop, ConnectionOptions opts, Callbacks cbs);
  // Stops the thread and joins it: only for a connection whose thread is
  // known not to hang (tests). relinkd uses retire().
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Result<void> start();

  // Ends a connection without ever blocking the loop for longer than
  // `wait`: the thread is asked to stop, nothing it posts reaches the loop
  // any more, and if it has not finished within `wait` (a libvirtd that
  // accepted the connection and never answers holds it in a call) it is
  // left to finish by itself and frees the connection then. Returns false
  // in that case.
  static bool retire(std::unique_ptr<Connection> c, std::chrono::milliseconds wait);

  // Where the connection's libvirtd listens on this host, when the URI says
  // (local_sockets): while none of them exists, relinkd waits for one to
  // appear (inotify) instead of retrying on a timer.
  const std::vector<std::string>& sockets() const { return sockets_; }
  bool waiting_for_socket() const { return waiting_for_socket_; }
  bool connected() const { return connected_; }
  const std::string& last_error() const { return last_error_; }
  const ConnectionOptions& options() const { return opts_; }
  // Whether a domain of this name is followed (the `domains` list).
  bool follows(const std::string& domain) const;

  // Requests (DomainRequests), carried out on the thread.
  void detach(const std::string& domain, const std::string& alias, std::function<void(DetachResult)> done) override;
  void attach(const std::string& domain, const std::string& xml, std::function<void(Result<DomainInfo>)> done) override;
  void update(const std::string& domain, const std::string& xml, std::function<void(Result<void>)> done) override;
  const std::string& pid_dir() const override { return opts_.pid_dir; }
  // Reads the domain again (on_domain, or on_domain_gone).
  void refresh(const std::string& domain);

 private:
  struct Thread;
  void post_job(std::function<void(Thread&)> job);
  void post_result(std::function<void()> fn);
  static int on_results(sd_event_source*, int, uint32_t, void* userdata);
  // On the loop: watch the sockets, connect when one appears.
  void wait_for_socket();
  void socket_appeared();

  sd_event* loop_;
  ConnectionOptions opts_;
  Callbacks cbs_;
  bool connected_ = false;
  std::string last_error_ = "not connected yet";

  UniqueFd results_fd_;  // eventfd: results are waiting
  SdEventSourcePtr results_source_;
  std::mutex mu_;
  std::deque<std::function<void()>> results_;
  std::deque<std::function<void(Thread&)>> jobs_;
  UniqueFd wake_read_, wake_write_;  // pipe: jobs are waiting, or stop
  std::atomic<bool> stop_{false};
  std::vector<std::string> sockets_;
  std::vector<std::unique_ptr<PathWatch>> socket_watches_;
  bool waiting_for_socket_ = false;
  // The thread's end: finished_ once it has torn everything down; abandoned_
  // when retire() stopped waiting, and the thread then deletes the
  // connection itself. Both under mu_.
  std::condition_variable done_cv_;
  bool finished_ = false;
  bool abandoned_ = false;
  std::unique_ptr<Thread> thread_state_;
  std::thread thread_;
};

// The unix sockets a libvirt URI connects to on this host, in the order
// libvirt tries them: `socket=PATH` when given; for qemu:///system (and
// qemu+unix:///system) the modular daemon's and libvirtd's sockets under
// /run/libvirt. Empty for a URI with a host, another transport or driver,
// or a session URI: those are retried on a timer.
std::vector<std::string> local_sockets(const std::string& uri);

}  // namespace relink::libvirt
