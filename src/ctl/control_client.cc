// SPDX-License-Identifier: GPL-2.0-or-later
// relinkctl's end of the control socket.
#include "ctl/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "util/unique_fd.h"
#include "util/untrusted.h"
#include "util/unix_addr.h"

namespace relink::ctl {

Result<nlohmann::json> control_request(const std::string& path, const nlohmann::json& request, int timeout_ms) {
  auto addr = unix_addr(path);
  if (!addr) return addr.error();
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::last("socket");
  // A unix connect waits while the listen queue is full: bound that wait too.
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) < 0) {
    if (errno == EAGAIN || errno == EINPROGRESS)
      return Error{ETIMEDOUT, "relinkd did not take the connection within " + std::to_string(timeout_ms) + " ms"};
    return Error::last("cannot connect to " + path + " (is relinkd running?)");
  }
  // Command-line arguments may hold any bytes.
  std::string msg = untrusted::dump_json(request) + "\n";
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

}  // namespace relink::ctl
