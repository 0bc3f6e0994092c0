// SPDX-License-Identifier: GPL-2.0-or-later
// The control socket: accepts relinkctl's connections, checks each peer,
// reads request lines and writes replies and monitor events.
#include "daemon/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "util/log.h"
#include "util/trusted_dir.h"
#include "util/untrusted.h"
#include "util/unix_addr.h"

namespace relink::daemon {
namespace {

// Accepts per wakeup: the connections already open get their turn between
// batches, so a flood of new ones cannot starve the one being answered.
constexpr int kAcceptBatch = 16;
// When fds run out, the connection cap drops to 3/4 of what was open, but
// never below this.
constexpr size_t kMinConnections = 4;
// Refused peers, and the start of a pressure episode, are logged at most
// this often (the rest are counted).
constexpr uint64_t kLogIntervalUs = 10'000'000;
// Timers may fire this late: lets sd-event coalesce wakeups.
constexpr uint64_t kTimerAccuracyUs = 50'000;

auto logger() { return log::get("control"); }

nlohmann::json error_reply(const std::string& message) { return {{"ok", false}, {"error", message}}; }

}  // namespace

bool peer_allowed(const Peer& peer, std::optional<gid_t> group_gid) {
  if (peer.uid == 0) return true;
  if (!group_gid) return false;
  if (peer.gid == *group_gid) return true;
  return std::find(peer.groups.begin(), peer.groups.end(), *group_gid) != peer.groups.end();
}

std::string verb_refusal(const std::string& verb, const Peer& peer) {
  if (peer.uid == 0) return "";
  if (std::find(std::begin(kRootVerbs), std::end(kRootVerbs), verb) == std::end(kRootVerbs)) return "";
  std::string allowed;
  for (const char* v : kMemberVerbs) allowed += std::string(allowed.empty() ? "" : ", ") + v;
  return "'" + verb + "' is for root only (it changes what relinkd manages); uid " + std::to_string(peer.uid) +
         " may use: " + allowed;
}

namespace {

// The peer's supplementary groups as the kernel saw them at connect().
std::vector<gid_t> peer_groups(int fd) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 3; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    // ERANGE: len now says how much room it needs.
    if (errno != ERANGE) break;
    groups.resize(len / sizeof(gid_t) + 1);
  }
  return {};
}

}  // namespace

struct ControlServer::Conn {
  UniqueFd fd;
  SdEventSourcePtr src;
  Peer peer;
  uint64_t seq = 0;          // accept order: the lowest is the oldest
  uint64_t deadline_us = 0;  // closed when still open at this time
  std::string in;
  std::string out;
  size_t out_off = 0;
  bool replied = false;
  bool subscriber = false;  // relinkctl monitor: stays open and gets events
};

ControlServer::ControlServer(sd_event* loop, Handler handler, ControlLimits limits)
    : loop_(loop),
      handler_(std::move(handler)),
      limits_(limits),
      cap_(std::max<size_t>(1, limits.max_connections)),
      pause_us_(limits.first_pause_us) {}

