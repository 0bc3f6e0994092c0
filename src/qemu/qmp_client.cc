// SPDX-License-Identifier: GPL-2.0-or-later
// The QMP session: greeting, capabilities, pipelined commands, events, fd passing, timeouts.
#include "qemu/qmp_client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "util/clock.h"
#include "util/log.h"
#include "util/untrusted.h"

namespace relink::qemu {
namespace {

constexpr uint64_t kTimerAccuracyUs = 1000;
constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kMaxIov = 64;
constexpr size_t kExcerptBytes = 120;
// Deeper than anything QEMU sends; serialising and comparing are recursive.
constexpr unsigned kMaxJsonDepth = 64;

// Peer text for a log line or an error message: valid UTF-8, escaped, short.
std::string excerpt(std::string_view text) { return untrusted::safe_text(text, kExcerptBytes); }

// connect() errors that mean no QEMU listens there (yet, or any more).
bool nobody_listens(int err) { return err == ENOENT || err == ECONNREFUSED || err == ENOTDIR; }

std::string ms(uint64_t us) { return std::to_string(us / 1000) + "ms"; }

std::string string_field(const nlohmann::json& obj, const char* key, const char* fallback) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// QMP errors are {"class": "GenericError", "desc": "..."}.
std::string describe_qmp_error(const nlohmann::json& error) {
  return untrusted::safe_text(string_field(error, "class", "GenericError"), 64) + ": " +
         untrusted::safe_text(string_field(error, "desc", "(no description)"), 400);
}

}  // namespace

QmpClient::QmpClient(sd_event* loop, std::string socket_path, Callbacks cbs, QmpOptions opts)
    : loop_(loop),
      path_(std::move(socket_path)),
      cbs_(std::move(cbs)),
      opts_(opts),
      log_(log::get("qmp")),
      watch_(loop, path_, [this] { on_path_change(); }),
      framer_(opts.max_line_bytes),
      defer_(loop) {}

QmpClient::~QmpClient() = default;

void QmpClient::start() {
  if (started_) return;
  started_ = true;
  backoff_us_ = opts_.reconnect_min_us;
  try_connect();
}

void QmpClient::stop() {
  if (!started_) return;
  started_ = false;
  watch_.disarm();
  close_socket();
  fail_all_pending(Error{ECANCELED, "QMP client stopped"});
  set_state(State::Idle);
}

const char* QmpClient::state_name(State s) {
  switch (s) {
    case State::Idle: return "idle";
    case State::Connecting: return "connecting";
    case State::Greeting: return "greeting";
    case State::Negotiating: return "negotiating";
    case State::Ready: return "ready";
    case State::Backoff: return "backoff";
  }
  return "?";
}

void QmpClient::set_state(State s) {
  if (s == state_) return;
  log_->debug("{}: {} -> {}", path_, state_name(state_), state_name(s));
  state_ = s;
}

void QmpClient::try_connect() {
  if (opts_.connector) {
    auto fd = opts_.connector(path_);
    if (!fd) return schedule_reconnect(fd.error(), nobody_listens(fd.error().code) ? Wait::Absent : Wait::Retry);
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_io(loop_, &s, fd->get(), EPOLLIN, &QmpClient::on_io, this); r < 0)
      return schedule_reconnect(Error::from_errno(-r, "sd_event_add_io"));
    sock_ = std::move(*fd);
    io_.reset(s);
    if (auto r = arm_timer(opts_.connect_timeout_us); !r) {
      close_socket();
      return schedule_reconnect(r.error());
    }
    set_state(State::Connecting);
    return connection_established();
  }
  sockaddr_un addr{};
  if (path_.size() >= sizeof addr.sun_path) {
    return schedule_reconnect(Error{ENAMETOOLONG, "QMP socket path too long: " + path_});
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return schedule_reconnect(Error::last("socket"));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  // Unix sockets connect or fail at once; EINPROGRESS is handled anyway.
  // EAGAIN (listen backlog full) counts as a failed attempt.
  const bool in_progress =
      connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0;
  if (in_progress && errno != EINPROGRESS) {
    const int err = errno;
    return schedule_reconnect(Error::from_errno(err, "connect " + path_),
                              nobody_listens(err) ? Wait::Absent : Wait::Retry);
  }

  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, fd.get(), EPOLLOUT, &QmpClient::on_io, this); r < 0) {
    return schedule_reconnect(Error::from_errno(-r, "sd_event_add_io"));
  }
  sock_ = std::move(fd);
  io_.reset(s);
  if (auto r = arm_timer(opts_.connect_timeout_us); !r) {
    close_socket();
    return schedule_reconnect(r.error());
  }
  set_state(State::Connecting);
  if (!in_progress) connection_established();
}

