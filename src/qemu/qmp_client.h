// Asynchronous QMP client on an sd-event loop. Never blocks, never crashes on
// what QEMU (or whatever is on the socket) sends.
#pragma once

#include <sys/types.h>
#include <systemd/sd-event.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "util/result.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"

namespace relink::qemu {

// A command's outcome: its "return" value, or an Error whose message is
// "ErrorClass: desc" for QMP errors, ETIMEDOUT for a timeout, ECONNRESET
// (or the socket error) when the session ended before the reply.
using QmpReply = Result<nlohmann::json>;

struct QmpOptions {
  uint64_t command_timeout_us = 5'000'000;
  uint64_t connect_timeout_us = 2'000'000;  // greeting + qmp_capabilities
  uint64_t reconnect_min_us = 100'000;      // backoff doubles up to max
  uint64_t reconnect_max_us = 5'000'000;
  size_t max_line_bytes = 1 << 20;          // a longer line resets the session
};

class QmpClient {
 public:
  struct Callbacks {
    std::function<void()> on_connected;                    // after qmp_capabilities succeeded
    std::function<void(const Error&)> on_disconnected;     // session lost (called once per session)
    std::function<void(const std::string& event, const nlohmann::json& data)> on_event;
  };

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
  const std::string& path() const { return path_; }

  // Queues a command. Commands are written at once (QMP runs them in order,
  // so callers may pipeline). `cb` is called exactly once, never from inside
  // execute(). If `fd` >= 0 it is sent with SCM_RIGHTS on the same sendmsg as
  // this command's bytes (for getfd); the client does not take ownership.
  void execute(const std::string& command, nlohmann::json arguments,
               std::function<void(QmpReply)> cb, int fd = -1);

 private:
  enum class State { Idle, Connecting, Greeting, Negotiating, Ready, Backoff };
  struct Pending {
    std::function<void(QmpReply)> cb;
    SdEventSourcePtr timer;
  };
  struct OutChunk {
    std::string bytes;
    UniqueFd fd;  // dup'ed fd to send with the first byte of this chunk
  };
  static int on_io(sd_event_source*, int, uint32_t, void*);
  static int on_timer(sd_event_source*, uint64_t, void*);
  static int on_cmd_timeout(sd_event_source*, uint64_t, void*);
  static int on_deferred(sd_event_source*, void*);
  void try_connect();
  void handle_readable();
  void handle_writable();
  void handle_line(std::string_view line);
  void reset(const Error& why);
  void schedule_reconnect();
  void update_io_events();
  void send_raw(const std::string& command, const nlohmann::json& arguments, uint64_t id, int fd);
  void complete(uint64_t id, QmpReply reply);

  sd_event* loop_;
  std::string path_;
  Callbacks cbs_;
  QmpOptions opts_;
  State state_ = State::Idle;
  UniqueFd sock_;
  SdEventSourcePtr io_;
  SdEventSourcePtr timer_;  // connect timeout / reconnect backoff
  uint64_t backoff_us_ = 0;
  pid_t peer_pid_ = 0;
  std::string inbuf_;
  std::deque<OutChunk> outq_;
  size_t out_off_ = 0;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Pending> pending_;
  // Completions are delivered from a deferred source, never re-entrantly.
  std::deque<std::pair<std::function<void(QmpReply)>, QmpReply>> done_;
  SdEventSourcePtr defer_;
  bool started_ = false;
};

}  // namespace relink::qemu