ControlServer::~ControlServer() {
  conns_.clear();
  idle_timer_.reset();
  resume_timer_.reset();
  listen_src_.reset();
  if (!listen_fd_ || !dir_fd_) return;
  // Only our own socket: a successor may already have bound the same name.
  struct stat st {};
  if (fstatat(dir_fd_.get(), name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == bound_dev_ && st.st_ino == bound_ino_)
    unlinkat(dir_fd_.get(), name_.c_str(), 0);
}

uint64_t ControlServer::now_us() const {
  uint64_t now = 0;
  sd_event_now(loop_, CLOCK_MONOTONIC, &now);
  return now;
}

Result<void> ControlServer::listen(const std::string& path, const std::string& group) {
  if (!group.empty()) {
    struct group* gr = getgrnam(group.c_str());
    if (!gr) return Error{ENOENT, "control_group '" + group + "' does not exist"};
    group_gid_ = gr->gr_gid;
  }
  if (auto addr = unix_addr(path); !addr) return addr.error();
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash + 1 == path.size())
    return Error{EINVAL, "control socket path must be absolute and name a file: " + path};
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = path.substr(slash + 1);
  if (name == "." || name == "..") return Error{EINVAL, "control socket path must name a file: " + path};

  // Only a directory that is root's alone (trusted::open_dir also checks
  // that its parent cannot swap it): elsewhere another user could replace
  // the socket with their own and hear what relinkctl sends. Every later
  // step goes through this fd, so the directory checked is the one used.
  auto opened = trusted::open_dir(dir, 0755);
  if (!opened) return Error{opened.error().code, "control socket: " + opened.error().message};
  UniqueFd dfd = std::move(opened).value();

  struct stat st {};
  if (fstatat(dfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error{EEXIST, path + " exists and is not a socket"};
    if (unlinkat(dfd.get(), name.c_str(), 0) < 0 && errno != ENOENT) return Error::last("remove stale socket " + path);
  } else if (errno != ENOENT) {
    return Error::last("stat " + path);
  }

  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Error::last("socket");
  // There is no bindat(): bind through the directory fd's /proc link, so a
  // directory renamed or replaced since the check above cannot redirect the
  // socket. A name too long for that form is bound by its path.
  auto via = unix_addr("/proc/self/fd/" + std::to_string(dfd.get()) + "/" + name);
  auto addr = via ? via : unix_addr(path);
  // The umask gives the socket its final mode from the start: no window in
  // which it is more open than it will be.
  mode_t old = umask(group_gid_ ? 0117 : 0177);
  int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr);
  umask(old);
  if (rc < 0) return Error::last("bind " + path);
  struct stat bound {};
  if (fstatat(dfd.get(), name.c_str(), &bound, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISSOCK(bound.st_mode)) {
    unlinkat(dfd.get(), name.c_str(), 0);
    return Error{EIO, "the socket just bound at " + path + " is not there"};
  }
  auto fail = [&](Error e) {
    unlinkat(dfd.get(), name.c_str(), 0);
    return e;
  };
  if (group_gid_) {
    // By fd, not by path: the file changed is the one checked.
    UniqueFd sfd(openat(dfd.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!sfd) return fail(Error::last("open " + path));
    struct stat sst {};
    if (fstat(sfd.get(), &sst) < 0) return fail(Error::last("stat " + path));
    if (!S_ISSOCK(sst.st_mode) || sst.st_dev != bound.st_dev || sst.st_ino != bound.st_ino)
      return fail(Error{EIO, path + " changed under relinkd while it was being set up"});
    if (fchownat(sfd.get(), "", 0, *group_gid_, AT_EMPTY_PATH) < 0) return fail(Error::last("chown " + path));
  }
  if (::listen(fd.get(), 64) < 0) return fail(Error::last("listen " + path));
  // Both timers exist from the start, disabled: the first CLOCK_MONOTONIC
  // timer of a loop costs sd-event a timerfd, which it could not get when
  // fds have run out, just when the pause needs its timer.
  for (auto [timer, cb] : {std::pair{&idle_timer_, &ControlServer::on_idle_timer},
                           std::pair{&resume_timer_, &ControlServer::on_resume_timer}}) {
    sd_event_source* t = nullptr;
    if (int r = sd_event_add_time(loop_, &t, CLOCK_MONOTONIC, UINT64_MAX, kTimerAccuracyUs, cb, this); r < 0)
      return fail(Error::from_errno(-r, "sd_event_add_time"));
    timer->reset(t);
    sd_event_source_set_enabled(t, SD_EVENT_OFF);
  }
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, fd.get(), EPOLLIN, &ControlServer::on_accept, this); r < 0)
    return fail(Error::from_errno(-r, "sd_event_add_io"));
  listen_src_.reset(s);
  listen_fd_ = std::move(fd);
  dir_fd_ = std::move(dfd);
  name_ = name;
  bound_dev_ = bound.st_dev;
  bound_ino_ = bound.st_ino;
  path_ = path;
  return ok();
}