void QmpClient::connection_established() {
  ucred cred{};
  socklen_t len = sizeof cred;
  peer_pid_ = getsockopt(sock_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
  // Before a byte is read or sent: whoever listens here would get tap fds.
  if (opts_.verify_peer) {
    if (auto r = opts_.verify_peer(sock_.get(), path_); !r) {
      close_socket();
      if (cbs_.on_refused)
        defer_.post([alive = std::weak_ptr<char>(alive_), cb = cbs_.on_refused, why = r.error()] {
          if (!alive.expired()) cb(why);
        });
      return schedule_reconnect(r.error(), Wait::Refused);
    }
  }
  watch_.disarm();
  set_state(State::Greeting);
  update_io_events();
}

Result<void> QmpClient::arm_timer(uint64_t usec) {
  sd_event_source* s = nullptr;
  int r = sd_event_add_time_relative(loop_, &s, CLOCK_MONOTONIC, usec, kTimerAccuracyUs,
                                     &QmpClient::on_timer, this);
  if (r < 0) return Error::from_errno(-r, "sd_event_add_time_relative");
  timer_.reset(s);
  return ok();
}

int QmpClient::on_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<QmpClient*>(userdata);
  if (self->state_ == State::Backoff) {
    self->try_connect();
  } else {
    self->end_session(
        Error{ETIMEDOUT, "no QMP handshake within " + ms(self->opts_.connect_timeout_us)});
  }
  return 0;
}

void QmpClient::schedule_reconnect(const Error& why, Wait wait) {
  last_error_ = why.message;
  wait_ = wait;
  set_state(State::Backoff);
  timer_.reset();
  if (wait == Wait::Retry) {
    watch_.disarm();
  } else if (!watch_.armed()) {
    if (auto r = watch_.arm(); !r) log_->debug("{}: cannot watch for the socket ({}), polling", path_, r.error().message);
  }
  uint64_t delay = backoff_us_;
  if (wait != Wait::Retry && backoff_us_ >= opts_.reconnect_max_us) {
    if (wait == Wait::Absent && watch_.armed()) {
      // Nothing to do until QEMU creates its socket: no timer, no wakeups.
      log_->debug("{}: {}, waiting for the socket to appear (watching {})", path_, why.message, watch_.watched());
      return;
    }
    delay = opts_.slow_poll_us;
  }
  backoff_us_ = std::min(backoff_us_ * 2, opts_.reconnect_max_us);
  if (auto r = arm_timer(delay); !r) {
    log_->debug("{}: {}; cannot schedule a reconnection ({}), giving up", path_, why.message,
                r.error().message);
    return;
  }
  log_->debug("{}: {}, retrying in {}", path_, why.message, ms(delay));
}

void QmpClient::on_path_change() {
  // A refused peer is not retried on its own events: it could make them at
  // will. Its slow poll stands.
  if (state_ != State::Backoff || wait_ != Wait::Absent) return;
  log_->debug("{}: socket appeared, connecting", path_);
  backoff_us_ = opts_.reconnect_min_us;
  timer_.reset();
  try_connect();
}

void QmpClient::close_socket() {
  io_.reset();
  sock_.reset();
  timer_.reset();
  framer_.clear();
  outq_.clear();
  out_off_ = 0;
  out_bytes_ = 0;
  timeouts_in_a_row_ = 0;
  reset_posted_ = false;
  peer_pid_ = 0;
  ++session_;
}

void QmpClient::end_session(const Error& why) {
  const bool was_ready = state_ == State::Ready;
  if (was_ready && monotonic_us() - ready_since_us_ >= opts_.stable_session_us) backoff_us_ = opts_.reconnect_min_us;
  close_socket();
  fail_all_pending(why);
  schedule_reconnect(why);
  if (was_ready && cbs_.on_disconnected) cbs_.on_disconnected(why);
}

