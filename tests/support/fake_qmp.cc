// SPDX-License-Identifier: GPL-2.0-or-later
#include "support/fake_qmp.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "util/clock.h"

namespace relink::test {

using Clock = std::chrono::steady_clock;

bool run_until(sd_event* loop, const std::function<bool()>& pred,
               std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    if (int r = sd_event_run(loop, 10'000); r < 0) {
      ADD_FAILURE() << "sd_event_run: " << std::strerror(-r);
      return false;
    }
  }
  return true;
}

void run_for(sd_event* loop, std::chrono::milliseconds duration) {
  const auto deadline = Clock::now() + duration;
  run_until(loop, [&] { return Clock::now() >= deadline; }, duration + std::chrono::seconds(1));
}

// ---- Expectation ----

FakeQmp::Expectation& FakeQmp::Expectation::returns(nlohmann::json value) {
  reply_ = Reply::Return;
  value_ = std::move(value);
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::error(std::string cls, std::string desc) {
  reply_ = Reply::Error;
  value_ = {{"class", std::move(cls)}, {"desc", std::move(desc)}};
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::no_reply() {
  reply_ = Reply::None;
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::raw(std::string bytes) {
  reply_ = Reply::Raw;
  raw_ = std::move(bytes);
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::delay(std::chrono::milliseconds d) {
  delay_ = d;
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::event_before(std::string name, nlohmann::json data) {
  before_.emplace_back(std::move(name), std::move(data));
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::event_after(std::string name, nlohmann::json data) {
  after_.emplace_back(std::move(name), std::move(data));
  return *this;
}

FakeQmp::Expectation& FakeQmp::Expectation::fds(size_t n) {
  fds_ = n;
  return *this;
}

// ---- FakeQmp ----

struct FakeQmp::Connection {
  UniqueFd fd;
  SdEventSourcePtr io;  // after fd: unregistered before the fd closes
  std::string out;      // bytes not written yet, from out_off on
  size_t out_off = 0;
  std::string line;  // the command being received
  std::vector<UniqueFd> line_fds;
  bool negotiated = false;
  std::deque<size_t> inbox;  // indexes into received_ not answered yet
  // A delayed response holds back the commands behind it, as QEMU runs
  // commands one at a time.
  SdEventSourcePtr delay_timer;
  std::optional<Expectation> delayed;
  size_t delayed_cmd = 0;
};

FakeQmp::FakeQmp(sd_event* loop, Options opts) : loop_(loop), opts_(std::move(opts)) {
  char tmpl[] = "/tmp/relink-fakeqmp-XXXXXX";
  if (!mkdtemp(tmpl)) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return;
  }
  dir_ = tmpl;
  path_ = dir_ + "/qmp.sock";
  listen();
}

FakeQmp::~FakeQmp() {
  shutdown();
  if (!dir_.empty()) rmdir(dir_.c_str());
  for (const auto& e : expectations_) ADD_FAILURE() << "fake QMP: expected command never came: " << e.command_;
}

FakeQmp::Expectation& FakeQmp::expect(std::string command, nlohmann::json args) {
  Expectation& e = expectations_.emplace_back();
  e.command_ = std::move(command);
  e.args_ = std::move(args);
  return e;
}

void FakeQmp::listen() {
  if (listen_fd_ || path_.empty()) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  unlink(path_.c_str());
  if (!fd || bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
      ::listen(fd.get(), 4) < 0) {
    ADD_FAILURE() << "fake QMP: cannot listen on " << path_ << ": " << std::strerror(errno);
    return;
  }
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, fd.get(), EPOLLIN, &FakeQmp::on_listen, this); r < 0) {
    ADD_FAILURE() << "sd_event_add_io: " << std::strerror(-r);
    return;
  }
  listen_fd_ = std::move(fd);
  listen_src_.reset(s);
  // A client still connected from before keeps the slot.
  if (conn_) sd_event_source_set_enabled(listen_src_.get(), SD_EVENT_OFF);
}

void FakeQmp::shutdown() {
  drop_client();
  listen_src_.reset();
  listen_fd_.reset();
  if (!path_.empty()) unlink(path_.c_str());
}

void FakeQmp::drop_client() {
  conn_.reset();
  if (listen_src_) sd_event_source_set_enabled(listen_src_.get(), SD_EVENT_ON);
}

int FakeQmp::on_listen(sd_event_source*, int, uint32_t, void* userdata) {
  static_cast<FakeQmp*>(userdata)->accept_client();
  return 0;
}

void FakeQmp::accept_client() {
  UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd) return;  // the client gave up already
  auto conn = std::make_unique<Connection>();
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, fd.get(), EPOLLIN, &FakeQmp::on_conn_io, this); r < 0) {
    ADD_FAILURE() << "sd_event_add_io: " << std::strerror(-r);
    return;
  }
  conn->fd = std::move(fd);
  conn->io.reset(s);
  conn_ = std::move(conn);
  ++connections_;
  // One client at a time, like QEMU's monitor: the next waits in the backlog.
  sd_event_source_set_enabled(listen_src_.get(), SD_EVENT_OFF);
  if (!opts_.greeting.empty()) send(opts_.greeting + "\r\n");
}

int FakeQmp::on_conn_io(sd_event_source*, int, uint32_t revents, void* userdata) {
  auto* self = static_cast<FakeQmp*>(userdata);
  if (revents & EPOLLOUT) self->flush();
  if (self->conn_ && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) self->read_client();
  return 0;
}

void FakeQmp::read_client() {
  // A bounded number of reads per dispatch keeps the loop fair to the client.
  for (int i = 0; i < 256 && conn_; ++i) {
    Connection& c = *conn_;
    // The first byte of a command is read alone, so an fd that arrives with
    // it (the kernel hands fds over with the first byte of the sendmsg that
    // carried them) is told apart from one sent in the middle of a command.
    // The rest of the line is read up to its '\n', found by peeking.
    size_t want = 1;
    std::array<char, 16384> buf;
    if (!c.line.empty()) {
      const ssize_t p = recv(c.fd.get(), buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
      if (p > 0) {
        const void* nl = std::memchr(buf.data(), '\n', static_cast<size_t>(p));
        want = nl ? static_cast<size_t>(static_cast<const char*>(nl) - buf.data()) + 1
                  : static_cast<size_t>(p);
      }
    }
    iovec iov{buf.data(), want};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 16)> control{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = recvmsg(c.fd.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    std::vector<UniqueFd> fds;
    if (n > 0) {
      for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t k = 0; k < count; ++k) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof fd);
          fds.emplace_back(fd);
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) ADD_FAILURE() << "fake QMP: more fds than expected at once";
    }
    if (n <= 0) return drop_client();  // EOF, or the client reset the connection
    if (!fds.empty()) {
      if (!c.line.empty()) {
        ADD_FAILURE() << "fake QMP: fd received in the middle of a command, after: " << c.line;
      }
      for (auto& fd : fds) c.line_fds.push_back(std::move(fd));
    }
    c.line.append(buf.data(), static_cast<size_t>(n));
    if (c.line.back() == '\n') line_received(std::exchange(c.line, {}), std::exchange(c.line_fds, {}));
  }
}