Result<void> ControlServer::refresh_group(const std::string& group) {
  if (group.empty() || !group_gid_ || !dir_fd_) return ok();
  struct group* gr = getgrnam(group.c_str());
  if (!gr) return Error{ENOENT, "control_group '" + group + "' does not exist"};
  if (gr->gr_gid == *group_gid_) return ok();
  // By fd, and only the socket this server bound.
  UniqueFd sfd(openat(dir_fd_.get(), name_.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!sfd || fstat(sfd.get(), &st) < 0 || !S_ISSOCK(st.st_mode) || st.st_dev != bound_dev_ || st.st_ino != bound_ino_)
    return Error{EIO, path_ + " is not the socket relinkd bound"};
  if (fchownat(sfd.get(), "", 0, gr->gr_gid, AT_EMPTY_PATH) < 0) return Error::last("chown " + path_);
  group_gid_ = gr->gr_gid;
  return ok();
}

int ControlServer::on_accept(sd_event_source*, int, uint32_t, void* userdata) {
  auto* self = static_cast<ControlServer*>(userdata);
  try {
    self->accept_some();
  } catch (const std::exception& e) {
    // Out of memory, most likely: the next wakeup tries again.
    logger()->error("control socket: {}, ignoring", e.what());
  }
  return 0;
}

void ControlServer::accept_some() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    UniqueFd c(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (c) {
      pause_us_ = limits_.first_pause_us;
      admit(std::move(c));
      continue;
    }
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      pause_us_ = limits_.first_pause_us;
      maybe_pressure_over();
      return;
    }
    // The connection was taken off the queue: go on with the next.
    if (err == EINTR || err == ECONNABORTED) continue;
    ++accept_failures_;
    if ((err == EMFILE || err == ENFILE) && !conns_.empty()) {
      // Our own connections hold the fds: hand some back, to this accept and
      // to the rest of the daemon.
      under_pressure("accept: " + std::string(std::strerror(err)) + " with " + std::to_string(conns_.size()) +
                     " connections open: serving new ones by closing the oldest idle ones");
      cap_ = std::max(kMinConnections, conns_.size() * 3 / 4);
      // Monitor subscribers are never closed to make room: if only they
      // are left, there is nothing of ours to free, as below.
      bool freed = evict_oldest();
      while (freed && conns_.size() >= cap_) freed = evict_oldest();
      if (freed) continue;
      pause_accepting(err);
      return;
    }
    // Anything else (no fds and nothing of ours to free, no memory, an LSM
    // saying no) would fail again at once, and the listening socket stays
    // readable: stop watching it for a while instead of spinning.
    pause_accepting(err);
    return;
  }
}