void QmpClient::fail_all_pending(const Error& why) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, p] : pending) complete_later(std::move(p.cb), why);
}

void QmpClient::complete_later(std::function<void(QmpReply)> cb, Error error) {
  defer_.post([alive = std::weak_ptr<char>(alive_), cb = std::move(cb),
               error = std::move(error)]() mutable {
    // Earlier callbacks of the same batch may have destroyed the client.
    if (!alive.expired()) cb(std::move(error));
  });
}

void QmpClient::reset_later(Error why) {
  if (reset_posted_) return;
  reset_posted_ = true;
  defer_.post([alive = std::weak_ptr<char>(alive_), this, session = session_, why = std::move(why)] {
    if (alive.expired() || session_ != session || state_ != State::Ready) return;
    log_->debug("{}: {}", path_, why.message);
    end_session(why);
  });
}

void QmpClient::reverify() {
  if (!opts_.verify_peer) return;
  defer_.post([alive = std::weak_ptr<char>(alive_), this, session = session_] {
    if (alive.expired() || session_ != session || !sock_ || state_ == State::Backoff || state_ == State::Connecting)
      return;
    auto r = opts_.verify_peer(sock_.get(), path_);
    if (r) return;
    std::weak_ptr<char> still = alive_;
    const Error why{r.error().code, r.error().message};
    end_session(why);
    if (!still.expired() && cbs_.on_refused) cbs_.on_refused(why);
  });
}

void QmpClient::complete(uint64_t id, QmpReply reply) {
  auto it = pending_.find(id);
  if (it == pending_.end()) {
    log_->debug("{}: reply to unknown id {} (late reply after a timeout?), dropping", path_, id);
    return;
  }
  auto cb = std::move(it->second.cb);
  pending_.erase(it);
  cb(std::move(reply));
}

int QmpClient::on_cmd_timeout(sd_event_source*, uint64_t, void* userdata) {
  auto* p = static_cast<Pending*>(userdata);
  QmpClient* self = p->self;
  const uint64_t id = p->id;
  Error why{ETIMEDOUT, "QMP command " + p->command + " timed out after " +
                           ms(self->opts_.command_timeout_us)};
  self->log_->debug("{}: {}", self->path_, why.message);
  const unsigned in_a_row = ++self->timeouts_in_a_row_;
  const std::string what = why.message;
  std::weak_ptr<char> alive = self->alive_;
  const uint64_t session = self->session_;
  self->complete(id, std::move(why));
  if (alive.expired() || self->session_ != session || self->state_ != State::Ready) return 0;
  // A QEMU that stopped answering (hung, or not reading at all) is not
  // given more commands to queue: start over with a fresh session.
  if (in_a_row >= self->opts_.max_consecutive_timeouts)
    self->end_session(Error{ETIMEDOUT, "QMP session reset: " + std::to_string(in_a_row) +
                                           " commands in a row got no answer (the last: " + what + ")"});
  return 0;
}

void QmpClient::update_io_events() {
  uint32_t events = EPOLLIN;
  if (state_ == State::Connecting) events = EPOLLOUT;
  else if (!outq_.empty()) events |= EPOLLOUT;
  sd_event_source_set_io_events(io_.get(), events);
}

int QmpClient::on_io(sd_event_source*, int, uint32_t revents, void* userdata) {
  auto* self = static_cast<QmpClient*>(userdata);
  if (self->state_ == State::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(self->sock_.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err != 0) self->end_session(Error::from_errno(err, "connect " + self->path_));
    else self->connection_established();
    return 0;
  }
  std::weak_ptr<char> alive = self->alive_;
  const uint64_t session = self->session_;
  // Read first: replies QEMU sent before closing are still worth delivering.
  if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    self->handle_readable();
    if (alive.expired() || self->session_ != session) return 0;
  }
  if (revents & EPOLLOUT) self->handle_writable();
  return 0;
}

void QmpClient::handle_readable() {
  std::array<char, kReadChunk> buf;
  const ssize_t n = recv(sock_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    return end_session(Error::last("QMP read"));
  }
  if (n == 0) return end_session(Error{ECONNRESET, "QMP socket closed by peer"});

  const bool fits = framer_.append({buf.data(), static_cast<size_t>(n)});
  std::weak_ptr<char> alive = alive_;
  const uint64_t session = session_;
  while (auto line = framer_.next_line()) {
    handle_line(*line);
    if (alive.expired() || session_ != session) return;
  }
  if (!fits) {
    end_session(Error{ECONNRESET, "QMP session reset: a line is longer than " +
                                      std::to_string(opts_.max_line_bytes) + " bytes"});
  }
}

