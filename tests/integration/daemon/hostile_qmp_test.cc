// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd against QMP peers that are hostile or not QEMU at all: what a local
// user who can listen on, or write to, a QMP path can make the root daemon
// do. Every peer here is a forked copy of this test program speaking QMP
// from a script (a real QEMU cannot be made to send these bytes).
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>

#include <fstream>
#include <map>
#include <thread>

#include "daemon_env.h"
#include "util/unique_fd.h"

namespace relink::test {
namespace {

using namespace std::chrono_literals;

// What a scripted peer sends: a greeting, then per command name the bytes of
// its answer, where "@ID@" stands for the command's id. qmp_capabilities is
// answered like QEMU unless scripted; anything unscripted gets {"return": {}}.
struct PeerScript {
  std::string greeting = R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})";
  std::map<std::string, std::string> answers;
  uid_t uid = 0;             // the peer drops to this uid (and gid) before it binds
  bool listen_as_root = true;  // with uid != 0: bind and listen before dropping
};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// A forked peer listening on `path`. It logs every line it receives, and
// every fd that came with one, to `log`. Killed on destruction.
class ScriptedPeer {
 public:
  ScriptedPeer(const std::string& path, const std::string& log, PeerScript script) {
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ != 0) return;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    _exit(serve(path, log, script));
  }
  ~ScriptedPeer() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

 private:
  static bool drop(uid_t uid) { return setgroups(0, nullptr) == 0 && setgid(uid) == 0 && setuid(uid) == 0; }

  static int serve(const std::string& path, const std::string& log_path, const PeerScript& s) {
    std::ofstream log(log_path, std::ios::app);  // opened as root: the test reads it
    if (!log) return 5;
    if (s.uid != 0 && !s.listen_as_root && !drop(s.uid)) return 2;
    UniqueFd lfd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    unlink(path.c_str());
    if (bind(lfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return 3;
    if (s.uid != 0 && s.listen_as_root) {
      // The socket file is root's; the listening process is not.
      if (!drop(s.uid)) return 2;
    }
    if (listen(lfd.get(), 8) != 0) return 4;
    while (true) {
      UniqueFd c(accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      log << "CONNECTION\n" << std::flush;
      std::string out = s.greeting + "\r\n";
      (void)!send(c.get(), out.data(), out.size(), MSG_NOSIGNAL);
      std::string in;
      while (true) {
        char buf[65536];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
        iovec iov{buf, sizeof buf};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t n = recvmsg(c.get(), &msg, MSG_CMSG_CLOEXEC);
        if (n <= 0) break;
        for (cmsghdr* h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
          if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) log << "FD RECEIVED\n" << std::flush;
        in.append(buf, static_cast<size_t>(n));
        for (size_t nl; (nl = in.find('\n')) != std::string::npos; in.erase(0, nl + 1)) {
          auto cmd = nlohmann::json::parse(in.substr(0, nl), nullptr, false);
          log << in.substr(0, nl) << "\n" << std::flush;
          if (!cmd.is_object()) continue;
          const std::string name = cmd.value("execute", "");
          const std::string id = cmd.contains("id") ? cmd["id"].dump() : "null";
          auto it = s.answers.find(name);
          std::string reply = it != s.answers.end() ? it->second : R"({"return": {}, "id": @ID@})";
          reply = replace_all(reply, "@ID@", id) + "\r\n";
          (void)!send(c.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
        }
      }
    }
  }

  pid_t pid_ = -1;
};

std::string nested(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += R"({"a":)";
  return s + "1" + std::string(static_cast<size_t>(depth), '}');
}

bool valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

class HostileQmp : public ::testing::Test {
 protected:
  void SetUp() override { RELINK_REQUIRE_ROOT(); }

  // One VM per peer, all on parent p0; `qemu_binaries` set to let this
  // program count as QEMU when `as_qemu`.
  void start(const std::vector<std::pair<std::string, PeerScript>>& peers, bool as_qemu,
             const std::map<std::string, std::string>& qmp_paths = {}) {
    env.add_veth_parent("p0");
    std::vector<VmSpec> vms;
    int i = 0;
    for (const auto& [name, script] : peers) {
      VmSpec vm;
      vm.name = name;
      vm.mac = "52:54:00:00:01:" + std::string(i < 10 ? "0" : "") + std::to_string(i);
      ++i;
      vms.push_back(vm);
    }
    std::string text = env.config_text(vms);
    for (const auto& [name, path] : qmp_paths) text = replace_all(text, env.qmp_path(name), path);
    if (as_qemu)
      text.insert(text.find("\n[[vm]]"), "\nqemu_binaries = [\"/usr/bin/qemu-system-*\", \"" + self_exe() + "\"]");
    DaemonEnv::write_file(env.config_path(), text);
    for (const auto& [name, script] : peers) {
      const std::string path = qmp_paths.count(name) ? qmp_paths.at(name) : env.qmp_path(name);
      peers_[name] = std::make_unique<ScriptedPeer>(path, peer_log(name), script);
    }
    for (const auto& [name, script] : peers) {
      const std::string path = qmp_paths.count(name) ? qmp_paths.at(name) : env.qmp_path(name);
      ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(path); }, 5s)) << name << ": peer did not listen";
    }
    env.start_relinkd();
  }
  std::string peer_log(const std::string& vm) { return env.dir() + "/" + vm + ".peer.log"; }
  size_t count(const std::string& vm, const std::string& what) {
    const std::string log = read_file(peer_log(vm));
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  }
  // The VM's status object ({} when status fails or has no such VM).
  nlohmann::json vm_status(const std::string& vm) {
    auto st = env.status();
    if (st.is_object())
      for (const auto& v : st["vms"])
        if (v["name"] == vm) return v;
    return nlohmann::json::object();
  }
  std::string binding_field(const std::string& vm, const std::string& key) {
    auto b = env.binding(vm);
    return b.is_object() && b.contains(key) && b[key].is_string() ? b[key].get<std::string>() : "";
  }

  DaemonEnv env;
  std::map<std::string, std::unique_ptr<ScriptedPeer>> peers_;
};