void ControlServer::admit(UniqueFd c) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return;
  Peer peer{cred.pid, cred.uid, cred.gid, {}};
  if (cred.uid != 0 && group_gid_ && cred.gid != *group_gid_) peer.groups = peer_groups(c.get());
  if (!peer_allowed(peer, group_gid_)) {
    const uint64_t now = now_us();
    if (refused_logged_us_ == 0 || now - refused_logged_us_ >= kLogIntervalUs) {
      logger()->warn("refusing control connection from uid {} pid {}{}", cred.uid, cred.pid,
                     refused_unlogged_ ? " (and " + std::to_string(refused_unlogged_) + " more not logged)" : "");
      refused_logged_us_ = now;
      refused_unlogged_ = 0;
    } else {
      ++refused_unlogged_;
    }
    // Best effort: say why, then close.
    const std::string msg = untrusted::dump_json(error_reply("permission denied")) + "\n";
    (void)!send(c.get(), msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    return;
  }
  if (conns_.size() >= cap_) {
    // The oldest connection still owing its request is the likeliest to be
    // one that never will; a client that just connected is about to send
    // its line (relinkctl writes right after connect), so it goes first
    // only after `cap_` newer ones.
    under_pressure(std::to_string(conns_.size()) +
                   " connections open: serving new ones by closing the oldest idle ones");
    evict_oldest();
  }
  auto conn = std::make_unique<Conn>();
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, c.get(), EPOLLIN, &ControlServer::on_conn, this); r < 0) {
    logger()->debug("control connection from pid {} dropped: sd_event_add_io: {}", cred.pid, std::strerror(-r));
    return;
  }
  conn->src.reset(s);
  conn->peer = peer;
  conn->seq = next_seq_++;
  conn->deadline_us = now_us() + limits_.idle_timeout_us;
  const int cfd = c.get();
  conn->fd = std::move(c);
  conns_[cfd] = std::move(conn);
  arm_idle_timer();
}

bool ControlServer::evict_oldest() {
  auto victim = conns_.end();
  for (auto it = conns_.begin(); it != conns_.end(); ++it) {
    // Subscribers are counted against their own cap, not this one's.
    if (it->second->subscriber) continue;
    const bool waiting = !it->second->replied;
    if (victim == conns_.end()) {
      victim = it;
      continue;
    }
    const bool victim_waiting = !victim->second->replied;
    // Prefer connections still owing their request; among equals, the oldest.
    if ((waiting && !victim_waiting) || (waiting == victim_waiting && it->second->seq < victim->second->seq))
      victim = it;
  }
  if (victim == conns_.end()) return false;
  ++evicted_;
  close_conn(victim->first);
  return true;
}

void ControlServer::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it != conns_.end() && it->second->subscriber) --subscribers_;
  conns_.erase(fd);
  arm_idle_timer();
  // An fd came free: the accept that failed for lack of one may work now.
  if (paused_) resume_accepting();
  maybe_pressure_over();
}

void ControlServer::arm_idle_timer() {
  if (conns_.empty()) {
    if (idle_timer_) sd_event_source_set_enabled(idle_timer_.get(), SD_EVENT_OFF);
    return;
  }
  uint64_t next = UINT64_MAX;
  for (const auto& [fd, c] : conns_) next = std::min(next, c->deadline_us);
  if (!idle_timer_) return;
  if (next == UINT64_MAX) {  // only subscribers, which never idle out
    sd_event_source_set_enabled(idle_timer_.get(), SD_EVENT_OFF);
    return;
  }
  sd_event_source_set_time(idle_timer_.get(), next);
  sd_event_source_set_enabled(idle_timer_.get(), SD_EVENT_ONESHOT);
}

int ControlServer::on_idle_timer(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<ControlServer*>(userdata);
  const uint64_t now = self->now_us();
  std::vector<int> expired;
  for (const auto& [fd, c] : self->conns_)
    if (c->deadline_us <= now) expired.push_back(fd);
  for (int fd : expired) {
    ++self->idle_closed_;
    if (!self->pressure_) {
      const auto& c = *self->conns_.at(fd);
      logger()->debug("closing control connection from pid {}: {} within {} ms", c.peer.pid,
                      c.replied ? "reply not taken" : "no request", self->limits_.idle_timeout_us / 1000);
    }
    self->close_conn(fd);
  }
  self->arm_idle_timer();
  return 0;
}

void ControlServer::pause_accepting(int err) {
  under_pressure("accept: " + std::string(std::strerror(err)) + ": not taking connections for " +
                 std::to_string(pause_us_ / 1000) + " ms, then longer while it lasts (or until a connection closes)");
  logger()->debug("control socket: accept: {}, retrying in {} ms", std::strerror(err), pause_us_ / 1000);
  if (int r = sd_event_source_set_enabled(listen_src_.get(), SD_EVENT_OFF); r < 0) return;
  paused_ = true;
  const uint64_t at = now_us() + pause_us_;
  pause_us_ = std::min(pause_us_ * 2, limits_.max_pause_us);
  sd_event_source_set_time(resume_timer_.get(), at);
  sd_event_source_set_enabled(resume_timer_.get(), SD_EVENT_ONESHOT);
}