void QmpClient::handle_writable() {
  if (auto r = flush(); !r) return end_session(r.error());
  update_io_events();
}

void QmpClient::handle_line(std::string_view line) {
  auto parsed = untrusted::parse_json(line, {opts_.max_line_bytes, kMaxJsonDepth});
  if (!parsed) return end_session(Error{ECONNRESET, "QMP session reset: " + parsed.error().message});
  nlohmann::json& msg = *parsed;
  if (!msg.is_object()) {
    return end_session(
        Error{ECONNRESET, "QMP session reset: message is not a JSON object: " + excerpt(line)});
  }

  switch (state_) {
    case State::Greeting: {
      if (!msg.contains("QMP")) {
        return end_session(Error{EPROTO, "expected a QMP greeting, got " + excerpt(line)});
      }
      qemu_version_ = 0;
      if (const auto& q = msg["QMP"]; q.is_object()) {
        const auto v = q.find("version");
        if (v != q.end() && v->is_object() && v->contains("qemu") && (*v)["qemu"].is_object()) {
          const auto& n = (*v)["qemu"];
          const auto major = n.find("major"), minor = n.find("minor");
          if (major != n.end() && minor != n.end() && major->is_number_unsigned() && minor->is_number_unsigned() &&
              *major < 1000 && *minor < 100)
            qemu_version_ = major->get<unsigned>() * 100 + minor->get<unsigned>();
        }
      }
      caps_id_ = next_id_++;
      queue_line(nlohmann::json{{"execute", "qmp_capabilities"}, {"id", caps_id_}}.dump(), UniqueFd());
      set_state(State::Negotiating);
      if (auto r = flush(); !r) return end_session(r.error());
      return update_io_events();
    }
    case State::Negotiating: {
      auto id = msg.find("id");
      if (id == msg.end() || *id != caps_id_) {
        log_->debug("{}: ignoring message during negotiation: {}", path_, excerpt(line));
        return;
      }
      if (auto err = msg.find("error"); err != msg.end()) {
        return end_session(Error{EPROTO, "qmp_capabilities failed: " + describe_qmp_error(*err)});
      }
      timer_.reset();
      ready_since_us_ = monotonic_us();
      set_state(State::Ready);
      last_error_.clear();
      if (cbs_.on_connected) cbs_.on_connected();
      return;
    }
    case State::Ready: {
      if (auto ev = msg.find("event"); ev != msg.end()) {
        if (!ev->is_string()) {
          log_->debug("{}: event without a name, dropping: {}", path_, excerpt(line));
          return;
        }
        static const nlohmann::json kNoData = nlohmann::json::object();
        auto data = msg.find("data");
        if (cbs_.on_event) {
          cbs_.on_event(ev->get_ref<const std::string&>(), data != msg.end() ? *data : kNoData);
        }
        return;
      }
      return handle_reply(msg, line);
    }
    case State::Idle:
    case State::Connecting:
    case State::Backoff:
      return;  // no lines are read in these states
  }
}

void QmpClient::handle_reply(const nlohmann::json& msg, std::string_view line) {
  auto id = msg.find("id");
  // QEMU answers a command it could not parse without an id; ours always parse.
  if (id == msg.end() || !id->is_number_unsigned()) {
    log_->debug("{}: message without a known id, dropping: {}", path_, excerpt(line));
    return;
  }
  // QEMU answers: it is reading, whatever timed out before.
  timeouts_in_a_row_ = 0;
  if (auto ret = msg.find("return"); ret != msg.end()) return complete(id->get<uint64_t>(), *ret);
  if (auto err = msg.find("error"); err != msg.end()) {
    return complete(id->get<uint64_t>(), Error{EREMOTEIO, describe_qmp_error(*err)});
  }
  log_->debug("{}: message neither reply nor event, dropping: {}", path_, excerpt(line));
}