// The review's findings 1-3: a number out of range, deep nesting in an event
// and in a reply without id, invalid UTF-8 and NUL bytes in a greeting, an
// error and an event. relinkd keeps running, status answers with valid JSON,
// and what it kept of the peers' text is valid UTF-8 and short.
TEST_F(HostileQmp, MaliciousPeersLeaveRelinkdRunningAndStatusAnswering) {
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xc3\xa9";
  const std::string ok_probe = R"({"return": "", "id": @ID@})";
  std::vector<std::pair<std::string, PeerScript>> peers;
  peers.push_back({"bignum", PeerScript{.greeting = R"({"QMP": 1e400})"}});
  peers.push_back({"utf8greet", PeerScript{.greeting = "{\"xy\":\"" + accents + "\"}"}});
  peers.push_back({"badbytes", PeerScript{.greeting = std::string("{\"QMP\": \"\xff\xfe\0\"}", 14)}});
  PeerScript deep_event;
  deep_event.answers["human-monitor-command"] =
      R"({"event": "X", "data": )" + nested(60000) + "}\r\n" + ok_probe;
  peers.push_back({"deepevent", deep_event});
  PeerScript deep_reply;
  deep_reply.answers["human-monitor-command"] = R"({"return": )" + nested(60000) + "}";
  peers.push_back({"deepreply", deep_reply});
  PeerScript nul_event;
  nul_event.answers["human-monitor-command"] =
      "{\"event\": \"E\\u0000\\u001b[2J\", \"data\": {\"s\": \"" + accents + "\\u0000\"}}\r\n" + ok_probe;
  peers.push_back({"nulevent", nul_event});
  PeerScript bad_error;
  bad_error.answers["human-monitor-command"] = ok_probe;
  bad_error.answers["getfd"] =
      "{\"error\": {\"class\": \"GenericError\", \"desc\": \"" + accents + "\\u0000\\u001b[2J\"}, \"id\": @ID@}";
  peers.push_back({"baderror", bad_error});
  start(peers, /*as_qemu=*/true);

  // Every peer has been talked to, and the resetting ones more than once.
  ASSERT_TRUE(wait_until(
      [&] {
        return count("bignum", "CONNECTION") >= 2 && count("utf8greet", "CONNECTION") >= 2 &&
               count("badbytes", "CONNECTION") >= 2 && count("deepevent", "CONNECTION") >= 2 &&
               count("deepreply", "human-monitor-command") >= 1 && count("nulevent", "human-monitor-command") >= 1 &&
               count("baderror", "getfd") >= 2;
      },
      20s))
      << env.explain();
  ASSERT_TRUE(env.relinkd().running()) << env.explain();
  auto st = env.status();
  ASSERT_TRUE(st.is_object()) << "relinkctl status failed\n" << env.explain();

  auto qmp_error = [&](const std::string& vm) { return vm_status(vm).value("qmp_error", std::string()); };
  EXPECT_TRUE(wait_until([&] { return qmp_error("bignum").find("number out of range") != std::string::npos; }, 5s))
      << qmp_error("bignum");
  EXPECT_TRUE(wait_until([&] { return qmp_error("utf8greet").find("expected a QMP greeting") != std::string::npos; }, 5s))
      << qmp_error("utf8greet");
  EXPECT_TRUE(wait_until([&] { return qmp_error("deepevent").find("nested deeper than 64") != std::string::npos; }, 5s))
      << qmp_error("deepevent");
  // The error kept from the peer: valid UTF-8, its NUL and escape shown, short.
  std::string last_error;
  ASSERT_TRUE(wait_until(
      [&] {
        last_error = binding_field("baderror", "last_error");
        return last_error.find("GenericError") != std::string::npos;
      },
      10s))
      << env.explain();
  EXPECT_TRUE(valid_utf8(last_error));
  EXPECT_NE(last_error.find("\\x00\\x1b[2J"), std::string::npos) << last_error;
  EXPECT_EQ(last_error.find('\0'), std::string::npos);
  const nlohmann::json status_now = env.status();
  for (const auto& v : status_now["vms"]) {
    EXPECT_LT(v.value("qmp_error", std::string()).size(), 600u) << v.dump();
    for (const auto& b : v["bindings"]) EXPECT_LT(text_of(b, "last_error").size(), 1000u) << b.dump();
  }
  // The peers that behave but for one message are used: the NUL event did
  // not stop the binding from attaching (its getfd got the fd).
  EXPECT_TRUE(wait_until([&] { return count("nulevent", "FD RECEIVED") >= 1; }, 10s)) << env.explain();
  EXPECT_TRUE(env.relinkd().running());
  const std::string log = read_file(env.log_path());
  EXPECT_EQ(log.find("terminate called"), std::string::npos);
}

