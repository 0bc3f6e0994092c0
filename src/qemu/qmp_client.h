// SPDX-License-Identifier: GPL-2.0-or-later
// Asynchronous QMP client on an sd-event loop. Never blocks, never crashes on
// what QEMU (or whatever is on the socket) sends.
//
// Callback rules:
// - Everything runs on the loop's thread; callbacks are never invoked from
//   inside start(), stop() or execute().
// - A callback may call any method, including stop(), start() and execute(),
//   and may destroy the QmpClient: the client notices and touches nothing
//   afterwards. Once the client is destroyed, no callback fires again
//   (commands still pending are dropped without their callback).
// - Callbacks must not throw.
#pragma once

#include <sys/types.h>
#include <systemd/sd-event.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <spdlog/logger.h>
#include <string>
#include <string_view>

#include "qemu/qmp_framer.h"
#include "util/defer_queue.h"
#include "util/path_watch.h"
#include "util/result.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"

namespace relink::qemu {

// A command's outcome: its "return" value, or an Error whose message is
// "ErrorClass: desc" for QMP errors (code EREMOTEIO), ETIMEDOUT for a
// timeout, ECONNRESET (or the socket error) when the session ended before the
// reply, ENOTCONN when there was no session, ECANCELED after stop().
using QmpReply = Result<nlohmann::json>;

struct QmpOptions {
  uint64_t command_timeout_us = 5'000'000;
  uint64_t connect_timeout_us = 2'000'000;  // greeting + qmp_capabilities
  uint64_t reconnect_min_us = 100'000;      // backoff doubles up to max
  uint64_t reconnect_max_us = 5'000'000;
  // Only a session that stayed up this long starts the next wait over at
  // reconnect_min_us: a peer that resets every session is not reconnected
  // faster than the backoff allows.
  uint64_t stable_session_us = 10'000'000;
  // While no QEMU listens (socket absent or stale), the client waits for the
  // socket to appear (inotify) once the backoff has reached its maximum, with
  // no timer at all. Where the directory cannot be watched, and for a refused
  // peer, it polls this slowly instead.
  uint64_t slow_poll_us = 30'000'000;
  size_t max_line_bytes = 1 << 20;          // a longer line resets the session
  // What one session may hold for a QEMU that does not read or answer: at
  // either cap a new command fails (ENOBUFS) and the session is reset, as
  // it is after this many command timeouts in a row. relinkd's own use is
  // far below: one attach pipelines about 6 commands of under 1 KiB each,
  // so even a VM with dozens of NICs re-attached at once stays under both.
  size_t max_queued_bytes = 1 << 20;        // written but not yet taken by the socket
  size_t max_pending = 512;                 // sent and not yet answered
  unsigned max_consecutive_timeouts = 3;
  // Decides, once connected and before anything is read or sent, whether the
  // peer may be used (see qmp_peer.h); an error refuses the session. Unset:
  // any peer (unit tests).
  std::function<Result<void>(int fd, const std::string& path)> verify_peer;
  // The transport: returns a connected stream socket for the path. Unset:
  // a non-blocking AF_UNIX connect (tests and fuzzers hand in a socketpair).
  std::function<Result<UniqueFd>(const std::string& path)> connector;
};

class QmpClient {
 public:
  struct Callbacks {
    std::function<void()> on_connected;                    // after qmp_capabilities succeeded
    // The session lost (called once per session that reached on_connected;
    // not for failed connection attempts, not for stop()). Commands still
    // pending complete with `why` afterwards.
    std::function<void(const Error&)> on_disconnected;
    // Events in the order QEMU sent them, interleaved with replies as on the
    // wire. `data` is an empty object for events that carry none.
    std::function<void(const std::string& event, const nlohmann::json& data)> on_event;
    // verify_peer refused the peer (called once per refused attempt).
    std::function<void(const Error&)> on_refused;
  };

  // May throw std::bad_alloc only. Create it on `loop`'s thread; destroy it
  // before the loop.
  QmpClient(sd_event* loop, std::string socket_path, Callbacks cbs, QmpOptions opts = {});
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Starts connecting; on failure or loss, reconnects with backoff forever.
  void start();
  // Closes the session; pending commands complete with ECANCELED.
  void stop();

  bool connected() const { return state_ == State::Ready; }
  pid_t peer_pid() const { return peer_pid_; }  // SO_PEERCRED of the QEMU end
  // Checks the connected peer again with verify_peer (after a reload changed
  // what it checks against); a peer that no longer passes is dropped as a
  // refused one (on_disconnected, then on_refused). Runs from the loop, not
  // inside this call.
  void reverify();
  // Ends the session as lost (on_disconnected, pending commands fail with
  // `why`) and connects again with backoff: what a caller does when a reply
  // that did not come leaves it not knowing what QEMU did. From the loop,
  // not inside this call; a session that ended meanwhile is left alone.
  void reset(Error why) { reset_later(std::move(why)); }
  // QEMU's version from the session's greeting, major * 100 + minor (1000:
  // 10.0); 0 when the greeting did not say.
  unsigned qemu_version() const { return qemu_version_; }
  const std::string& path() const { return path_; }
  // Why the last connection attempt failed or the last session ended
  // ("connect /run/qemu/x.qmp: No such file or directory"); empty once a
  // session is up.
  const std::string& last_error() const { return last_error_; }

