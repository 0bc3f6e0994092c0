// SPDX-License-Identifier: GPL-2.0-or-later
// libvirt's local sockets: from the URI, and whether anything listens on them.
#include "libvirt/local_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "util/unique_fd.h"
#include "util/unix_addr.h"

namespace relink::libvirt {

std::vector<std::string> local_sockets(const std::string& uri) {
  const size_t colon = uri.find("://");
  if (colon == std::string::npos) return {};
  const std::string scheme = uri.substr(0, colon);
  std::string rest = uri.substr(colon + 3);
  if (scheme != "qemu" && scheme != "qemu+unix") return {};
  if (rest.empty() || rest[0] != '/') return {};  // a host: not this one's sockets
  std::string query;
  if (const size_t q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest.resize(q);
  }
  for (size_t at = 0; at <= query.size();) {
    const size_t amp = std::min(query.find('&', at), query.size());
    const std::string kv = query.substr(at, amp - at);
    if (kv.rfind("socket=", 0) == 0) {
      // %XX escapes, as in any URI query.
      std::string path;
      const std::string v = kv.substr(7);
      for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
          path += static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          path += v[i];
        }
      }
      return path.size() > 1 && path[0] == '/' ? std::vector<std::string>{path} : std::vector<std::string>{};
    }
    at = amp + 1;
  }
  if (rest != "/system") return {};
  return {"/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock"};
}

bool nobody_listens(const std::vector<std::string>& paths, bool& exists) {
  exists = false;
  for (const auto& path : paths) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    exists = true;
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    auto sa = unix_addr(path);
    if (!fd || !sa) return false;
    // Non-blocking: a full backlog (EAGAIN) is a listener too.
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof *sa) == 0 || errno != ECONNREFUSED)
      return false;
  }
  return true;
}


}  // namespace relink::libvirt