// Finding 5: whoever answers on the QMP path got the tap fd. A peer that is
// not QEMU, a socket in a directory others can write, and a root-owned
// socket a process of another user listens on get no command and no fd.
TEST_F(HostileQmp, OnlyQemuOnItsOwnSocketGetsAnFd) {
  const std::string shared = env.dir() + "/shared";  // like /tmp: anyone may create sockets here
  std::filesystem::create_directories(shared);
  chmod(env.dir().c_str(), 0711);  // nobody may traverse to its socket
  chmod(shared.c_str(), 01777);
  const std::string pinned = env.dir() + "/pinned";  // root's, QEMU's user could not have made it
  std::filesystem::create_directories(pinned);
  chmod(pinned.c_str(), 0755);
  PeerScript as_nobody{.uid = 65534, .listen_as_root = false};
  PeerScript root_socket_nobody_listens{.uid = 65534, .listen_as_root = true};
  as_nobody.answers["human-monitor-command"] = R"({"return": "", "id": @ID@})";
  root_socket_nobody_listens.answers = as_nobody.answers;
  start({{"intmp", as_nobody}, {"rootsock", root_socket_nobody_listens}}, /*as_qemu=*/true,
        {{"intmp", shared + "/intmp.qmp"}, {"rootsock", pinned + "/rootsock.qmp"}});
  auto refused = [&](const std::string& vm, const std::string& why) {
    return wait_until([&] { return vm_status(vm).value("qmp_error", std::string()).find(why) != std::string::npos; }, 10s);
  };
  EXPECT_TRUE(refused("intmp", "is writable by other users")) << env.explain();
  EXPECT_TRUE(refused("rootsock", "runs as uid 65534, but the VM's QEMU runs as root")) << env.explain();
  std::this_thread::sleep_for(500ms);
  for (const std::string vm : {"intmp", "rootsock"}) {
    EXPECT_EQ(count(vm, "FD RECEIVED"), 0u) << vm;
    EXPECT_EQ(count(vm, "execute"), 0u) << vm << " was sent commands:\n" << read_file(peer_log(vm));
    EXPECT_EQ(vm_status(vm).value("qmp", ""), "disconnected");
  }
  const std::string log = read_file(env.log_path());
  EXPECT_NE(log.find("intmp: QMP socket"), std::string::npos) << DaemonEnv::tail(log, 2000);
  EXPECT_TRUE(env.relinkd().running());
}

TEST_F(HostileQmp, APeerThatIsNotQemuGetsNothing) {
  PeerScript root_peer;  // root, in relinkd's own 0700 test directory: all but the program is right
  root_peer.answers["human-monitor-command"] = R"({"return": "", "id": @ID@})";
  start({{"notqemu", root_peer}}, /*as_qemu=*/false);
  EXPECT_TRUE(wait_until(
      [&] { return vm_status("notqemu").value("qmp_error", std::string()).find("which is not QEMU") != std::string::npos; },
      10s))
      << env.explain();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(count("notqemu", "FD RECEIVED"), 0u);
  EXPECT_EQ(count("notqemu", "execute"), 0u) << read_file(peer_log("notqemu"));
  EXPECT_EQ(binding_field("notqemu", "state"), "vm-offline");
}

}  // namespace
}  // namespace relink::test
