// SPDX-License-Identifier: GPL-2.0-or-later
// Bytes a local client sends to the control socket, through a real
// ControlServer on an sd-event loop (its request path is the socket's), with
// a handler that reads the request as relinkd's does. The server must answer
// or close, never crash, whatever the client sends.
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "daemon/control_server.h"
#include "fuzz_check.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"
#include "util/untrusted.h"

using namespace relink;

namespace {

struct Server {
  SdEventPtr loop;
  std::unique_ptr<daemon::ControlServer> server;
  std::string dir;
  std::string path;
};

Server* g_server = nullptr;

// What relinkd's handler does with a request: read fields by name (value()
// throws on a wrong type; the server must turn that into an error reply)
// and put peer text into the reply.
nlohmann::json handle(const nlohmann::json& req, const daemon::Peer&) {
  const std::string cmd = req.value("command", "");
  const std::string vm = req.value("vm", "");
  if (cmd == "status") return {{"ok", true}, {"result", {{"vms", nlohmann::json::array()}}}};
  return {{"ok", false}, {"error", "unknown command '" + cmd + "' for VM '" + vm + "'"}};
}

void cleanup() {
  if (!g_server) return;
  g_server->server.reset();
  std::error_code ec;
  std::filesystem::remove_all(g_server->dir, ec);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  auto* s = new Server;
  char tmpl[] = "/tmp/relink-fuzz-control-XXXXXX";
  FUZZ_CHECK(mkdtemp(tmpl) != nullptr);
  s->dir = tmpl;
  s->path = s->dir + "/control.sock";
  sd_event* e = nullptr;
  FUZZ_CHECK(sd_event_new(&e) >= 0);
  s->loop.reset(e);
  s->server = std::make_unique<daemon::ControlServer>(e, handle);
  auto r = s->server->listen(s->path, "");
  if (!r) {
    std::fprintf(stderr, "listen %s: %s\n", s->path.c_str(), r.error().message.c_str());
    std::abort();
  }
  g_server = s;
  atexit(cleanup);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sd_event* loop = g_server->loop.get();
  UniqueFd c(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  FUZZ_CHECK(c);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, g_server->path.c_str(), sizeof addr.sun_path - 1);
  FUZZ_CHECK(connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

  // Send everything, letting the server read as it goes, then half-close:
  // the server sees the request end as a client's EOF.
  size_t off = 0;
  bool shut = false;
  std::string reply;
  bool closed = false;
  int waits = 0;  // loop runs without progress from the client: 10 ms each at most
  while (!closed && waits < 300) {
    bool progress = false;
    if (off < size) {
      ssize_t n = send(c.get(), data + off, size - off, MSG_NOSIGNAL);
      if (n > 0) off += static_cast<size_t>(n), progress = true;
      else if (n < 0 && errno != EAGAIN && errno != EINTR) off = size;  // server closed early
    }
    if (off == size && !shut) {
      shutdown(c.get(), SHUT_WR);
      shut = true;
    }
    if (!progress) ++waits;
    FUZZ_CHECK(sd_event_run(loop, progress ? 0 : 10'000) >= 0);
    char buf[4096];
    while (true) {
      ssize_t n = recv(c.get(), buf, sizeof buf, 0);
      if (n > 0) {
        reply.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) closed = true;
      break;
    }
  }
  // The server closes every connection once the client has said all it will
  // say; one it answers gets one JSON object on one line.
  FUZZ_CHECK(closed);
  if (!reply.empty()) {
    FUZZ_CHECK(reply.back() == '\n');
    auto j = untrusted::parse_json(std::string_view(reply).substr(0, reply.size() - 1));
    FUZZ_CHECK(j && j->is_object() && j->contains("ok"));
  }
  return 0;
}