int ControlServer::on_resume_timer(sd_event_source*, uint64_t, void* userdata) {
  static_cast<ControlServer*>(userdata)->resume_accepting();
  return 0;
}

void ControlServer::resume_accepting() {
  if (!paused_) return;
  paused_ = false;
  if (resume_timer_) sd_event_source_set_enabled(resume_timer_.get(), SD_EVENT_OFF);
  sd_event_source_set_enabled(listen_src_.get(), SD_EVENT_ON);
}

void ControlServer::under_pressure(const std::string& why) {
  if (pressure_) return;
  pressure_ = true;
  pressure_since_us_ = now_us();
  // Episodes can follow each other quickly when fds come and go: the
  // unlogged ones are counted into the next summary.
  pressure_logged_ = pressure_logged_us_ == 0 || pressure_since_us_ - pressure_logged_us_ >= kLogIntervalUs;
  if (!pressure_logged_) return;
  pressure_logged_us_ = pressure_since_us_;
  logger()->warn("control socket: {}; logged once until all is quiet again", why);
}

void ControlServer::maybe_pressure_over() {
  if (!conns_.empty() || paused_) return;
  cap_ = std::max<size_t>(1, limits_.max_connections);
  if (!pressure_) return;
  pressure_ = false;
  if (!pressure_logged_) return;
  logger()->info("control socket: quiet again after {} ms: {} connections closed to make room, {} closed idle, {} "
                 "failed accepts",
                 (now_us() - pressure_since_us_) / 1000, evicted_, idle_closed_, accept_failures_);
  evicted_ = idle_closed_ = accept_failures_ = 0;
}

int ControlServer::on_conn(sd_event_source*, int fd, uint32_t, void* userdata) {
  auto* self = static_cast<ControlServer*>(userdata);
  auto it = self->conns_.find(fd);
  if (it == self->conns_.end()) return 0;
  bool done = true;
  try {
    done = self->serve(*it->second);
  } catch (const std::exception& e) {
    // Nothing a client sends may escape into sd-event (it would end the
    // loop): drop this one client and carry on.
    logger()->error("control connection dropped: {}", untrusted::safe_text(e.what()));
  } catch (...) {
    logger()->error("control connection dropped: unknown exception");
  }
  if (done) self->close_conn(fd);
  return 0;
}

bool ControlServer::serve(Conn& c) {
  const int fd = c.fd.get();
  if (c.subscriber) {
    // A subscriber has nothing more to say: what it sends is dropped, its
    // end of the connection ends the subscription.
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return true;
    }
    return flush(c);
  }
  if (!c.replied) {
    char buf[4096];
    size_t nl = std::string::npos;
    while (nl == std::string::npos) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        const size_t before = c.in.size();
        c.in.append(buf, static_cast<size_t>(n));
        nl = c.in.find('\n', before);
        if (nl == std::string::npos && c.in.size() > limits_.max_request) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      // EOF or error before a full line: the client went away.
      return true;
    }
    if (nl == std::string::npos || nl > limits_.max_request) {
      respond(c, error_reply("request over " + std::to_string(limits_.max_request) + " bytes"));
    } else {
      c.in.resize(nl);
      nlohmann::json reply = answer(c.in, c.peer);
      if (reply.value("subscribe", false)) {
        reply.erase("subscribe");
        if (!subscribe(c))
          reply = error_reply("too many monitor clients (" + std::to_string(limits_.max_subscribers) + ")");
      }
      respond(c, reply);
      if (c.subscriber) c.deadline_us = UINT64_MAX;
    }
  }
  return flush(c);
}

