// SPDX-License-Identifier: GPL-2.0-or-later
// The control socket: one JSON request line in, one JSON reply line out, per
// connection. Only root, or members of the configured group, may talk to it;
// what changes relinkd's configuration (add, remove, reload) is root's only.
#pragma once

#include <sys/types.h>
#include <systemd/sd-event.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "util/result.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"

namespace relink::daemon {

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  // Supplementary groups the peer's process had when it connected
  // (SO_PEERGROUPS): the kernel's answer, no NSS lookup on the event loop.
  std::vector<gid_t> groups;
};

// Whether a peer may use the socket: root always; others only when they are
// in `group_gid` (primary or supplementary group of the connecting process).
// Pure.
bool peer_allowed(const Peer& peer, std::optional<gid_t> group_gid);

// Verbs by privilege. control_group members may look and nudge (status,
// monitor, metrics, qemu-args, reattach); only root may change what relinkd
// manages (add, remove, reload): a registration names a QMP socket that gets
// a macvtap on any host interface, and passt options run as any user.
inline constexpr const char* kMemberVerbs[] = {"status", "monitor", "metrics", "qemu-args", "reattach"};
inline constexpr const char* kRootVerbs[] = {"add", "remove", "reload"};
// Why `peer` may not use `verb` ("" when it may; unknown verbs are left to
// the handler, which says they are unknown). Pure.
std::string verb_refusal(const std::string& verb, const Peer& peer);

// What one client may hold. Constants rather than [daemon] keys: a
// legitimate client (relinkctl, a monitoring probe) sends its line at once
// and is done in milliseconds, so nobody needs to tune these.
struct ControlLimits {
  // Connections open at once. At the cap, the oldest connection that has
  // not sent its request yet is closed to make room for the new one.
  size_t max_connections = 64;
  // A connection must have sent its full request line this long after it
  // was accepted, and have taken its reply this long after it was answered.
  uint64_t idle_timeout_us = 5'000'000;
  // Bytes of one request line.
  size_t max_request = 64 * 1024;
  // Connections subscribed with {"command":"monitor"} (relinkctl monitor),
  // at most; and the bytes of events one may leave unread before it is
  // closed (a subscriber that stopped reading must not grow relinkd).
  size_t max_subscribers = 16;
  size_t max_subscriber_backlog = 1 << 20;
  // While accept() fails for lack of fds (or any error that would fail
  // again at once), the listening socket is not watched: it is looked at
  // again after this pause, doubled each time up to max_pause_us, or as
  // soon as a connection closes.
  uint64_t first_pause_us = 100'000;
  uint64_t max_pause_us = 3'200'000;
};

class ControlServer {
 public:
  // Returns the reply for a request ({"ok":true,...} or {"ok":false,"error":...}).
  using Handler = std::function<nlohmann::json(const nlohmann::json& request, const Peer& peer)>;

  ControlServer(sd_event* loop, Handler handler, ControlLimits limits = {});
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds PATH (replacing a stale socket, never another kind of file), mode
  // 0600, or 0660 with group `group` when it is not empty (its gid is looked
  // up here, once: peers are judged by the kernel's view of their groups). PATH's directory
  // must be a trusted one (util/trusted_dir.h: relinkd's user owns it, only
  // it may write there, its parent cannot swap it); it is created (0755)
  // when missing.
  Result<void> listen(const std::string& path, const std::string& group);
  // Looks `group` up again (a reload: the group may have been re-created
  // with another gid) and gives the socket to the gid found. Only for the
  // group the socket was bound with; another name needs a new listen().
  Result<void> refresh_group(const std::string& group);
  const std::string& path() const { return path_; }
  size_t connections() const { return conns_.size(); }

  // Sends one event line to every monitor subscriber. A subscriber stays
  // until it closes; its request got {"ok":true,"result":{"monitor":true}}.
  void publish(const nlohmann::json& event);
  bool monitoring() const { return subscribers_ > 0; }

 private:
  struct Conn;
  static int on_accept(sd_event_source*, int, uint32_t, void*);
  static int on_conn(sd_event_source*, int, uint32_t, void*);
  static int on_idle_timer(sd_event_source*, uint64_t, void*);
  static int on_resume_timer(sd_event_source*, uint64_t, void*);
  void accept_some();
  void admit(UniqueFd fd);
  // Returns true when the connection is done with (answered or gone).
  bool serve(Conn& c);
  bool flush(Conn& c);
  bool subscribe(Conn& c);
  nlohmann::json answer(const std::string& line, const Peer& peer);
  void respond(Conn& c, const nlohmann::json& reply);
  void close_conn(int fd);
  bool evict_oldest();
  void arm_idle_timer();
  void pause_accepting(int err);
  void resume_accepting();
  void under_pressure(const std::string& why);
  void maybe_pressure_over();
  uint64_t now_us() const;

  sd_event* loop_;
  Handler handler_;
  ControlLimits limits_;
  std::string path_;
  std::optional<gid_t> group_gid_;
  UniqueFd dir_fd_;  // the socket's directory, checked once and used for every later step
  std::string name_;
  dev_t bound_dev_ = 0;
  ino_t bound_ino_ = 0;
  UniqueFd listen_fd_;
  SdEventSourcePtr listen_src_;
  SdEventSourcePtr idle_timer_;
  SdEventSourcePtr resume_timer_;
  std::map<int, std::unique_ptr<Conn>> conns_;
  uint64_t next_seq_ = 0;
  // Lowered from max_connections when fds run out, so that the rest of the
  // daemon (QMP, macvtap, passt) gets fds back; restored once all is quiet.
  size_t cap_;
  bool paused_ = false;
  uint64_t pause_us_;
  // One "pressure" episode: from the first eviction or failed accept until
  // no connection is left open. Logged once at its start and once at its end.
  bool pressure_ = false;
  bool pressure_logged_ = false;
  uint64_t pressure_since_us_ = 0;
  uint64_t pressure_logged_us_ = 0;
  uint64_t evicted_ = 0;
  uint64_t accept_failures_ = 0;
  uint64_t idle_closed_ = 0;
  uint64_t refused_logged_us_ = 0;
  size_t subscribers_ = 0;
  uint64_t refused_unlogged_ = 0;
  // (uid, verb) pairs refused a verb already logged: once each, so that a
  // member retrying in a loop cannot fill the journal.
  std::set<std::pair<uid_t, std::string>> verb_refusals_logged_;
};

}  // namespace relink::daemon
