#include "daemon/control_server.h"

#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <optional>
#include <vector>

#include "util/log.h"

namespace relink::daemon {
namespace {

constexpr size_t kMaxRequest = 64 * 1024;

auto logger() { return log::get("control"); }

Result<sockaddr_un> make_addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return Error{ENAMETOOLONG, "socket path too long: " + path};
  std::copy(path.begin(), path.end(), addr.sun_path);
  return addr;
}

}  // namespace

bool peer_allowed(const Peer& peer, std::optional<gid_t> group_gid) {
  if (peer.uid == 0) return true;
  if (!group_gid) return false;
  if (peer.gid == *group_gid) return true;
  passwd* pw = getpwuid(peer.uid);
  if (!pw) return false;
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) return false;
  }
  groups.resize(static_cast<size_t>(n));
  for (gid_t g : groups)
    if (g == *group_gid) return true;
  return false;
}

struct ControlServer::Conn {
  UniqueFd fd;
  SdEventSourcePtr src;
  Peer peer;
  std::string in;
  std::string out;
  size_t out_off = 0;
  bool replied = false;
};

ControlServer::ControlServer(sd_event* loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {}

ControlServer::~ControlServer() {
  conns_.clear();
  listen_src_.reset();
  if (listen_fd_) unlink(path_.c_str());
}

Result<void> ControlServer::listen(const std::string& path, const std::string& group) {
  if (!group.empty()) {
    struct group* gr = getgrnam(group.c_str());
    if (!gr) return Error{ENOENT, "control_group '" + group + "' does not exist"};
    group_gid_ = gr->gr_gid;
  }
  auto addr = make_addr(path);
  if (!addr) return addr.error();
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error{EEXIST, path + " exists and is not a socket"};
    unlink(path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Error::last("socket");
  // Bind with a umask that leaves nobody else a window on the socket.
  mode_t old = umask(0177);
  int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr);
  umask(old);
  if (rc < 0) return Error::last("bind " + path);
  if (group_gid_) {
    if (chown(path.c_str(), 0, *group_gid_) < 0 || chmod(path.c_str(), 0660) < 0)
      return Error::last("chown/chmod " + path);
  }
  if (::listen(fd.get(), 16) < 0) return Error::last("listen " + path);
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, fd.get(), EPOLLIN, &ControlServer::on_accept, this); r < 0)
    return Error::from_errno(-r, "sd_event_add_io");
  listen_src_.reset(s);
  listen_fd_ = std::move(fd);
  path_ = path;
  return ok();
}

int ControlServer::on_accept(sd_event_source*, int fd, uint32_t, void* userdata) {
  auto* self = static_cast<ControlServer*>(userdata);
  while (true) {
    UniqueFd c(accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c) {
      if (errno != EAGAIN && errno != EINTR) logger()->warn("accept: {}", std::strerror(errno));
      return 0;
    }
    auto conn = std::make_unique<Conn>();
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) continue;
    conn->peer = Peer{cred.pid, cred.uid, cred.gid};
    if (!peer_allowed(conn->peer, self->group_gid_)) {
      logger()->warn("refusing control connection from uid {} pid {}", cred.uid, cred.pid);
      // Best effort: say why, then close.
      std::string msg = nlohmann::json{{"ok", false}, {"error", "permission denied"}}.dump() + "\n";
      (void)!send(c.get(), msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      continue;
    }
    sd_event_source* s = nullptr;
    if (sd_event_add_io(self->loop_, &s, c.get(), EPOLLIN, &ControlServer::on_conn, self) < 0) continue;
    conn->src.reset(s);
    int cfd = c.get();
    conn->fd = std::move(c);
    self->conns_[cfd] = std::move(conn);
  }
}

void ControlServer::close_conn(int fd) { conns_.erase(fd); }

int ControlServer::on_conn(sd_event_source*, int fd, uint32_t revents, void* userdata) {
  auto* self = static_cast<ControlServer*>(userdata);
  auto it = self->conns_.find(fd);
  if (it == self->conns_.end()) return 0;
  Conn& c = *it->second;
  if (!c.replied && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    char buf[4096];
    while (true) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() > kMaxRequest) {
          self->close_conn(fd);
          return 0;
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      // EOF or error before a full line: the client went away.
      if (c.in.find('\n') == std::string::npos) {
        self->close_conn(fd);
        return 0;
      }
      break;
    }
    size_t nl = c.in.find('\n');
    if (nl == std::string::npos) return 0;
    nlohmann::json reply;
    auto req = nlohmann::json::parse(c.in.substr(0, nl), nullptr, false);
    if (req.is_discarded() || !req.is_object()) reply = {{"ok", false}, {"error", "request is not a JSON object"}};
    else {
      try {
        reply = self->handler_(req, c.peer);
      } catch (const std::exception& e) {
        reply = {{"ok", false}, {"error", std::string("internal error: ") + e.what()}};
      }
    }
    c.out = reply.dump() + "\n";
    c.replied = true;
    sd_event_source_set_io_events(c.src.get(), EPOLLOUT);
  }
  if (c.replied) {
    while (c.out_off < c.out.size()) {
      ssize_t n = send(fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return 0;
        break;
      }
      c.out_off += static_cast<size_t>(n);
    }
    self->close_conn(fd);
  }
  return 0;
}

Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request, int timeout_ms) {
  auto addr = make_addr(path);
  if (!addr) return addr.error();
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::last("socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) < 0)
    return Error::last("cannot connect to " + path + " (is relinkd running?)");
  std::string msg = request.dump() + "\n";
  // A refused peer is told why and closed at once, possibly before our send:
  // read what the server said even when the send failed.
  std::optional<Error> send_error;
  if (send(fd.get(), msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
    send_error = Error::last("send to " + path);
  std::string in;
  while (in.find('\n') == std::string::npos) {
    pollfd p{fd.get(), POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0) return Error{ETIMEDOUT, "relinkd did not answer within " + std::to_string(timeout_ms) + " ms"};
    if (r < 0 && errno == EINTR) continue;
    char buf[65536];
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (send_error) return *send_error;
      return Error{ECONNRESET, "relinkd closed the connection without an answer"};
    }
    in.append(buf, static_cast<size_t>(n));
  }
  auto reply = nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
  if (reply.is_discarded() || !reply.is_object()) return Error{EPROTO, "relinkd sent an invalid reply"};
  return reply;
}

}  // namespace relink::daemon
