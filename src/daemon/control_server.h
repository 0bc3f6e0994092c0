// The control socket: one JSON request line in, one JSON reply line out, per
// connection. Only root, or members of the configured group, may talk to it.
#pragma once

#include <sys/types.h>
#include <systemd/sd-event.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "util/result.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"

namespace relink::daemon {

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Whether a peer may use the socket: root always; others only when they are
// in `group_gid` (primary or supplementary). Pure apart from the group lookup.
bool peer_allowed(const Peer& peer, std::optional<gid_t> group_gid);

class ControlServer {
 public:
  // Returns the reply for a request ({"ok":true,...} or {"ok":false,"error":...}).
  using Handler = std::function<nlohmann::json(const nlohmann::json& request, const Peer& peer)>;

  ControlServer(sd_event* loop, Handler handler);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds PATH (replacing a stale socket, never another kind of file), mode
  // 0600, or 0660 with group `group` when it is not empty.
  Result<void> listen(const std::string& path, const std::string& group);
  const std::string& path() const { return path_; }

 private:
  struct Conn;
  static int on_accept(sd_event_source*, int, uint32_t, void*);
  static int on_conn(sd_event_source*, int, uint32_t, void*);
  void close_conn(int fd);

  sd_event* loop_;
  Handler handler_;
  std::string path_;
  std::optional<gid_t> group_gid_;
  UniqueFd listen_fd_;
  SdEventSourcePtr listen_src_;
  std::map<int, std::unique_ptr<Conn>> conns_;
};

// Client side, used by relinkctl: sends one request and waits for the reply.
Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request,
                                       int timeout_ms = 10000);

}  // namespace relink::daemon