  // Queues a command. Commands are written at once (QMP runs them in order,
  // so callers may pipeline). `cb` is called exactly once, never from inside
  // execute(). If `fd` >= 0 it is sent with SCM_RIGHTS on the same sendmsg as
  // this command's bytes (for getfd); the client does not take ownership.
  // `arguments` must be an object or null (no arguments).
  void execute(const std::string& command, nlohmann::json arguments,
               std::function<void(QmpReply)> cb, int fd = -1);

  // Commands executed while a Batch lives are written when the outermost
  // one ends, in as few sendmsg calls as fd passing allows (an fd starts a
  // new one): QEMU then wakes once for a hand-over, not once per command.
  class Batch {
   public:
    explicit Batch(QmpClient& client) : client_(client) { ++client_.corked_; }
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

   private:
    QmpClient& client_;
  };

 private:
  enum class State {
    Idle,         // not started, or stopped
    Connecting,   // non-blocking connect() in progress
    Greeting,     // connected, waiting for {"QMP": ...}
    Negotiating,  // qmp_capabilities sent, waiting for its reply
    Ready,        // commands accepted
    Backoff,      // waiting before the next connection attempt
  };
  struct Pending {
    QmpClient* self;
    uint64_t id;
    std::string command;  // for messages
    std::function<void(QmpReply)> cb;
    SdEventSourcePtr timer;
  };
  struct OutChunk {
    std::string bytes;
    UniqueFd fd;  // dup'ed fd to send with the first byte of this chunk
  };

  unsigned corked_ = 0;  // Batches alive

  static int on_io(sd_event_source*, int, uint32_t, void*);
  static int on_timer(sd_event_source*, uint64_t, void*);
  static int on_cmd_timeout(sd_event_source*, uint64_t, void*);

  static const char* state_name(State s);
  void set_state(State s);
  void try_connect();
  void connection_established();
  void handle_readable();
  void handle_writable();
  void handle_line(std::string_view line);
  void handle_reply(const nlohmann::json& msg, std::string_view line);
  // Ends the session or connection attempt and schedules the next one.
  void end_session(const Error& why);
  void close_socket();
  void fail_all_pending(const Error& why);
  // Why the next attempt waits: a timer only, or also the socket appearing.
  enum class Wait {
    Retry,    // a failed session or a transient error: backoff timer
    Absent,   // no QEMU listens: backoff, then only the socket appearing
    Refused,  // verify_peer said no: backoff, then slow polling and the socket changing
  };
  void schedule_reconnect(const Error& why, Wait wait = Wait::Retry);
  void on_path_change();
  Result<void> arm_timer(uint64_t usec);
  void update_io_events();
  void queue_line(std::string line, UniqueFd fd);
  [[nodiscard]] Result<void> flush();
  void complete(uint64_t id, QmpReply reply);
  void complete_later(std::function<void(QmpReply)> cb, Error error);
  // Ends the current session from the loop (never inside execute()), unless
  // it has ended already by then.
  void reset_later(Error why);

  sd_event* loop_;
  std::string path_;
  Callbacks cbs_;
  QmpOptions opts_;
  std::shared_ptr<spdlog::logger> log_;
  State state_ = State::Idle;
  bool started_ = false;
  UniqueFd sock_;
  SdEventSourcePtr io_;     // declared after sock_: unregistered before the fd closes
  SdEventSourcePtr timer_;  // connect timeout / reconnect backoff
  uint64_t backoff_us_ = 0;
  uint64_t ready_since_us_ = 0;  // when the current session became Ready
  Wait wait_ = Wait::Retry;
  PathWatch watch_;
  pid_t peer_pid_ = 0;
  unsigned qemu_version_ = 0;
  QmpFramer framer_;
  std::deque<OutChunk> outq_;
  size_t out_off_ = 0;  // bytes of outq_.front() already sent
  size_t out_bytes_ = 0;  // bytes in outq_ not yet sent
  unsigned timeouts_in_a_row_ = 0;
  bool reset_posted_ = false;
  uint64_t next_id_ = 1;
  uint64_t caps_id_ = 0;
  // Bumped whenever the socket closes, so a handler that ran user code can
  // tell the session it was reading is gone.
  uint64_t session_ = 0;
  std::string last_error_;
  std::map<uint64_t, Pending> pending_;
  DeferQueue defer_;
  // Expires when the client is destroyed; handlers that run user code hold a
  // weak_ptr to it to notice a callback deleting the client.
  std::shared_ptr<char> alive_ = std::make_shared<char>();
};

}  // namespace relink::qemu
