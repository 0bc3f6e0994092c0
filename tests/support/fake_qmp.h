// SPDX-License-Identifier: GPL-2.0-or-later
// A scripted QMP server for unit tests, in the spirit of libvirt's
// qemumonitortestutils: it listens on a unix socket in a fresh temp dir, runs
// on the test's sd_event loop, greets, answers qmp_capabilities like QEMU, and
// then serves a queue of expected commands. A command that is not the next
// expected one fails the test (ADD_FAILURE) and gets a GenericError reply, so
// the client under test never hangs on it.
//
//   FakeQmp qmp(loop);
//   qmp.expect("getfd", {{"fdname", "nic0-1"}}).returns();  // must carry one fd
//   qmp.expect("netdev_add", {{"type", "tap"}}).error("GenericError", "boom");
//   qmp.expect("device_del").returns().event_after("DEVICE_DELETED", {{"device", "nic0"}});
//   ... run the loop (run_until) ...
//   EXPECT_EQ(qmp.expectations_left(), 0u);  // also checked on destruction
//   fstat(qmp.received()[1].fds[0].get(), ...);
//
// Like QEMU, it serves one client at a time (others wait in the backlog) and
// runs commands in order: a delayed reply holds back the commands behind it.
// Commands must be newline-terminated JSON objects (QmpClient's framing).
// An fd must arrive with the first byte of its command; one arriving in the
// middle of a command fails the test.
#pragma once

#include <systemd/sd-event.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "util/sd_event.h"
#include "util/unique_fd.h"

namespace relink::test {

// Runs `loop` until pred() holds or `timeout` passes; returns pred().
bool run_until(sd_event* loop, const std::function<bool()>& pred,
               std::chrono::milliseconds timeout = std::chrono::seconds(5));
// Runs `loop` for `duration`.
void run_for(sd_event* loop, std::chrono::milliseconds duration);

class FakeQmp {
 public:
  // The greeting of Debian 12's QEMU 7.2, byte for byte.
  static constexpr const char* kGreeting =
      R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, )"
      R"("package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}})";

  struct Options {
    std::string greeting = kGreeting;  // sent (plus "\r\n") on accept; empty: no greeting
  };

  // One expected command and what to do with it. Builder methods chain.
  class Expectation {
   public:
    // Reply {"return": value} (the default, with an empty object).
    Expectation& returns(nlohmann::json value = nlohmann::json::object());
    // Reply {"error": {"class": cls, "desc": desc}}.
    Expectation& error(std::string cls, std::string desc);
    // Send nothing back (the client's timeout fires); later commands go on.
    Expectation& no_reply();
    // Send these bytes verbatim instead of a reply (garbage, partial lines).
    Expectation& raw(std::string bytes);
    // Send the whole response (events and reply) this much later.
    Expectation& delay(std::chrono::milliseconds d);
    // Events sent just before / just after the reply, in the order added.
    Expectation& event_before(std::string name, nlohmann::json data = nullptr);
    Expectation& event_after(std::string name, nlohmann::json data = nullptr);
    // Number of fds the command must carry (default: 1 for getfd, else 0).
    Expectation& fds(size_t n);

   private:
    friend class FakeQmp;
    enum class Reply { Return, Error, None, Raw };
    std::string command_;
    nlohmann::json args_;  // keys that must be present with these values
    Reply reply_ = Reply::Return;
    nlohmann::json value_ = nlohmann::json::object();  // return value or error object
    std::string raw_;
    std::chrono::milliseconds delay_{0};
    std::vector<std::pair<std::string, nlohmann::json>> before_, after_;
    std::optional<size_t> fds_;
  };

  // A command as received (qmp_capabilities included), in arrival order.
  struct Command {
    std::string name;
    nlohmann::json arguments;  // null when the command had none
    nlohmann::json id;         // null when the command had none
    std::vector<UniqueFd> fds;  // received with SCM_RIGHTS on its first byte
  };

  explicit FakeQmp(sd_event* loop) : FakeQmp(loop, Options()) {}
  FakeQmp(sd_event* loop, Options opts);
  ~FakeQmp();  // fails the test if expectations are left
  FakeQmp(const FakeQmp&) = delete;
  FakeQmp& operator=(const FakeQmp&) = delete;

  const std::string& path() const { return path_; }

  // Queues the next expected command. With `args`, each of its keys must be
  // in the command's arguments with an equal value (other keys are ignored).
  Expectation& expect(std::string command, nlohmann::json args = nullptr);
  size_t expectations_left() const { return expectations_.size(); }

  // Sends an event to the connected client now (no-op without one).
  void emit_event(const std::string& name, nlohmann::json data = nullptr);
  // Closes the client's connection (as QEMU does when it drops a monitor).
  void drop_client();
  // Like QEMU exiting: drops the client and removes the socket.
  void shutdown();
  // Like QEMU starting: creates the socket again (done by the constructor).
  void listen();

  bool client_connected() const { return conn_ != nullptr; }
  size_t connections() const { return connections_; }  // accepted so far
  std::deque<Command>& received() { return received_; }

 private:
  struct Connection;
  static int on_listen(sd_event_source*, int, uint32_t, void*);
  static int on_conn_io(sd_event_source*, int, uint32_t, void*);
  static int on_delay(sd_event_source*, uint64_t, void*);
  void accept_client();
  void read_client();
  void line_received(std::string line, std::vector<UniqueFd> fds);
  void process_inbox();
  void respond(const Expectation& e, const Command& cmd);
  void reply(const Command& cmd, const nlohmann::json& body);
  void send_event(const std::string& name, const nlohmann::json& data);
  void send(std::string bytes);
  void flush();

  sd_event* loop_;
  Options opts_;
  std::string dir_;
  std::string path_;
  UniqueFd listen_fd_;
  SdEventSourcePtr listen_src_;  // after listen_fd_: unregistered before the fd closes
  std::unique_ptr<Connection> conn_;
  size_t connections_ = 0;
  std::deque<Expectation> expectations_;
  std::deque<Command> received_;
};

}  // namespace relink::test
