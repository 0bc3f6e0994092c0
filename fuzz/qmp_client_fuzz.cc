// SPDX-License-Identifier: GPL-2.0-or-later
// What QEMU (or whatever holds the QMP socket) sends, fed to a real
// QmpClient on an sd-event loop through its transport seam: the input is
// the peer's side of the stream, greeting first. The client answers the
// greeting with qmp_capabilities (id 1); once connected it runs two commands
// (ids 2 and 3, the second passing an fd), so replies, errors, events and
// garbage all reach the code that handles them. The client must never
// crash, and call each callback as documented.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz_check.h"
#include "qemu/qmp_client.h"
#include "util/sd_event.h"
#include "util/unique_fd.h"

using namespace relink;

namespace {

sd_event* g_loop = nullptr;
int g_devnull = -1;

struct Tally {
  int connected = 0;
  int disconnected = 0;
  int replies[2] = {0, 0};
};

// Runs the loop until nothing is left to dispatch now (timers in the future,
// like the reconnect backoff, are left alone).
void drain(sd_event* loop, int peer) {
  for (int i = 0; i < 10000; ++i) {
    char buf[4096];
    while (peer >= 0 && recv(peer, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
    int r = sd_event_run(loop, 0);
    FUZZ_CHECK(r >= 0);
    if (r == 0) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  FUZZ_CHECK(sd_event_new(&g_loop) >= 0);
  g_devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(g_devnull >= 0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd client_end(sv[0]), peer(sv[1]);

  Tally tally;
  std::unique_ptr<qemu::QmpClient> client;
  qemu::QmpClient::Callbacks cbs;
  cbs.on_connected = [&] {
    ++tally.connected;
    FUZZ_CHECK(client->connected());
    client->execute("query-status", nullptr, [&](qemu::QmpReply) { ++tally.replies[0]; });
    client->execute("getfd", {{"fdname", "fuzz"}}, [&](qemu::QmpReply) { ++tally.replies[1]; }, g_devnull);
  };
  cbs.on_disconnected = [&](const Error& why) {
    ++tally.disconnected;
    FUZZ_CHECK(!why.message.empty());
    FUZZ_CHECK(tally.disconnected <= tally.connected);
  };
  cbs.on_event = [&](const std::string&, const nlohmann::json&) { FUZZ_CHECK(tally.connected > 0); };
  qemu::QmpOptions opts;
  opts.max_line_bytes = 4096;  // small, so that overlong lines are reached
  opts.connector = [&](const std::string&) -> Result<UniqueFd> {
    if (!client_end) return Error{ECONNREFUSED, "fuzz: one session per input"};
    return std::move(client_end);
  };
  client = std::make_unique<qemu::QmpClient>(g_loop, "/fuzz/qmp.sock", cbs, opts);
  client->start();
  drain(g_loop, -1);

  // The peer's bytes, as fast as the client reads them, then the peer hangs up.
  size_t off = 0;
  for (int stalls = 0; off < size && stalls < 1000;) {
    ssize_t n = send(peer.get(), data + off, size - off, MSG_NOSIGNAL);
    if (n > 0) off += static_cast<size_t>(n);
    else if (errno == EAGAIN) ++stalls;
    else break;  // the client closed the session
    drain(g_loop, peer.get());
  }
  peer.reset();
  drain(g_loop, -1);

  FUZZ_CHECK(!client->connected());
  FUZZ_CHECK(tally.disconnected == tally.connected);
  client.reset();
  drain(g_loop, -1);
  for (int n : tally.replies) FUZZ_CHECK(n <= 1);
  return 0;
}