void FakeQmp::line_received(std::string line, std::vector<UniqueFd> fds) {
  auto msg = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!msg.is_object() || !msg.contains("execute") || !msg["execute"].is_string()) {
    ADD_FAILURE() << "fake QMP: malformed command: " << line;
    // What QEMU sends for input it cannot parse: an error without an id.
    send(R"({"error": {"class": "GenericError", "desc": "JSON parse error"}})" "\r\n");
    return;
  }
  Command cmd;
  cmd.name = msg["execute"].get<std::string>();
  if (msg.contains("arguments")) cmd.arguments = msg["arguments"];
  if (msg.contains("id")) cmd.id = msg["id"];
  cmd.fds = std::move(fds);
  received_.push_back(std::move(cmd));
  conn_->inbox.push_back(received_.size() - 1);
  process_inbox();
}

void FakeQmp::process_inbox() {
  while (conn_ && !conn_->delay_timer && !conn_->inbox.empty()) {
    const size_t index = conn_->inbox.front();
    conn_->inbox.pop_front();
    const Command& cmd = received_[index];
    const nlohmann::json request = {{"execute", cmd.name}, {"arguments", cmd.arguments}};

    // Capabilities negotiation, answered as QEMU 7.2 does.
    if (cmd.name == "qmp_capabilities") {
      if (conn_->negotiated) {
        reply(cmd, {{"error", {{"class", "CommandNotFound"},
                               {"desc", "Capabilities negotiation is already complete, command ignored"}}}});
      } else {
        conn_->negotiated = true;
        reply(cmd, {{"return", nlohmann::json::object()}});
      }
      continue;
    }
    if (!conn_->negotiated) {
      ADD_FAILURE() << "fake QMP: command before qmp_capabilities: " << request.dump();
      reply(cmd, {{"error", {{"class", "CommandNotFound"},
                             {"desc", "Expecting capabilities negotiation with 'qmp_capabilities'"}}}});
      continue;
    }

    if (expectations_.empty() || expectations_.front().command_ != cmd.name) {
      ADD_FAILURE() << "fake QMP: unexpected command " << request.dump() << " (expected "
                    << (expectations_.empty() ? "none" : expectations_.front().command_) << ")";
      reply(cmd, {{"error", {{"class", "GenericError"}, {"desc", "fake QMP: unexpected command"}}}});
      continue;
    }
    Expectation e = std::move(expectations_.front());
    expectations_.pop_front();
    if (e.args_.is_object()) {
      for (const auto& [key, value] : e.args_.items()) {
        if (!cmd.arguments.is_object() || !cmd.arguments.contains(key) || cmd.arguments[key] != value) {
          ADD_FAILURE() << "fake QMP: " << cmd.name << " argument " << key << " should be "
                        << value.dump() << ", command was " << request.dump();
        }
      }
    }
    const size_t want_fds = e.fds_.value_or(cmd.name == "getfd" ? 1 : 0);
    if (cmd.fds.size() != want_fds) {
      ADD_FAILURE() << "fake QMP: " << cmd.name << " came with " << cmd.fds.size()
                    << " fds, expected " << want_fds;
    }

    if (e.delay_.count() > 0) {
      sd_event_source* s = nullptr;
      const auto us = static_cast<uint64_t>(std::chrono::microseconds(e.delay_).count());
      if (int r = sd_event_add_time_relative(loop_, &s, CLOCK_MONOTONIC, us, 1000,
                                             &FakeQmp::on_delay, this);
          r < 0) {
        ADD_FAILURE() << "sd_event_add_time_relative: " << std::strerror(-r);
        continue;
      }
      conn_->delay_timer.reset(s);
      conn_->delayed = std::move(e);
      conn_->delayed_cmd = index;
      return;
    }
    respond(e, cmd);
  }
}