void QmpClient::execute(const std::string& command, nlohmann::json arguments,
                        std::function<void(QmpReply)> cb, int fd) {
  if (!cb) cb = [](QmpReply) {};
  if (state_ != State::Ready) {
    return complete_later(std::move(cb), Error{ENOTCONN, "QMP not connected, cannot run " + command});
  }
  if (!arguments.is_null() && !arguments.is_object()) {
    return complete_later(std::move(cb), Error{EINVAL, command + ": arguments must be an object"});
  }
  UniqueFd dup;
  if (fd >= 0) {
    dup.reset(fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!dup) {
      const int err = errno;
      return complete_later(std::move(cb), Error::from_errno(err, command + ": cannot dup the fd to pass"));
    }
  }
  // Caps on what a QEMU that does not read can make relinkd hold.
  if (pending_.size() >= opts_.max_pending || out_bytes_ >= opts_.max_queued_bytes) {
    Error why{ENOBUFS, "QMP session reset: " + (pending_.size() >= opts_.max_pending
                                                    ? std::to_string(pending_.size()) + " commands unanswered"
                                                    : std::to_string(out_bytes_) + " bytes of commands unread") +
                           " (QEMU is not keeping up)"};
    reset_later(why);
    return complete_later(std::move(cb), Error{ENOBUFS, command + ": " + why.message});
  }
  const uint64_t id = next_id_++;
  nlohmann::json msg = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) msg["arguments"] = std::move(arguments);
  std::string line;
  try {
    line = msg.dump();
  } catch (const nlohmann::json::type_error& e) {  // strings that are not UTF-8
    return complete_later(std::move(cb), Error{EINVAL, command + ": " + e.what()});
  }

  auto [it, inserted] = pending_.emplace(id, Pending{this, id, command, std::move(cb), nullptr});
  sd_event_source* timer = nullptr;
  if (int r = sd_event_add_time_relative(loop_, &timer, CLOCK_MONOTONIC, opts_.command_timeout_us,
                                         kTimerAccuracyUs, &QmpClient::on_cmd_timeout, &it->second);
      r < 0) {
    auto failed = std::move(it->second.cb);
    pending_.erase(it);
    return complete_later(std::move(failed), Error::from_errno(-r, command + ": cannot arm timeout"));
  }
  it->second.timer.reset(timer);

  queue_line(std::move(line), std::move(dup));
  if (corked_) return;
  // A hard write error is not handled here (that would run callbacks inside
  // execute()): the bytes stay queued with EPOLLOUT on, the io handler's next
  // write fails the same way and ends the session.
  (void)flush();
  update_io_events();
}

QmpClient::Batch::~Batch() {
  if (--client_.corked_ || client_.state_ != State::Ready) return;
  // As in execute(): a write error ends the session from the io handler.
  (void)client_.flush();
  client_.update_io_events();
}

void QmpClient::queue_line(std::string line, UniqueFd fd) {
  out_bytes_ += line.size() + 1;
  outq_.push_back(OutChunk{std::move(line) + '\n', std::move(fd)});
}

Result<void> QmpClient::flush() {
  while (!outq_.empty()) {
    std::array<iovec, kMaxIov> iov{};
    size_t n = 0;
    for (auto it = outq_.begin(); it != outq_.end() && n < iov.size(); ++it) {
      // An fd travels with the first byte of its own command, so a chunk that
      // carries one starts a new sendmsg: no fd can ride on another command.
      if (n > 0 && it->fd) break;
      const size_t off = n == 0 ? out_off_ : 0;
      iov[n++] = iovec{it->bytes.data() + off, it->bytes.size() - off};
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = n;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
    if (outq_.front().fd) {
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      const int passed = outq_.front().fd.get();
      std::memcpy(CMSG_DATA(c), &passed, sizeof passed);
    }
    const ssize_t w = sendmsg(sock_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return ok();
      return Error::last("QMP write");
    }
    outq_.front().fd.reset();  // in flight: the kernel holds its own reference now
    auto left = static_cast<size_t>(w);
    out_bytes_ -= std::min(out_bytes_, left);
    while (left > 0) {
      const size_t rest = outq_.front().bytes.size() - out_off_;
      if (left < rest) {
        out_off_ += left;
        break;
      }
      left -= rest;
      out_off_ = 0;
      outq_.pop_front();
    }
  }
  return ok();
}

}  // namespace relink::qemu