// Returns true when the connection is done with: a plain one once its reply
// is out, a subscriber only when it fails.
bool ControlServer::flush(Conn& c) {
  while (c.out_off < c.out.size()) {
    ssize_t n = send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (c.subscriber) sd_event_source_set_io_events(c.src.get(), EPOLLIN | EPOLLOUT);
        return false;
      }
      return true;
    }
    c.out_off += static_cast<size_t>(n);
  }
  if (!c.subscriber) return true;
  c.out.clear();
  c.out_off = 0;
  sd_event_source_set_io_events(c.src.get(), EPOLLIN);
  return false;
}

bool ControlServer::subscribe(Conn& c) {
  if (subscribers_ >= limits_.max_subscribers) return false;
  c.subscriber = true;
  ++subscribers_;
  // Never idle: it waits for events by design.
  c.deadline_us = UINT64_MAX;
  return true;
}

void ControlServer::publish(const nlohmann::json& event) {
  if (!subscribers_) return;
  const std::string line = untrusted::dump_json(event) + "\n";
  std::vector<int> dead;
  for (auto& [fd, c] : conns_) {
    if (!c->subscriber || !c->replied) continue;
    if (c->out.size() - c->out_off + line.size() > limits_.max_subscriber_backlog) {
      logger()->warn("monitor client pid {} reads too slowly ({} bytes of events unread): closing it", c->peer.pid,
                     c->out.size() - c->out_off);
      dead.push_back(fd);
      continue;
    }
    c->out += line;
    if (flush(*c)) dead.push_back(fd);
  }
  for (int fd : dead) close_conn(fd);
}

nlohmann::json ControlServer::answer(const std::string& line, const Peer& peer) {
  untrusted::JsonLimits jl;
  jl.max_bytes = limits_.max_request;
  // No JSON text holds a raw NUL, but nlohmann's parser takes one for the
  // end of its input: "{...}\0<anything>" would be acted on, the rest
  // dropped unseen.
  if (line.find('\0') != std::string::npos) return error_reply("invalid JSON: a NUL byte in the request");
  auto req = untrusted::parse_json(line, jl);
  if (!req) return error_reply(req.error().message);
  if (!req->is_object()) return error_reply("request is not a JSON object");
  if (auto cmd = req->find("command"); cmd != req->end() && cmd->is_string()) {
    const std::string verb = untrusted::safe_text(cmd->get<std::string>(), 64);
    if (const std::string why = verb_refusal(verb, peer); !why.empty()) {
      // Bounded: past the cap, new pairs are refused without a log line.
      if (verb_refusals_logged_.size() < 1024 && verb_refusals_logged_.emplace(peer.uid, verb).second)
        logger()->warn("refused '{}' to uid {} (pid {}): root only; logged once per user and verb", verb, peer.uid,
                       peer.pid);
      return error_reply(why);
    }
    if (verb == "monitor") return {{"ok", true}, {"result", {{"monitor", true}}}, {"subscribe", true}};
  }
  try {
    return handler_(*req, peer);
  } catch (const std::exception& e) {
    const std::string what = untrusted::safe_text(e.what());
    logger()->error("control request from pid {} failed: {}, replying with an error", peer.pid, what);
    return error_reply("internal error: " + what);
  } catch (...) {
    logger()->error("control request from pid {} failed: unknown exception, replying with an error", peer.pid);
    return error_reply("internal error");
  }
}

void ControlServer::respond(Conn& c, const nlohmann::json& reply) {
  c.out = untrusted::dump_json(reply) + "\n";
  c.in.clear();
  c.in.shrink_to_fit();
  c.replied = true;
  c.deadline_us = now_us() + limits_.idle_timeout_us;
  sd_event_source_set_io_events(c.src.get(), EPOLLOUT);
  arm_idle_timer();
}

}  // namespace relink::daemon