int FakeQmp::on_delay(sd_event_source*, uint64_t, void* userdata) {
  auto* self = static_cast<FakeQmp*>(userdata);
  Connection& c = *self->conn_;  // the timer dies with the connection
  c.delay_timer.reset();
  const Expectation e = std::move(*c.delayed);
  c.delayed.reset();
  self->respond(e, self->received_[c.delayed_cmd]);
  self->process_inbox();
  return 0;
}

void FakeQmp::respond(const Expectation& e, const Command& cmd) {
  for (const auto& [name, data] : e.before_) send_event(name, data);
  switch (e.reply_) {
    case Expectation::Reply::Return: reply(cmd, {{"return", e.value_}}); break;
    case Expectation::Reply::Error: reply(cmd, {{"error", e.value_}}); break;
    case Expectation::Reply::Raw: send(e.raw_); break;
    case Expectation::Reply::None: break;
  }
  for (const auto& [name, data] : e.after_) send_event(name, data);
}

void FakeQmp::reply(const Command& cmd, const nlohmann::json& body) {
  nlohmann::json msg = body;
  if (!cmd.id.is_null()) msg["id"] = cmd.id;
  send(msg.dump() + "\r\n");
}

void FakeQmp::emit_event(const std::string& name, nlohmann::json data) { send_event(name, data); }

void FakeQmp::send_event(const std::string& name, const nlohmann::json& data) {
  const uint64_t now = monotonic_us();
  nlohmann::json msg = {{"timestamp", {{"seconds", now / 1'000'000}, {"microseconds", now % 1'000'000}}},
                        {"event", name}};
  if (!data.is_null()) msg["data"] = data;
  send(msg.dump() + "\r\n");
}

void FakeQmp::send(std::string bytes) {
  if (!conn_) return;
  conn_->out += bytes;
  flush();
}

void FakeQmp::flush() {
  Connection& c = *conn_;
  while (c.out_off < c.out.size()) {
    const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return drop_client();  // the client closed its end
    }
    c.out_off += static_cast<size_t>(n);
  }
  if (c.out_off == c.out.size()) {
    c.out.clear();
    c.out_off = 0;
  }
  sd_event_source_set_io_events(c.io.get(), c.out.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT);
}

}  // namespace relink::test
